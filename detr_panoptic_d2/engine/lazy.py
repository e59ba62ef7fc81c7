"""Training and evaluation from a LazyConfig (Python config), for tools/lazyconfig_train_net.py.

The config has Detectron2's LazyConfig layout (its configs/common): ``model``,
``dataloader.{train,test,evaluator}``, ``optimizer`` (its ``params.model`` is set here),
``lr_multiplier`` (a ParamScheduler), ``train.{init_checkpoint, frozen_weights, max_iter, output_dir, device,
eval_period, log_period, checkpointer, amp, ddp, seed, ema}`` (``ema``: the weight average,
as SOLVER.EMA; engine/weight_averaging.py). The loop is Detectron2's
(SimpleTrainer or AMPTrainer, its hooks), built from the blocks ``DetrTrainer`` uses:
``DetrCheckpointer`` (safe loading, atomic saving, class head re-initialized when fine-tuning),
DDP also on CPU, the panoptic evaluators of one inference pass (``dataloader.evaluator``,
usually ``panoptic_evaluators``). ``lazy_setup`` adapts the config as ``setup`` does for yaml.
"""
import logging

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_setup, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import DetrCheckpointer
from ..checkpoint.frozen_detector import load_frozen_detector
from ..data.user_datasets import register_lazy_splits
from ..data.validation import check_num_classes
from .defaults import LAZY_KEYS, adapt_config
from .trainer import create_detr_ddp_model
from .weight_averaging import WeightAveraging, evaluate_beside

logger = logging.getLogger(__name__)


def _names(names):
    return [names] if isinstance(names, str) else list(names)


def adapt_lazy_config(cfg, eval_only=False):
    """``adapt_config`` (engine/defaults.py, as for yaml) of a LazyConfig: with ``eval_only``
    ``train.frozen_weights`` is ignored (``train.init_checkpoint`` holds the whole model);
    ``train.device`` "cuda" falls back to "cpu" without CUDA (``train.amp.enabled`` then means
    bfloat16 autocast, with a warning on a CPU without native bfloat16). Returns the warnings,
    one string per change."""
    return adapt_config(cfg, LAZY_KEYS, eval_only)


def lazy_setup(args):
    """The LazyConfig of ``args.config_file`` with the ``a.b=c`` overrides of ``args.opts``,
    adapted to the machine (``adapt_lazy_config``), the splits of ``dataloader.register`` (with
    ``args.register`` appended) registered, ``model.num_classes`` checked against the
    datasets of ``dataloader.train`` and ``dataloader.test``; logging, output directory
    (with the config saved there) and seeding set up by ``default_setup``."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    register_lazy_splits(cfg, getattr(args, "register", ()))
    warnings = adapt_lazy_config(cfg, eval_only=getattr(args, "eval_only", False))
    names = _names(cfg.dataloader.train.dataset.names) + _names(cfg.dataloader.test.dataset.names)
    check_num_classes(cfg.model.num_classes, names, key="model.num_classes")
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="detr_panoptic_d2")
    for message in warnings:
        logger.warning(message)
    return cfg


def build_lazy_model(cfg):
    """``cfg.model`` instantiated and moved to ``cfg.train.device``."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    logger.info(f"Model:\n{model}")
    return model


def lazy_test(cfg, model):
    """Runs ``model`` over ``dataloader.test`` into ``dataloader.evaluator``; prints and
    returns the results (on the main process; {} on the others)."""
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def lazy_eval_only(cfg, resume=False):
    """Evaluates ``train.init_checkpoint`` (with ``resume``, the last checkpoint of
    ``train.output_dir`` when there is one), which must fit the model entirely."""
    model = build_lazy_model(cfg)
    checkpointer = DetrCheckpointer(model, cfg.train.output_dir, datasets=_names(cfg.dataloader.test.dataset.names))
    use_last = resume and checkpointer.has_checkpoint()
    checkpointer.load_complete(checkpointer.get_checkpoint_file() if use_last else cfg.train.init_checkpoint)
    return lazy_test(cfg, model)


def lazy_train(cfg, resume=False):
    """Trains from ``train.init_checkpoint`` (or, with ``resume``, continues the last
    checkpoint of ``train.output_dir``) to ``train.max_iter``, evaluating every
    ``train.eval_period`` iterations and at the end. Returns the last evaluation's results."""
    model = build_lazy_model(cfg)
    if cfg.train.get("frozen_weights"):
        load_frozen_detector(model, cfg.train.frozen_weights, key="train.frozen_weights")
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_detr_ddp_model(model, cfg.train.device, **cfg.train.ddp)
    # On the CPU, AMPTrainer cannot run: the model autocasts to bfloat16 itself (model.precision).
    on_gpu = str(cfg.train.device).startswith("cuda")
    trainer = (AMPTrainer if cfg.train.amp.enabled and on_gpu else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = DetrCheckpointer(
        model, cfg.train.output_dir, trainer=trainer, datasets=_names(cfg.dataloader.train.dataset.names)[:1]
    )
    ema = cfg.train.get("ema", None)
    averaging = WeightAveraging(model, ema.decay, checkpointer, ema.deploy) if ema and ema.enabled else None
    both = evaluate_beside(lambda m: lazy_test(cfg, m), model, averaging)
    last_results = {}

    def evaluate():
        last_results.clear()
        last_results.update(both())
        return last_results

    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            averaging,  # the weight average (train.ema), updated before the checkpointer saves
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, evaluate),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    return last_results

"""``DetrTrainer``: Detectron2's DefaultTrainer with DETR's optimizer, data and evaluators.

What differs from DefaultTrainer:

- optimizer: ``build_optimizer`` (AdamW, backbone multiplier, full-model clipping), over the
  parameters that require a gradient only;
- data: ``DetrPanopticDatasetMapper`` with DETR's augmentation (training) or test resize;
- evaluation: ``build_panoptic_evaluator`` (PQ, box/mask AP, mIoU from one inference pass);
- multi-process training also works on CPU (DistributedDataParallel over GLOO): Detectron2's
  ``create_ddp_model`` always passes ``device_ids``, which DDP refuses for a CPU model;
- checkpoints are written and read by ``DetrCheckpointer`` (atomic saves, safe loading);
- with SOLVER.EMA.ENABLED, an average of the weights is kept, evaluated and deployed
  (``weight_averaging.WeightAveraging``).

Each is one of DefaultTrainer's builders overridden, except the DDP arguments, for which
DefaultTrainer's constructor has no hook: on the CPU it runs with Detectron2's
``create_ddp_model`` replaced by ``create_detr_ddp_model``.
Everything else is Detectron2's: SimpleTrainer or AMPTrainer (SOLVER.AMP.ENABLED on a GPU; on
the CPU the model autocasts to bfloat16 itself, see DetrPanoptic.training_autocast), the LR
scheduler, periodic checkpoints and ``--resume`` (rank 0 writes), metric printing, JSON and
TensorBoard events, evaluation at the end and every TEST.EVAL_PERIOD iterations.
"""
import functools
import os
import weakref

import detectron2.engine.defaults as d2_defaults
import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, create_ddp_model, hooks

from ..checkpoint import DetrCheckpointer
from ..data import DetrPanopticDatasetMapper
from .evaluators import build_panoptic_evaluator
from .optimizer import build_optimizer
from .weight_averaging import WeightAveraging, evaluate_beside


def create_detr_ddp_model(model, device, **kwargs):
    """Detectron2's ``create_ddp_model`` (the model itself in a single process) with
    ``kwargs``; for a CPU ``device`` without the ``device_ids`` that DDP refuses there."""
    if torch.device(device).type == "cpu":
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


class DetrTrainer(DefaultTrainer):
    """Trains and evaluates ``DetrPanoptic`` from a config (see the module docstring)."""

    def __init__(self, cfg):
        """DefaultTrainer's constructor; on the CPU with DDP's ``device_ids`` left out (see the
        module docstring)."""
        if torch.device(cfg.MODEL.DEVICE).type != "cpu":
            super().__init__(cfg)
            return
        d2_defaults.create_ddp_model = functools.partial(create_detr_ddp_model, device=cfg.MODEL.DEVICE)
        try:
            super().__init__(cfg)
        finally:
            d2_defaults.create_ddp_model = create_ddp_model
        if cfg.SOLVER.AMP.ENABLED:  # AMPTrainer needs CUDA; DetrPanoptic autocasts to bfloat16 itself
            self._trainer = SimpleTrainer(self._trainer.model, self._trainer.data_loader, self._trainer.optimizer)

    def build_hooks(self):
        """DefaultTrainer's hooks, with ``DetrCheckpointer`` (in place of the
        DetectionCheckpointer the constructor made) behind --resume and the periodic
        checkpoints; with SOLVER.EMA.ENABLED, the weight average (``WeightAveraging``, updated
        after each step before the checkpointer saves) and evaluation of both weight sets."""
        self.checkpointer = DetrCheckpointer(self._trainer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        ema = self.cfg.SOLVER.EMA
        self.weight_averaging = (
            WeightAveraging(self._trainer.model, ema.DECAY, self.checkpointer, ema.DEPLOY) if ema.ENABLED else None
        )
        ret = super().build_hooks()
        if self.weight_averaging is None:
            return ret
        both = evaluate_beside(lambda model: self.test(self.cfg, model), self.model, self.weight_averaging)

        def test_and_save_results():
            self._last_eval_results = both()
            return self._last_eval_results

        ret = [hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, test_and_save_results) if isinstance(h, hooks.EvalHook) else h for h in ret]
        ret.insert(2, self.weight_averaging)  # after the timer and the LR scheduler
        return ret

    def train(self):
        """Trains from ``start_iter`` to SOLVER.MAX_ITER. Returns the results of the last
        evaluation (on the main process; {} on the others), None if there was none."""
        super().train()
        return getattr(self, "_last_eval_results", None)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=DetrPanopticDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = DetrPanopticDatasetMapper(cfg, is_train=False, dataset_name=dataset_name)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """Evaluators of ``dataset_name``; files go to OUTPUT_DIR/inference/<dataset_name>."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_panoptic_evaluator(cfg, dataset_name, output_folder)

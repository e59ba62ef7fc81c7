"""``DetrTrainer``: Detectron2's DefaultTrainer with DETR's optimizer, data and evaluators.

What differs from DefaultTrainer:

- optimizer: ``build_optimizer`` (AdamW, backbone multiplier, full-model clipping), over the
  parameters that require a gradient only;
- data: ``DetrPanopticDatasetMapper`` with DETR's augmentation (training) or test resize;
- evaluation: ``build_panoptic_evaluator`` (PQ, box/mask AP, mIoU from one inference pass);
- multi-process training also works on CPU (DistributedDataParallel over GLOO): Detectron2's
  ``create_ddp_model`` always passes ``device_ids``, which DDP refuses for a CPU model;
- stage 2 (MODEL.DETR.FROZEN_WEIGHTS): the box-only checkpoint is loaded into the new
  model's detector, which is frozen (checkpoint/frozen_detector.py);
- checkpoints are written and read by ``DetrCheckpointer`` (atomic saves, safe loading, official
  DETR weights converted on load), each naming the classes of DATASETS.TRAIN[0];
- with SOLVER.EMA.ENABLED, an average of the weights is kept, evaluated and deployed
  (``weight_averaging.WeightAveraging``).

Each is one of DefaultTrainer's builders overridden, except the DDP arguments, for which
DefaultTrainer's constructor has no hook: ``DetrTrainer.__init__`` is DefaultTrainer's
construction with ``create_detr_ddp_model`` (Detectron2's own modules are left untouched).
Everything else is Detectron2's: SimpleTrainer or AMPTrainer (SOLVER.AMP.ENABLED on a GPU; on
the CPU the model autocasts to bfloat16 itself, see modeling/precision.py), the LR
scheduler, periodic checkpoints and ``--resume`` (rank 0 writes), metric printing, JSON and
TensorBoard events, evaluation at the end and every TEST.EVAL_PERIOD iterations.
"""
import logging
import os
import weakref

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import DetrCheckpointer
from ..checkpoint.frozen_detector import load_frozen_detector
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
        """DefaultTrainer's construction, in its order (model, optimizer, data, DDP, loop,
        scheduler, checkpointer, hooks), with this trainer's own DDP wrapping
        (``create_detr_ddp_model``), loop (SimpleTrainer for SOLVER.AMP.ENABLED on the CPU:
        AMPTrainer needs CUDA, the model's Precision autocasts to bfloat16 itself) and ``DetrCheckpointer``
        (behind --resume and the periodic checkpoints)."""
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):  # as DefaultTrainer: setup_logger was not called
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        if cfg.MODEL.DETR.FROZEN_WEIGHTS:
            load_frozen_detector(model, cfg.MODEL.DETR.FROZEN_WEIGHTS)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_detr_ddp_model(model, cfg.MODEL.DEVICE, broadcast_buffers=False)
        on_gpu = torch.device(cfg.MODEL.DEVICE).type != "cpu"
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED and on_gpu else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetrCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), datasets=cfg.DATASETS.TRAIN[:1]
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """DefaultTrainer's hooks; with SOLVER.EMA.ENABLED, the weight average
        (``WeightAveraging``, updated after each step before the checkpointer saves) and
        evaluation of both weight sets."""
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

"""``setup(args)``: the config of a training or evaluation run from command-line arguments.

It is Detectron2's usual set-up (config file, trailing KEY VALUE overrides,
``default_setup``) plus what a DETR run needs to start anywhere:

- ``--eval-only`` ignores MODEL.DETR.FROZEN_WEIGHTS: MODEL.WEIGHTS then holds the whole model;
- MODEL.DEVICE "cuda" (Detectron2's default) falls back to "cpu" when CUDA is unavailable;
- SOLVER.AMP.ENABLED is turned off on CPU (Detectron2's AMP trainer needs CUDA).

MODEL.DETR.NUM_CLASSES must be the class count of every dataset in DATASETS.TRAIN and TEST
(``check_num_classes``; register datasets on disk first, e.g. ``--register``).

With DETERMINISTIC set, PyTorch is asked for deterministic algorithms (seeding is Detectron2's,
from SEED).

Each change is logged as a warning.
"""
import logging
import os

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_detr_panoptic_config
from ..data.user_datasets import check_num_classes

logger = logging.getLogger(__name__)


def adapt_to_machine(cfg, eval_only=False):
    """Applies the changes listed in the module docstring to ``cfg`` (unfrozen), in place.
    Returns the warnings, one string per change."""
    warnings = []
    if eval_only and cfg.MODEL.DETR.FROZEN_WEIGHTS:
        warnings.append(
            f"--eval-only: ignoring MODEL.DETR.FROZEN_WEIGHTS={cfg.MODEL.DETR.FROZEN_WEIGHTS!r}; "
            f"the whole model is loaded from MODEL.WEIGHTS={cfg.MODEL.WEIGHTS!r}"
        )
        cfg.MODEL.DETR.FROZEN_WEIGHTS = ""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        warnings.append(f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but CUDA is not available: running on cpu")
        cfg.MODEL.DEVICE = "cpu"
    if cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda"):
        warnings.append("SOLVER.AMP.ENABLED needs a CUDA device: training in float32 instead")
        cfg.SOLVER.AMP.ENABLED = False
    return warnings


def setup(args):
    """Frozen config from ``args`` (Detectron2's ``default_argument_parser``): the plugin's
    keys, ``args.config_file``, then ``args.opts``; adapted to the machine and NUM_CLASSES
    checked (see the module docstring); logging (Detectron2's and this package's), the output directory and seeding
    set up as ``default_setup`` does."""
    cfg = get_cfg()
    add_detr_panoptic_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    warnings = adapt_to_machine(cfg, eval_only=getattr(args, "eval_only", False))
    cfg.freeze()
    check_num_classes(cfg.MODEL.DETR.NUM_CLASSES, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    default_setup(cfg, args)
    if cfg.DETERMINISTIC:
        # cuBLAS needs this workspace setting to be deterministic; harmless on the CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detr_panoptic_d2")
    for message in warnings:
        logger.warning(message)
    return cfg

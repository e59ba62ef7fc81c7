"""The config of a run: ``load_config`` (every tool builds its config with it) and
``setup(args)`` (a training or evaluation run from command-line arguments).

``load_config`` is Detectron2's usual construction (defaults, the plugin's keys, a config
file, KEY VALUE overrides) plus what a DETR run needs to start anywhere (``adapt_config``,
shared with LazyConfigs, engine/lazy.py; yaml keys named here):

- ``--eval-only`` ignores MODEL.DETR.FROZEN_WEIGHTS: MODEL.WEIGHTS then holds the whole model;
- MODEL.DEVICE "cuda" (Detectron2's default) falls back to "cpu" when CUDA is unavailable;
- on the CPU, SOLVER.AMP.ENABLED trains under bfloat16 autocast (modeling/precision.py)
  instead of Detectron2's float16 AMPTrainer, which needs CUDA; a warning says so when the CPU
  has no native bfloat16 arithmetic (``cpu_has_bfloat16``), where it may train slower than float32.

``setup`` adds Detectron2's ``default_setup`` (output folder, logging, seeding from SEED) and,
with MODEL.DETR.DETERMINISTIC set, asks PyTorch for deterministic algorithms; it logs each
change above as a warning.

MODEL.DETR.NUM_CLASSES must be the class count of every dataset in DATASETS.TRAIN and TEST
(``check_num_classes``; register datasets on disk first, e.g. ``--register``).
"""
import logging
import os

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_detr_panoptic_config
from ..data.user_datasets import register_yaml_splits
from ..data.validation import check_num_classes

logger = logging.getLogger(__name__)


def cpu_has_bfloat16():
    """Whether the CPU computes bfloat16 natively: a flag amx_bf16 or avx512_bf16 (x86) or bf16
    (Arm) in /proc/cpuinfo. None where /proc/cpuinfo cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(f.read().split())
    except OSError:
        return None
    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"})


# The config keys ``adapt_config`` reads and changes, in a yacs config and in a LazyConfig:
# the stage-1 checkpoint, the whole model's weights, the device and mixed-precision training.
YAML_KEYS = {
    "frozen_weights": "MODEL.DETR.FROZEN_WEIGHTS",
    "weights": "MODEL.WEIGHTS",
    "device": "MODEL.DEVICE",
    "amp": "SOLVER.AMP.ENABLED",
}
LAZY_KEYS = {
    "frozen_weights": "train.frozen_weights",
    "weights": "train.init_checkpoint",
    "device": "train.device",
    "amp": "train.amp.enabled",
}


def _get(cfg, key, default=None):
    *parents, name = key.split(".")
    for parent in parents:
        cfg = getattr(cfg, parent)
    return getattr(cfg, name, default)


def _set(cfg, key, value):
    *parents, name = key.split(".")
    for parent in parents:
        cfg = getattr(cfg, parent)
    setattr(cfg, name, value)


def adapt_config(cfg, keys, eval_only=False):
    """Applies the changes listed in the module docstring to ``cfg`` (an unfrozen yacs config
    or a LazyConfig), in place; ``keys``: where it holds them, YAML_KEYS or LAZY_KEYS.
    Returns the warnings, one string per change, naming the keys."""
    warnings = []
    frozen = _get(cfg, keys["frozen_weights"], "")
    if eval_only and frozen:
        warnings.append(
            f"--eval-only: ignoring {keys['frozen_weights']}={frozen!r}; "
            f"the whole model is loaded from {keys['weights']}={_get(cfg, keys['weights'])!r}"
        )
        _set(cfg, keys["frozen_weights"], "")
    device = str(_get(cfg, keys["device"]))
    if device.startswith("cuda") and not torch.cuda.is_available():
        warnings.append(f"{keys['device']}={device!r} but CUDA is not available: running on cpu")
        _set(cfg, keys["device"], "cpu")
    amp = _get(cfg, keys["amp"])
    if not eval_only and amp and _get(cfg, keys["device"]) == "cpu" and cpu_has_bfloat16() is False:
        warnings.append(
            f"{keys['amp']} trains in bfloat16 on the CPU, but this CPU has no native bfloat16 (no amx_bf16, "
            f"avx512_bf16 or bf16 flag in /proc/cpuinfo): it may train slower than float32 ({keys['amp']} False)"
        )
    return warnings


def adapt_to_machine(cfg, eval_only=False):
    """``adapt_config`` of a yacs config (YAML_KEYS)."""
    return adapt_config(cfg, YAML_KEYS, eval_only)


def load_config(config_file, opts=(), *, eval_only=False, register=(), data_optional=False):
    """The (unfrozen) config of ``config_file``: Detectron2's defaults, the plugin's keys
    (``add_detr_panoptic_config``), the file, then ``opts`` (["KEY", "VALUE", ...]), adapted
    to the machine (``adapt_to_machine``, ``eval_only`` as there). The ``--register`` values
    ``register`` are appended to DATASETS.REGISTER and its splits registered
    (``register_yaml_splits``; ``data_optional``: absent files skipped, for inference tools).
    Returns (cfg, the adaptations made: one message each)."""
    cfg = add_detr_panoptic_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    register_yaml_splits(cfg, register, files_optional=data_optional)
    return cfg, adapt_to_machine(cfg, eval_only=eval_only)


def setup(args):
    """Frozen config from ``args`` (Detectron2's ``default_argument_parser``):
    ``load_config(args.config_file, args.opts)``; logging (Detectron2's and this package's),
    the output directory and seeding set up as ``default_setup`` does; NUM_CLASSES checked
    against the datasets (``args.register``, when present, registers more: see load_config)."""
    cfg, warnings = load_config(
        args.config_file, args.opts, eval_only=getattr(args, "eval_only", False), register=getattr(args, "register", ())
    )
    cfg.freeze()
    check_num_classes(cfg.MODEL.DETR.NUM_CLASSES, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    default_setup(cfg, args)
    if cfg.MODEL.DETR.DETERMINISTIC:
        # cuBLAS needs this workspace setting to be deterministic; harmless on the CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detr_panoptic_d2")
    for message in warnings:
        logger.warning(message)
    return cfg

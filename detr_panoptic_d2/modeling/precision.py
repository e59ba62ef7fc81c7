"""The precision and memory format DetrPanoptic runs its network steps (1-7) in; the losses
and the post-processing always run in float32.

- inference: autocast to MODEL.DETR.TEST.AMP_DTYPE (``inference_autocast``), none by default;
- training on the CPU with SOLVER.AMP.ENABLED: bfloat16 autocast (``training_autocast``; on a
  GPU Detectron2's AMPTrainer autocasts the whole step to float16 instead);
- on the CPU, the transformer and the class and box heads stay float32 under either
  (``float32_on_cpu``);
- MODEL.DETR.CHANNELS_LAST: the backbone and its input in channels-last memory format
  (``channels_last``), which the CPU's fast bfloat16 convolutions need.
"""
import contextlib

import torch

from ..config import AMP_DTYPES


def amp_dtype(name):
    """The autocast dtype of MODEL.DETR.TEST.AMP_DTYPE ``name`` ("none": None); ValueError
    for an unknown name."""
    if name not in AMP_DTYPES:
        raise ValueError(f"amp_dtype (MODEL.DETR.TEST.AMP_DTYPE) must be one of {sorted(AMP_DTYPES)}, got {name!r}")
    return AMP_DTYPES[name]


def inference_autocast(device, dtype):
    """torch.autocast on ``device`` with ``dtype`` (from ``amp_dtype``); a no-op when None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def training_autocast(device, cpu_training_amp):
    """bfloat16 autocast when ``cpu_training_amp`` (SOLVER.AMP.ENABLED) and ``device`` is the
    CPU; a no-op otherwise."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_training_amp and device.type == "cpu")


def float32_on_cpu(x):
    """Context in which the CPU runs float32 even under a bfloat16 autocast, for the
    transformer and the class and box heads when ``x`` (the tensor they read) is on the CPU:
    oneDNN's bfloat16 attention is slower than its float32 one with DETR's narrow heads
    (d / M = 16 or 32), and boxes keep float32 precision for matching and the L1 loss.
    On GPUs, autocast applies as set."""
    return torch.autocast("cpu", enabled=False) if x.device.type == "cpu" else contextlib.nullcontext()


def channels_last(x):
    """The backbone (converted in place) or its B x 3 x H x W input in channels-last memory
    format: the same values up to float rounding."""
    return x.to(memory_format=torch.channels_last)

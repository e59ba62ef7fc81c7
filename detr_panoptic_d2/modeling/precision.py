"""How DetrPanoptic runs its network steps (1-7): ``Precision``, one component for the
precision and memory-format switches; the losses and the post-processing always run in
float32.

- inference: autocast to MODEL.DETR.TEST.AMP_DTYPE, none by default;
- training on the CPU with SOLVER.AMP.ENABLED: bfloat16 autocast (on a GPU Detectron2's
  AMPTrainer autocasts the whole step to float16 instead);
- on the CPU, the transformer and the class and box heads stay float32 under either
  (``float32_on_cpu``);
- MODEL.DETR.CHANNELS_LAST: the backbone and its input in channels-last memory format, which
  the CPU's fast bfloat16 convolutions need;
- MODEL.DETR.TEST.FOLD_BATCHNORM: at inference, the backbone's frozen BatchNorm folded into
  its convolutions (batchnorm_folding.py).
"""
import contextlib

import torch
from detectron2.config import configurable

from ..config import AMP_DTYPES
from .batchnorm_folding import folded_batchnorm


def autocast_dtype(name):
    """The autocast dtype of MODEL.DETR.TEST.AMP_DTYPE ``name`` ("none": None); ValueError
    for an unknown name."""
    if name not in AMP_DTYPES:
        raise ValueError(f"amp_dtype (MODEL.DETR.TEST.AMP_DTYPE) must be one of {sorted(AMP_DTYPES)}, got {name!r}")
    return AMP_DTYPES[name]


def float32_on_cpu(x):
    """Context in which the CPU runs float32 even under a bfloat16 autocast, for the
    transformer and the class and box heads when ``x`` (the tensor they read) is on the CPU:
    oneDNN's bfloat16 attention is slower than its float32 one with DETR's narrow heads
    (d / M = 16 or 32), and boxes keep float32 precision for matching and the L1 loss.
    On GPUs, autocast applies as set."""
    return torch.autocast("cpu", enabled=False) if x.device.type == "cpu" else contextlib.nullcontext()


def channels_last(x):
    """A module (converted in place) or a B x 3 x H x W tensor in channels-last memory format:
    the same values up to float rounding."""
    return x.to(memory_format=torch.channels_last)


class Precision:
    """The precision and memory-format policy of a DetrPanoptic (see the module docstring).
    Its switches change how the model computes, not what: checkpoints are the same."""

    @configurable
    def __init__(self, *, amp_dtype="none", cpu_training_amp=False, channels_last=False, fold_batchnorm=True):
        """
        Args:
            amp_dtype: inference autocast dtype, "none", "bfloat16" or "float16"
                (MODEL.DETR.TEST.AMP_DTYPE).
            cpu_training_amp: on the CPU, train under bfloat16 autocast (SOLVER.AMP.ENABLED).
            channels_last: run the backbone in channels-last memory format
                (MODEL.DETR.CHANNELS_LAST).
            fold_batchnorm: at inference, fold the backbone's frozen BatchNorm into its
                convolutions (MODEL.DETR.TEST.FOLD_BATCHNORM).
        """
        self.inference_dtype = autocast_dtype(amp_dtype)
        self.cpu_training_amp = cpu_training_amp
        self.channels_last = channels_last
        self.fold_batchnorm = fold_batchnorm

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        return {
            "amp_dtype": d.TEST.AMP_DTYPE,
            "cpu_training_amp": cfg.SOLVER.AMP.ENABLED,
            "channels_last": d.CHANNELS_LAST,
            "fold_batchnorm": d.TEST.FOLD_BATCHNORM,
        }

    def autocast(self, device, training):
        """The autocast of a training step (bfloat16 on the CPU with ``cpu_training_amp``) or
        of inference (``amp_dtype``) on ``device``; a no-op when off."""
        if training:
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_training_amp and device.type == "cpu")
        dtype = self.inference_dtype
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def prepare(self, backbone):
        """Converts ``backbone`` in place to the memory format it runs in; returns it."""
        return channels_last(backbone) if self.channels_last else backbone

    def run_backbone(self, backbone, images):
        """Step 1: ``backbone(images)`` in the policy's memory format, with BatchNorm folded at
        inference. images: B x 3 x H x W. Returns the backbone's dict of feature maps."""
        if self.channels_last:
            images = channels_last(images)
        with folded_batchnorm(backbone, self.fold_batchnorm):
            return backbone(images)

"""Mixed precision in the benchmark: ``--amp none|bfloat16|float16``.

Inference uses the model's own switch, MODEL.DETR.TEST.AMP_DTYPE (set by cli). Training runs
the forward pass and losses under torch.autocast, with a GradScaler for float16, as
Detectron2's AMPTrainer does.
"""
import contextlib

import torch

AMP_CHOICES = ("none", "bfloat16", "float16")


def autocast(device, amp):
    """torch.autocast on ``device``'s type with the dtype named by ``amp`` ("none": no-op)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, amp))


def grad_scaler(device, amp):
    """A GradScaler for float16 training, else None."""
    if amp != "float16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)

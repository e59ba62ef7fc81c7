"""Frozen BatchNorm folded into the preceding convolution, for inference.

A convolution followed by a frozen BatchNorm (Detectron2's ``Conv2d`` with a
``FrozenBatchNorm2d`` as its ``norm``) computes ``conv(x, W, c) * s + t`` with per-channel
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - running_mean * s``: one convolution
with weight ``W * s`` and bias ``c * s + t``, which saves a pass over every feature map.

Folding never changes a module's parameters or buffers. ``folded_batchnorm(module)`` is a
context manager: inside it, each foldable convolution of ``module``'s tree runs with folded
tensors computed from its current weights and statistics; on exit the convolutions are as
before. Training, ``state_dict`` and checkpoints therefore only ever see the unfolded form.
The folded tensors are cached on each convolution and recomputed as soon as any tensor they
come from is replaced or written in place (``load_state_dict`` copies in place; PyTorch counts
such writes in every tensor's ``_version``), so weights loaded after a folded forward can never
be mixed with folded tensors of the old ones. Folding applies to inference only: it is skipped
when the module is in training mode or autograd is recording (the folded tensors are constants).
"""
import contextlib

import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

_CACHE = "_folded_batchnorm"  # attribute of a convolution holding (sources key, weight, bias)


def foldable_convolutions(module):
    """The ``nn.Conv2d`` of ``module``'s tree whose ``norm`` attribute is a FrozenBatchNorm2d."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d) and isinstance(getattr(m, "norm", None), FrozenBatchNorm2d)]


def fold(conv):
    """(weight C_out x C_in/g x kh x kw, bias C_out) of one convolution equal to ``conv``
    followed by its frozen ``conv.norm``: torch's ``fuse_conv_bn_weights``."""
    norm = conv.norm
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
    )
    return weight.detach(), bias.detach()


def _sources_key(conv):
    """Identity, storage and in-place write count of every tensor ``fold`` reads."""
    norm = conv.norm
    tensors = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) if t is not None else None for t in tensors) + (norm.eps,)


def _folded_tensors(conv):
    key = _sources_key(conv)
    cached = conv.__dict__.get(_CACHE)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, *fold(conv))
        conv.__dict__[_CACHE] = cached
    return cached[1:]


def _folded_forward(conv, weight, bias):
    def forward(x):
        x = conv._conv_forward(x, weight, bias)
        activation = getattr(conv, "activation", None)
        return activation(x) if activation is not None else x

    return forward


@contextlib.contextmanager
def folded_batchnorm(module, enabled=True):
    """Runs ``module``'s foldable convolutions (see ``foldable_convolutions``) with their frozen
    BatchNorm folded in, until exit. A no-op when ``enabled`` is False, ``module`` is training
    or autograd is recording. Yields ``module``."""
    convs = []
    if enabled and not module.training and not torch.is_grad_enabled():
        convs = foldable_convolutions(module)
    try:
        for conv in convs:
            conv.forward = _folded_forward(conv, *_folded_tensors(conv))
        yield module
    finally:
        for conv in convs:
            conv.__dict__.pop("forward", None)

"""Step 1: what DETR needs from any Detectron2 backbone, and the DC5 dilation convention.

``DetrPanoptic`` takes any ``detectron2.modeling.Backbone`` (``forward(x)`` -> dict of
B x C_k x H/s_k x W/s_k maps, ``output_shape()`` -> name -> ShapeSpec(channels, stride)), in
yaml the one ``MODEL.BACKBONE.NAME`` names. The levels are told apart by their strides:
``levels_fine_to_coarse`` orders them, the transformer reads the coarsest by default and
DETR's mask head adds back the three finest.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import ResNet


def levels_fine_to_coarse(output_shape: Dict[str, ShapeSpec]) -> List[str]:
    """A backbone's output names ordered by stride, finest first; outputs of equal stride (a
    dilated res5 next to res4) keep their order in ``output_shape`` (deeper ones later)."""
    names = list(output_shape)
    return sorted(names, key=lambda name: (output_shape[name].stride, names.index(name)))


def transformer_level(output_shape: Dict[str, ShapeSpec], in_feature=""):
    """The backbone output the transformer reads: ``in_feature`` (MODEL.DETR.IN_FEATURE), or
    the coarsest for "" (largest stride; of equal strides the last in ``output_shape``).
    ValueError naming the outputs when it is not one."""
    level = in_feature or levels_fine_to_coarse(output_shape)[-1]
    if level not in output_shape:
        raise ValueError(
            f"in_feature={in_feature!r} (MODEL.DETR.IN_FEATURE) is not an output of the backbone; its "
            f"outputs and strides: { {name: shape.stride for name, shape in output_shape.items()} }"
        )
    return level


def downsample_mask(mask, size):
    """mask: B x H x W bool (True = padding) -> B x size bool, nearest-neighbour (DETR's
    convention: a cell is padding when the pixel at its top-left-most sample is)."""
    return F.interpolate(mask[None].float(), size=size)[0].to(torch.bool)


def torchvision_dilation(backbone):
    """Makes every dilated res5 of Detectron2 ResNets inside ``backbone`` (the backbone itself,
    or an FPN's bottom-up) match torchvision's: its first block keeps dilation 1.

    Detectron2 dilates every block of res5 when MODEL.RESNETS.RES5_DILATION is 2; torchvision
    (and so DETR's DC5 models) dilates all but the first, which keeps the previous dilation.
    Returns the backbone."""
    for module in backbone.modules():
        if isinstance(module, ResNet) and hasattr(module, "res5"):
            conv = getattr(module.res5[0], "conv2", None)
            if conv is not None and conv.dilation != (1, 1):
                conv.dilation = (1, 1)
                conv.padding = (1, 1)
    return backbone

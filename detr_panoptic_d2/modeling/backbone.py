"""Step 1: the backbone, with what DETR needs on top of any Detectron2 backbone.

``DetrBackbone`` is registered in Detectron2's ``BACKBONE_REGISTRY`` (configs set
``MODEL.BACKBONE.NAME: "DetrBackbone"``). It builds the backbone named by
``MODEL.DETR.BACKBONE`` (Detectron2's ResNet by default) and returns, next to its feature
maps, the padding mask at every stride and the positional encoding of the level the
transformer reads (``MODEL.DETR.IN_FEATURE``, res5 by default).
"""
from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from .position_encoding import build_position_encoding


@dataclass
class DetrFeatures:
    """What the backbone hands to the rest of the model, for a batch of B padded images.

    features: name -> B x C_k x H/s_k x W/s_k feature map (res2..res5 for ResNet).
    masks: name -> B x H/s_k x W/s_k bool padding mask (True = padding) of the same level.
    pos: B x d x h x w positional encoding of ``features[in_feature]``.
    """

    features: Dict[str, torch.Tensor]
    masks: Dict[str, torch.Tensor]
    pos: torch.Tensor


def downsample_mask(mask, size):
    """mask: B x H x W bool -> B x size bool, nearest-neighbour (DETR's convention)."""
    return F.interpolate(mask[None].float(), size=size)[0].to(torch.bool)


def _torchvision_dilation(resnet):
    """Makes a dilated res5 match torchvision's: its first block keeps dilation 1.

    Detectron2 dilates every block of res5 when MODEL.RESNETS.RES5_DILATION is 2; torchvision
    (and so DETR's DC5 models) dilates all but the first, which keeps the previous dilation.
    """
    first = resnet.res5[0]
    conv = getattr(first, "conv2", None)
    if conv is not None and conv.dilation != (1, 1):
        conv.dilation = (1, 1)
        conv.padding = (1, 1)


@BACKBONE_REGISTRY.register()
class DetrBackbone(Backbone):
    """Wraps a registered backbone; adds padding masks and the positional encoding."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        inner_name = cfg.MODEL.DETR.BACKBONE
        if inner_name == "DetrBackbone":
            raise ValueError("MODEL.DETR.BACKBONE names the backbone DetrBackbone wraps; it cannot be DetrBackbone")
        self.body = BACKBONE_REGISTRY.get(inner_name)(cfg, input_shape)
        self.in_feature = cfg.MODEL.DETR.IN_FEATURE
        shapes = self.body.output_shape()
        if self.in_feature not in shapes:
            raise ValueError(
                f"MODEL.DETR.IN_FEATURE={self.in_feature!r} is not an output of backbone "
                f"{inner_name!r} (outputs: {sorted(shapes)}); check MODEL.RESNETS.OUT_FEATURES"
            )
        if cfg.MODEL.DETR.TORCHVISION_DILATION and hasattr(self.body, "res5"):
            _torchvision_dilation(self.body)
        self.position_encoding = build_position_encoding(
            cfg.MODEL.DETR.POSITION_EMBEDDING, cfg.MODEL.DETR.HIDDEN_DIM
        )
        self.channels_last = cfg.MODEL.DETR.CHANNELS_LAST
        if self.channels_last:
            self.body.to(memory_format=torch.channels_last)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return self.body.output_shape()

    @property
    def size_divisibility(self):
        return self.body.size_divisibility

    @property
    def padding_constraints(self):
        return self.body.padding_constraints

    def forward(self, x, padding_mask=None):
        """x: B x 3 x H x W normalized images; padding_mask: B x H x W bool (True = padding),
        None for unpadded images. Returns a DetrFeatures."""
        if padding_mask is None:
            padding_mask = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.bool, device=x.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.body(x)
        masks = {name: downsample_mask(padding_mask, f.shape[-2:]) for name, f in features.items()}
        pos = self.position_encoding(masks[self.in_feature]).to(features[self.in_feature].dtype)
        return DetrFeatures(features, masks, pos)

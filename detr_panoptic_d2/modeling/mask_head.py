"""Step 7: the mask head, turning box embeddings into per-object mask logits at stride 4.

``DETR_MASK_HEAD_REGISTRY`` holds mask heads; ``MODEL.DETR.MASK_HEAD.NAME`` picks one. The
default, ``DetrMaskHead``, is DETR's: the multi-head attention map (step 6) followed by the
FPN-style convolutional head below. Both parts are modules of their own for reuse.

Every head treats each object independently (GroupNorm normalizes per sample), so running it
on a subset of the queries gives exactly those queries' rows of the all-query result.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec
from fvcore.nn.weight_init import c2_xavier_fill
from detectron2.utils.registry import Registry
from torch import nn

from ..checkpoint.renaming import compile_rules, rename
from .attention_map import MultiHeadAttentionMap

DETR_MASK_HEAD_REGISTRY = Registry("DETR_MASK_HEAD")
DETR_MASK_HEAD_REGISTRY.__doc__ = """
Mask heads of DetrPanoptic. A head is built as ``head(cfg, input_shape)`` with the backbone's
``output_shape()`` and is called as ``head(queries, batch_idx, memory, memory_mask,
projected, features)`` (see DetrMaskHead.forward), returning T x H/4 x W/4 mask logits.
"""


def _conv_gn_relu(in_channels, out_channels):
    """3x3 conv + GroupNorm (8 groups, fewer for narrow layers) + ReLU, as one Detectron2
    ``Conv2d`` (parameters ``weight``, ``bias``, ``norm.weight``, ``norm.bias``)."""
    return Conv2d(
        in_channels,
        out_channels,
        3,
        padding=1,
        norm=nn.GroupNorm(min(8, out_channels), out_channels),
        activation=F.relu,
    )


# This project's FPNMaskHead parameter names before they said what they are -> today's.
_LEGACY_NAMES = compile_rules(
    [
        (r"lay1\.0\.(.+)", r"fuse_conv.\1"),
        (r"lay1\.1\.(.+)", r"fuse_conv.norm.\1"),
        (r"lay2\.0\.(.+)", r"narrow_conv.\1"),
        (r"lay2\.1\.(.+)", r"narrow_conv.norm.\1"),
        (r"refines\.(\d)\.0\.(.+)", r"refine_convs.\1.\2"),
        (r"refines\.(\d)\.1\.(.+)", r"refine_convs.\1.norm.\2"),
        (r"adapters\.(.+)", r"skip_projections.\1"),
        (r"out_lay\.(.+)", r"mask_predictor.\1"),
    ]
)


def _rename_legacy_keys(state_dict, prefix, *args):
    """Load-state-dict pre-hook: checkpoints written before the rename (``lay1``, ``lay2``,
    ``adapters``, ``refines``, ``out_lay``) load under today's names."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = rename(key[len(prefix) :], _LEGACY_NAMES)
        if new is not None:
            state_dict[prefix + new] = state_dict.pop(key)


def image_runs(batch_idx):
    """batch_idx: T long -> [(image, start, end)], the runs of equal consecutive values
    (one run per image when objects are grouped by image, as DetrPanoptic passes them)."""
    images, counts = torch.unique_consecutive(batch_idx, return_counts=True)
    ends = counts.cumsum(0).tolist()
    return [(image, end - n, end) for image, n, end in zip(images.tolist(), counts.tolist(), ends)]


def _add_per_object(x, maps, batch_idx, runs):
    """x + maps[batch_idx], for x: T x C x H x W (a fresh tensor, may be overwritten) and
    maps: B x C x H x W per-image features; runs: image_runs(batch_idx), None when B is 1.

    Without autograd, each image's map is added to its run of rows in place, broadcast: the
    same additions without a T-row gathered copy of the map (inference). With one image
    (B = 1, runs None) that is a single broadcast addition, whose graph has no
    data-dependent loop (ONNX export). With autograd the gather stays: its backward (a
    scatter-add into B maps) is cheaper than that of in-place updates of slices."""
    if torch.is_grad_enabled() and (x.requires_grad or maps.requires_grad):
        return maps[batch_idx] + x
    if runs is None:
        return x.add_(maps)
    for image, start, end in runs:
        x[start:end] += maps[image]
    return x


class FPNMaskHead(nn.Module):
    """DETR's FPN-style head: attention maps + projected res5 -> mask logits at the finest level.

    Widths follow DETR: with hidden dim d and M heads, the input has d + M channels, then
    d/2, d/4, d/8, d/16 after each stage. Parts (DETR's names in brackets): ``fuse_conv``
    [lay1, gn1] mixes the attention maps with res5, ``narrow_conv`` [lay2, gn2] narrows to d/2,
    then per skip feature ``skip_projections.i`` [adapter1..3] (1x1) and ``refine_convs.i``
    [lay3..5, gn3..5]; ``mask_predictor`` [out_lay] gives one logit per pixel. Every conv is
    initialized as DETR's (kaiming_uniform with a=1, zero bias: fvcore's ``c2_xavier_fill``).
    """

    def __init__(self, hidden_dim, num_heads, fpn_channels: List[int]):
        """
        Args:
            hidden_dim: d, the channels of the projected res5 and of the box embeddings
                (MODEL.DETR.HIDDEN_DIM); at least 16.
            num_heads: M, the attention maps per object (MODEL.DETR.MASK_HEAD.NHEADS). The
                GroupNorms need d + M and d/2 .. d/16 divisible by 8 (or below 8).
            fpn_channels: the channels of the 3 skip features, coarse to fine (res4, res3,
                res2 for ResNet), read off the backbone.
        """
        super().__init__()
        if len(fpn_channels) != 3:
            raise ValueError(f"FPNMaskHead takes 3 skip features (coarse to fine), got {len(fpn_channels)}")
        in_dim = hidden_dim + num_heads
        widths = [hidden_dim // 2, hidden_dim // 4, hidden_dim // 8, hidden_dim // 16]
        if widths[-1] < 1:
            raise ValueError(f"hidden_dim={hidden_dim} (MODEL.DETR.HIDDEN_DIM) is too small for the mask head (needs >= 16)")
        for width in [in_dim] + widths:
            if width % min(8, width):
                raise ValueError(
                    f"The mask head's GroupNorm needs widths divisible by 8: hidden_dim={hidden_dim} "
                    f"(MODEL.DETR.HIDDEN_DIM) + num_heads={num_heads} (MODEL.DETR.MASK_HEAD.NHEADS) gives "
                    f"{in_dim}, then {widths}; e.g. hidden_dim 64, 128 or 256 with num_heads 8"
                )
        self.fuse_conv = _conv_gn_relu(in_dim, in_dim)
        self.narrow_conv = _conv_gn_relu(in_dim, widths[0])
        self.skip_projections = nn.ModuleList(Conv2d(c, w, 1) for c, w in zip(fpn_channels, widths[:3]))
        self.refine_convs = nn.ModuleList(_conv_gn_relu(w_in, w_out) for w_in, w_out in zip(widths[:3], widths[1:]))
        self.mask_predictor = Conv2d(widths[-1], 1, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                c2_xavier_fill(m)
        self._register_load_state_dict_pre_hook(_rename_legacy_keys)

    def forward(self, attention_maps, batch_idx, projected, skips):
        """attention_maps: T x M x h x w; batch_idx: T long (image of each object);
        projected: B x d x h x w (1x1-projected res5); skips: 3 maps B x C_k x H_k x W_k,
        coarse to fine. Returns T x H_fine x W_fine mask logits."""
        x = torch.cat([projected[batch_idx], attention_maps], dim=1)
        x = self.narrow_conv(self.fuse_conv(x))
        runs = image_runs(batch_idx) if projected.shape[0] > 1 else None
        for project, refine, skip in zip(self.skip_projections, self.refine_convs, skips):
            skip = project(skip)
            x = refine(_add_per_object(F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip, batch_idx, runs))
        return self.mask_predictor(x).squeeze(1)


@DETR_MASK_HEAD_REGISTRY.register()
class DetrMaskHead(nn.Module):
    """Attention map (step 6) + FPN-style head (step 7), DETR's panoptic mask head."""

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        """
        Args:
            cfg: reads MODEL.DETR.HIDDEN_DIM (d), MODEL.DETR.MASK_HEAD.NHEADS (M) and
                MODEL.DETR.MASK_HEAD.IN_FEATURES (the skip features, coarse to fine).
            input_shape: the backbone's ``output_shape()``; it must have every IN_FEATURES
                entry, whose channels and stride size the head.
        """
        super().__init__()
        hidden_dim = cfg.MODEL.DETR.HIDDEN_DIM
        num_heads = cfg.MODEL.DETR.MASK_HEAD.NHEADS
        self.in_features = list(cfg.MODEL.DETR.MASK_HEAD.IN_FEATURES)
        missing = [f for f in self.in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.DETR.MASK_HEAD.IN_FEATURES {missing} are not backbone outputs "
                f"({sorted(input_shape)}); check MODEL.RESNETS.OUT_FEATURES"
            )
        self.attention_map = MultiHeadAttentionMap(hidden_dim, hidden_dim, num_heads)
        self.fpn = FPNMaskHead(hidden_dim, num_heads, [input_shape[f].channels for f in self.in_features])
        self.stride = input_shape[self.in_features[-1]].stride

    def forward(self, queries, batch_idx, memory, memory_mask, projected, features):
        """queries: T x d box embeddings of the objects to segment; batch_idx: T long;
        memory: B x d x h x w encoded images; memory_mask: B x h x w bool;
        projected: B x d x h x w projected res5; features: backbone maps by name.

        Returns T x H/s x W/s mask logits, s = stride of the finest skip feature (4)."""
        maps = self.attention_map(queries, batch_idx, memory, memory_mask)
        return self.fpn(maps, batch_idx, projected, [features[f] for f in self.in_features])


def build_mask_head(cfg, input_shape):
    """Builds the mask head named by MODEL.DETR.MASK_HEAD.NAME."""
    return DETR_MASK_HEAD_REGISTRY.get(cfg.MODEL.DETR.MASK_HEAD.NAME)(cfg, input_shape)

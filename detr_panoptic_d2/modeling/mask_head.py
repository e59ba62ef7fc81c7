"""Step 7: the mask head, turning box embeddings into per-object mask logits at stride 4.

``DETR_MASK_HEAD_REGISTRY`` holds mask heads; ``MODEL.DETR.MASK_HEAD.NAME`` picks one. The
default, ``DetrMaskHead``, is DETR's: the multi-head attention map (step 6) followed by the
FPN-style convolutional head below. Both parts are modules of their own for reuse.

Every head treats each object independently (GroupNorm normalizes per sample), so running it
on a subset of the queries gives exactly those queries' rows of the all-query result.
"""
import functools
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.utils.registry import Registry
from fvcore.nn.weight_init import c2_xavier_fill
from torch import nn

from .attention_map import MultiHeadAttentionMap
from .box_attention_map import BoxAwareAttentionMap
from .backbone import levels_fine_to_coarse

DETR_MASK_HEAD_REGISTRY = Registry("DETR_MASK_HEAD")
DETR_MASK_HEAD_REGISTRY.__doc__ = """
Mask heads of DetrPanoptic (steps 6-7), picked by ``MODEL.DETR.MASK_HEAD.NAME``.

**Built** as ``head(cfg, input_shape)``: ``input_shape`` is the backbone's ``output_shape()``
(name -> ShapeSpec(channels, stride)).

**Called** as ``head(queries, batch_idx, memory, memory_mask, projected, features,
boxes=None, pos=None)`` for T objects of a batch of B images padded to H x W (d:
MODEL.DETR.HIDDEN_DIM; h x w: the grid of the level the transformer reads, H/S x W/S for its
stride S):

- queries: T x d box embeddings (last decoder layer) of the objects to segment;
- batch_idx: T long, the image of each object, non-decreasing (objects grouped by image);
- memory: B x d x h x w, the encoded images; memory_mask: B x h x w bool (True = padding);
- projected: B x d x h x w, the transformer's input (the 1x1-projected backbone level);
- features: name -> B x C_k x H/s_k x W/s_k, every backbone output;
- boxes: T x 4, the objects' final boxes (cx, cy, w, h in [0, 1] of the padded image), and
  pos: B x d x h x w, the positional encoding of the grid, for heads that locate the objects
  by their boxes (anchor-box decoders, whose box embeddings encode offsets from their anchors);
  a head that needs them raises ValueError when they are None, the others ignore them.

In training it runs on the matched queries, under autograd (its logits are upsampled
bilinearly to H x W for the mask losses); in inference on the queries whose masks an output
uses. It may thus be called on any subset of the objects, and must then give those objects'
rows of the all-object result (each object on its own: no batch statistics across objects).

**Returns** ``(mask_logits, attention_maps)``: mask_logits T x H/s x W/s (the grid of a
stride-s feature map of the padded batch, cell (i, j) covering pixels from (s*i, s*j));
attention_maps T x M x h x w, what the head segmented from (M maps per object), or None
when it has none. The meta-architecture returns them in ``DetrPanoptic.inference_steps``.

**Attributes** the meta-architecture reads: ``stride`` (int, s above: input pixels per mask
cell; inference crops each image's logits to its ceil(height/s) x ceil(width/s) cells).
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

    def _fuse_per_image(self, attention_maps, batch_idx, projected, runs):
        """``fuse_conv`` of each object's input, the concatenation of its image's projected
        res5 (d channels) and its M attention maps, computed as the sum of two convolutions:
        the weights' first d input channels over each image's projected res5, once per image,
        plus the other M over each object's maps. Convolution being linear (zero padding
        included), that is DETR's convolution of the concatenation up to float rounding, and
        it spares convolving the same d channels once per object: that part is d/(d+M) of the
        layer (97% for d=256, M=8), the largest convolution of the head.
        Returns T x (d+M) x h x w, after GroupNorm and ReLU."""
        conv, d = self.fuse_conv, projected.shape[1]
        per_image = F.conv2d(projected, conv.weight[:, :d], padding=conv.padding)
        x = F.conv2d(attention_maps, conv.weight[:, d:], conv.bias, padding=conv.padding)
        return conv.activation(conv.norm(_add_per_object(x, per_image, batch_idx, runs)))

    def forward(self, attention_maps, batch_idx, projected, skips):
        """attention_maps: T x M x h x w; batch_idx: T long (image of each object);
        projected: B x d x h x w (1x1-projected res5); skips: 3 maps B x C_k x H_k x W_k,
        coarse to fine. Returns T x H_fine x W_fine mask logits."""
        runs = image_runs(batch_idx) if projected.shape[0] > 1 else None
        x = self.narrow_conv(self._fuse_per_image(attention_maps, batch_idx, projected, runs))
        for project, refine, skip in zip(self.skip_projections, self.refine_convs, skips):
            skip = project(skip)
            x = refine(_add_per_object(F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip, batch_idx, runs))
        return self.mask_predictor(x).squeeze(1)


@DETR_MASK_HEAD_REGISTRY.register()
class DetrMaskHead(nn.Module):
    """Attention map (step 6) + FPN-style head (step 7), DETR's panoptic mask head."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, hidden_dim, num_heads, in_features=(), box_aware=False):
        """
        Args:
            input_shape: the backbone's ``output_shape()``.
            hidden_dim: d, the transformer width (MODEL.DETR.HIDDEN_DIM).
            num_heads: M, heads of the attention map (MODEL.DETR.MASK_HEAD.NHEADS).
            in_features: the 3 backbone outputs the FPN-style head adds back, coarse to fine
                (MODEL.DETR.MASK_HEAD.IN_FEATURES); empty: the 3 finest outputs (res4, res3,
                res2 of a ResNet; p4, p3, p2 of an FPN or a SimpleFeaturePyramid). The mask
                logits have the stride of the last one.
            box_aware: the attention map also reads each object's box and the grid's positional
                encoding (``BoxAwareAttentionMap``), for anchor-box decoders
                (MODEL.DETR.MASK_HEAD.BOX_AWARE); False: DETR's ``MultiHeadAttentionMap``.
        """
        super().__init__()
        levels = levels_fine_to_coarse(input_shape)
        self.in_features = list(in_features) or levels[:3][::-1]
        strides = {name: input_shape[name].stride for name in levels}
        missing = [f for f in self.in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"in_features (MODEL.DETR.MASK_HEAD.IN_FEATURES) {missing} are not backbone outputs "
                f"(outputs and strides: {strides})"
            )
        if len(self.in_features) != 3:
            raise ValueError(
                f"DetrMaskHead adds back 3 backbone outputs, coarse to fine; got {self.in_features} (backbone "
                f"outputs and strides: {strides}): set in_features (MODEL.DETR.MASK_HEAD.IN_FEATURES) to 3 of "
                "them, or have the backbone output more levels (e.g. MODEL.RESNETS.OUT_FEATURES)"
            )
        self.box_aware = box_aware
        map_cls = BoxAwareAttentionMap if box_aware else MultiHeadAttentionMap
        self.attention_map = map_cls(hidden_dim, hidden_dim, num_heads)
        self.fpn = FPNMaskHead(
            hidden_dim, num_heads, [input_shape[f].channels for f in self.in_features]
        )
        self.stride = input_shape[self.in_features[-1]].stride

    @classmethod
    def builder(cls, **kwargs):
        """A function ``input_shape -> DetrMaskHead(input_shape, **kwargs)`` (keyword arguments
        as ``__init__``'s). ``DetrPanoptic`` calls it with its backbone's ``output_shape()``:
        LazyConfigs give ``mask_head=L(DetrMaskHead.builder)(hidden_dim=..., num_heads=...)``, so
        the head's input widths follow whatever backbone ``model.backbone`` is."""
        return functools.partial(cls, **kwargs)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {
            "input_shape": input_shape,
            "hidden_dim": cfg.MODEL.DETR.HIDDEN_DIM,
            "num_heads": cfg.MODEL.DETR.MASK_HEAD.NHEADS,
            "in_features": cfg.MODEL.DETR.MASK_HEAD.IN_FEATURES,
            "box_aware": cfg.MODEL.DETR.MASK_HEAD.BOX_AWARE,
        }

    def forward(self, queries, batch_idx, memory, memory_mask, projected, features, boxes=None, pos=None):
        """queries: T x d box embeddings of the objects to segment; batch_idx: T long;
        memory: B x d x h x w encoded images; memory_mask: B x h x w bool;
        projected: B x d x h x w, the transformer's input; features: backbone maps by name;
        boxes: T x 4 the objects' boxes and pos: B x d x h x w the grid's positional encoding,
        needed with ``box_aware``, ignored without.

        Returns (T x H/s x W/s mask logits, s = stride of the finest in_feature, 4 for a
        ResNet; T x M x h x w attention maps)."""
        if not self.box_aware:
            maps = self.attention_map(queries, batch_idx, memory, memory_mask)
        elif boxes is None or pos is None:
            raise ValueError(
                "DetrMaskHead with box_aware (MODEL.DETR.MASK_HEAD.BOX_AWARE) needs the objects' boxes (T x 4) and the "
                "grid's positional encoding pos (B x d x h x w); got "
                f"boxes={None if boxes is None else tuple(boxes.shape)}, pos={None if pos is None else tuple(pos.shape)}"
            )
        else:
            maps = self.attention_map(queries, boxes, batch_idx, memory, pos, memory_mask)
        return self.fpn(maps, batch_idx, projected, [features[f] for f in self.in_features]), maps


def build_mask_head(cfg, input_shape):
    """Builds the mask head named by MODEL.DETR.MASK_HEAD.NAME."""
    return DETR_MASK_HEAD_REGISTRY.get(cfg.MODEL.DETR.MASK_HEAD.NAME)(cfg, input_shape)

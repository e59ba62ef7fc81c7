"""Steps 3-4 with anchor-box queries (DAB-DETR, Liu et al., ICLR 2022): the decoder's queries
are boxes (cx, cy, w, h in (0, 1)) that every layer refines.

At each layer, a query's positional embedding is an MLP of the sine code of its current
anchor (``ref_point_head``); its cross-attention is conditional (modeling/
conditional_attention.py) with the spatial query = the sine code of the anchor's centre,
scaled by an MLP of the content (``query_scale``) and, with ``modulate_hw``, its x half by
w_ref / w and its y half by h_ref / h (w_ref, h_ref = sigmoid of an MLP of the content,
``ref_anchor_head``), so that the attention around the centre widens with the box. The
model's box head, shared by all layers, reads the layer's normalized output and predicts an
offset in inverse-sigmoid space: refined box = sigmoid(offset + inverse_sigmoid(anchor)). The
next layer reads the refined box detached, as its anchor. With ``look_forward_twice``
(DINO) a layer's refined box adds its offset to the previous layer's refined box before the
detach, so its loss also trains the previous layer (same forward values).

The anchor arithmetic (inverse sigmoid, sine codes, w / h ratios, refinement) runs in float32
whatever autocast is on: boxes near 0 or 1 and tiny anchors stay finite for the matcher.
"""
import torch
from torch import nn

from .conditional_attention import ConditionalCrossAttention
from .denoising import box_sine_code
from .prediction_heads import MLP
from .transformer import TransformerDecoderLayer

EPS = 1e-5


def _float32(x):
    """Context in which ``x``'s device computes in float32 under any autocast."""
    return torch.autocast(x.device.type, enabled=False)


def inverse_sigmoid(x, eps=EPS):
    """log(x / (1 - x)) in float32, x clamped to [eps, 1 - eps]: finite for x in [0, 1]."""
    with _float32(x):
        x = x.float().clamp(0, 1)
        return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def refine(offset, reference):
    """offset: ... x 4 predicted in inverse-sigmoid space; reference: ... x 4 boxes in [0, 1].
    Returns sigmoid(offset + inverse_sigmoid(reference)), float32."""
    with _float32(offset):
        return (offset.float() + inverse_sigmoid(reference)).sigmoid()


def anchor_sine_codes(anchors, d_model):
    """anchors: ... x 4 (cx, cy, w, h). Returns float32 (code ... x 2d, the sine codes of cx,
    cy, w, h, d / 2 channels each; centre ... x d, those of cy then cx: the layout of
    PositionEmbeddingSine's pixel codes, whose frequencies they share)."""
    with _float32(anchors):
        code = box_sine_code(anchors.float(), 2 * d_model)
        per = code.unflatten(-1, (4, d_model // 2))
        return code, torch.cat([per[..., 1, :], per[..., 0, :]], -1)


class AnchorDecoderLayer(TransformerDecoderLayer):
    """TransformerDecoderLayer whose cross-attention is conditional (ConditionalCrossAttention).

    Args:
        d_model, nhead, dim_feedforward, dropout, pre_norm: as TransformerDecoderLayer.
        first: the decoder's first layer (see ConditionalCrossAttention).
    """

    def __init__(self, d_model, nhead, dim_feedforward, dropout, pre_norm, first=False):
        super().__init__(d_model, nhead, dim_feedforward, dropout, pre_norm)
        self.cross_attn = ConditionalCrossAttention(d_model, nhead, dropout, first)

    def forward(self, tgt, query_pos, spatial, memory, pos, memory_padding_mask, self_attn_mask=None):
        """tgt, query_pos, spatial: B x Q x d (content, positional embedding, spatial query);
        memory, pos: B x hw x d; memory_padding_mask: B x hw; self_attn_mask: Q x Q bool, True
        where query i may not attend to query j (None: all attend to all). Returns B x Q x d."""

        def self_attend(x):
            return self.self_attn(x + query_pos, x + query_pos, x, attn_mask=self_attn_mask, need_weights=False)[0]

        def cross_attend(x):
            return self.cross_attn(x, spatial, memory, pos, memory_padding_mask, query_pos)

        tgt = self.residual(tgt, self_attend, self.norm1, self.dropout1)
        tgt = self.residual(tgt, cross_attend, self.norm2, self.dropout2)
        return self.residual(tgt, self.ffn, self.norm3, self.dropout3)


class AnchorBoxDecoder(nn.Module):
    """Stack of AnchorDecoderLayers refining anchor boxes (see the module docstring).

    Args:
        d_model: d, the width (a multiple of 4 and of nhead).
        nhead: attention heads.
        num_layers: L decoder layers.
        dim_feedforward, dropout, pre_norm: as TransformerDecoderLayer.
        look_forward_twice: a layer's refined box builds on the previous layer's refined box
            before its detach (DINO), so its gradient reaches the previous layer.
        modulate_hw: scale the spatial query's x and y halves by w_ref / w and h_ref / h
            (DAB-DETR's width/height-modulated attention).
    """

    def __init__(
        self, d_model, nhead, num_layers, dim_feedforward, dropout, pre_norm, look_forward_twice=False, modulate_hw=True
    ):
        super().__init__()
        if d_model % 4:
            raise ValueError(f"the anchor-box decoder needs d_model (MODEL.DETR.HIDDEN_DIM) divisible by 4, got {d_model}")
        self.d_model, self.look_forward_twice = d_model, look_forward_twice
        self.layers = nn.ModuleList(
            AnchorDecoderLayer(d_model, nhead, dim_feedforward, dropout, pre_norm, first=i == 0) for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        # The first layer's spatial query is unscaled (its content is still empty).
        self.query_scale = MLP(d_model, d_model, d_model, 2) if num_layers > 1 else None
        self.ref_anchor_head = MLP(d_model, d_model, 2, 2) if modulate_hw else None

    def spatial_query(self, tgt, anchor, centre, first):
        """The spatial query (B x Q x d, float32) of content ``tgt`` at ``anchor`` (B x Q x 4)
        with centre code ``centre`` (B x Q x d, from ``anchor_sine_codes``)."""
        scale = None if first else self.query_scale(tgt)
        wh_ref = None if self.ref_anchor_head is None else self.ref_anchor_head(tgt).sigmoid()
        with _float32(anchor):
            spatial = centre if scale is None else centre * scale.float()
            if wh_ref is not None:
                ratio = wh_ref.float() / anchor[..., 2:].float().clamp(min=EPS)  # (w, h) ratios
                spatial = spatial * ratio.flip(-1).repeat_interleave(self.d_model // 2, -1)  # y half by h, x by w
        return spatial

    def forward(self, anchors, memory, pos, memory_padding_mask, box_head, self_attn_mask=None, tgt=None):
        """anchors: B x Q x 4 initial anchors (cx, cy, w, h in (0, 1)); memory, pos: B x hw x d;
        memory_padding_mask: B x hw bool; box_head: module d -> 4, the offset in
        inverse-sigmoid space (the model's ``bbox_embed``), shared by all layers;
        self_attn_mask: Q x Q bool, True where query i may not attend to query j; tgt: B x Q x d
        initial content (None: zeros).

        Returns (box_embeddings L x B x Q x d, each layer's normalized output; boxes
        L x B x Q x 4 float32, each layer's refined boxes in (0, 1); anchors L x B x Q x 4, the
        anchor each layer read)."""
        if tgt is None:
            tgt = memory.new_zeros(*anchors.shape[:2], self.d_model)
        anchor = previous = anchors.float()
        outputs, boxes, read = [], [], []
        for i, layer in enumerate(self.layers):
            code, centre = anchor_sine_codes(anchor, self.d_model)
            spatial = self.spatial_query(tgt, anchor, centre, i == 0)
            tgt = layer(tgt, self.ref_point_head(code), spatial, memory, pos, memory_padding_mask, self_attn_mask)
            outputs.append(self.norm(tgt))
            box = refine(box_head(outputs[-1]), previous if self.look_forward_twice else anchor)
            boxes.append(box)
            read.append(anchor)
            anchor, previous = box.detach(), box
        return torch.stack(outputs), torch.stack(boxes), torch.stack(read)

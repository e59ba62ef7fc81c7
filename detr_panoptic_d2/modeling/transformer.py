"""Steps 3 and 4: the transformer encoder (-> encoded image) and decoder (-> box embeddings).

Tensors are batch-first: an image's d x h x w grid is a sequence of h*w tokens of width d.
Layers are post-norm as in the paper (LayerNorm after each residual sum) or, with
``pre_norm``, LayerNorm before each sub-layer.
"""
import copy

import torch
from torch import nn


class FeedForward(nn.Module):
    """Linear(d, d_ff) -> ReLU -> dropout -> Linear(d_ff, d)."""

    def __init__(self, d_model, dim_feedforward, dropout):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

    def forward(self, x):
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class _ResidualLayer(nn.Module):
    """Base of both layer kinds: applies a sub-layer with residual, dropout and LayerNorm."""

    def __init__(self, pre_norm):
        super().__init__()
        self.pre_norm = pre_norm

    def residual(self, x, sublayer, norm, dropout):
        """x + dropout(sublayer(...)), normalized after (post-norm) or before (pre-norm)."""
        if self.pre_norm:
            return x + dropout(sublayer(norm(x)))
        return norm(x + dropout(sublayer(x)))


class TransformerEncoderLayer(_ResidualLayer):
    """Self-attention over the image tokens, then a feed-forward block."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout, pre_norm):
        super().__init__(pre_norm)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src, pos, padding_mask):
        """src, pos: B x hw x d; padding_mask: B x hw bool. Returns B x hw x d."""

        def attend(x):
            return self.self_attn(x + pos, x + pos, x, key_padding_mask=padding_mask, need_weights=False)[0]

        src = self.residual(src, attend, self.norm1, self.dropout1)
        return self.residual(src, self.ffn, self.norm2, self.dropout2)


class TransformerDecoderLayer(_ResidualLayer):
    """Self-attention among queries, cross-attention to the encoded image, feed-forward."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout, pre_norm):
        super().__init__(pre_norm)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt, query_pos, memory, pos, memory_padding_mask, self_attn_mask=None):
        """tgt, query_pos: B x N x d; memory, pos: B x hw x d; memory_padding_mask: B x hw;
        self_attn_mask: N x N bool, True where query i may not attend to query j (None: all
        attend to all). Returns B x N x d."""

        def self_attend(x):
            return self.self_attn(x + query_pos, x + query_pos, x, attn_mask=self_attn_mask, need_weights=False)[0]

        def cross_attend(x):
            return self.cross_attn(
                x + query_pos, memory + pos, memory, key_padding_mask=memory_padding_mask, need_weights=False
            )[0]

        tgt = self.residual(tgt, self_attend, self.norm1, self.dropout1)
        tgt = self.residual(tgt, cross_attend, self.norm2, self.dropout2)
        return self.residual(tgt, self.ffn, self.norm3, self.dropout3)


class TransformerEncoder(nn.Module):
    """Stack of encoder layers. Its output is the **encoded image** (memory)."""

    def __init__(self, layer, num_layers, pre_norm):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(layer.norm1.normalized_shape) if pre_norm else nn.Identity()

    def forward(self, src, pos, padding_mask):
        """src, pos: B x hw x d; padding_mask: B x hw. Returns the memory, B x hw x d."""
        for layer in self.layers:
            src = layer(src, pos, padding_mask)
        return self.norm(src)


class TransformerDecoder(nn.Module):
    """Stack of decoder layers; returns every layer's (normalized) output for aux losses."""

    def __init__(self, layer, num_layers):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(layer.norm1.normalized_shape)

    def forward(self, query_pos, memory, pos, memory_padding_mask, self_attn_mask=None, tgt=None):
        """query_pos: B x N x d (the learned object queries); memory, pos: B x hw x d;
        self_attn_mask: see TransformerDecoderLayer; tgt: B x N x d initial content of the
        queries (None: zeros, DETR's).
        Returns the **box embeddings** of every layer, L x B x N x d."""
        if tgt is None:
            tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, pos, memory_padding_mask, self_attn_mask)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


def group_attention_mask(num_queries, groups, device=None, denoising_groups=0, denoising_size=0):
    """Self-attention mask of the decoder's queries, True where query i may not attend to
    query j; None when nothing is masked.

    The ``num_queries`` matching queries form ``groups`` consecutive groups of equal size,
    masked from each other. With ``denoising_groups`` D > 0, D groups of ``denoising_size``
    denoising queries follow (modeling/denoising.py): the matching queries never attend to
    them, and the denoising groups not to each other (each sees its own group and the matching
    queries). Returns (num_queries + D x denoising_size) x the same, bool."""
    if groups == 1 and not denoising_groups:
        return None
    if num_queries % groups:
        raise ValueError(f"{num_queries} queries cannot be split into {groups} groups of equal size")
    group = torch.arange(num_queries, device=device) // (num_queries // groups)
    if denoising_groups:
        denoising = groups + torch.arange(denoising_groups * denoising_size, device=device) // denoising_size
        group = torch.cat([group, denoising])
    mask = group[:, None] != group[None, :]
    mask[num_queries:, :num_queries] = False
    return mask


class Transformer(nn.Module):
    """Encoder + decoder over a projected feature map, as in DETR: N learned object queries of
    width d (``query_dim``), content starting at zero."""

    def __init__(
        self,
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        pre_norm=False,
    ):
        super().__init__()
        enc_layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, pre_norm)
        dec_layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, pre_norm)
        self.encoder = TransformerEncoder(enc_layer, num_encoder_layers, pre_norm)
        self.decoder = TransformerDecoder(dec_layer, num_decoder_layers)
        self.d_model = self.query_dim = d_model
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def init_queries(self, box_head, *embeddings):
        """The box head and the object queries (nn.Embedding(N, d) each) keep their own
        initialization."""

    def forward(self, src, padding_mask, query_embed, pos, box_head, query_groups=1, denoising=None):
        """src: B x d x h x w projected features; padding_mask: B x h x w bool;
        query_embed: N x d object queries; pos: B x d x h x w positional encoding; box_head:
        the model's box head, unused here (the anchor-box decoder refines boxes with it; this
        decoder's boxes are the box head's reading of its outputs, step 5).
        query_groups: G > 1 splits the N queries into G consecutive groups of N / G whose
        decoder self-attention is confined to their own group (Group DETR), so that each group
        is an independent DETR decoding the same encoded image.
        denoising: None, or (position B x Q x d, content B x Q x d, D) of Q = D x M denoising
        queries in D groups (modeling/denoising.py), decoded after the N queries behind
        ``group_attention_mask``.

        Returns (box_embeddings L x B x (N [+ Q]) x d, None (no boxes of its own), memory
        B x d x h x w).
        """
        b, d, h, w = src.shape
        src = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        mask = padding_mask.flatten(1)
        query_pos = query_embed[None].expand(b, -1, -1)
        memory = self.encoder(src, pos, mask)
        if denoising is None:
            attn_mask = group_attention_mask(len(query_embed), query_groups, src.device)
            box_embeddings = self.decoder(query_pos, memory, pos, mask, attn_mask)
        else:
            position, content, groups = denoising
            attn_mask = group_attention_mask(
                len(query_embed), query_groups, src.device, groups, position.shape[1] // groups
            )
            tgt = torch.cat([torch.zeros_like(query_pos), content], 1)
            box_embeddings = self.decoder(torch.cat([query_pos, position], 1), memory, pos, mask, attn_mask, tgt)
        return box_embeddings, None, memory.transpose(1, 2).reshape(b, d, h, w)


# Values of MODEL.DETR.DECODER.
DECODERS = ("vanilla", "anchor")


def build_transformer(cfg):
    """The encoder-decoder of a yacs config: MODEL.DETR.DECODER "vanilla" (``Transformer``,
    DETR's) or "anchor" (``AnchorTransformer``, anchor-box queries), of the MODEL.DETR sizes."""
    d = cfg.MODEL.DETR
    sizes = dict(
        d_model=d.HIDDEN_DIM,
        nhead=d.NHEADS,
        num_encoder_layers=d.ENC_LAYERS,
        num_decoder_layers=d.DEC_LAYERS,
        dim_feedforward=d.DIM_FEEDFORWARD,
        dropout=d.DROPOUT,
        pre_norm=d.PRE_NORM,
    )
    if d.DECODER not in DECODERS:
        raise ValueError(f"MODEL.DETR.DECODER must be one of {DECODERS}, got {d.DECODER!r}")
    if d.DECODER == "vanilla":
        return Transformer(**sizes)
    from .anchor_transformer import AnchorTransformer  # it builds on this module's layers

    a = d.ANCHOR
    return AnchorTransformer(
        **sizes, look_forward_twice=a.LOOK_FORWARD_TWICE, modulate_hw=a.MODULATE_HW, random_xy=a.RANDOM_XY
    )

"""Steps 3-4 with anchor-box queries: DETR's encoder and the anchor-box decoder
(modeling/anchor_decoder.py), a drop-in for ``Transformer`` whose object queries are
N x 4 anchors in inverse-sigmoid space (``query_dim`` 4) and which also returns each layer's
boxes (the box head runs inside the decoder)."""
import torch
from torch import nn

from .anchor_decoder import AnchorBoxDecoder, inverse_sigmoid
from .transformer import TransformerEncoder, TransformerEncoderLayer, group_attention_mask


@torch.no_grad()
def init_anchor_queries(embedding, random_xy=False):
    """Initializes ``embedding`` (nn.Embedding(N, 4), row i = anchor i's cx, cy, w, h in
    inverse-sigmoid space) as DAB-DETR: every entry from a standard normal (anchors = its
    sigmoid, around 0.5). random_xy: the centres instead uniform in (0, 1) and frozen (their
    gradient is zeroed by a hook, the embedding staying one N x 4 parameter, so checkpoints
    keep its layout; AdamW's decoupled weight decay still scales them by 1 - lr x decay per
    step); widths and heights learn."""
    if embedding.embedding_dim != 4:
        raise ValueError(f"anchor queries are nn.Embedding(N, 4), got embedding_dim {embedding.embedding_dim}")
    nn.init.normal_(embedding.weight)
    if random_xy:
        embedding.weight[:, :2] = inverse_sigmoid(torch.rand_like(embedding.weight[:, :2]))
        embedding.weight.register_hook(_without_xy)


def _without_xy(grad):
    """The gradient of N x 4 anchor queries with its x, y columns zeroed."""
    grad = grad.clone()
    grad[:, :2] = 0
    return grad


class AnchorTransformer(nn.Module):
    """Encoder + anchor-box decoder over a projected feature map (DAB-DETR's single-scale form).

    Args:
        d_model: d, the width (MODEL.DETR.HIDDEN_DIM; a multiple of 4 and of nhead).
        nhead: attention heads (MODEL.DETR.NHEADS).
        num_encoder_layers, num_decoder_layers: layers (MODEL.DETR.ENC_LAYERS, DEC_LAYERS).
        dim_feedforward: the feed-forward width (MODEL.DETR.DIM_FEEDFORWARD).
        dropout: dropout in every layer (MODEL.DETR.DROPOUT).
        pre_norm: pre-norm layers (MODEL.DETR.PRE_NORM).
        look_forward_twice, modulate_hw: see AnchorBoxDecoder (MODEL.DETR.ANCHOR.LOOK_FORWARD_TWICE,
            MODULATE_HW).
        random_xy: the anchors' centres uniform in (0, 1) and frozen (``init_anchor_queries``;
            MODEL.DETR.ANCHOR.RANDOM_XY).
    """

    query_dim = 4

    def __init__(
        self,
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        pre_norm=False,
        look_forward_twice=False,
        modulate_hw=True,
        random_xy=False,
    ):
        super().__init__()
        enc_layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, pre_norm)
        self.encoder = TransformerEncoder(enc_layer, num_encoder_layers, pre_norm)
        self.decoder = AnchorBoxDecoder(
            d_model, nhead, num_decoder_layers, dim_feedforward, dropout, pre_norm, look_forward_twice, modulate_hw
        )
        self.d_model = d_model
        self.random_xy = random_xy
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @torch.no_grad()
    def init_queries(self, box_head, *embeddings):
        """Initializes as DAB-DETR the model's box head (its last layer zero, so that every
        layer starts from its anchor) and the anchor queries (nn.Embedding(N, 4) each,
        ``init_anchor_queries``)."""
        nn.init.zeros_(box_head.layers[-1].weight)
        nn.init.zeros_(box_head.layers[-1].bias)
        for embedding in embeddings:
            init_anchor_queries(embedding, self.random_xy)

    def forward(self, src, padding_mask, query_embed, pos, box_head, query_groups=1, denoising=None):
        """src: B x d x h x w projected features; padding_mask: B x h x w bool; query_embed:
        N x 4 anchor queries in inverse-sigmoid space; pos: B x d x h x w positional encoding;
        box_head: module d -> 4 (the model's ``bbox_embed``), each layer's box offset.
        query_groups: G, as ``Transformer``'s (Group DETR, ``group_attention_mask``).
        denoising: None, or (anchors B x Q x 4 in (0, 1), content B x Q x d, D) of Q = D x S
        denoising queries in D groups (``DenoisingQueries`` with ``anchors``), decoded after
        the N queries behind ``group_attention_mask``.

        Returns (box_embeddings L x B x (N [+ Q]) x d, boxes L x B x (N [+ Q]) x 4 float32 in
        (0, 1), memory B x d x h x w)."""
        if query_embed.dim() != 2 or query_embed.shape[1] != self.query_dim:
            raise ValueError(
                f"query_embed must be N x 4 anchors in inverse-sigmoid space (nn.Embedding(N, transformer.query_dim)), "
                f"got {tuple(query_embed.shape)}"
            )
        b, d, h, w = src.shape
        src = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        mask = padding_mask.flatten(1)
        memory = self.encoder(src, pos, mask)
        n = len(query_embed)
        anchors = query_embed.float().sigmoid()[None].expand(b, -1, -1)
        tgt = None
        if denoising is None:
            attn_mask = group_attention_mask(n, query_groups, src.device)
        else:
            dn_anchors, content, groups = denoising
            attn_mask = group_attention_mask(n, query_groups, src.device, groups, dn_anchors.shape[1] // groups)
            anchors = torch.cat([anchors, dn_anchors.float()], 1)
            tgt = torch.cat([content.new_zeros(b, n, d), content], 1)
        box_embeddings, boxes, _ = self.decoder(anchors, memory, pos, mask, box_head, attn_mask, tgt)
        return box_embeddings, boxes, memory.transpose(1, 2).reshape(b, d, h, w)

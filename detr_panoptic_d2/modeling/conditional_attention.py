"""Conditional cross-attention (Conditional DETR, Meng et al., ICCV 2021): each head's query is
the concatenation [content query, spatial query] and each key [content key, pixel position],
so that the content and the spatial parts of the attention logit are two separate dot
products, content . content + spatial . position. The anchor-box decoder
(modeling/anchor_decoder.py) uses it with the spatial query built from each query's anchor.
"""
import torch
import torch.nn.functional as F
from torch import nn


class ConditionalCrossAttention(nn.Module):
    """Multi-head cross-attention of queries to the encoded image, content and spatial parts
    concatenated per head (see the module docstring).

    Args:
        d_model: d, the width of queries, memory and positions.
        nhead: M heads; each sees d / M content and d / M spatial channels (a query . key
            of 2d / M channels, scaled by (2d / M) ** -0.5).
        dropout: dropout on the attention weights.
        first: the decoder's first layer, where the content query also carries the query's
            positional embedding and the content key the pixel position (Conditional DETR:
            the first layer's content is still empty). Only then the parameters
            ``q_position`` exist, so that every parameter gets a gradient.
    """

    def __init__(self, d_model, nhead, dropout, first=False):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model {d_model} (MODEL.DETR.HIDDEN_DIM) is not divisible by {nhead} heads (MODEL.DETR.NHEADS)")
        self.nhead, self.dropout = nhead, dropout
        self.q_content = nn.Linear(d_model, d_model)
        self.q_spatial = nn.Linear(d_model, d_model)
        self.q_position = nn.Linear(d_model, d_model) if first else None
        self.k_content = nn.Linear(d_model, d_model)
        self.k_position = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x):
        """B x S x d -> B x M x S x d / M."""
        return x.unflatten(-1, (self.nhead, -1)).transpose(1, 2)

    def forward(self, tgt, spatial, memory, pos, padding_mask, query_pos=None):
        """tgt: B x Q x d content of the queries; spatial: B x Q x d their spatial query (before
        its projection); memory, pos: B x hw x d; padding_mask: B x hw bool (True = padding);
        query_pos: B x Q x d, the queries' positional embedding, read by the first layer
        only (None elsewhere). Returns B x Q x d."""
        q_content, k_content, k_position = self.q_content(tgt), self.k_content(memory), self.k_position(pos)
        if self.q_position is not None:
            q_content = q_content + self.q_position(query_pos)
            k_content = k_content + k_position
        q = torch.cat([self._heads(q_content), self._heads(self.q_spatial(spatial))], -1)
        k = torch.cat([self._heads(k_content), self._heads(k_position)], -1)
        out = F.scaled_dot_product_attention(
            q,
            k,
            self._heads(self.value(memory)),
            attn_mask=~padding_mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))

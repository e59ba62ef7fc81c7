"""Step 6 for anchor-box queries: an attention map that knows where each query's box is.

DETR's map (attention_map.py) uses no position: a vanilla decoder's box embedding predicts an
absolute box, so it carries the position itself. An anchor-box decoder's output encodes an
offset from its anchor, the absolute position living in the box; two queries with the same
content on two identical objects would get the same map. Here, as in the decoder's
conditional cross-attention, each head's query is [W_c q, W_p sine(box centre)] and each key
[W_c' memory, W_p' pixel position], so a map's logit is a content term plus a spatial term
that peaks where the pixel's position code matches the box centre's (the centre's sine code
shares the pixel encoding's layout and frequencies, modeling/anchor_decoder.py).
"""
import torch
from torch import nn

from .anchor_decoder import anchor_sine_codes
from .attention_map import MultiHeadAttentionMap


class BoxAwareAttentionMap(MultiHeadAttentionMap):
    """Attention scores of T queries at their boxes over their images' encoded grids.

    Args:
        query_dim: d, the width of the queries, the memory and the positional encoding (a
            multiple of 4).
        hidden_dim: the width of the content and of the spatial projections (each head sees
            hidden_dim / M content and hidden_dim / M spatial channels).
        num_heads: M.
        dropout: dropout on the maps.
    """

    def __init__(self, query_dim, hidden_dim, num_heads, dropout=0.0):
        super().__init__(query_dim, hidden_dim, num_heads, dropout)
        if query_dim % 4:
            raise ValueError(f"the box-aware attention map needs a width divisible by 4 (MODEL.DETR.HIDDEN_DIM), got {query_dim}")
        self.q_pos_linear = nn.Linear(query_dim, hidden_dim)
        self.k_pos_linear = nn.Linear(query_dim, hidden_dim)
        for linear in (self.q_pos_linear, self.k_pos_linear):
            nn.init.zeros_(linear.bias)
            nn.init.xavier_uniform_(linear.weight)
        self.normalize_fact = float(2 * self.head_dim) ** -0.5

    def forward(self, queries, boxes, batch_idx, memory, pos, padding_mask):
        """queries: T x d box embeddings; boxes: T x 4 their final boxes (cx, cy, w, h in
        [0, 1]); batch_idx: T long, the image of each query; memory: B x d x h x w encoded
        images; pos: B x d x h x w their pixel positional encoding (PositionEmbeddingSine);
        padding_mask: B x h x w bool (True = padding).

        Returns T x M x h x w attention maps (each query's M*h*w scores sum to 1). Each query
        is computed on its own: a row does not depend on the other queries."""
        t, m = queries.shape[0], self.num_heads
        _, centre = anchor_sine_codes(boxes, queries.shape[1])
        q_content = self._project_queries(queries).view(t, m, self.head_dim)
        q_spatial = self._project_queries(centre, self.q_pos_linear).view(t, m, self.head_dim)
        q = torch.cat([q_content, q_spatial], -1) * self.normalize_fact
        k = torch.cat([self._project_grid(memory, self.k_linear), self._project_grid(pos, self.k_pos_linear)], 2)
        return self._maps(q, k, batch_idx, padding_mask)

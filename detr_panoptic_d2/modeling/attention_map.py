"""Step 6: the multi-head attention map of box embeddings over the encoded image.

For each object, its box embedding (query) attends over the encoded image (keys) with M
heads; only the attention scores are kept, giving M heat-maps per object at res5
resolution. As in DETR, the softmax runs jointly over heads and positions.
"""
import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttentionMap(nn.Module):
    """Attention scores of T queries over their images' encoded grids.

    The queries may come from different images of the batch (``batch_idx`` says which),
    so the map is computed only for the objects that need one.
    """

    def __init__(self, query_dim, hidden_dim, num_heads, dropout=0.0):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden dim {hidden_dim} is not divisible by {num_heads} attention-map heads")
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.dropout = nn.Dropout(dropout)
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        nn.init.zeros_(self.k_linear.bias)
        nn.init.zeros_(self.q_linear.bias)
        nn.init.xavier_uniform_(self.k_linear.weight)
        nn.init.xavier_uniform_(self.q_linear.weight)
        self.normalize_fact = float(self.head_dim) ** -0.5

    def _project_queries(self, queries, linear=None):
        """``linear`` (default q_linear) applied to each query on its own (T x d -> T x hidden).

        One 1 x d product per query (baddbmm over queries) rather than one T x d product: BLAS
        libraries take other code paths, with other rounding, for small T, so with a single
        product a query's result would depend on how many queries the head runs on, and the
        mask head on kept queries would not reproduce the all-query result bit for bit.
        """
        linear = self.q_linear if linear is None else linear
        weight = linear.weight.T.expand(queries.shape[0], -1, -1)
        return torch.baddbmm(linear.bias, queries[:, None, :], weight)[:, 0]

    def _project_grid(self, grid, linear):
        """``linear`` applied at every cell of ``grid`` (B x d x h x w): B x M x head_dim x hw."""
        k = F.conv2d(grid, linear.weight[:, :, None, None], linear.bias)
        return k.view(k.shape[0], self.num_heads, self.head_dim, -1)

    def _maps(self, q, k, batch_idx, padding_mask):
        """q: T x M x c scaled queries; k: B x M x c x hw keys; padding_mask: B x h x w.
        Returns T x M x h x w, softmax over each query's heads and positions jointly."""
        scores = torch.einsum("tmc,tmcp->tmp", q, k[batch_idx])
        scores = scores.masked_fill(padding_mask.flatten(1)[batch_idx, None, :], float("-inf"))
        weights = F.softmax(scores.flatten(1), dim=-1).view(q.shape[0], self.num_heads, *padding_mask.shape[1:])
        return self.dropout(weights)

    def forward(self, queries, batch_idx, memory, padding_mask):
        """queries: T x d box embeddings; batch_idx: T long, the image of each query;
        memory: B x d x h x w encoded images; padding_mask: B x h x w bool (True = padding).

        Returns T x M x h x w attention maps (each query's M*h*w scores sum to 1).
        """
        t = queries.shape[0]
        q = self._project_queries(queries).view(t, self.num_heads, self.head_dim) * self.normalize_fact
        return self._maps(q, self._project_grid(memory, self.k_linear), batch_idx, padding_mask)

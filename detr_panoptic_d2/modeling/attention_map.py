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

    def _project_queries(self, queries):
        """q_linear applied to each query on its own (T x d -> T x hidden).

        One 1 x d product per query (baddbmm over queries) rather than one T x d product: BLAS
        libraries take other code paths, with other rounding, for small T, so with a single
        product a query's result would depend on how many queries the head runs on, and the
        mask head on kept queries would not reproduce the all-query result bit for bit.
        """
        weight = self.q_linear.weight.T.expand(queries.shape[0], -1, -1)
        return torch.baddbmm(self.q_linear.bias, queries[:, None, :], weight)[:, 0]

    def forward(self, queries, batch_idx, memory, padding_mask):
        """queries: T x d box embeddings; batch_idx: T long, the image of each query;
        memory: B x d x h x w encoded images; padding_mask: B x h x w bool (True = padding).

        Returns T x M x h x w attention maps (each query's M*h*w scores sum to 1).
        """
        t = queries.shape[0]
        m = self.num_heads
        q = self._project_queries(queries).view(t, m, self.head_dim) * self.normalize_fact
        k = F.conv2d(memory, self.k_linear.weight[:, :, None, None], self.k_linear.bias)
        b, _, h, w = k.shape
        k = k.view(b, m, self.head_dim, h * w)
        scores = torch.einsum("tmc,tmcp->tmp", q, k[batch_idx])
        scores = scores.masked_fill(padding_mask.flatten(1)[batch_idx, None, :], float("-inf"))
        weights = F.softmax(scores.flatten(1), dim=-1).view(t, m, h, w)
        return self.dropout(weights)

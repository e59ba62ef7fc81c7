"""Step 2: positional encodings of the res5 grid.

Both encodings take the padding mask of the grid and return one d-dimensional code per
position, so the transformer can tell where each res5 cell sits in the image.
"""
import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """DETR's sine/cosine encoding, padding-aware.

    Coordinates are counted over valid (non-padding) cells only and, with ``normalize``,
    divided by the image's own valid extent, so the code of a cell does not depend on how
    much padding the batch added. Half of the channels encode y, half x.
    """

    def __init__(self, num_pos_feats=128, temperature=10000, normalize=True, scale=2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, mask):
        """mask: B x h x w bool (True = padding). Returns B x (2 * num_pos_feats) x h x w."""
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = self._interleave_sin_cos(x_embed[:, :, :, None] / dim_t)
        pos_y = self._interleave_sin_cos(y_embed[:, :, :, None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    @staticmethod
    def _interleave_sin_cos(angles):
        """B x h x w x F angles -> B x h x w x F codes: sin on even, cos on odd channels."""
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(3)


class PositionEmbeddingLearned(nn.Module):
    """Learned absolute encoding: one embedding per row and per column, up to ``max_size``."""

    def __init__(self, num_pos_feats=128, max_size=50):
        super().__init__()
        self.max_size = max_size
        self.row_embed = nn.Embedding(max_size, num_pos_feats)
        self.col_embed = nn.Embedding(max_size, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask):
        """mask: B x h x w bool. Returns B x (2 * num_pos_feats) x h x w."""
        b, h, w = mask.shape
        if h > self.max_size or w > self.max_size:
            raise ValueError(
                f"Learned position embedding covers grids up to {self.max_size} x {self.max_size} "
                f"cells, got {h} x {w}: use MODEL.DETR.POSITION_EMBEDDING 'sine' or smaller inputs."
            )
        x_emb = self.col_embed(torch.arange(w, device=mask.device))
        y_emb = self.row_embed(torch.arange(h, device=mask.device))
        pos = torch.cat([x_emb[None].expand(h, -1, -1), y_emb[:, None].expand(-1, w, -1)], dim=-1)
        return pos.permute(2, 0, 1)[None].expand(b, -1, -1, -1)


def build_position_encoding(kind, hidden_dim):
    """kind: "sine" or "learned" (MODEL.DETR.POSITION_EMBEDDING); codes have hidden_dim channels."""
    if kind == "sine":
        return PositionEmbeddingSine(hidden_dim // 2, normalize=True)
    if kind == "learned":
        return PositionEmbeddingLearned(hidden_dim // 2)
    raise ValueError(f"MODEL.DETR.POSITION_EMBEDDING must be 'sine' or 'learned', got {kind!r}")

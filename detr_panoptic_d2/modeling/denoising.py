"""Training-only denoising queries (DN-DETR, Li et al., CVPR 2022) for vanilla DETR's decoder
(MODEL.DETR.DN) and, with ``anchors``, for the anchor-box decoder.

Each ground-truth segment of an image enters the decoder D times (D groups) as an extra query
built from a noised copy of its box and label: the query's position is a small MLP over the
sine code of the noised box (cx, cy, w, h), its content (the decoder's initial target, zeros
for the matching queries) a label embedding of the noised label. Each query is trained to
give back its own segment's class and box, without matching (SetCriterion's "assigned"
entry). Behind ``transformer.group_attention_mask`` the matching queries never attend to
them and the groups not to each other. Inference never builds them, so the deployed model is
a plain DETR, and a checkpoint trained with them loads into a config without (their weights,
``denoising.*``, are dropped: detector_weights.TRAINING_ONLY).

Noise: a label is replaced by a uniformly drawn class with probability ``label_noise``; a box's
centre moves by up to ``box_noise`` x half its size and its width and height are scaled by a
factor in [1 - box_noise, 1 + box_noise] (uniform), then clipped to the image. Images with
fewer segments than the batch's most are padded with empty queries (zero position and
content), whose target is "no object".

With ``anchors`` (for the anchor-box decoder, modeling/anchor_transformer.py) a query's noised
box enters as its anchor (B x Q x 4 in [0, 1]) instead of a position vector: the decoder
builds its positional query from it as from any anchor. The content is the label embedding
in both modes, all d channels, without DN-DETR's indicator channel (1 for denoising queries,
0 for matching ones, whose content there is a learned embedding): here the matching queries
start from zero content, and the attention mask keeps them from the denoising ones.

With ``negatives`` (DINO's contrastive denoising) each group holds, after the M positive
copies, M negative copies of the segments, noised by the same rule with |u| in [1, 2]
instead of [0, 1] per coordinate: the centre moves along each axis by between
``box_noise`` and 2 ``box_noise`` x half the box, and width and height are scaled by
1 +- a factor in [``box_noise``, 2 ``box_noise``] (sizes clamped to at least 1e-4, centres
clipped to the image). A negative's target is "no object", at full weight in the class loss
(SetCriterion's "assigned" entry "negatives"); it has no box loss.
"""
import math

import torch
from torch import nn


def box_sine_code(boxes, dim, temperature=10000):
    """boxes: ... x 4 in [0, 1] -> ... x dim: per coordinate, dim / 4 interleaved sines and
    cosines of 2 pi x coordinate at DETR's frequencies."""
    per = dim // 4
    freq = temperature ** (2 * (torch.arange(per, device=boxes.device) // 2) / per)
    angles = boxes[..., None] * 2 * math.pi / freq
    code = torch.where(torch.arange(per, device=boxes.device) % 2 == 0, angles.sin(), angles.cos())
    return code.flatten(-2)


class DenoisingQueries(nn.Module):
    """Builds a batch's denoising queries from its targets (see the module docstring).

    Args:
        hidden_dim: d, the decoder width (a multiple of 8).
        num_classes: K.
        groups: D, the copies of each segment (DN-DETR: 5).
        label_noise: probability that a label is replaced (DN-DETR: 0.2).
        box_noise: the box noise scale (DN-DETR: 0.4).
        anchors: the queries' positions are their noised boxes, for the anchor-box decoder
            (no ``box_embed``); False: d-dimensional positions, for ``Transformer``.
        negatives: add a negative copy of each segment per group (contrastive denoising).
    """

    def __init__(self, hidden_dim, num_classes, groups=5, label_noise=0.2, box_noise=0.4, anchors=False, negatives=False):
        super().__init__()
        if hidden_dim % 8:
            raise ValueError(f"denoising queries need MODEL.DETR.HIDDEN_DIM divisible by 8, got {hidden_dim}")
        if groups < 1 or not 0.0 <= label_noise <= 1.0 or box_noise < 0:
            raise ValueError(
                f"MODEL.DETR.DN: GROUPS must be >= 1, LABEL_NOISE in [0, 1], BOX_NOISE >= 0; got {groups}, "
                f"{label_noise}, {box_noise}"
            )
        self.hidden_dim, self.num_classes = hidden_dim, num_classes
        self.groups, self.label_noise, self.box_noise = groups, label_noise, box_noise
        self.anchors, self.negatives = anchors, negatives
        with torch.random.fork_rng(devices=[]):  # training-only: the model re-draws it in its layer order
            self.label_embed = nn.Embedding(num_classes, hidden_dim)
            self.box_embed = (
                None
                if anchors
                else nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim))
            )

    def noised(self, labels, boxes, negative=False):
        """labels: n, boxes: n x 4 cxcywh -> their noised copies (the module docstring's rule;
        ``negative``: a negative copy's, |u| in [1, 2])."""
        flip = torch.rand(labels.shape, device=labels.device) < self.label_noise
        labels = torch.where(flip, torch.randint_like(labels, self.num_classes), labels)
        u = torch.rand(boxes.shape, device=boxes.device) * 2 - 1
        if negative:
            u = torch.where(u < 0, u - 1, u + 1)
        wh = boxes[:, 2:]
        centre = (boxes[:, :2] + u[:, :2] * wh / 2 * self.box_noise).clamp(0, 1)
        size = (wh * (1 + u[:, 2:] * self.box_noise)).clamp(1e-4, 1)
        return labels, torch.cat([centre, size], 1)

    def forward(self, targets):
        """targets: per image "labels" (n_b) and "boxes" (n_b x 4 cxcywh). Returns None when no
        image has a segment, else (position, content B x Q x d, M, indices, negatives): M the
        batch's most segments; Q = D x S queries per image in D groups of S = M (2M with
        ``negatives``), query g x S + j the j-th segment of its image in group g (g x S + M + j
        its negative copy); position B x Q x d, or B x Q x 4 noised boxes with ``anchors``;
        indices per image (query_idx, target_idx) of the positive queries; negatives None, or
        per image the query_idx of the negative copies."""
        size = max(len(t["labels"]) for t in targets)
        if size == 0:
            return None
        b, d = len(targets), self.hidden_dim
        stride = 2 * size if self.negatives else size
        device = self.label_embed.weight.device
        position = torch.zeros(b, self.groups * stride, 4 if self.anchors else d, device=device)
        content = torch.zeros(b, self.groups * stride, d, device=device)
        indices, negatives = [], []
        for i, t in enumerate(targets):
            n = len(t["labels"])
            slots = (torch.arange(self.groups, device=device)[:, None] * stride + torch.arange(n, device=device)).flatten()
            labels, boxes = t["labels"].repeat(self.groups), t["boxes"].float().repeat(self.groups, 1)
            self._fill(position, content, i, slots, *self.noised(labels, boxes))
            indices.append((slots.cpu(), torch.arange(n).repeat(self.groups)))
            if self.negatives:
                self._fill(position, content, i, slots + size, *self.noised(labels, boxes, negative=True))
                negatives.append((slots + size).cpu())
        return position, content, size, indices, negatives if self.negatives else None

    def _fill(self, position, content, image, slots, labels, boxes):
        """Writes the queries of noised ``labels`` (n) and ``boxes`` (n x 4) at ``slots`` of ``image``."""
        position[image, slots] = boxes if self.anchors else self.box_embed(box_sine_code(boxes, self.hidden_dim))
        content[image, slots] = self.label_embed(labels)

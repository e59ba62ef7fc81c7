"""Training-only denoising queries (DN-DETR, Li et al., CVPR 2022) in vanilla DETR's form
(MODEL.DETR.DN).

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
    """

    def __init__(self, hidden_dim, num_classes, groups=5, label_noise=0.2, box_noise=0.4):
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
        with torch.random.fork_rng(devices=[]):  # training-only: the model re-draws it in its layer order
            self.label_embed = nn.Embedding(num_classes, hidden_dim)
            self.box_embed = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim))

    def noised(self, labels, boxes):
        """labels: n, boxes: n x 4 cxcywh -> their noised copies (the module docstring's rule)."""
        flip = torch.rand(labels.shape, device=labels.device) < self.label_noise
        labels = torch.where(flip, torch.randint_like(labels, self.num_classes), labels)
        u = torch.rand(boxes.shape, device=boxes.device) * 2 - 1
        wh = boxes[:, 2:]
        centre = (boxes[:, :2] + u[:, :2] * wh / 2 * self.box_noise).clamp(0, 1)
        size = (wh * (1 + u[:, 2:] * self.box_noise)).clamp(1e-4, 1)
        return labels, torch.cat([centre, size], 1)

    def forward(self, targets):
        """targets: per image "labels" (n_b) and "boxes" (n_b x 4 cxcywh). Returns None when no
        image has a segment, else (position B x Q x d, content B x Q x d, M, indices): Q = D x M
        queries per image, M the batch's most segments, query g x M + j the j-th segment of its
        image in group g; indices per image (query_idx, target_idx) of the queries with a target."""
        size = max(len(t["labels"]) for t in targets)
        if size == 0:
            return None
        b, d, q = len(targets), self.hidden_dim, self.groups * size
        device = self.label_embed.weight.device
        position = torch.zeros(b, q, d, device=device)
        content = torch.zeros(b, q, d, device=device)
        indices = []
        for i, t in enumerate(targets):
            n = len(t["labels"])
            slots = (torch.arange(self.groups, device=device)[:, None] * size + torch.arange(n, device=device)).flatten()
            labels, boxes = self.noised(t["labels"].repeat(self.groups), t["boxes"].float().repeat(self.groups, 1))
            position[i, slots] = self.box_embed(box_sine_code(boxes, d))
            content[i, slots] = self.label_embed(labels)
            indices.append((slots.cpu(), torch.arange(n).repeat(self.groups)))
        return position, content, size, indices

"""Training only: a dense semantic loss on the encoded image (step 3), to make a DETR trained
from scratch converge sooner without changing the model that is deployed.

DETR's backbone and encoder learn only through the N object queries matched one-to-one to the
targets: a sparse signal, one of DETR's reasons for converging slowly. Co-DETR (Zong et al.,
ICCV 2023) adds dense one-to-many heads on the encoder's output in training; this is the
simplest such head: a 1x1 convolution giving K class logits per cell of the encoded image,
trained with the cross-entropy against the share of each class among the cell's pixels.
Inference never runs it, so outputs, speed, the exporter and the converters are a plain
DETR's, and a checkpoint trained with it loads into a model without it (its weights are
dropped, modeling/detector_weights.py).
"""
import torch
import torch.nn.functional as F
from torch import nn


def class_shares(labels, masks, grid):
    """The share of each class among the pixels of each cell of a grid over one padded image.

    labels: n long (contiguous class ids < K); masks: n x H x W bool, disjoint (panoptic
    segments); grid: (K, h, w). Returns K x h x w, each cell's fraction of pixels per class
    (adaptive average pooling: cells of H/h x W/w pixels); a cell sums to less than 1 where
    pixels are unlabeled or padding."""
    num_classes, h, w = grid
    shares = F.adaptive_avg_pool2d(masks[None].float(), (h, w))[0]
    return torch.zeros(num_classes, h, w, device=masks.device).index_add_(0, labels, shares)


class EncoderSemanticLoss(nn.Module):
    """The head and its loss (see the module docstring)."""

    def __init__(self, hidden_dim, num_classes, weight):
        """
        Args:
            hidden_dim: d, the channels of the encoded image (MODEL.DETR.HIDDEN_DIM).
            num_classes: K, things and stuff (MODEL.DETR.NUM_CLASSES).
            weight: the loss's weight in the total (MODEL.DETR.ENCODER_SEMANTIC_WEIGHT), > 0.
        """
        super().__init__()
        if weight <= 0:
            raise ValueError(f"EncoderSemanticLoss needs a weight > 0 (MODEL.DETR.ENCODER_SEMANTIC_WEIGHT), got {weight}")
        with torch.random.fork_rng(devices=[]):  # training-only: the model re-draws it in its layer order
            self.classifier = nn.Conv2d(hidden_dim, num_classes, 1)
        self.weight = weight

    def forward(self, memory, memory_mask, targets):
        """memory: B x d x h x w encoded images; memory_mask: B x h x w bool (True = padding);
        targets: per image a dict with "labels" (n) and "masks" (n x H x W bool, padded).

        Returns {"loss_encoder_semantic": weight x the mean over non-padding cells of
        -sum_k share_k log softmax(logits)_k}."""
        logits = self.classifier(memory.float())
        grid = logits.shape[1:]
        shares = torch.stack([class_shares(t["labels"], t["masks"], grid) for t in targets])
        per_cell = -(shares * F.log_softmax(logits, dim=1)).sum(1)
        return {"loss_encoder_semantic": self.weight * per_cell[~memory_mask].mean()}

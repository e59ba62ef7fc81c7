"""Hungarian matching of predictions to ground-truth segments (training only).

Each image's N predictions (or each of its query groups, with Group DETR) are matched
one-to-one to its targets by minimizing
cost_class * (-p(target class)) + cost_l1 * L1(boxes) + cost_giou * (-GIoU(boxes)),
solved exactly with scipy's ``linear_sum_assignment``.
"""
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets (see the module docstring)."""

    def __init__(self, cost_class=1.0, cost_l1=5.0, cost_giou=2.0):
        """
        Args:
            cost_class: weight of -p(target class) (MODEL.DETR.COST_CLASS; paper 1).
            cost_l1: weight of the L1 distance of the normalized cxcywh boxes
                (MODEL.DETR.COST_L1; paper 5).
            cost_giou: weight of -GIoU of the boxes (MODEL.DETR.COST_GIOU; paper 2).
                Not all three may be 0.
        """
        super().__init__()
        if cost_class == 0 and cost_l1 == 0 and cost_giou == 0:
            raise ValueError(
                "cost_class, cost_l1 and cost_giou (MODEL.DETR.COST_CLASS, COST_L1, COST_GIOU) cannot all be 0"
            )
        self.cost_class = cost_class
        self.cost_l1 = cost_l1
        self.cost_giou = cost_giou

    @torch.no_grad()
    def cost_matrices(self, pred_logits, pred_boxes, targets):
        """pred_logits: B x N x (K+1); pred_boxes: B x N x 4 (cx, cy, w, h in [0, 1]);
        targets: list of B dicts with "labels" (n_i) and "boxes" (n_i x 4, same format).
        Returns a list of B cost matrices, N x n_i, on the CPU."""
        b, n = pred_logits.shape[:2]
        prob = pred_logits.flatten(0, 1).float().softmax(-1)
        boxes = pred_boxes.flatten(0, 1).float()
        labels = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()
        cost = (
            -self.cost_class * prob[:, labels]
            + self.cost_l1 * torch.cdist(boxes, tgt_boxes, p=1)
            - self.cost_giou
            * generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy"))
        )
        # Non-finite predictions still get matched, so that the loss turns non-finite and
        # Detectron2's trainer stops with its error naming the losses.
        cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8).view(b, n, -1).cpu()
        sizes = [len(t["labels"]) for t in targets]
        return [c[i] for i, c in enumerate(cost.split(sizes, -1))]

    def forward(self, pred_logits, pred_boxes, targets, groups=1):
        """Arguments as ``cost_matrices``; the N queries of an image form ``groups`` consecutive
        groups of N / groups, each matched to all the image's targets on its own.
        Returns a list of B * groups pairs (pred_idx within the group, tgt_idx), int64 tensors
        of length min(N / groups, n_i); group g of image b is at b * groups + g."""
        return [
            tuple(torch.as_tensor(i, dtype=torch.int64) for i in linear_sum_assignment(group_cost))
            for c in self.cost_matrices(pred_logits, pred_boxes, targets)
            for group_cost in c.split(c.shape[0] // groups)
        ]

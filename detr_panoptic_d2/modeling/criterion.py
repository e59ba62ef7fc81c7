"""The set criterion: DETR's losses on Hungarian-matched prediction/target pairs.

Classification: cross-entropy over K+1 classes on all N queries (unmatched ones must say
"no object", weighted NO_OBJECT_WEIGHT). Boxes: L1 and GIoU on matched pairs. Masks: sigmoid
focal + dice on matched pairs, with the predicted stride-4 logits upsampled to the padded
image size. Box and mask sums are divided by the number of target segments in the whole
batch, averaged over workers.

With query groups (Group DETR) each group of an image is matched on its own and the class and
box losses are averaged over the groups: group g of image b is treated as image b*G + g with
its own copy of b's targets, normalized by G times the number of target segments (the class
loss's weighted mean averages over groups by itself: every group has the same matched targets,
hence the same total weight).
"""
import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss


def dice_loss(logits, targets, num_boxes):
    """logits, targets: T x P (P pixels). Returns sum over the T masks of 1 - dice, / num_boxes."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(1)
    denominator = probs.sum(1) + targets.sum(1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_boxes


def focal_loss(logits, targets, num_boxes, alpha, gamma):
    """logits, targets: T x P. Per-mask mean of torchvision's sigmoid focal loss, summed, / num_boxes."""
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma).mean(1).sum() / num_boxes


def groups_as_images(x, groups):
    """x: B x (G*N) x ... -> (B*G) x N x ...: query group g of image b becomes image b*G + g."""
    return x.reshape(x.shape[0] * groups, x.shape[1] // groups, *x.shape[2:])


def matched_pairs(indices):
    """indices: per image (pred_idx, tgt_idx). Returns (batch_idx, pred_idx) over all pairs."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    pred_idx = torch.cat([src for src, _ in indices])
    return batch_idx, pred_idx


class SetCriterion(nn.Module):
    """Computes DETR's weighted losses; keys are Detectron2-style ``loss_*``."""

    def __init__(
        self,
        num_classes,
        matcher,
        class_weight=1.0,
        no_object_weight=0.1,
        l1_weight=5.0,
        giou_weight=2.0,
        mask_weight=1.0,
        dice_weight=1.0,
        focal_alpha=0.25,
        focal_gamma=2.0,
    ):
        """
        Args:
            num_classes: K, the real classes (MODEL.DETR.NUM_CLASSES); logits have K + 1
                columns, the last "no object".
            matcher: a ``HungarianMatcher``, called on the last layer's (and with deep
                supervision every layer's) predictions.
            class_weight: weight of the classification cross-entropy (MODEL.DETR.CLASS_WEIGHT).
            no_object_weight: the "no object" class's weight inside that cross-entropy
                (MODEL.DETR.NO_OBJECT_WEIGHT; paper 0.1).
            l1_weight, giou_weight: weights of the box L1 and GIoU losses
                (MODEL.DETR.L1_WEIGHT, GIOU_WEIGHT; paper 5 and 2).
            mask_weight, dice_weight: weights of the mask focal and dice losses
                (MODEL.DETR.MASK_WEIGHT, DICE_WEIGHT; paper 1 and 1).
            focal_alpha, focal_gamma: the sigmoid focal loss's alpha and gamma
                (MODEL.DETR.FOCAL_ALPHA, FOCAL_GAMMA).
        """
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def num_boxes(self, targets, device):
        """Number of target segments in the batch, averaged over workers, at least 1."""
        num = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num)
        return torch.clamp(num / comm.get_world_size(), min=1).item()

    def class_loss(self, logits, targets, indices):
        """logits: B x N x (K+1). Weighted cross-entropy; unmatched queries target no-object."""
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        batch_idx, pred_idx = matched_pairs(indices)
        target_classes[batch_idx, pred_idx] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        return F.cross_entropy(logits.transpose(1, 2).float(), target_classes, self.empty_weight)

    def box_losses(self, boxes, targets, indices, num_boxes):
        """boxes: B x N x 4 normalized cxcywh. Returns (L1, GIoU) losses over matched pairs."""
        src = boxes[matched_pairs(indices)].float()
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).float()
        l1 = F.l1_loss(src, tgt, reduction="sum") / num_boxes
        # Pairwise over matched pairs; eps=0 keeps DETR's exact GIoU.
        giou = generalized_box_iou_loss(
            box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"), "sum", eps=0.0
        )
        return l1, giou / num_boxes

    def layer_losses(self, logits, boxes, targets, num_boxes, suffix="", groups=1):
        """Class and box losses of one decoder layer. logits: B x (G*N) x (K+1), boxes:
        B x (G*N) x 4 for ``groups`` = G query groups (see the module docstring).
        Returns (indices, weighted loss dict); indices as the matcher's, B*G pairs."""
        indices = self.matcher(logits, boxes, targets, groups)
        logits, boxes = groups_as_images(logits, groups), groups_as_images(boxes, groups)
        targets = [t for t in targets for _ in range(groups)]
        num_boxes = num_boxes * groups
        l1, giou = self.box_losses(boxes, targets, indices, num_boxes)
        losses = {
            "loss_ce" + suffix: self.class_weight * self.class_loss(logits, targets, indices),
            "loss_bbox" + suffix: self.l1_weight * l1,
            "loss_giou" + suffix: self.giou_weight * giou,
        }
        return indices, losses

    def mask_losses(self, mask_logits, target_masks, num_boxes):
        """mask_logits: T x h x w predicted logits of matched queries (stride 4);
        target_masks: T x H x W {0, 1} masks of their targets at padded image size.
        Returns the weighted focal and dice losses."""
        mask_logits = F.interpolate(
            mask_logits[:, None], size=target_masks.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
        logits = mask_logits.flatten(1).float()
        targets = target_masks.flatten(1).to(logits.dtype)
        return {
            "loss_mask": self.mask_weight
            * focal_loss(logits, targets, num_boxes, self.focal_alpha, self.focal_gamma),
            "loss_dice": self.dice_weight * dice_loss(logits, targets, num_boxes),
        }

"""The set criterion: every training loss of DetrPanoptic, from the model's predictions and the
targets; the meta-architecture calls it once per batch (``SetCriterion.forward``).

Matching: each image's last-layer predictions are matched one-to-one to its targets (Hungarian,
matcher.py); with deep supervision every other decoder layer is matched on its own too.
Classification: cross-entropy over K+1 classes on all N queries (unmatched ones must say
"no object", weighted NO_OBJECT_WEIGHT). Boxes: L1 and GIoU on matched pairs. Masks: sigmoid
focal + dice on the last layer's matched pairs, with the predicted stride-4 logits upsampled to
the padded image size. Box and mask sums are divided by the number of target segments in the
whole batch, averaged over workers.

With query groups (Group DETR) each group of an image is matched on its own and the class and
box losses are averaged over the groups: group g of image b is treated as image b*G + g with
its own copy of b's targets, normalized by G times the number of target segments (the class
loss's weighted mean averages over groups by itself: every group has the same matched targets,
hence the same total weight). Mask losses cover the first group's matches, or every group's
(``mask_loss_all_groups``, normalized by G times the segments).
"""
import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from .encoder_supervision import EncoderSemanticLoss
from .matcher import HungarianMatcher


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
    """Computes DETR's weighted losses; keys are Detectron2-style ``loss_*``.

    ``forward(outputs, targets)`` takes the predictions as a dict, so that a training-only
    kind of query is one more entry, not a change to the meta-architecture's loss code:

    - "pred_logits": L x B x (G*N) x (K+1) and "pred_boxes": L x B x (G*N) x 4, every decoder
      layer's class logits and boxes (normalized cx, cy, w, h), the last layer last;
    - "query_groups": G, the query groups the G*N queries form (1: none);
    - "pred_masks": None for a box-only model, else a function ``(batch_idx, query_idx) ->
      T x h x w`` float32 mask logits of the given (image, query) pairs (T long tensors each):
      the mask head runs on the matched queries only;
    - "memory": B x d x h x w encoded images and "memory_mask": B x h x w bool (True =
      padding), read by the training-only dense loss on the encoded image when the criterion
      has one (``encoder_semantic``, encoder_supervision.py);
    - "assigned" (optional): the extension point for queries whose targets are known without
      matching, as DN-DETR's denoising queries (noised ground truth fed to the decoder): a dict
      name -> {"pred_logits": L x B x Q x (K+1), "pred_boxes": L x B x Q x 4, "indices": per
      image (query_idx, target_idx) long tensors, "normalizer": the factor on the number of
      target segments, e.g. the number of denoising groups}. Each gets the class and box losses
      at the given pairs on every layer (``assigned_losses``), keys suffixed "_<name>" (and
      "_<name>_<layer>" below the last with deep supervision); its queries without a target
      must say "no object", as unmatched ones do. Optional "negatives": per image a
      query_idx long tensor of queries that must say "no object" at weight 1 in the class
      loss instead of NO_OBJECT_WEIGHT (DINO's contrastive denoising negatives, which would
      otherwise weigh as little as padding); they get no box loss. Optional "pred_masks": a
      function ``(batch_idx, query_idx) -> T x h x w`` mask logits of the entry's queries, as
      the outputs' "pred_masks": the mask losses at the entry's pairs too (mask denoising),
      keys "loss_mask_<name>" and "loss_dice_<name>", with the entry's normalizer.
    """

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
        deep_supervision=True,
        mask_loss_all_groups=False,
        encoder_semantic=None,
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
            deep_supervision: class and box losses on every decoder layer, suffixed "_<layer>",
                not only the last (MODEL.DETR.DEEP_SUPERVISION).
            mask_loss_all_groups: with query groups, mask losses on every group's matches, not
                only the first group's (MODEL.DETR.MASK_LOSS_ALL_GROUPS).
            encoder_semantic: the training-only dense semantic loss on the encoded image, an
                ``EncoderSemanticLoss`` (MODEL.DETR.ENCODER_SEMANTIC_WEIGHT > 0), or None.
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
        self.deep_supervision = deep_supervision
        self.mask_loss_all_groups = mask_loss_all_groups
        self.encoder_semantic = encoder_semantic
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def num_boxes(self, targets, device):
        """Number of target segments in the batch, averaged over workers, at least 1."""
        num = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num)
        return torch.clamp(num / comm.get_world_size(), min=1).item()

    def class_loss(self, logits, targets, indices, negatives=None):
        """logits: B x N x (K+1). Weighted cross-entropy (mean over queries weighted by their
        target's class weight); unmatched queries target no-object. negatives: None, or per
        image the query_idx of queries targeting no-object at weight 1 (see the class docstring)."""
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        batch_idx, pred_idx = matched_pairs(indices)
        target_classes[batch_idx, pred_idx] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        if negatives is None:
            return F.cross_entropy(logits.transpose(1, 2).float(), target_classes, self.empty_weight)
        weight = self.empty_weight[target_classes]
        weight[matched_pairs([(q, q) for q in negatives])] = 1.0
        nll = F.cross_entropy(logits.transpose(1, 2).float(), target_classes, reduction="none")
        return (nll * weight).sum() / weight.sum()

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

    def forward(self, outputs, targets, detector_losses=True):
        """The weighted loss dict of a batch. outputs: the dict described in the class
        docstring; targets: per image "labels" (n), "boxes" (n x 4 normalized cxcywh) and
        "masks" (n x H x W bool, padded to the batch). detector_losses False (a frozen
        detector, stage 2): the last layer is matched for the mask losses, and no class or box
        loss is computed."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        groups = outputs.get("query_groups", 1)
        num_boxes = self.num_boxes(targets, logits.device)
        losses = {}
        if detector_losses:
            indices, losses = self.layer_losses(logits[-1], boxes[-1], targets, num_boxes, groups=groups)
            if self.deep_supervision:
                for i in range(len(logits) - 1):
                    losses.update(self.layer_losses(logits[i], boxes[i], targets, num_boxes, f"_{i}", groups)[1])
            for name, assigned in outputs.get("assigned", {}).items():
                losses.update(self.assigned_losses(assigned, targets, num_boxes, name))
        else:
            indices = self.matcher(logits[-1], boxes[-1], targets, groups)
        if self.encoder_semantic is not None:
            losses.update(self.encoder_semantic(outputs["memory"], outputs["memory_mask"], targets))
        if outputs.get("pred_masks") is not None:
            losses.update(self.matched_mask_losses(outputs["pred_masks"], targets, indices, groups, logits.shape[2], num_boxes))
        return losses

    def layer_losses(self, logits, boxes, targets, num_boxes, suffix="", groups=1):
        """Class and box losses of one decoder layer. logits: B x (G*N) x (K+1), boxes:
        B x (G*N) x 4 for ``groups`` = G query groups (see the module docstring).
        Returns (indices, weighted loss dict); indices as the matcher's, B*G pairs."""
        indices = self.matcher(logits, boxes, targets, groups)
        logits, boxes = groups_as_images(logits, groups), groups_as_images(boxes, groups)
        targets = [t for t in targets for _ in range(groups)]
        return indices, self._weighted(logits, boxes, targets, indices, num_boxes * groups, suffix)

    def _weighted(self, logits, boxes, targets, indices, num_boxes, suffix, negatives=None):
        """The weighted class and box losses at the given (query, target) pairs."""
        l1, giou = self.box_losses(boxes, targets, indices, num_boxes)
        return {
            "loss_ce" + suffix: self.class_weight * self.class_loss(logits, targets, indices, negatives),
            "loss_bbox" + suffix: self.l1_weight * l1,
            "loss_giou" + suffix: self.giou_weight * giou,
        }

    def assigned_losses(self, assigned, targets, num_boxes, name):
        """Class and box losses of queries with known targets (the "assigned" entry of
        ``forward``'s outputs, see the class docstring) on every supervised layer, and their
        mask losses when the entry has "pred_masks"."""
        indices, num = assigned["indices"], num_boxes * assigned.get("normalizer", 1)
        layers = range(len(assigned["pred_logits"])) if self.deep_supervision else [-1]
        last = len(assigned["pred_logits"]) - 1
        losses = {}
        for i in layers:
            suffix = f"_{name}" if i in (-1, last) else f"_{name}_{i}"
            logits, boxes = assigned["pred_logits"][i], assigned["pred_boxes"][i]
            losses.update(self._weighted(logits, boxes, targets, indices, num, suffix, assigned.get("negatives")))
        if assigned.get("pred_masks") is not None:
            batch_idx, query_idx = matched_pairs(indices)
            target_masks = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices)])
            mask_losses = self.mask_losses(assigned["pred_masks"](batch_idx, query_idx), target_masks, num)
            losses.update({f"{key}_{name}": value for key, value in mask_losses.items()})
        return losses

    def matched_mask_losses(self, segment, targets, indices, groups, num_queries, num_boxes):
        """Mask losses of matched queries. segment: ``(batch_idx, query_idx) -> T x h x w`` mask
        logits; indices: the matcher's B*G pairs of the last layer (group g of image b at
        b*G + g, query numbers within the group); num_queries: G*N."""
        # indices[k]: group k % G of image k // G, query numbers within the group.
        supervised = range(len(indices)) if self.mask_loss_all_groups else range(0, len(indices), groups)
        n = num_queries // groups
        batch_idx = torch.cat([torch.full_like(indices[k][0], k // groups) for k in supervised])
        query_idx = torch.cat([indices[k][0] + (k % groups) * n for k in supervised])
        mask_logits = segment(batch_idx, query_idx)
        target_masks = torch.cat([targets[k // groups]["masks"][indices[k][1]] for k in supervised])
        return self.mask_losses(mask_logits, target_masks, num_boxes * (groups if self.mask_loss_all_groups else 1))

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


def targets_of(batched_inputs, images, device):
    """SetCriterion's targets of a batch: per image "labels" (n), "boxes" (n x 4 cxcywh
    normalized by the image size) and "masks" (n x H x W bool, padded to the batch size), on
    ``device``. batched_inputs: Detectron2 dicts with "instances" (gt_classes, gt_boxes,
    gt_masks); images: their padded ImageList."""
    targets = []
    padded = images.tensor.shape[-2:]
    for x, (h, w) in zip(batched_inputs, images.image_sizes):
        inst = x["instances"].to(device)
        boxes = box_convert(inst.gt_boxes.tensor, "xyxy", "cxcywh") / inst.gt_boxes.tensor.new_tensor([w, h, w, h])
        masks = inst.gt_masks.tensor if hasattr(inst.gt_masks, "tensor") else inst.gt_masks
        masks = F.pad(masks.to(torch.bool), (0, padded[1] - masks.shape[-1], 0, padded[0] - masks.shape[-2]))
        targets.append({"labels": inst.gt_classes, "boxes": boxes, "masks": masks})
    return targets


def build_criterion(cfg):
    """The SetCriterion of a yacs config: MODEL.DETR's loss weights, matching costs, deep
    supervision, group mask losses and the encoded image's semantic loss."""
    d = cfg.MODEL.DETR
    return SetCriterion(
        d.NUM_CLASSES,
        HungarianMatcher(d.COST_CLASS, d.COST_L1, d.COST_GIOU),
        class_weight=d.CLASS_WEIGHT,
        no_object_weight=d.NO_OBJECT_WEIGHT,
        l1_weight=d.L1_WEIGHT,
        giou_weight=d.GIOU_WEIGHT,
        mask_weight=d.MASK_WEIGHT,
        dice_weight=d.DICE_WEIGHT,
        focal_alpha=d.FOCAL_ALPHA,
        focal_gamma=d.FOCAL_GAMMA,
        deep_supervision=d.DEEP_SUPERVISION,
        mask_loss_all_groups=d.MASK_LOSS_ALL_GROUPS,
        encoder_semantic=EncoderSemanticLoss(d.HIDDEN_DIM, d.NUM_CLASSES, d.ENCODER_SEMANTIC_WEIGHT)
        if d.ENCODER_SEMANTIC_WEIGHT
        else None,
    )

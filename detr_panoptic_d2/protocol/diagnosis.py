"""A diagnostic pass over a checkpoint's queries (tools/dev/diagnose_queries.py): where a
model's panoptic errors come from, on images with ground truth.

Per image, the last decoder layer's queries are matched one-to-one to the ground-truth
segments by the model's own Hungarian matcher (its training costs), and:

- class accuracy: of the matched queries, those whose most likely class (of K+1, "no
  object" included) is their segment's;
- mask IoU: of each matched query's mask (logit > 0, at the network's input size) with its
  segment's mask;
- recall at the threshold: of the segments, those whose matched query is kept
  (``select_queries`` at the score threshold) with the right class;
- duplicates: kept queries that are not matched but whose mask overlaps a matched query's
  mask with IoU >= ``duplicate_iou``; false positives: the other kept, unmatched queries.

These are queries before the panoptic merge; the errors of the output segments, which PQ
counts, are ``detr_panoptic_d2.analysis``'s (tools/analyze_panoptic.py).
"""
import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess

from ..modeling import postprocessing


def _iou(a, b):
    """a: A x P, b: B x P bool -> A x B IoU (0 where both are empty)."""
    a, b = a.float(), b.float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


@torch.no_grad()
def diagnose_image(model, x, threshold, duplicate_iou=0.5):
    """model: a DetrPanoptic in eval mode; x: a Detectron2 input dict with "instances"
    (gt_classes, gt_masks at the image's size), as the dataset mapper gives in training
    without augmentation. Returns the counts of the module docstring for this image:
    {"segments", "matched_correct_class", "iou_sum", "recalled", "kept", "duplicates",
    "false_positives"}."""
    images, padding_mask = model.preprocess_image([x])
    out = model.detect(images.tensor, padding_mask)
    targets = model.prepare_targets([x], images)
    logits, boxes = out.logits[-1].float(), out.boxes[-1].float()
    (queries, segments), = model.criterion.matcher(logits, boxes, targets)
    queries, segments = queries.to(model.device), segments.to(model.device)
    keep, _, classes = postprocessing.select_queries(logits[0], threshold)
    kept = keep.nonzero()[:, 0]
    involved = torch.cat([queries, kept]).unique()
    h, w = images.image_sizes[0]
    counts = {"segments": len(segments), "kept": len(kept)}
    masks = {}
    if len(involved) and model.mask_head is not None:
        logits_at_stride = model.segment(out, torch.zeros_like(involved), involved).float()
        cells = postprocessing.image_cells((h, w), model.mask_head.stride)
        binary = sem_seg_postprocess(logits_at_stride, cells, h, w) > 0
        masks = {int(q): m.flatten() for q, m in zip(involved, binary)}
    labels = targets[0]["labels"][segments]
    counts["matched_correct_class"] = int((logits[0, queries].argmax(-1) == labels).sum())
    counts["recalled"] = int((keep[queries] & (classes[queries] == labels)).sum())
    if masks:
        gt = targets[0]["masks"][segments][:, :h, :w].flatten(1)
        pred = torch.stack([masks[int(q)] for q in queries]) if len(queries) else gt[:0]
        counts["iou_sum"] = float(torch.diagonal(_iou(pred, gt)).sum()) if len(queries) else 0.0
        extra = [q for q in kept.tolist() if q not in set(queries.tolist())]
        duplicates = 0
        if extra and len(queries):
            overlap = _iou(torch.stack([masks[q] for q in extra]), pred)
            duplicates = int((overlap.max(1).values >= duplicate_iou).sum())
        counts["duplicates"] = duplicates
        counts["false_positives"] = len(extra) - duplicates
    return counts


def summarize_diagnosis(per_image):
    """Totals of ``diagnose_image`` counts -> {"images", "segments", "class_accuracy",
    "mean_matched_iou", "recall_at_threshold", "duplicates_per_image",
    "false_positives_per_image", "kept_per_image"} (fractions in [0, 1])."""
    total = {k: sum(c.get(k, 0) for c in per_image) for k in per_image[0]} if per_image else {}
    n, segments = len(per_image), max(total.get("segments", 0), 1)
    return {
        "images": n,
        "segments": total.get("segments", 0),
        "class_accuracy": total.get("matched_correct_class", 0) / segments,
        "mean_matched_iou": total.get("iou_sum", 0.0) / segments,
        "recall_at_threshold": total.get("recalled", 0) / segments,
        "duplicates_per_image": total.get("duplicates", 0) / max(n, 1),
        "false_positives_per_image": total.get("false_positives", 0) / max(n, 1),
        "kept_per_image": total.get("kept", 0) / max(n, 1),
    }

"""One image's segments matched as panopticapi matches them (``pq_compute_single_core``), with
every overlap kept for the error analysis.

Rules (panopticapi's): ground-truth areas come from the JSON (``area``), prediction areas from
the PNG; the IoU of a ground-truth segment g and a prediction p is
``|g & p| / (|g| + |p| - |g & p| - |p & VOID|)`` (void = ground-truth id 0); a pair of one
category with IoU > 0.5 is a true positive (crowd segments are never matched); an unmatched
non-crowd ground-truth segment is a false negative; an unmatched prediction is a false positive
unless more than half of it lies on void or on the crowd region of its category (panopticapi
keeps one crowd segment per category: the last listed).
"""
from dataclasses import dataclass, field

import numpy as np
from panopticapi.evaluation import OFFSET, VOID


@dataclass
class ImageMatch:
    """gt: {id: segment dict} (JSON ``segments_info``, ``area`` from the JSON); pred: {id:
    segment dict} with ``area`` from the PNG; overlap: {(gt id, pred id): pixels} (gt id 0 =
    void); tp: [(gt id, pred id, IoU)]; fn: [gt id]; fp: [pred id] (ignored predictions left
    out)."""

    gt: dict
    pred: dict
    overlap: dict
    tp: list = field(default_factory=list)
    fn: list = field(default_factory=list)
    fp: list = field(default_factory=list)
    preds_on: dict = field(default_factory=dict)
    gts_under: dict = field(default_factory=dict)

    def iou(self, g, p):
        """panopticapi's IoU of ground-truth segment ``g`` and prediction ``p``."""
        inter = self.overlap.get((g, p), 0)
        union = self.pred[p]["area"] + self.gt[g]["area"] - inter - self.overlap.get((VOID, p), 0)
        return inter / union if union > 0 else 0.0

    def non_void_area(self, p):
        """Pixels of prediction ``p`` that are not on void."""
        return self.pred[p]["area"] - self.overlap.get((VOID, p), 0)


def match_image(gt_annotation, pred_annotation, gt_ids, pred_ids, categories, where=""):
    """gt_annotation / pred_annotation: COCO panoptic annotations of one image; gt_ids /
    pred_ids: H x W segment ids (``rgb2id`` of their PNGs); categories: {dataset id: category}.
    Returns an ImageMatch. ValueError (naming ``where``) for a prediction PNG id missing from
    its JSON or the reverse, an unknown category, or PNGs of different sizes."""
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"{where}: the prediction is {pred_ids.shape[:2]}, the ground truth {gt_ids.shape[:2]}")
    gt = {s["id"]: s for s in gt_annotation["segments_info"]}
    pred = {s["id"]: dict(s) for s in pred_annotation["segments_info"]}
    labels, counts = np.unique(pred_ids, return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist()):
        if label == VOID:
            continue
        if label not in pred:
            raise ValueError(f"{where}: segment id {label} is in the prediction PNG but not in its segments_info")
        if pred[label]["category_id"] not in categories:
            raise ValueError(f"{where}: predicted segment {label} has unknown category_id {pred[label]['category_id']}")
        pred[label]["area"] = count
    absent = sorted(set(pred) - set(labels.tolist()))
    if absent:
        raise ValueError(f"{where}: predicted segment ids {absent} are in segments_info but not in the PNG")
    pairs, counts = np.unique(gt_ids.astype(np.uint64) * OFFSET + pred_ids.astype(np.uint64), return_counts=True)
    overlap = {(int(k // OFFSET), int(k % OFFSET)): int(c) for k, c in zip(pairs.tolist(), counts.tolist())}
    match = ImageMatch(gt, pred, overlap)
    for g, p in overlap:
        if g in gt and p in pred:
            match.preds_on.setdefault(g, []).append(p)
            match.gts_under.setdefault(p, []).append(g)
    matched_gt, matched_pred = set(), set()
    for g, p in overlap:
        if g in gt and p in pred and gt[g]["iscrowd"] != 1 and gt[g]["category_id"] == pred[p]["category_id"]:
            iou = match.iou(g, p)
            if iou > 0.5:
                match.tp.append((g, p, iou))
                matched_gt.add(g)
                matched_pred.add(p)
    crowd = {s["category_id"]: g for g, s in gt.items() if s["iscrowd"] == 1}
    match.fn = [g for g, s in gt.items() if g not in matched_gt and s["iscrowd"] != 1]
    for p, s in pred.items():
        if p in matched_pred:
            continue
        ignored = overlap.get((VOID, p), 0)
        if s["category_id"] in crowd:
            ignored += overlap.get((crowd[s["category_id"]], p), 0)
        if ignored / s["area"] <= 0.5:
            match.fp.append(p)
    return match

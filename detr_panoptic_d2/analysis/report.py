"""Where panoptic quality is lost, over a dataset (tools/analyze_panoptic.py).

Every image is matched as panopticapi matches it (``matching``), so the true positives and
PQ equal ``pq_compute``'s; each false negative and false positive gets one error type
(``errors``). Averages use panopticapi's ``PQStat.pq_average``.

PQ lost to an error type T: PQ_c = sum of IoU / (TP + FP/2 + FN/2) for each class c; PQ_c(T
fixed) is the same with the FN and FP of type T not counted (a class with nothing left counts
100: it has no error remaining); the loss of T is the mean over the classes PQ averages (those
present) of PQ_c(T fixed) - PQ_c, in PQ points. So it is the PQ gained if the errors of T alone
disappeared; losses of several types do not add up exactly, and 100 - PQ also holds the
imperfect masks of the matched segments (SQ).

Sizes as COCO: small (area < 32^2), medium (< 96^2), large; a true positive and a ground-truth
error count in the size of the ground-truth segment, a prediction's error in its own size.
"""
import copy
import math
from collections import Counter

from panopticapi.evaluation import PQStat

from .errors import ERROR_TYPES, classify_errors
from .matching import match_image
from .per_class import average, pq_summary

SIZES = (("small", 32 ** 2), ("medium", 96 ** 2), ("large", math.inf))


def size_of(area):
    """COCO's size bucket ("small", "medium", "large") of an area in pixels."""
    return next(name for name, limit in SIZES if area < limit)


class DatasetErrors:
    """Accumulates ImageMatches and their ErrorEvents over a dataset of ``categories``
    ({dataset id: category dict}); ``report`` gives the totals."""

    def __init__(self, categories):
        self.categories = categories
        self.stat = PQStat()
        self.by_size = {name: PQStat() for name, _ in SIZES}
        self.of_type = {t: PQStat() for t in ERROR_TYPES}  # FN and FP of each type, per category
        self.counts = {t: 0 for t in ERROR_TYPES}
        self.by_class = {i: dict.fromkeys(ERROR_TYPES, 0) for i in categories}
        self.by_size_counts = {name: dict.fromkeys(ERROR_TYPES, 0) for name, _ in SIZES}
        self.confusion = Counter()
        self.images = []  # {"image_id", "file_name", "pq"}

    def add(self, image_key, match):
        """Adds one image's ImageMatch; returns its ErrorEvents and its PQ (NaN when the image
        has no segment counted)."""
        events = classify_errors(match)
        image = PQStat()
        for g, p, iou in match.tp:
            c, size = match.gt[g]["category_id"], size_of(match.gt[g]["area"])
            for stat in (self.stat, self.by_size[size], image):
                stat[c].tp += 1
                stat[c].iou += iou
        for g in match.fn:
            for stat in (self.stat, self.by_size[size_of(match.gt[g]["area"])], image):
                stat[match.gt[g]["category_id"]].fn += 1
        for p in match.fp:
            for stat in (self.stat, self.by_size[size_of(match.pred[p]["area"])], image):
                stat[match.pred[p]["category_id"]].fp += 1
        for event in events:
            kind, i = event.segment
            segment = (match.gt if kind == "gt" else match.pred)[i]
            self.counts[event.type] += 1
            self.by_class[segment["category_id"]][event.type] += 1
            self.by_size_counts[size_of(segment["area"])][event.type] += 1
            for g in event.fn:
                self.of_type[event.type][match.gt[g]["category_id"]].fn += 1
            for p in event.fp:
                self.of_type[event.type][match.pred[p]["category_id"]].fp += 1
            if event.confused:
                self.confusion[event.confused] += 1
        pq = average(image, self.categories, None)["pq"]
        self.images.append({**image_key, "pq": pq})
        return events, pq

    def pq_lost(self):
        """({type: PQ points lost}, {class name: {type: points}}), see the module docstring."""
        base = pq_summary(self.stat, self.categories)["per_class"]
        present = [r for r in base if r["pq"] is not None]
        total, by_class = {}, {r["name"]: {} for r in present}
        for t in ERROR_TYPES:
            fixed = copy.deepcopy(self.stat)
            for c, removed in self.of_type[t].pq_per_cat.items():
                fixed[c].fn -= removed.fn
                fixed[c].fp -= removed.fp
            rows = {r["id"]: r for r in pq_summary(fixed, self.categories)["per_class"]}
            gains = []
            for r in present:
                after = rows[r["id"]]["pq"]
                gains.append((100.0 if after is None else after) - r["pq"])
                by_class[r["name"]][t] = gains[-1]
            total[t] = sum(gains) / len(gains) if gains else 0.0
        return total, by_class

    def report(self):
        """Every number, JSON-ready: images, pq (all, things, stuff, per_class), pq_by_size,
        matched / false_negatives / false_positives, errors (events per type), errors_fn_fp (the
        FN and FP each type accounts for), pq_lost, errors_by_class,
        pq_lost_by_class, errors_by_size, class_confusion (rows: ground truth, columns:
        prediction, over all categories)."""
        names = {i: c["name"] for i, c in self.categories.items()}
        ids = list(self.categories)
        lost, lost_by_class = self.pq_lost()
        cats = self.stat.pq_per_cat.values()
        return {
            "images": len(self.images),
            "pq": pq_summary(self.stat, self.categories),
            "pq_by_size": {name: average(stat, self.categories, None) for name, stat in self.by_size.items()},
            "matched": sum(s.tp for s in cats),
            "false_negatives": sum(s.fn for s in cats),
            "false_positives": sum(s.fp for s in cats),
            "errors": dict(self.counts),
            "errors_fn_fp": {t: {k: sum(getattr(c, k) for c in stat.pq_per_cat.values()) for k in ("fn", "fp")}
                             for t, stat in self.of_type.items()},
            "pq_lost": lost,
            "errors_by_class": {names[i]: counts for i, counts in self.by_class.items()},
            "pq_lost_by_class": lost_by_class,
            "errors_by_size": self.by_size_counts,
            "class_confusion": {
                "classes": [names[i] for i in ids],
                "matrix": [[self.confusion[g, p] for p in ids] for g in ids],
            },
        }


def match_files(gt, pred, gt_annotation, pred_annotation, categories):
    """(ImageMatch, gt ids, pred ids) of one image pair of the PanopticFiles ``gt`` and ``pred``."""
    gt_ids, pred_ids = gt.ids(gt_annotation), pred.ids(pred_annotation)
    where = f"{pred.png_dir}/{pred_annotation['file_name']} (image id {gt_annotation['image_id']})"
    return match_image(gt_annotation, pred_annotation, gt_ids, pred_ids, categories, where), gt_ids, pred_ids


def analyze(gt, pred, pairs):
    """gt, pred: inputs.PanopticFiles; pairs: their paired annotations. Returns the
    DatasetErrors of every image."""
    errors = DatasetErrors({c["id"]: c for c in gt.data["categories"]})
    for gt_ann, pred_ann in pairs:
        match, _, _ = match_files(gt, pred, gt_ann, pred_ann, errors.categories)
        errors.add({"image_id": gt_ann["image_id"], "file_name": gt_ann["file_name"]}, match)
    return errors

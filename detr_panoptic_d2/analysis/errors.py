"""Each false negative and false positive of an image (``matching.ImageMatch``) gets one error
type; errors come as events, each counted once.

Ground-truth side, for every false negative g of category c, the first rule that applies:

1. ``class_confusion``: a prediction of another category has IoU > 0.5 with g (the event holds
   g and that prediction, a false positive of its own category);
2. ``merge``: a prediction of c covers more than half of g and more than half of another
   ground-truth segment of c (one event per such prediction; it holds the false negatives it
   covers, and the prediction itself when it is a false positive);
3. ``split``: two or more unmatched predictions of c each lie more than half (of their non-void
   pixels) on g, and together they would match it (IoU > 0.5); the event holds g and them;
4. ``near_miss``: the best IoU of g with a prediction of c is in (0.1, 0.5] (localisation error;
   the event also holds the unmatched predictions of c whose best ground truth is g at IoU > 0.1);
5. ``missed``: otherwise (no prediction of c overlaps g at IoU > 0.1).

Remaining false positives p of category c, by the ground-truth segment of c with the highest
IoU with p: ``duplicate`` when that segment is matched by another prediction and the IoU
> 0.1; else ``false_positive`` (background: nothing of c there).
"""
from dataclasses import dataclass, field

ERROR_TYPES = ("missed", "class_confusion", "near_miss", "duplicate", "false_positive", "merge", "split")
NEAR_MISS_IOU = 0.1


@dataclass
class ErrorEvent:
    """type: one of ERROR_TYPES; fn: [gt id], fp: [pred id] it accounts for; segment: ("gt", id)
    or ("pred", id), the segment that defines it (its size bucket and category);
    confused: (gt category, predicted category) for ``class_confusion``."""

    type: str
    segment: tuple
    fn: list = field(default_factory=list)
    fp: list = field(default_factory=list)
    confused: tuple = None


def classify_errors(match):
    """The ErrorEvents of an ImageMatch; each false negative and false positive is in exactly one."""
    events, fn_left, fp_left = [], list(match.fn), set(match.fp)
    category = {**{("gt", g): s["category_id"] for g, s in match.gt.items()},
                **{("pred", p): s["category_id"] for p, s in match.pred.items()}}
    matched_gt = {g for g, _, _ in match.tp}
    for g in list(fn_left):
        for p in match.preds_on.get(g, []):
            if category["pred", p] != category["gt", g] and match.iou(g, p) > 0.5:
                events.append(ErrorEvent("class_confusion", ("gt", g), [g], _take(fp_left, [p]),
                                         (category["gt", g], category["pred", p])))
                fn_left.remove(g)
                break
    events += _merges(match, category, fn_left, fp_left)
    events += _splits(match, category, fn_left, fp_left)
    near = {}
    for g in list(fn_left):
        same = [p for p in match.preds_on.get(g, []) if category["pred", p] == category["gt", g]]
        best = max((match.iou(g, p) for p in same), default=0.0)
        fn_left.remove(g)
        if best > NEAR_MISS_IOU:
            near[g] = ErrorEvent("near_miss", ("gt", g), [g])
            events.append(near[g])
        else:
            events.append(ErrorEvent("missed", ("gt", g), [g]))
    for p in sorted(fp_left):
        candidates = [g for g in match.gts_under.get(p, [])
                      if match.gt[g]["iscrowd"] != 1 and match.gt[g]["category_id"] == category["pred", p]]
        best = max(candidates, key=lambda g: match.iou(g, p), default=None)
        if best is not None and match.iou(best, p) > NEAR_MISS_IOU and best in near:
            near[best].fp.append(p)
        elif best is not None and match.iou(best, p) > NEAR_MISS_IOU and best in matched_gt:
            events.append(ErrorEvent("duplicate", ("pred", p), fp=[p]))
        else:
            events.append(ErrorEvent("false_positive", ("pred", p), fp=[p]))
    return events


def _take(pool, ids):
    """The ids of ``ids`` still in ``pool`` (a set), removed from it."""
    taken = [i for i in ids if i in pool]
    pool.difference_update(taken)
    return taken


def _merges(match, category, fn_left, fp_left):
    events = []
    for p in match.pred:
        covered = [g for g in match.gts_under.get(p, []) if match.gt[g]["iscrowd"] != 1
                   and match.gt[g]["category_id"] == category["pred", p]
                   and match.overlap[g, p] > 0.5 * match.gt[g]["area"]]
        merged = [g for g in covered if g in fn_left]
        if len(covered) >= 2 and merged:
            for g in merged:
                fn_left.remove(g)
            events.append(ErrorEvent("merge", ("pred", p), merged, _take(fp_left, [p])))
    return events


def _splits(match, category, fn_left, fp_left):
    events = []
    for g in list(fn_left):
        pieces = [p for p in sorted(match.preds_on.get(g, []))
                  if p in fp_left and category["pred", p] == category["gt", g]
                  and match.overlap.get((g, p), 0) > 0.5 * match.non_void_area(p)]
        inside = sum(match.overlap.get((g, p), 0) for p in pieces)
        union = match.gt[g]["area"] + sum(match.non_void_area(p) for p in pieces) - inside
        if len(pieces) >= 2 and inside > 0.5 * union:
            fn_left.remove(g)
            events.append(ErrorEvent("split", ("gt", g), [g], _take(fp_left, pieces)))
    return events

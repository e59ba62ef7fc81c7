"""Step 8: from per-query predictions to Detectron2's outputs, in the original image size.

One resize convention serves all three outputs: mask logits come at the mask stride s over
the padded batch, and only the ceil(h/s) x ceil(w/s) cells that cover the h x w image are read
(``image_cells``), resized bilinearly to where the output needs them (Detectron2's
``sem_seg_postprocess``). Padding, and so the other images of a batch, never reach an image's
outputs; for an image alone (DETR's reference runs one image unpadded) the cells are all of
its mask.

``panoptic_merge`` applies one of two rules (MODEL.DETR.TEST.MERGE), for the PyTorch model and
the exported one alike. "reference" follows DETR's PostProcessPanoptic step by step: kept
queries' mask logits are resized to the network's input size, a pixel-wise argmax picks one
query per pixel, the id map is resized to the original size with PIL's nearest-neighbour
rule, stuff queries of one class are merged, and segments of at most ``small_area`` pixels are
dropped, repeating until none is. "score_weighted" is Mask2Former's rule
(``score_weighted_merge``), its segment map resized alike and segments of at most
``small_area`` pixels dropped to void. Instances and semantic scores are DETR's and
Mask2Former's conventions for COCOEvaluator and SemSegEvaluator.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Boxes, Instances
from torchvision.ops import box_convert

from .score_weighted_merge import score_weighted_segments

# Values of MODEL.DETR.TEST.MERGE.
MERGE_RULES = ("reference", "score_weighted")


def image_cells(image_size, stride):
    """(rows, cols) of the mask-stride cells that cover an image of ``image_size`` (h, w):
    ceil(h / stride), ceil(w / stride)."""
    return -(-image_size[0] // stride), -(-image_size[1] // stride)


def select_queries(logits, threshold):
    """logits: N x (K+1). Returns (keep N bool, scores N, classes N) with the reference's rule:
    the most likely class over all K+1 is not "no object" and its probability > threshold."""
    scores, classes = logits.softmax(-1).max(-1)
    keep = (classes != logits.shape[-1] - 1) & (scores > threshold)
    return keep, scores, classes


def _pil_nearest_indices(n_in, n_out):
    """Source index of each output pixel under PIL's NEAREST resize along one axis.

    PIL walks the output accumulating the scale in double precision; the same running sum
    (a sequential cumsum) gives bit-identical picks, which matters on exact ties.
    """
    scale = n_in / n_out
    steps = np.full(n_out, scale)
    steps[0] = 0.5 * scale
    return torch.from_numpy(np.minimum(np.cumsum(steps).astype(np.int64), n_in - 1))


def resize_ids_nearest(ids, size):
    """ids: h x w integer map -> size (H, W), PIL NEAREST semantics (ids itself when the
    size is unchanged: the mapping is then the identity)."""
    if tuple(ids.shape) == tuple(size):
        return ids
    rows = _pil_nearest_indices(ids.shape[0], size[0]).to(ids.device)
    cols = _pil_nearest_indices(ids.shape[1], size[1]).to(ids.device)
    return ids[rows][:, cols]


@dataclass(frozen=True)
class MergeRule:
    """The panoptic merge rule and its settings (MODEL.DETR.TEST.MERGE*), checked on
    construction (ValueError naming the key).

    rule: "reference" or "score_weighted" (module docstring); mask_threshold,
    overlap_threshold, stuff_fills_void: the score-weighted rule's settings
    (score_weighted_merge), ignored by the reference rule."""

    rule: str = "reference"
    mask_threshold: float = 0.5
    overlap_threshold: float = 0.8
    stuff_fills_void: bool = True

    def __post_init__(self):
        if self.rule not in MERGE_RULES:
            raise ValueError(f"merge (MODEL.DETR.TEST.MERGE) must be one of {MERGE_RULES}, got {self.rule!r}")
        for key, value in (("MERGE_MASK_THRESHOLD", self.mask_threshold), ("MERGE_OVERLAP_THRESHOLD", self.overlap_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MODEL.DETR.TEST.{key} must be in [0, 1], got {value}")

    @classmethod
    def from_config(cls, cfg):
        """The rule of MODEL.DETR.TEST.MERGE, MERGE_MASK_THRESHOLD, MERGE_OVERLAP_THRESHOLD and
        MERGE_STUFF_FILLS_VOID."""
        test = cfg.MODEL.DETR.TEST
        return cls(test.MERGE, test.MERGE_MASK_THRESHOLD, test.MERGE_OVERLAP_THRESHOLD, test.MERGE_STUFF_FILLS_VOID)


def panoptic_merge(mask_logits, scores, classes, is_thing, image_size, output_size, small_area, stride, merge=MergeRule()):
    """Merges kept queries into one panoptic map.

    mask_logits: T x h' x w' logits of the kept queries at the mask ``stride`` (see the module
        docstring); scores, classes: T (contiguous class ids); is_thing: K bool.
    image_size: (h, w) of the network input; output_size: (H, W) of the original image.
    merge: the MergeRule (module docstring).
    Returns (panoptic_seg H x W int32 with 0 = void and segments numbered from 1,
    segments_info list of {"id", "isthing", "category_id", "score", "area"}).
    """
    empty = torch.zeros(output_size, dtype=torch.int32, device=mask_logits.device)
    if mask_logits.shape[0] == 0:
        return empty, []
    masks = sem_seg_postprocess(mask_logits, image_cells(image_size, stride), *image_size)
    if merge.rule == "score_weighted":
        segments, firsts = score_weighted_segments(
            masks, scores, classes, is_thing, merge.mask_threshold, merge.overlap_threshold, merge.stuff_fills_void
        )
        return _drop_small_to_void(resize_ids_nearest(segments, output_size), firsts, scores, classes, is_thing, small_area)
    # Per pixel, the query with the highest logit; max(0).indices follows argmax's rule (the
    # first maximum wins) and is faster on CPU.
    winner = masks.max(0).indices
    alive = torch.arange(len(classes), device=masks.device)
    first_round = True
    while True:
        position = winner.new_empty(len(classes))
        position[alive] = torch.arange(len(alive), device=alive.device)
        ids = resize_ids_nearest(position[winner], output_size)
        area = torch.bincount(ids.flatten(), minlength=len(alive))
        if first_round:
            area = _merge_stuff_areas(area, classes[alive], is_thing)
            first_round = False
        small = area <= small_area
        if not small.any():
            break
        alive = alive[~small]
        if not len(alive):
            return empty, []
        _reassign_pixels(masks, winner, alive)
    segments_info = _segments_info(alive.tolist(), area.tolist(), scores, classes, is_thing)
    return (ids + 1).to(torch.int32), segments_info


def _segments_info(queries, areas, scores, classes, is_thing):
    """Detectron2's segments_info: segment i + 1 from query ``queries[i]`` covering ``areas[i]`` pixels."""
    return [
        {
            "id": i + 1,
            "isthing": bool(is_thing[classes[q]]),
            "category_id": int(classes[q]),
            "score": float(scores[q]),
            "area": int(a),
        }
        for i, (q, a) in enumerate(zip(queries, areas))
    ]


def _drop_small_to_void(ids, firsts, scores, classes, is_thing, small_area):
    """ids: H x W segment map (0 = void, segment i from ``firsts[i - 1]``). Segments of at most
    ``small_area`` pixels become void and the rest are renumbered 1..S in order. Returns
    (panoptic_seg H x W int32, segments_info) as ``panoptic_merge``."""
    area = torch.bincount(ids.flatten(), minlength=len(firsts) + 1)[1:]
    big = area > small_area
    number = torch.zeros(len(firsts) + 1, dtype=torch.long, device=ids.device)
    number[1:][big] = torch.arange(1, int(big.sum()) + 1, device=ids.device)
    segments_info = _segments_info(firsts[big].tolist(), area[big].tolist(), scores, classes, is_thing)
    return number[ids].to(torch.int32), segments_info


def _reassign_pixels(masks, winner, alive):
    """After queries are dropped: the pixels ``winner`` (H x W query ids, in place) gives to a
    dropped query go to the best query of ``alive`` (sorted ids). Pixels won by a query still
    alive keep it, so the result equals the argmax over ``masks[alive]`` everywhere, without
    recomputing it over the whole image."""
    dropped = torch.ones(masks.shape[0], dtype=torch.bool, device=masks.device)
    dropped[alive] = False
    stale = dropped[winner]
    if stale.any():
        winner[stale] = alive[masks[:, stale][alive].max(0).indices]


def _merge_stuff_areas(area, classes, is_thing):
    """The reference's stuff merge: every later query of a stuff class hands its pixels to the
    first query of that class. Returns the areas after the merge (0 for the merged ones), which
    makes them drop out with the small segments."""
    area = area.clone()
    for c in classes[~is_thing[classes]].unique():
        group = (classes == c).nonzero()[:, 0]
        area[group[0]] = area[group].sum()
        area[group[1:]] = 0
    return area


def instance_queries(logits, is_thing, topk, floor=0.0):
    """The detections of one image, DETR's box/segm evaluation convention: every query whose
    best real class is a thing, with that class's probability as score, the ``topk`` best;
    with ``floor`` > 0 only those scoring at least ``floor`` (as Detectron2's R-CNNs'
    SCORE_THRESH_TEST).

    logits: N x (K+1); is_thing: K bool. Returns (queries T long, scores T, classes T), by
    decreasing score (ties in query order)."""
    scores, classes = logits.softmax(-1)[:, :-1].max(-1)
    candidates = (is_thing[classes] & (scores >= floor)).nonzero()[:, 0]
    order = scores[candidates].argsort(descending=True, stable=True)[:topk]
    idx = candidates[order]
    return idx, scores[idx], classes[idx]


def instance_results(detections, boxes, mask_logits, image_size, output_size, stride):
    """Things as Detectron2 Instances.

    detections: (queries T, scores T, classes T) from ``instance_queries``; boxes: N x 4
    normalized cxcywh of all queries; mask_logits: T x h' x w' logits of the detections at
    the mask ``stride`` (see the module docstring), or None (box-only model). Masks: the
    image's cells resized to ``image_size``, > 0, then nearest-resized to ``output_size``.
    """
    idx, scores, classes = detections
    result = Instances(output_size)
    h, w = output_size
    xyxy = box_convert(boxes[idx], "cxcywh", "xyxy") * boxes.new_tensor([w, h, w, h])
    result.pred_boxes = Boxes(xyxy)
    result.scores = scores
    result.pred_classes = classes
    if mask_logits is not None:
        result.pred_masks = _binary_masks(mask_logits, image_size, output_size, stride)
    return result


def _binary_masks(mask_logits, image_size, output_size, stride, chunk=16):
    """T x h' x w' logits -> T x H x W bool masks (chunked to bound peak memory)."""
    if not len(mask_logits):
        return torch.zeros((0, *output_size), dtype=torch.bool, device=mask_logits.device)
    out = []
    cells = image_cells(image_size, stride)
    for part in mask_logits.split(chunk):
        binary = (sem_seg_postprocess(part, cells, *image_size) > 0).float()
        out.append(F.interpolate(binary[None], size=output_size, mode="nearest")[0] > 0.5)
    return torch.cat(out)


def semantic_queries(logits, floor=0.0):
    """The queries semantic scores are summed over: those whose best real-class probability
    is at least ``floor``; a query left out would have added less than ``floor`` to any class's
    score at any pixel (its p(class) x sigmoid(mask) is below its best p(class)), so it can
    only move the argmax where the two best classes are closer than that.
    logits: N x (K+1). Returns N bool."""
    return logits.softmax(-1)[:, :-1].max(-1).values >= floor


def semantic_results(logits, mask_logits, image_size, output_size, stride):
    """Per-class scores C x H x W: sum over queries of p(class) * sigmoid(mask).

    logits: T x (K+1) and mask_logits: T x h' x w' at the mask ``stride`` (see the module
    docstring), of the queries summed over (``semantic_queries``); image_size: (h, w) of the
    network input. The sum is taken over the image's cells at the mask stride, then resized
    bilinearly to ``output_size``.
    """
    rows, cols = image_cells(image_size, stride)
    probs = logits.softmax(-1)[:, :-1]
    # A contiguous copy first: sigmoid rounds differently on a strided view, and the scores must
    # not depend on how much padding the batch has.
    scores = torch.einsum("qc,qhw->chw", probs, mask_logits[:, :rows, :cols].contiguous().sigmoid())
    return sem_seg_postprocess(scores, (rows, cols), *output_size)

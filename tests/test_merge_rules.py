"""The panoptic merge rules (MODEL.DETR.TEST.MERGE): hand-computed segment maps for the reference
rule and the score-weighted one, the score-weighted rule against Mask2Former's loop restated,
and the keys reaching the model from yaml and LazyConfig (the COCO configs keep the reference's).

Masks are given at stride 1 with the output at the input size, so the merge sees the logits
written here unchanged (a same-size bilinear resize is the identity). Classes 0 and 1 are
things, 2 is stuff. sigmoid(2) = 0.881, sigmoid(1) = 0.731, sigmoid(-1) = 0.269,
sigmoid(-2) = 0.119, sigmoid(-3) = 0.047, sigmoid(3) = 0.953.
"""
import inspect

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from detr_panoptic_d2.engine import load_config
from detr_panoptic_d2.modeling import DetrPanoptic, DetrPostProcessor, postprocessing

IS_THING = torch.tensor([True, True, False])


def _merge(logits, scores, classes, rule, size=None, small_area=0, **settings):
    logits = torch.tensor(logits, dtype=torch.float32)
    image_size = tuple(logits.shape[-2:])
    seg, info = postprocessing.panoptic_merge(
        logits, torch.tensor(scores), torch.tensor(classes), IS_THING, image_size, size or image_size,
        small_area, 1, postprocessing.MergeRule(rule, **settings),
    )
    return seg.tolist(), [(s["id"], s["category_id"], s["isthing"], round(s["score"], 3), s["area"]) for s in info]


# Query a (thing 0, score 0.9) and b (thing 1, score 0.5) on a 1 x 2 image. Pixel 0: b has the
# higher logit (3 > 1) but a the higher score x sigmoid (0.9 x 0.731 = 0.658 > 0.5 x 0.953 =
# 0.476). Pixel 1: b everywhere. b's own mask is both pixels; it wins one, half of it.
SCORE_BEATS_LOGIT = ([[[1.0, -3.0]], [[3.0, 3.0]]], [0.9, 0.5], [0, 1])


def test_reference_rule_takes_the_highest_logit_and_drops_the_empty_segment():
    seg, info = _merge(*SCORE_BEATS_LOGIT, "reference")
    assert seg == [[1, 1]]
    assert info == [(1, 1, True, 0.5, 2)]


def test_score_weighted_rule_takes_the_highest_score_times_sigmoid_and_drops_the_covered_query():
    seg, info = _merge(*SCORE_BEATS_LOGIT, "score_weighted")
    assert seg == [[1, 0]]  # b wins 1 of its 2 pixels (0.5 < 0.8): dropped, its pixel void
    assert info == [(1, 0, True, 0.9, 1)]
    seg, info = _merge(*SCORE_BEATS_LOGIT, "score_weighted", overlap_threshold=0.5)
    assert seg == [[1, 2]]
    assert info == [(1, 0, True, 0.9, 1), (2, 1, True, 0.5, 1)]


# Stuff s (class 2) and thing t (class 0), both score 0.8, on a 1 x 4 image. Pixel 1: s wins
# with sigmoid 0.269 (below 0.5); pixel 2: t wins with 0.269. Each wins 2 pixels and owns 1.
STUFF_AND_THING = ([[[2.0, -1.0, -3.0, -2.0]], [[-2.0, -3.0, -1.0, 2.0]]], [0.8, 0.8], [2, 0])


def test_score_weighted_rule_voids_unconfident_pixels_unless_stuff_fills_them():
    seg, info = _merge(*STUFF_AND_THING, "score_weighted", stuff_fills_void=False)
    assert seg == [[1, 0, 0, 2]]
    assert info == [(1, 2, False, 0.8, 1), (2, 0, True, 0.8, 1)]
    seg, info = _merge(*STUFF_AND_THING, "score_weighted", stuff_fills_void=True)
    assert seg == [[1, 1, 0, 2]]  # the stuff winner keeps pixel 1; the thing's pixel 2 stays void
    assert info == [(1, 2, False, 0.8, 2), (2, 0, True, 0.8, 1)]
    seg, _ = _merge(*STUFF_AND_THING, "reference")
    assert seg == [[1, 1, 2, 2]]


# Stuff u (0.9) and v (0.7) of class 2, thing w (class 1, 0.9): one pixel each.
TWO_STUFF_OF_ONE_CLASS = ([[[2.0, -2.0, -2.0]], [[-2.0, 2.0, -2.0]], [[-2.0, -2.0, 2.0]]], [0.9, 0.7, 0.9], [2, 2, 1])


@pytest.mark.parametrize("rule", ["reference", "score_weighted"])
def test_both_rules_merge_stuff_of_one_class_into_its_first_query(rule):
    seg, info = _merge(*TWO_STUFF_OF_ONE_CLASS, rule)
    assert seg == [[1, 1, 2]]
    assert info == [(1, 2, False, 0.9, 2), (2, 1, True, 0.9, 1)]


# A 2 x 2 image merged to 4 x 4: a (thing 0) wins the top-left pixel, b (thing 1) the rest.
SMALL_SEGMENT = ([[[2.0, -2.0], [-2.0, -2.0]], [[-1.0, 2.0], [2.0, 2.0]]], [0.9, 0.9], [0, 1])


def test_small_segments_go_to_void_in_the_score_weighted_rule_and_to_the_next_query_in_the_reference():
    seg, info = _merge(*SMALL_SEGMENT, "score_weighted", size=(4, 4), small_area=4)
    assert seg == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert info == [(1, 1, True, 0.9, 12)]
    seg, info = _merge(*SMALL_SEGMENT, "reference", size=(4, 4), small_area=4)
    assert seg == [[1] * 4] * 4
    assert info == [(1, 1, True, 0.9, 16)]
    seg, info = _merge(*SMALL_SEGMENT, "score_weighted", size=(4, 4), small_area=3)
    assert seg == [[1, 1, 2, 2], [1, 1, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2]]


def _mask2former_loop(probs, scores, classes, is_thing, overlap=0.8):
    """Mask2Former's ``panoptic_inference`` restated (its loop over the kept queries)."""
    ids = (scores[:, None, None] * probs).argmax(0)
    seg = torch.zeros(probs.shape[1:], dtype=torch.long)
    segments, stuff_ids = [], {}
    for k in range(len(classes)):
        c = int(classes[k])
        mask_area = int((ids == k).sum())
        original_area = int((probs[k] >= 0.5).sum())
        mask = (ids == k) & (probs[k] >= 0.5)
        if mask_area > 0 and original_area > 0 and int(mask.sum()) > 0:
            if mask_area / original_area < overlap:
                continue
            if not is_thing[c] and c in stuff_ids:
                seg[mask] = stuff_ids[c]
                continue
            segments.append(c)
            seg[mask] = len(segments)
            if not is_thing[c]:
                stuff_ids[c] = len(segments)
    return seg, segments


@pytest.mark.parametrize("seed", range(20))
def test_score_weighted_rule_without_stuff_fill_is_mask2formers(seed):
    g = torch.Generator().manual_seed(seed)
    t = 3 + seed % 6
    logits = torch.randn(t, 9, 11, generator=g) * 3
    scores = torch.rand(t, generator=g)
    classes = torch.randint(0, 3, (t,), generator=g)
    seg, info = postprocessing.panoptic_merge(
        logits, scores, classes, IS_THING, (9, 11), (9, 11), 0, 1,
        postprocessing.MergeRule("score_weighted", stuff_fills_void=False),
    )
    expected, segments = _mask2former_loop(logits.sigmoid(), scores, classes, IS_THING)
    # Exact by construction: elementwise sigmoid, products and argmax of the same logits, no kernel-ordered sum.
    assert torch.equal(seg.long(), expected)
    assert [s["category_id"] for s in info] == segments


def test_a_bad_rule_is_named():
    with pytest.raises(ValueError, match="MODEL.DETR.TEST.MERGE"):
        _merge(*SCORE_BEATS_LOGIT, "argmax")
    with pytest.raises(ValueError, match="MERGE_OVERLAP_THRESHOLD"):
        _merge(*SCORE_BEATS_LOGIT, "score_weighted", overlap_threshold=1.5)


def test_coco_configs_keep_the_reference_rule_and_the_keys_reach_the_model():
    cfg, _ = load_config("configs/coco/detr_R50_panoptic.yaml")
    assert cfg.MODEL.DETR.TEST.MERGE == "reference"
    assert DetrPanoptic(cfg).postprocessor.merge == postprocessing.MergeRule("reference")
    lazy = LazyConfig.load("configs/coco/detr_R50_panoptic.py")  # sets what differs from the defaults
    default = inspect.signature(DetrPostProcessor.__init__).parameters["merge"].default
    assert lazy.model.postprocessor.get("merge", default) == default and default.rule == "reference"
    cfg.MODEL.DETR.TEST.MERGE, cfg.MODEL.DETR.TEST.MERGE_OVERLAP_THRESHOLD = "score_weighted", 0.6
    assert DetrPostProcessor(cfg).merge == postprocessing.MergeRule("score_weighted", overlap_threshold=0.6)
    lazy = LazyConfig.load("configs/shapes/detr_R18_shapes.py")
    lazy.model.postprocessor.merge.overlap_threshold = 0.6
    lazy.model.postprocessor.thing_ids = [0, 1, 2]
    model = instantiate(lazy.model)
    assert model.postprocessor.merge == postprocessing.MergeRule("score_weighted", 0.5, 0.6, True)

"""MODEL.DETR.TEST.MASK_SCORE_FLOOR: instance and semantic outputs computed on the queries at
or above the floor equal the exact mode (floor 0, the mask head on all queries as the reference
runs it: ``run_mask_head_on_all_queries``) when the floor removes no
query, and otherwise lack exactly the contributions of the queries below it."""
import pytest
import torch
from detectron2.modeling import build_model

from benchmarks.inference import compare_outputs
from detr_panoptic_d2.modeling import postprocessing
from detr_panoptic_d2.testing import fit_class_head, run_mask_head_on_all_queries

from .helpers import assert_masks_agree, assert_same_panoptic, make_input, tiny_cfg

NUM_CLASSES = 133  # COCO panoptic: things 0..79, stuff 80..132


def _batch():
    return [make_input(64, 96, with_targets=False), make_input(96, 72, seed=1, with_targets=False)]


def _models(floor):
    """(exact, floored) DetrPanoptic with every output on and the same weights, whose class head
    gives the queries of ``_batch()`` spread-out scores: query q predicts a random class with
    logit a_q and "no object" with logit b_q, a and b uniform in [0, 8)."""
    models = []
    for model_floor in (0.0, floor):
        cfg = tiny_cfg(num_classes=NUM_CLASSES, dataset="coco_2017_val_panoptic")
        cfg.MODEL.DETR.TEST.INSTANCES_ON = cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
        cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 0.5
        cfg.MODEL.DETR.TEST.MASK_SCORE_FLOOR = model_floor
        torch.manual_seed(0)
        models.append(build_model(cfg).eval())
    run_mask_head_on_all_queries(models[0])
    g = torch.Generator().manual_seed(0)
    target = torch.zeros(2, 10, NUM_CLASSES + 1)
    rows = torch.arange(2)[:, None], torch.arange(10)[None]
    target[rows + (torch.randint(0, NUM_CLASSES, (2, 10), generator=g),)] = 8 * torch.rand(2, 10, generator=g)
    target[..., -1] = 8 * torch.rand(2, 10, generator=g)
    fit_class_head(models[0], _batch(), target)
    models[1].load_state_dict(models[0].state_dict())
    return models


def _run(model):
    rows = []
    model.mask_head.register_forward_hook(lambda m, args, out: rows.append(out[0]))  # (mask logits, maps)
    with torch.no_grad():
        return model(_batch()), torch.cat(rows)


def _query_scores(model):
    """Per image: (score N, logits N x (K+1)) of the last layer; score = best real-class probability."""
    with torch.no_grad():
        images, mask = model.preprocess_image(_batch())
        logits = model.detect(images.tensor, mask).logits[-1]
    return logits.softmax(-1)[..., :-1].max(-1).values, logits


def test_floor_removing_no_query_equals_the_exact_mode():
    exact_model, _ = _models(0.0)
    scores, _ = _query_scores(exact_model)
    lowest = scores.min().item()
    for floor in (0.0, 0.999 * lowest):
        exact, floored = (_run(m)[0] for m in _models(floor))
        # Exact by construction: no query is dropped, so both run the head on the same rows.
        assert compare_outputs(exact, floored)["identical"], floor
        assert all(len(o["instances"]) > 0 for o in exact)


@pytest.mark.parametrize("floor", [0.2, 0.6])
def test_floor_drops_only_the_queries_below_it(floor):
    exact_model, floored_model = _models(floor)
    scores, logits = _query_scores(exact_model)
    (exact, all_masks), (floored, some_masks) = _run(exact_model), _run(floored_model)
    assert len(some_masks) < len(all_masks)
    dropped_somewhere = False
    for i, (e, f) in enumerate(zip(exact, floored)):
        # Tolerance for masks: the mask head runs on all or on fewer rows, shapes other kernels may round otherwise.
        assert_same_panoptic(e["panoptic_seg"], f["panoptic_seg"])
        # Instances: the exact mode's detections at or above the floor; scores and classes exact by
        # construction (the class head runs on every query in both), masks within the tolerance.
        above = e["instances"].scores >= floor
        kept = e["instances"][above]
        assert torch.equal(kept.scores, f["instances"].scores) and torch.equal(kept.pred_classes, f["instances"].pred_classes)
        assert_masks_agree(kept.pred_masks, f["instances"].pred_masks)
        dropped_somewhere |= not bool(above.all())
        # Semantic scores: the exact ones minus the contributions of the queries below the floor.
        below = scores[i] < floor
        masks = all_masks.view(2, 10, *all_masks.shape[-2:])[i]
        size = e["sem_seg"].shape[-2:]  # the image's, not resized
        missing = postprocessing.semantic_results(logits[i][below], masks[below], size, size, 4)
        torch.testing.assert_close(f["sem_seg"] + missing, e["sem_seg"], rtol=1e-5, atol=1e-5)
        # Exact by construction where no query is dropped (both run the head on the same rows).
        assert torch.equal(f["sem_seg"], e["sem_seg"]) == (not below.any())
        dropped_somewhere |= bool(below.any())
    assert dropped_somewhere


def test_floor_outside_zero_one_is_refused():
    cfg = tiny_cfg(num_classes=NUM_CLASSES, dataset="coco_2017_val_panoptic")
    cfg.MODEL.DETR.TEST.MASK_SCORE_FLOOR = 1.5
    with pytest.raises(ValueError, match="MASK_SCORE_FLOOR\\) must be in \\[0, 1\\], got 1.5"):
        build_model(cfg)

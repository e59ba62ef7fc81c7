"""SetCriterion.forward's options: deep supervision off, a frozen detector's mask losses alone,
and its "assigned" entry (known targets, e.g. DN-DETR's denoising queries), which gives the
matched losses when handed the matcher's own pairs. The whole forward is checked against
HuggingFace's ImageLoss in test_losses_against_huggingface.py, query groups against
independent DETRs in test_query_groups.py."""
import torch

from detr_panoptic_d2.modeling import HungarianMatcher, SetCriterion

K, N, L, G = 4, 5, 3, 2  # classes, queries per group, decoder layers, query groups


def _predictions(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(L, 2, G * N, K + 1, generator=g)
    boxes = torch.rand(L, 2, G * N, 4, generator=g) * 0.5 + 0.25
    targets = []
    for n in (3, 2):
        targets.append({
            "labels": torch.randint(0, K, (n,), generator=g),
            "boxes": torch.rand(n, 4, generator=g) * 0.5 + 0.25,
            "masks": torch.rand(n, 16, 16, generator=g) > 0.5,
        })
    # A mask "head": fixed per-query logits, as the model's head on the given pairs.
    table = torch.randn(2, G * N, 4, 4, generator=g)
    return logits, boxes, targets, table


def test_without_deep_supervision_only_the_last_layer_is_supervised():
    logits, boxes, targets, _ = _predictions()
    losses = SetCriterion(K, HungarianMatcher(), deep_supervision=False)(
        {"pred_logits": logits, "pred_boxes": boxes, "query_groups": G, "pred_masks": None}, targets
    )
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}


def test_frozen_detector_gets_mask_losses_only():
    criterion = SetCriterion(K, HungarianMatcher())
    logits, boxes, targets, table = _predictions()
    outputs = {"pred_logits": logits[:, :, :N], "pred_boxes": boxes[:, :, :N], "pred_masks": lambda b, q: table[b, q]}
    assert set(criterion(outputs, targets, detector_losses=False)) == {"loss_mask", "loss_dice"}


def test_assigned_queries_with_the_matchers_pairs_get_the_matched_losses():
    """Oracle: the matched losses of the same predictions; a denoising entry handed the
    matcher's pairs must reproduce them under its own suffix, on every layer."""
    criterion = SetCriterion(K, HungarianMatcher())
    logits, boxes, targets, _ = _predictions()
    logits, boxes = logits[:, :, :N], boxes[:, :, :N]
    matched = criterion({"pred_logits": logits, "pred_boxes": boxes}, targets)
    indices = [criterion.matcher(logits[i], boxes[i], targets) for i in range(L)]
    per_layer = {}
    for i in range(L):
        assigned = {"dn": {"pred_logits": logits[i : i + 1], "pred_boxes": boxes[i : i + 1], "indices": indices[i]}}
        out = criterion({"pred_logits": logits, "pred_boxes": boxes, "assigned": assigned}, targets)
        per_layer[i] = {k: v for k, v in out.items() if k.endswith("_dn")}
    for i in range(L):
        suffix = "" if i == L - 1 else f"_{i}"
        for loss in ("loss_ce", "loss_bbox", "loss_giou"):
            # Exact by construction: the same loss functions on the same pairs.
            assert torch.equal(per_layer[i][loss + "_dn"], matched[loss + suffix]), (loss, i)
    # All layers at once: suffixes per layer; a normalizer divides the box losses.
    assigned = {"dn": {"pred_logits": logits, "pred_boxes": boxes, "indices": indices[-1], "normalizer": 2}}
    out = criterion({"pred_logits": logits, "pred_boxes": boxes, "assigned": assigned}, targets)
    assert {"loss_ce_dn", "loss_bbox_dn", "loss_ce_dn_0", "loss_giou_dn_1"} <= set(out)
    assert torch.allclose(out["loss_bbox_dn"] * 2, matched["loss_bbox"], rtol=1e-6)

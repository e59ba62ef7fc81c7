"""SetCriterion.forward owns every training loss: its result equals the per-layer losses and
the mask losses of the matched (image, group, query) pairs assembled by hand, and its
"assigned" entry (known targets, e.g. DN-DETR's denoising queries) gives the matched losses
when handed the matcher's own pairs."""
import pytest
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


def _restated(criterion, logits, boxes, targets, table, all_groups):
    """The losses as the meta-architecture assembled them before the criterion owned them."""
    num_boxes = criterion.num_boxes(targets, logits.device)
    indices, losses = criterion.layer_losses(logits[-1], boxes[-1], targets, num_boxes, groups=G)
    for i in range(L - 1):
        losses.update(criterion.layer_losses(logits[i], boxes[i], targets, num_boxes, f"_{i}", G)[1])
    pairs = [(k // G, (k % G) * N, indices[k]) for k in range(len(indices)) if all_groups or k % G == 0]
    masks = torch.cat([table[b, q0 + src] for b, q0, (src, _) in pairs])
    target_masks = torch.cat([targets[b]["masks"][tgt] for b, _, (_, tgt) in pairs])
    losses.update(criterion.mask_losses(masks, target_masks, num_boxes * (G if all_groups else 1)))
    return losses


@pytest.mark.parametrize("all_groups", [False, True])
def test_forward_equals_the_layer_and_mask_losses_assembled_by_hand(all_groups):
    criterion = SetCriterion(K, HungarianMatcher(), mask_loss_all_groups=all_groups)
    logits, boxes, targets, table = _predictions()
    seen = []

    def segment(batch_idx, query_idx):
        seen.append((batch_idx, query_idx))
        return table[batch_idx, query_idx]

    outputs = {"pred_logits": logits, "pred_boxes": boxes, "query_groups": G, "pred_masks": segment}
    losses = criterion(outputs, targets)
    expected = _restated(criterion, logits, boxes, targets, table, all_groups)
    assert list(losses) == list(expected)
    for name in expected:
        # Exact by construction: the same loss functions on the same tensors, in the same order.
        assert torch.equal(losses[name], expected[name]), name
    assert len(seen) == 1 and len(seen[0][0]) == (5 * G if all_groups else 5)  # the mask head runs once


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

"""DETR's losses and matcher against an independent oracle: HuggingFace's port of the official
criterion (``transformers.loss.loss_for_object_detection``: ImageLoss, HungarianMatcher,
sigmoid_focal_loss, dice_loss) and hand-computed values."""
import pytest
import torch
from transformers.loss import loss_for_object_detection as hf

from detr_panoptic_d2.modeling import HungarianMatcher
from detr_panoptic_d2.modeling.criterion import SetCriterion, dice_loss, focal_loss

NUM_CLASSES = 4


def _batch(seed, counts=(3, 1, 2), queries=6):
    """Non-uniform random logits and boxes for len(counts) images, and targets with ``counts``
    segments each (labels, cxcywh boxes, 16 x 20 masks), as both criteria take them."""
    g = torch.Generator().manual_seed(seed)
    b = len(counts)
    logits = torch.randn(b, queries, NUM_CLASSES + 1, generator=g) * 3
    boxes = torch.cat([torch.rand(b, queries, 2, generator=g) * 0.6 + 0.2, torch.rand(b, queries, 2, generator=g) * 0.3 + 0.05], -1)
    targets = []
    for n in counts:
        targets.append({
            "labels": torch.randint(0, NUM_CLASSES, (n,), generator=g),
            "boxes": torch.cat([torch.rand(n, 2, generator=g) * 0.6 + 0.2, torch.rand(n, 2, generator=g) * 0.3 + 0.05], -1),
            "masks": torch.rand(n, 16, 20, generator=g) > 0.6,
        })
    return logits, boxes, targets


def _hf_targets(targets):
    return [{"class_labels": t["labels"], "boxes": t["boxes"], "masks": t["masks"].float()} for t in targets]


def test_matcher_cost_matrix_of_a_hand_computed_2x2_case():
    """cost = -p(class) + 5 L1 - 2 GIoU, worked out on paper for two predictions and two targets."""
    probs = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]])
    # Prediction 0 = target 0 = [0, 0.5]^2; prediction 1 = [0.5, 1]^2; target 1 = [0.25, 0.75]^2.
    pred_boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]])
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])}]
    (cost,) = HungarianMatcher(1.0, 5.0, 2.0).cost_matrices(probs.log(), pred_boxes, targets)
    # Quarter-overlapping boxes: IoU = 0.0625 / 0.4375 = 1/7, hull 0.5625, GIoU = 1/7 - 0.125 / 0.5625.
    giou_quarter = 1 / 7 - 2 / 9
    # Corner-touching boxes: IoU 0, union 0.5, hull 1, GIoU = -0.5.
    expected = torch.tensor([
        [-0.5 + 5 * 0.0 - 2 * 1.0, -0.3 + 5 * 0.5 - 2 * giou_quarter],
        [-0.1 + 5 * 1.0 - 2 * -0.5, -0.6 + 5 * 0.5 - 2 * giou_quarter],
    ])
    assert torch.allclose(cost, expected, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_matcher_agrees_with_the_huggingface_matcher(seed):
    """Same pairs as HuggingFace's matcher (class 1, L1 5, GIoU 2) on random batches with
    different target counts per image."""
    logits, boxes, targets = _batch(seed)
    ours = HungarianMatcher(1.0, 5.0, 2.0)(logits, boxes, targets)
    theirs = hf.HungarianMatcher(1.0, 5.0, 2.0)({"logits": logits, "pred_boxes": boxes}, _hf_targets(targets))
    assert len(ours) == len(theirs) == 3
    for (src, tgt), (hf_src, hf_tgt) in zip(ours, theirs):
        assert sorted(zip(src.tolist(), tgt.tolist())) == sorted(zip(hf_src.tolist(), hf_tgt.tolist()))


@pytest.mark.parametrize("seed", range(3))
def test_class_and_box_losses_equal_huggingface_imageloss(seed):
    """loss_ce (cross-entropy with no-object weight 0.1 on non-uniform logits), L1 and GIoU of one
    decoder layer, ours divided by their weights 1, 5, 2, against HuggingFace's ImageLoss."""
    logits, boxes, targets = _batch(seed)
    num_boxes = 6.0
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(1.0, 5.0, 2.0), no_object_weight=0.1)
    _, ours = criterion.layer_losses(logits, boxes, targets, num_boxes)
    oracle = hf.ImageLoss(hf.HungarianMatcher(1.0, 5.0, 2.0), NUM_CLASSES, eos_coef=0.1, losses=["labels", "boxes"])
    theirs = oracle({"logits": logits, "pred_boxes": boxes}, _hf_targets(targets))
    assert ours["loss_ce"].item() == pytest.approx(theirs["loss_ce"].item(), rel=1e-5)
    assert (ours["loss_bbox"] / 5).item() == pytest.approx(theirs["loss_bbox"].item(), rel=1e-5)
    assert (ours["loss_giou"] / 2).item() == pytest.approx(theirs["loss_giou"].item(), rel=1e-5)
    # Not a degenerate case: the no-object weight changes the class loss here.
    unweighted = SetCriterion(NUM_CLASSES, HungarianMatcher(1.0, 5.0, 2.0), no_object_weight=1.0)
    assert unweighted.layer_losses(logits, boxes, targets, num_boxes)[1]["loss_ce"].item() != pytest.approx(
        theirs["loss_ce"].item(), rel=1e-3
    )


def test_mask_losses_equal_huggingface_at_fixed_indices():
    """Focal (alpha 0.25, gamma 2) and dice losses of matched masks at fixed pairs, predicted at a
    quarter of the target size and upsampled, against HuggingFace's ImageLoss.loss_masks."""
    _, _, targets = _batch(0, counts=(3, 2))
    g = torch.Generator().manual_seed(1)
    pred_masks = torch.randn(2, 6, 4, 5, generator=g) * 2
    indices = [(torch.tensor([4, 0, 2]), torch.tensor([1, 2, 0])), (torch.tensor([5, 1]), torch.tensor([0, 1]))]
    num_boxes = 5.0
    oracle = hf.ImageLoss(None, NUM_CLASSES, eos_coef=0.1, losses=["masks"])
    theirs = oracle.loss_masks({"pred_masks": pred_masks}, _hf_targets(targets), indices, num_boxes)
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
    matched = torch.cat([pred_masks[b, src] for b, (src, _) in enumerate(indices)])
    target_masks = torch.cat([t["masks"][tgt] for t, (_, tgt) in zip(targets, indices)])
    ours = criterion.mask_losses(matched, target_masks, num_boxes)
    assert ours["loss_mask"].item() == pytest.approx(theirs["loss_mask"].item(), rel=1e-5)
    assert ours["loss_dice"].item() == pytest.approx(theirs["loss_dice"].item(), rel=1e-5)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.6, 1.0), (-1, 0.0)])
def test_focal_loss_uses_its_alpha_and_gamma(alpha, gamma):
    """The focal loss with other (alpha, gamma) than the default, against HuggingFace's
    sigmoid_focal_loss (alpha < 0: no class balancing; gamma 0: plain weighted BCE)."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 50, generator=g) * 3
    targets = (torch.rand(3, 50, generator=g) > 0.5).float()
    expected = hf.sigmoid_focal_loss(logits, targets, 2.0, alpha=alpha, gamma=gamma)
    assert focal_loss(logits, targets, 2.0, alpha, gamma).item() == pytest.approx(expected.item(), rel=1e-5)
    assert dice_loss(logits, targets, 2.0).item() == pytest.approx(hf.dice_loss(logits, targets, 2.0).item(), rel=1e-5)


def test_focal_and_dice_of_one_pixel_by_hand():
    """One pixel, logit 0 (p = 0.5), target 1: focal = alpha (1 - p)^gamma (-log p) and
    dice = 1 - (2 p + 1) / (p + 1 + 1); with num_boxes 2, halved."""
    logits, targets = torch.zeros(1, 1), torch.ones(1, 1)
    log2 = torch.log(torch.tensor(2.0)).item()
    assert focal_loss(logits, targets, 2.0, 0.4, 3.0).item() == pytest.approx(0.4 * 0.5**3 * log2 / 2)
    assert dice_loss(logits, targets, 2.0).item() == pytest.approx((1 - 2 / 2.5) / 2)


def test_forward_with_auxiliary_layers_and_masks_equals_huggingface_imageloss():
    """The whole SetCriterion.forward (3 decoder layers with deep supervision, masks from a
    function of the matched (image, query) pairs, called once) against HuggingFace's ImageLoss
    with auxiliary outputs, its losses weighted 1, 5, 2 and 1, 1 as ours."""
    logits, boxes, targets = _batch(0)
    g = torch.Generator().manual_seed(2)
    logits = torch.stack([logits + torch.randn(logits.shape, generator=g) for _ in range(2)] + [logits])
    boxes = torch.stack([(boxes + 0.05 * torch.randn(boxes.shape, generator=g)).clamp(0.05, 0.95) for _ in range(2)] + [boxes])
    pred_masks = torch.randn(3, 6, 4, 5, generator=g) * 2
    calls = []

    def segment(batch_idx, query_idx):
        calls.append(len(batch_idx))
        return pred_masks[batch_idx, query_idx]

    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(1.0, 5.0, 2.0), no_object_weight=0.1)
    ours = criterion({"pred_logits": logits, "pred_boxes": boxes, "pred_masks": segment}, targets)
    oracle = hf.ImageLoss(hf.HungarianMatcher(1.0, 5.0, 2.0), NUM_CLASSES, eos_coef=0.1, losses=["labels", "boxes", "masks"])
    auxiliary = [{"logits": logits[i], "pred_boxes": boxes[i]} for i in range(2)]
    with torch.no_grad():
        theirs = oracle(
            {"logits": logits[-1], "pred_boxes": boxes[-1], "pred_masks": pred_masks, "auxiliary_outputs": auxiliary},
            _hf_targets(targets),
        )
    weights = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_mask": 1.0, "loss_dice": 1.0}
    expected = {k: weights[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * v.item() for k, v in theirs.items() if k in ours}
    assert set(ours) == set(expected) == {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_0", "_1")} | {
        "loss_mask", "loss_dice"
    }
    for name, value in expected.items():
        assert ours[name].item() == pytest.approx(value, rel=1e-5), name
    assert calls == [6]  # the mask "head" runs once, on the 6 matched pairs of the last layer

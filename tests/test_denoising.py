"""Training-only denoising queries (DN-DETR, MODEL.DETR.DN, modeling/denoising.py): the attention
mask by hand, the matching queries get nothing from the denoising ones (forward or gradient)
and groups nothing from each other, the losses are there in training, and a checkpoint trained
with them gives a plain DETR's inference, bit for bit."""
import torch

from detr_panoptic_d2.modeling import HungarianMatcher, PositionEmbeddingSine, SetCriterion
from detr_panoptic_d2.modeling.anchor_transformer import AnchorTransformer, init_anchor_queries
from detr_panoptic_d2.modeling.denoising import DenoisingQueries
from detr_panoptic_d2.modeling.prediction_heads import box_head, class_head
from detr_panoptic_d2.modeling.transformer import group_attention_mask

from .helpers import assert_same_inference, load_trained_into_plain, tiny_model_with_every_output, two_labelled_images


def _model(dn_groups, seed=0):
    return tiny_model_with_every_output(["MODEL.DETR.DN.GROUPS", dn_groups], seed)


def test_attention_mask_by_hand():
    # 4 matching queries in 2 groups, then 2 denoising groups of 1 query each (T = blocked).
    T, F = True, False
    expected = torch.tensor([
        [F, F, T, T, T, T],
        [F, F, T, T, T, T],
        [T, T, F, F, T, T],
        [T, T, F, F, T, T],
        [F, F, F, F, F, T],
        [F, F, F, F, T, F],
    ])
    # Exact by construction: boolean masks.
    assert torch.equal(group_attention_mask(4, 2, denoising_groups=2, denoising_size=1), expected)
    assert torch.equal(group_attention_mask(2, 1, denoising_groups=1, denoising_size=2), torch.tensor([
        [F, F, T, T], [F, F, T, T], [F, F, F, F], [F, F, F, F],
    ]))
    assert group_attention_mask(4, 1) is None


def test_noise_follows_its_rule():
    torch.manual_seed(0)
    labels, boxes = torch.randint(0, 5, (2000,)), torch.rand(2000, 4) * 0.4 + 0.3
    clean = DenoisingQueries(16, 5, groups=1, label_noise=0.0, box_noise=0.0)
    # Exact by construction: no noise returns the inputs unchanged.
    assert all(torch.equal(a, b) for a, b in zip(clean.noised(labels, boxes), (labels, boxes)))
    noisy = DenoisingQueries(16, 5, groups=1, label_noise=0.2, box_noise=0.4)
    new_labels, new_boxes = noisy.noised(labels, boxes)
    # Replaced with probability 0.2 by one of 5 classes: changed in 0.2 x 4/5 = 16% of cases.
    assert 0.13 < (new_labels != labels).float().mean() < 0.19
    shift = (new_boxes[:, :2] - boxes[:, :2]).abs() / (boxes[:, 2:] / 2)
    scale = new_boxes[:, 2:] / boxes[:, 2:]
    assert shift.max() <= 0.4 + 1e-5 and shift.max() > 0.35
    assert scale.min() >= 0.6 - 1e-5 and scale.max() <= 1.4 + 1e-5


def test_negative_noise_lies_between_lambda_and_two_lambda():
    torch.manual_seed(0)
    labels, boxes = torch.randint(0, 5, (2000,)), torch.rand(2000, 4) * 0.4 + 0.3
    _, negative = DenoisingQueries(16, 5, groups=1, box_noise=0.4).noised(labels, boxes, negative=True)
    # Relative offsets per coordinate: the centre's shift over half the box, the size's scale - 1.
    offsets = torch.cat([(negative[:, :2] - boxes[:, :2]) / (boxes[:, 2:] / 2), negative[:, 2:] / boxes[:, 2:] - 1], 1)
    magnitude = offsets.abs() / 0.4
    assert magnitude.min() >= 1 - 1e-4 and magnitude.max() <= 2 + 1e-4
    assert magnitude.min() < 1.01 and magnitude.max() > 1.99 and 0.45 < (offsets > 0).float().mean() < 0.55


def _targets():
    return [
        {"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.4, 0.2]])},
        {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.6, 0.6]])},
    ]


def test_anchor_denoising_queries_with_negatives_layout():
    torch.manual_seed(0)
    dn = DenoisingQueries(16, 5, groups=2, label_noise=0.0, anchors=True, negatives=True)
    assert dn.box_embed is None
    anchors, content, size, indices, negatives = dn(_targets())
    # 2 groups of 2 positives then 2 negatives; image 1 has one segment, its other slots padding.
    assert anchors.shape == (2, 8, 4) and content.shape == (2, 8, 16) and size == 2
    assert [q.tolist() for q, _ in indices] == [[0, 1, 4, 5], [0, 4]]
    assert [t.tolist() for _, t in indices] == [[0, 1, 0, 1], [0, 0]]
    assert [q.tolist() for q in negatives] == [[2, 3, 6, 7], [2, 6]]
    assert ((anchors >= 0) & (anchors <= 1)).all()
    padding = torch.tensor([1, 3, 5, 7])
    # Exact by construction: padding slots are zeros, content is the embedding of unflipped labels.
    assert torch.count_nonzero(anchors[1, padding]) == 0 and torch.count_nonzero(content[1, padding]) == 0
    assert torch.equal(content[0, :4], dn.label_embed(torch.tensor([1, 3, 1, 3])))
    plain = DenoisingQueries(16, 5, groups=2)(_targets())
    assert plain[0].shape == (2, 4, 16) and plain[4] is None


def test_negatives_say_no_object_at_full_weight_in_the_class_loss():
    criterion = SetCriterion(2, HungarianMatcher(), no_object_weight=0.1, deep_supervision=False)
    logits = torch.tensor([[[[2.0, 0.0, 1.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]]]])  # 1 layer, 1 image, 3 queries
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    assigned = {"pred_logits": logits, "pred_boxes": torch.tensor([[[[0.5, 0.5, 0.2, 0.2]] * 3]]),
                "indices": [(torch.tensor([0]), torch.tensor([0]))]}
    # Cross-entropies: query 0 (class 1) log(e^2 + 1 + e) = 2.407606; query 1, the negative
    # (no object), log(1 + e + e^3) - 3 = 0.169846; query 2, padding (no object), log 3 = 1.098612.
    plain = criterion.assigned_losses(assigned, targets, 1.0, "dn")["loss_ce_dn"]
    torch.testing.assert_close(plain, torch.tensor((2.407606 + 0.1 * 0.169846 + 0.1 * 1.098612) / 1.2))
    with_negatives = criterion.assigned_losses({**assigned, "negatives": [torch.tensor([1])]}, targets, 1.0, "dn")
    torch.testing.assert_close(with_negatives["loss_ce_dn"], torch.tensor((2.407606 + 0.169846 + 0.1 * 1.098612) / 2.1))
    assert with_negatives["loss_bbox_dn"] == 0


def test_mask_denoising_losses_cover_the_positive_queries():
    criterion = SetCriterion(2, HungarianMatcher(), deep_supervision=False)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4], masks[1, :, :4] = True, True
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.5, 0.25, 1.0, 0.5], [0.25, 0.5, 0.5, 1.0]]),
                "masks": masks}]
    calls = []

    def pred_masks(batch_idx, query_idx):  # query 2 + j predicts target j's mask, at the targets' size
        calls.append((batch_idx.tolist(), query_idx.tolist()))
        return torch.where(masks[query_idx - 2], 5.0, -5.0)

    assigned = {"pred_logits": torch.zeros(1, 1, 4, 3), "pred_boxes": torch.full((1, 1, 4, 4), 0.5),
                "indices": [(torch.tensor([2, 3]), torch.tensor([0, 1]))], "pred_masks": pred_masks, "normalizer": 2}
    losses = criterion.assigned_losses(assigned, targets, 2.0, "dn")
    assert calls == [([0, 0], [2, 3])]
    expected = criterion.mask_losses(torch.where(masks, 5.0, -5.0), masks, 4.0)
    torch.testing.assert_close(losses["loss_mask_dn"], expected["loss_mask"])
    torch.testing.assert_close(losses["loss_dice_dn"], expected["loss_dice"])
    assert "loss_mask_dn" not in criterion.assigned_losses({**assigned, "pred_masks": None}, targets, 2.0, "dn")


def test_anchor_denoising_trains_through_the_anchor_transformer():
    torch.manual_seed(0)
    transformer, boxes_head, classes = AnchorTransformer(32, 4, 1, 2, 64, 0.0), box_head(32), class_head(32, 5)
    dn = DenoisingQueries(32, 5, groups=2, anchors=True, negatives=True)
    queries = torch.nn.Embedding(4, 4)
    init_anchor_queries(queries)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    anchors, content, _, indices, negatives = dn(_targets())
    embeddings, boxes, _ = transformer(torch.randn(2, 32, 3, 4), mask, queries.weight, PositionEmbeddingSine(16)(mask),
                                       boxes_head, denoising=(anchors, content, dn.groups))
    assigned = {"pred_logits": classes(embeddings[:, :, 4:]), "pred_boxes": boxes[:, :, 4:], "indices": indices,
                "negatives": negatives, "normalizer": dn.groups}
    losses = SetCriterion(5, HungarianMatcher()).assigned_losses(assigned, _targets(), 3.0, "dn")
    assert {"loss_ce_dn", "loss_bbox_dn", "loss_giou_dn", "loss_ce_dn_0"} <= losses.keys()
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert dn.label_embed.weight.grad.abs().sum() > 0


def test_matching_queries_see_nothing_of_the_denoising_ones_and_groups_nothing_of_each_other():
    model = _model(2).train()
    images, padding_mask = model.preprocess_image(two_labelled_images())
    d, size = model.transformer.d_model, 3
    position = torch.randn(2, 2 * size, d, requires_grad=True)
    content = torch.randn(2, 2 * size, d, requires_grad=True)
    with_dn = model.detect(images.tensor, padding_mask, (position, content, 2))
    plain = model.detect(images.tensor, padding_mask)
    # Forward: the matching queries' outputs are those without denoising queries (another
    # attention shape, so equal up to float rounding).
    torch.testing.assert_close(with_dn.logits, plain.logits, rtol=1e-5, atol=1e-5)
    assert with_dn.denoising_logits.shape == (2, 2, 2 * size, 6)
    # Backward: no gradient from the matching queries' outputs reaches the denoising queries.
    grads = torch.autograd.grad(with_dn.logits.sum() + with_dn.boxes.sum(), (position, content), retain_graph=True)
    assert all(torch.count_nonzero(g) == 0 for g in grads)
    # Group 0's outputs get gradient from group 0's queries and none from group 1's.
    grads = torch.autograd.grad(with_dn.denoising_logits[:, :, :size].sum(), (position, content))
    for g in grads:
        assert torch.count_nonzero(g[:, :size]) > 0 and torch.count_nonzero(g[:, size:]) == 0


def test_training_has_denoising_losses_and_a_trained_checkpoint_infers_as_a_plain_detr(tmp_path):
    model = _model(3).train()
    losses = model(two_labelled_images())
    assert {"loss_ce_dn", "loss_bbox_dn", "loss_giou_dn", "loss_ce_dn_0"} <= losses.keys()
    assert {k for k in losses if "dn" not in k} == set(_model(0).train()(two_labelled_images()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sum(losses.values()).backward()
    assert model.training_queries.denoising.label_embed.weight.grad.abs().sum() > 0
    optimizer.step()
    plain = _model(0, seed=1)
    load_trained_into_plain(model, plain, tmp_path)
    assert plain.training_queries is None
    assert_same_inference(model, plain)

"""Training-only denoising queries (DN-DETR, MODEL.DETR.DN, modeling/denoising.py): the attention
mask by hand, the matching queries get nothing from the denoising ones (forward or gradient)
and groups nothing from each other, the losses are there in training, and a checkpoint trained
with them gives a plain DETR's inference, bit for bit."""
import torch

from detr_panoptic_d2.modeling.denoising import DenoisingQueries
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

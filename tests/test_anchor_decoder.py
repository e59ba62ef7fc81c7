"""The anchor-box decoder (DAB-DETR, modeling/anchor_decoder.py, anchor_transformer.py): the
refinement by hand, detached anchors and look-forward-twice's gradient, shapes with query
groups and denoising queries (which the matching queries never see), padding invariance,
the anchor queries' initialization, and finite boxes and matching costs from extreme anchors
under bfloat16 autocast."""
import pytest
import torch
from torch import nn

from detr_panoptic_d2.modeling import HungarianMatcher, PositionEmbeddingSine
from detr_panoptic_d2.modeling.anchor_decoder import AnchorBoxDecoder, anchor_sine_codes, inverse_sigmoid
from detr_panoptic_d2.modeling.anchor_transformer import AnchorTransformer, init_anchor_queries
from detr_panoptic_d2.modeling.prediction_heads import box_head


class OffsetPerLayer(nn.Module):
    """A box head returning, at its i-th call, the constant offset ``offsets[i]`` (4,) for every query."""

    def __init__(self, offsets):
        super().__init__()
        self.offsets = nn.ParameterList(nn.Parameter(torch.tensor(o)) for o in offsets)
        self.calls = 0

    def forward(self, x):
        offset = self.offsets[self.calls % len(self.offsets)]
        self.calls += 1
        return offset.expand(*x.shape[:-1], 4)


def _grid(b=1, d=16, hw=6):
    torch.manual_seed(0)
    return torch.randn(b, hw, d), torch.randn(b, hw, d), torch.zeros(b, hw, dtype=torch.bool)


def _decoder(layers, look_forward_twice=False, d=16):
    torch.manual_seed(0)
    return AnchorBoxDecoder(d, 4, layers, 32, 0.0, False, look_forward_twice)


def test_refinement_by_hand():
    memory, pos, mask = _grid()
    anchors = torch.tensor([[[0.2, 0.5, 0.1, 0.8]]])
    head = OffsetPerLayer([[0.5, -1.0, 0.0, 2.0]])
    embeddings, boxes, read = _decoder(1)(anchors, memory, pos, mask, head)
    assert embeddings.shape == (1, 1, 1, 16) and boxes.shape == read.shape == (1, 1, 1, 4)
    # sigmoid(o + logit(a)) = a e^o / (1 - a + a e^o):
    # 0.2 e^0.5 / (0.8 + 0.2 e^0.5) = 0.329744 / 1.129744; e^-1 / (1 + e^-1); 0.1; 0.8 e^2 / (0.2 + 0.8 e^2).
    expected = torch.tensor([0.329744 / 1.129744, 0.367879 / 1.367879, 0.1, 5.911245 / 6.111245])
    torch.testing.assert_close(boxes[0, 0, 0], expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(read[0], anchors)


def test_next_anchor_is_the_detached_refined_box_and_look_forward_twice_passes_gradient():
    memory, pos, mask = _grid()
    anchors = torch.tensor([[[0.3, 0.6, 0.2, 0.4], [0.7, 0.2, 0.5, 0.1]]])
    results = {}
    for lft in (False, True):
        head = OffsetPerLayer([[0.5, -1.0, 0.0, 2.0], [-0.3, 0.2, 0.4, -0.6]])
        _, boxes, read = _decoder(2, lft)(anchors, memory, pos, mask, head)
        # Exact by construction: layer 2 reads layer 1's refined box, detached.
        assert torch.equal(read[1], boxes[0].detach()) and not read[1].requires_grad
        (grad,) = torch.autograd.grad(boxes[1].sum(), head.offsets[0], allow_unused=True, materialize_grads=True)
        results[lft] = boxes, grad
    # Layer 1's offset reaches layer 2's box only with look-forward-twice; the forward values
    # are the same (the same float32 operations on the same values).
    assert torch.count_nonzero(results[False][1]) == 0 and torch.count_nonzero(results[True][1]) == 4
    assert torch.equal(results[False][0], results[True][0])


def test_spatial_query_is_the_centre_code_modulated_by_width_and_height():
    decoder = _decoder(1)
    with torch.no_grad():  # w_ref = 0.25, h_ref = 0.5 for any content
        decoder.ref_anchor_head.layers[-1].weight.zero_()
        decoder.ref_anchor_head.layers[-1].bias.copy_(torch.tensor([0.25, 0.5]).logit())
    anchor = torch.tensor([[[0.3, 0.6, 0.5, 0.25]]])
    code, centre = anchor_sine_codes(anchor, 16)
    # Layout: cx, cy, w, h codes (8 channels each); the centre code is cy's then cx's.
    assert torch.equal(centre, torch.cat([code[..., 8:16], code[..., :8]], -1))
    spatial = decoder.spatial_query(torch.randn(1, 1, 16), anchor, centre, first=True)
    # y half by h_ref / h = 0.5 / 0.25, x half by w_ref / w = 0.25 / 0.5.
    torch.testing.assert_close(spatial, torch.cat([centre[..., :8] * 2.0, centre[..., 8:] * 0.5], -1))


def _transformer(**kwargs):
    torch.manual_seed(0)
    return AnchorTransformer(32, 4, 1, 2, 64, 0.0, **kwargs)


def _image(b=2):
    torch.manual_seed(1)
    mask = torch.zeros(b, 3, 4, dtype=torch.bool)
    mask[-1, :, 3] = True
    return torch.randn(b, 32, 3, 4), mask, PositionEmbeddingSine(16)(mask)


def test_shapes_with_groups_and_denoising_which_the_matching_queries_never_see():
    tr, head = _transformer(), box_head(32)
    src, mask, pos = _image()
    queries = nn.Embedding(6, 4)
    init_anchor_queries(queries)
    dn_anchors = torch.rand(2, 8, 4, requires_grad=True)
    content = torch.randn(2, 8, 32, requires_grad=True)
    embeddings, boxes, memory = tr(src, mask, queries.weight, pos, head, query_groups=2, denoising=(dn_anchors, content, 2))
    assert embeddings.shape == (2, 2, 14, 32) and boxes.shape == (2, 2, 14, 4) and memory.shape == (2, 32, 3, 4)
    assert boxes.dtype == torch.float32 and ((boxes > 0) & (boxes < 1)).all()
    plain_embeddings, plain_boxes, _ = tr(src, mask, queries.weight, pos, head, query_groups=2)
    # Another attention shape, so equal up to float rounding.
    torch.testing.assert_close(embeddings[:, :, :6], plain_embeddings, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(boxes[:, :, :6], plain_boxes, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(embeddings[:, :, :6].sum() + boxes[:, :, :6].sum(), (dn_anchors, content), retain_graph=True)
    assert all(torch.count_nonzero(g) == 0 for g in grads)
    # Query group 0 (queries 0-2) gets nothing from group 1's anchors, denoising group 0 nothing from group 1.
    (grad,) = torch.autograd.grad(boxes[:, :, :3].sum(), queries.weight, retain_graph=True)
    assert torch.count_nonzero(grad[:3]) > 0 and torch.count_nonzero(grad[3:]) == 0
    for g in torch.autograd.grad(boxes[:, :, 6:10].sum(), (dn_anchors, content)):
        assert torch.count_nonzero(g[:, :4]) > 0 and torch.count_nonzero(g[:, 4:]) == 0


@pytest.mark.parametrize("pre_norm", [False, True])
def test_outputs_ignore_padding(pre_norm):
    tr, head = _transformer(pre_norm=pre_norm), box_head(32)
    src, mask, pos = _image(1)
    queries = torch.randn(5, 4)
    embeddings, boxes, memory = tr(src, mask, queries, pos, head)
    padded_mask = torch.nn.functional.pad(mask, (0, 3, 0, 2), value=True)
    padded_src = torch.nn.functional.pad(src, (0, 3, 0, 2), value=7.0)
    padded = tr(padded_src, padded_mask, queries, PositionEmbeddingSine(16)(padded_mask), head)
    torch.testing.assert_close(padded[0], embeddings, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded[1], boxes, rtol=1e-5, atol=1e-5)


def test_anchor_queries_initialization_and_frozen_random_centres():
    torch.manual_seed(0)
    queries = nn.Embedding(2000, 4)
    init_anchor_queries(queries, random_xy=True)
    centres = queries.weight[:, :2].sigmoid()
    assert 0.45 < centres.mean() < 0.55 and 0.27 < centres.std() < 0.31  # uniform(0, 1): std 0.289
    (queries.weight.sigmoid() * torch.arange(1.0, 5.0)).sum().backward()
    assert torch.count_nonzero(queries.weight.grad[:, :2]) == 0 and torch.count_nonzero(queries.weight.grad[:, 2:]) == 4000
    with pytest.raises(ValueError, match="nn.Embedding"):
        init_anchor_queries(nn.Embedding(3, 8))
    with pytest.raises(ValueError, match="query_embed"):
        _transformer()(*_image()[:2], torch.zeros(3, 32), _image()[2], box_head(32))


def test_extreme_anchors_give_finite_boxes_and_matching_costs_under_bfloat16():
    edge = [0.0, 1.0, 1e-8, 1 - 1e-8]
    anchors = torch.tensor([[[x, y, w, h] for x in edge for y in edge for w in (0.0, 1e-8, 1.0) for h in (0.0, 0.5)]])
    x = torch.tensor([0.0, 1.0, 1e-8, 1 - 1e-8], dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = inverse_sigmoid(x)
        memory, pos, mask = _grid(d=32)
        decoder, head = _decoder(2, d=32), box_head(32)
        _, boxes, _ = decoder(anchors, memory, pos, mask, head)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert boxes.dtype == torch.float32 and torch.isfinite(boxes).all()
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.9, 0.05, 0.05]])}]
    (cost,) = HungarianMatcher().cost_matrices(torch.zeros(1, anchors.shape[1], 3), boxes[-1].detach(), targets)
    # The matcher replaces non-finite costs by 1e8: these were finite.
    assert torch.isfinite(cost).all() and cost.abs().max() < 1e7

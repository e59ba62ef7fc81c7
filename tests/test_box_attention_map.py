"""The box-aware attention map (modeling/box_attention_map.py) and DetrMaskHead's use of it
(MODEL.DETR.MASK_HEAD.BOX_AWARE): two identical objects at two places get each its own map,
a query's row does not depend on the other queries, and the default head is DETR's,
unchanged."""
import pytest
import torch
from detectron2.layers import ShapeSpec

from detr_panoptic_d2.modeling import DetrMaskHead, FPNMaskHead, MultiHeadAttentionMap, PositionEmbeddingSine
from detr_panoptic_d2.modeling.box_attention_map import BoxAwareAttentionMap

D = 32


def _two_blobs():
    """An 8 x 8 memory, zero but for the same feature at cells (1, 6) and (6, 1) (each the
    other's transpose, so that a map reading x for y would peak on the wrong one), its sine
    encoding, and the boxes centred on those cells (PositionEmbeddingSine puts cell (i, j) at
    ((j + 1) / w, (i + 1) / h))."""
    torch.manual_seed(0)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    feature = torch.randn(D)
    memory = torch.zeros(1, D, 8, 8)
    memory[0, :, 1, 6] = memory[0, :, 6, 1] = feature
    boxes = torch.tensor([[7 / 8, 2 / 8, 0.2, 0.2], [2 / 8, 7 / 8, 0.2, 0.2]])
    return feature, memory, PositionEmbeddingSine(D // 2)(mask), mask, boxes


def test_identical_objects_at_two_places_get_each_its_own_map():
    feature, memory, pos, mask, boxes = _two_blobs()
    box_map, plain = BoxAwareAttentionMap(D, D, 1), MultiHeadAttentionMap(D, D, 1)
    with torch.no_grad():
        # Identity projections: the content term is feature . memory (the same at both blobs),
        # the spatial term the dot product of the centre's and the pixel's sine codes, a sum of
        # cos(2 pi (centre - pixel) / f) over the frequencies f, largest where they match.
        for m in (box_map, plain):
            m.q_linear.weight.copy_(torch.eye(D))
            m.k_linear.weight.copy_(torch.eye(D))
        box_map.q_pos_linear.weight.copy_(4 * torch.eye(D))
        box_map.k_pos_linear.weight.copy_(torch.eye(D))
        queries, batch_idx = feature.expand(2, -1), torch.zeros(2, dtype=torch.long)
        maps = box_map(queries, boxes, batch_idx, memory, pos, mask)
        plain_maps = plain(queries, batch_idx, memory, mask)
    assert maps.shape == (2, 1, 8, 8)
    # Exact by construction: same query, same keys. Without boxes the two maps are the same.
    assert torch.equal(plain_maps[0], plain_maps[1])
    peaks = [divmod(int(m.flatten().argmax()), 8) for m in maps]
    assert peaks == [(1, 6), (6, 1)]
    assert (maps[0] - maps[1]).abs().max() > 0.1
    torch.testing.assert_close(maps.sum((1, 2, 3)), torch.ones(2))


def test_a_query_row_does_not_depend_on_the_other_queries():
    torch.manual_seed(0)
    box_map = BoxAwareAttentionMap(D, D, 4)
    memory, pos = torch.randn(2, D, 3, 5), torch.randn(2, D, 3, 5)
    mask = torch.zeros(2, 3, 5, dtype=torch.bool)
    mask[1, :, 4] = True
    queries, boxes = torch.randn(7, D), torch.rand(7, 4)
    batch_idx = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    with torch.no_grad():
        every = box_map(queries, boxes, batch_idx, memory, pos, mask)
        rows = torch.tensor([5, 1])
        part = box_map(queries[rows], boxes[rows], batch_idx[rows], memory, pos, mask)
    torch.testing.assert_close(part, every[rows], rtol=1e-5, atol=0)
    assert torch.count_nonzero(every[3:, :, :, 4]) == 0


def _shapes():
    return {"res2": ShapeSpec(channels=8, stride=4), "res3": ShapeSpec(channels=16, stride=8),
            "res4": ShapeSpec(channels=16, stride=16), "res5": ShapeSpec(channels=32, stride=32)}


def _head_inputs():
    torch.manual_seed(1)
    memory, projected, pos = torch.randn(2, D, 2, 3), torch.randn(2, D, 2, 3), torch.randn(2, D, 2, 3)
    mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    features = {f"res{i}": torch.randn(2, c, 64 // 2 ** i, 96 // 2 ** i) for i, c in zip((2, 3, 4), (8, 16, 16))}
    return torch.randn(3, D), torch.tensor([0, 1, 1]), memory, mask, projected, features, torch.rand(3, 4), pos


@pytest.fixture
def one_thread():
    """One torch thread for exact comparisons (float sums split over threads round differently)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_default_mask_head_is_detrs_unchanged(one_thread):
    torch.manual_seed(0)
    head = DetrMaskHead(_shapes(), hidden_dim=D, num_heads=8)
    torch.manual_seed(0)
    explicit = DetrMaskHead(_shapes(), hidden_dim=D, num_heads=8, box_aware=False)
    assert list(head.state_dict()) == list(explicit.state_dict())
    assert [k for k in head.state_dict() if k.startswith("attention_map.")] == [
        "attention_map.q_linear.weight", "attention_map.q_linear.bias", "attention_map.k_linear.weight", "attention_map.k_linear.bias"
    ]
    # The parts it is made of, loaded with its weights: DETR's map then the FPN-style head.
    parts = torch.nn.ModuleDict({"attention_map": MultiHeadAttentionMap(D, D, 8), "fpn": FPNMaskHead(D, 8, [16, 16, 8])})
    parts.load_state_dict(head.state_dict())
    queries, batch_idx, memory, mask, projected, features, boxes, pos = _head_inputs()
    with torch.no_grad():
        logits, maps = head(queries, batch_idx, memory, mask, projected, features)
        given_boxes = head(queries, batch_idx, memory, mask, projected, features, boxes=boxes, pos=pos)
        explicit_logits, _ = explicit(queries, batch_idx, memory, mask, projected, features)
        part_maps = parts["attention_map"](queries, batch_idx, memory, mask)
        part_logits = parts["fpn"](part_maps, batch_idx, projected, [features["res4"], features["res3"], features["res2"]])
    # Exact by construction at one thread: the same operations on the same values.
    assert torch.equal(maps, part_maps) and torch.equal(logits, part_logits) and torch.equal(logits, explicit_logits)
    assert torch.equal(given_boxes[0], logits)


def test_box_aware_mask_head_reads_boxes_and_refuses_to_run_without():
    torch.manual_seed(0)
    head = DetrMaskHead(_shapes(), hidden_dim=D, num_heads=8, box_aware=True)
    assert isinstance(head.attention_map, BoxAwareAttentionMap)
    queries, batch_idx, memory, mask, projected, features, boxes, pos = _head_inputs()
    logits, maps = head(queries, batch_idx, memory, mask, projected, features, boxes=boxes, pos=pos)
    assert logits.shape == (3, 16, 24) and maps.shape == (3, 8, 2, 3)
    moved, _ = head(queries, batch_idx, memory, mask, projected, features, boxes=boxes.flip(0), pos=pos)
    assert not torch.allclose(moved, logits)
    logits.sum().backward()
    assert head.attention_map.q_pos_linear.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="MODEL.DETR.MASK_HEAD.BOX_AWARE"):
        head(queries, batch_idx, memory, mask, projected, features, pos=pos)

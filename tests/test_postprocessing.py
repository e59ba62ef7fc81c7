"""Step 8: the panoptic merge reproduces the reference post-processing exactly; instance and
semantic outputs give hand-computed values."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image

from detr_panoptic_d2.modeling import postprocessing


def reference_merge(mask_logits, classes, is_thing, image_size, output_size, small_area=4):
    """A literal re-statement of DETR's PostProcessPanoptic for one image (already thresholded):
    softmax + argmax at the input size, stuff ids merged on the first pass, the id map resized
    with PIL NEAREST through its RGB encoding, small segments dropped until none is left.
    Returns (id map H x W with ids = index among survivors, or -1 where none, survivor list)."""
    masks = F.interpolate(mask_logits[:, None], size=image_size, mode="bilinear", align_corners=False)[:, 0]
    alive = list(range(len(classes)))

    def ids_and_areas(idx, dedup):
        if not idx:
            return None, []
        m_id = masks[idx].softmax(0).argmax(0)
        if dedup:
            groups = {}
            for k, q in enumerate(idx):
                if not is_thing[classes[q]]:
                    groups.setdefault(int(classes[q]), []).append(k)
            for members in groups.values():
                for k in members[1:]:
                    m_id[m_id == k] = members[0]
        img = Image.fromarray(id2rgb(m_id.numpy())).resize(output_size[::-1], resample=Image.NEAREST)
        final = rgb2id(np.array(img))
        return final, [int((final == k).sum()) for k in range(len(idx))]

    final, area = ids_and_areas(alive, dedup=True)
    while True:
        small = [a <= small_area for a in area]
        if not any(small):
            break
        alive = [q for q, s in zip(alive, small) if not s]
        final, area = ids_and_areas(alive, dedup=False)
    return final, alive


def _random_case(seed, t, num_classes=6):
    g = torch.Generator().manual_seed(seed)
    h4, w4 = int(torch.randint(4, 14, (1,), generator=g)), int(torch.randint(4, 14, (1,), generator=g))
    logits = torch.randn(t, h4, w4, generator=g) * 4
    classes = torch.randint(0, num_classes, (t,), generator=g)
    is_thing = torch.tensor([True, True, True, False, False, False])
    image_size = (h4 * 4 - int(torch.randint(0, 4, (1,), generator=g)), w4 * 4 - 1)
    output_size = (int(torch.randint(10, 90, (1,), generator=g)), int(torch.randint(10, 90, (1,), generator=g)))
    return logits, classes, is_thing, image_size, output_size


@pytest.mark.parametrize("seed", range(40))
def test_merge_matches_reference(seed):
    logits, classes, is_thing, image_size, output_size = _random_case(seed, t=int(3 + seed % 9))
    scores = torch.rand(len(classes))
    seg, info = postprocessing.panoptic_merge(logits, scores, classes, is_thing, image_size, output_size, 4, 4)
    ref_map, survivors = reference_merge(logits, classes, is_thing, image_size, output_size)
    assert seg.shape == output_size and seg.dtype == torch.int32
    assert [s["category_id"] for s in info] == [int(classes[q]) for q in survivors]
    assert [s["score"] for s in info] == pytest.approx([float(scores[q]) for q in survivors])
    if survivors:
        # Exact by construction: elementwise resizing and argmax of the same logits, no kernel-ordered reduction.
        assert np.array_equal(seg.numpy(), ref_map + 1)
    else:
        assert (seg == 0).all()
    for s in info:
        assert s["area"] == int((seg == s["id"]).sum()) > 4
        assert s["isthing"] == bool(is_thing[s["category_id"]])


@pytest.mark.parametrize("seed", range(12))
def test_merge_matches_reference_on_tied_logits(seed):
    """Integer logits in [-2, 2] tie between queries on many pixels, also after dropped
    segments hand their pixels back: the first query wins, as the reference's argmax says."""
    logits, classes, is_thing, image_size, output_size = _random_case(100 + seed, t=int(4 + seed % 6))
    logits = logits.round().clamp(-2, 2)
    if seed % 2:
        output_size = image_size  # no resize
    seg, info = postprocessing.panoptic_merge(logits, torch.ones(len(classes)), classes, is_thing, image_size, output_size, 4, 4)
    ref_map, survivors = reference_merge(logits, classes, is_thing, image_size, output_size)
    assert [s["category_id"] for s in info] == [int(classes[q]) for q in survivors]
    # Exact by construction: integer logits, elementwise resizing and argmax.
    assert np.array_equal(seg.numpy(), ref_map + 1) if survivors else (seg == 0).all()


def test_cases_cover_stuff_merging_and_small_segments():
    """The random cases above are only meaningful if some have duplicate stuff classes and
    dropped segments; check that they do."""
    dup_stuff = dropped = 0
    for seed in range(40):
        logits, classes, is_thing, image_size, output_size = _random_case(seed, t=int(3 + seed % 9))
        stuff = classes[~is_thing[classes]]
        dup_stuff += len(stuff) != len(stuff.unique())
        _, info = postprocessing.panoptic_merge(logits, torch.ones(len(classes)), classes, is_thing, image_size, output_size, 4, 4)
        dropped += len(info) < len(classes)
    assert dup_stuff >= 10 and dropped >= 10


def test_no_kept_query_gives_void():
    seg, info = postprocessing.panoptic_merge(
        torch.zeros(0, 5, 5), torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.ones(3, dtype=torch.bool),
        (20, 20), (30, 40), 4, 4,
    )
    assert info == [] and seg.shape == (30, 40) and (seg == 0).all()


def test_select_queries_uses_reference_rule():
    # Query 0: class 1 at 0.9 -> kept. Query 1: no-object most likely -> dropped. Query 2: best
    # class at 0.8 < 0.85 -> dropped. Query 3: real class at 0.45 but no-object at 0.5 -> dropped
    # even with a low threshold.
    probs = torch.tensor(
        [[0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.8, 0.1, 0.1], [0.45, 0.05, 0.5]]
    )
    keep, scores, classes = postprocessing.select_queries(probs.log(), 0.85)
    assert keep.tolist() == [True, False, False, False]
    keep, _, _ = postprocessing.select_queries(probs.log(), 0.3)
    assert keep.tolist() == [True, False, True, False]
    assert classes[0] == 1 and scores[0] == pytest.approx(0.9)


@pytest.mark.parametrize("size", [(7, 9, 20, 31), (100, 60, 33, 47), (13, 13, 13, 13), (5, 200, 480, 640)])
def test_nearest_resize_matches_pil(size):
    h, w, H, W = size
    ids = torch.randint(0, 255, (h, w))
    pil = np.array(Image.fromarray(ids.numpy().astype(np.uint8)).resize((W, H), resample=Image.NEAREST))
    # Exact by construction: nearest resizing of integer ids.
    assert np.array_equal(postprocessing.resize_ids_nearest(ids, (H, W)).numpy(), pil)


def test_semantic_and_instance_outputs_have_detectron2_shapes():
    n, k = 6, 4
    logits = torch.randn(n, k + 1)
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4]]).repeat(n, 1)
    masks = torch.randn(n, 8, 10)
    is_thing = torch.tensor([True, True, False, False])
    sem = postprocessing.semantic_results(logits, masks, (30, 40), (50, 60), 4)
    assert sem.shape == (k, 50, 60)
    detections = postprocessing.instance_queries(logits, is_thing, topk=100)
    inst = postprocessing.instance_results(detections, boxes, masks[detections[0]], (30, 40), (60, 80), 4)
    assert len(inst) == int(is_thing[logits[:, :-1].argmax(-1)].sum())
    assert inst.pred_masks.shape == (len(inst), 60, 80) and inst.pred_masks.dtype == torch.bool
    assert all(is_thing[c] for c in inst.pred_classes)
    assert torch.allclose(inst.pred_boxes.tensor[:1], torch.tensor([[32.0, 18.0, 48.0, 42.0]]))
    assert (inst.scores[:-1] >= inst.scores[1:]).all()


def test_instances_by_hand_threshold_crop_resize_and_order():
    """Masks: of the 4 x 4 logits (stride 4, a padded 16 x 16 batch), the 3 x 4 cells covering
    the 12 x 16 image, resized bilinearly to it, > 0, nearest-resized x2 to the 24 x 32 output.
    Query 0's +1 block over rows and columns 0-1 (else -3) crosses 0 between pixels 6 and 7: a
    14 x 14 square in the output. Query 1 is positive only in row 3, a padding cell: empty.
    Query 2 is stuff: not an instance. Order by score; boxes scaled to the output size."""
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.5, 0.2, 0.2], [0.1, 0.1, 0.6, 0.2]])
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 0.2, 0.2]])
    masks = torch.full((3, 4, 4), -3.0)
    masks[0, :2, :2] = 1.0
    masks[1, 3] = 1.0
    is_thing = torch.tensor([True, True, False])
    detections = postprocessing.instance_queries(probs.log(), is_thing, topk=100)
    inst = postprocessing.instance_results(detections, boxes, masks[detections[0]], (12, 16), (24, 32), 4)
    assert inst.pred_classes.tolist() == [0, 1]
    assert inst.scores.tolist() == pytest.approx([0.7, 0.5])
    assert inst.pred_boxes.tensor.tolist() == [[0, 0, 16, 12], [0, 0, 32, 24]]
    square = torch.zeros(24, 32, dtype=torch.bool)
    square[:14, :14] = True
    # Exact by construction: a threshold of hand-set logits.
    assert torch.equal(inst.pred_masks[0], square)
    assert not inst.pred_masks[1].any()
    top1 = postprocessing.instance_queries(probs.log(), is_thing, topk=1)
    assert top1[0].tolist() == [0] and top1[2].tolist() == [0]


def test_semantic_scores_by_hand_per_class_sum_then_bilinear_resize():
    """sem_seg[c] = sum over queries of p(c) * sigmoid(mask), at the mask stride, then resized
    bilinearly (half-pixel centres) from 1 x 2 to 2 x 4: columns a, (3a + b) / 4, (a + 3b) / 4, b.
    Query 0: p = (0.6, 0.3), sigmoid = (0.5, 0.25); query 1: p = (0.2, 0.2), sigmoid = (0.75, 0.5)."""
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    masks = torch.tensor([[[0.0, -torch.log(torch.tensor(3.0))]], [[torch.log(torch.tensor(3.0)), 0.0]]])
    sem = postprocessing.semantic_results(probs.log(), masks, (4, 8), (2, 4), 4)
    class0 = (0.6 * 0.5 + 0.2 * 0.75, 0.6 * 0.25 + 0.2 * 0.5)  # 0.45, 0.25
    class1 = (0.3 * 0.5 + 0.2 * 0.75, 0.3 * 0.25 + 0.2 * 0.5)  # 0.3, 0.175
    expected = torch.tensor([[a, (3 * a + b) / 4, (a + 3 * b) / 4, b] for a, b in (class0, class1)])
    assert sem.shape == (2, 2, 4)
    assert torch.allclose(sem, expected[:, None].expand(2, 2, 4), atol=1e-6)


class _PaddingNoiseMaskHead(torch.nn.Module):
    """A stand-in mask head (stride 4): on the grid of the padded batch at stride 4 (given as
    ``memory``'s size), query q's logits are ``cells[q]`` at the top left, and random values
    of +-50 everywhere else (the padding). Returns (mask logits, no attention maps), as the
    registry's contract says."""

    stride = 4

    def __init__(self, cells):
        super().__init__()
        self.cells = cells

    def forward(self, queries, batch_idx, memory, memory_mask, projected, features, boxes=None, pos=None):
        out = 50 * torch.randn(len(queries), *memory.shape[-2:]).sign()
        h, w = self.cells.shape[-2:]
        out[:, :h, :w] = self.cells[queries[:, 0].long()]
        return out, None


def test_outputs_of_an_image_alone_equal_those_in_a_padded_batch():
    """The one resize convention: an image's panoptic, instance and semantic outputs read only
    its own cells, so they are the same when it runs alone and when a larger image pads it.
    52 x 71 (rows a multiple of 4, columns 3 mod 4) is where bilinear resizing at the padded
    size would read the padding cells next to the image's edge."""
    from detectron2.modeling import build_model

    from detr_panoptic_d2.modeling import DetrOutputs

    from .helpers import make_input, register_tiny_panoptic_metadata, tiny_cfg

    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.MODEL.DETR.TEST.INSTANCES_ON = cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
    cfg.MODEL.DETR.TEST.MASK_SCORE_FLOOR = 0.0
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    n, size = 10, (52, 71)
    model.mask_head = _PaddingNoiseMaskHead(4 * torch.randn(n, 13, 18, generator=g))
    logits = torch.randn(n, 6, generator=g) * 3
    logits[:, -1] = -5.0  # every query kept
    image = make_input(*size, with_targets=False)
    image["height"], image["width"] = 104, 150  # resized to another output size too

    def first_image_outputs(batch):
        images, padding = model.preprocess_image(batch)
        b, d = len(batch), model.transformer.d_model
        embeddings = torch.zeros(1, b, n, d)
        embeddings[..., 0] = torch.arange(n, dtype=torch.float32)  # the stand-in head reads the query id here
        out = DetrOutputs(
            logits=logits.expand(1, b, n, 6), boxes=torch.full((1, b, n, 4), 0.5), box_embeddings=embeddings,
            memory=torch.zeros(b, d, *(-(-s // 4) for s in images.tensor.shape[-2:])), memory_mask=None, pos=None,
            projected=None, features={},
        )
        with torch.no_grad():
            return model.postprocessor(out, batch, images.image_sizes, *model._segmenter(out))[0]

    alone = first_image_outputs([image])
    batched = first_image_outputs([image, make_input(120, 150, with_targets=False)])
    seg, segments = alone["panoptic_seg"]
    assert len(segments) >= 3 and len(alone["instances"]) >= 3
    # Exact by construction: the stand-in head's logits cropped to the same cells, merged by the same operations.
    assert torch.equal(seg, batched["panoptic_seg"][0]) and segments == batched["panoptic_seg"][1]
    assert torch.equal(alone["instances"].pred_masks, batched["instances"].pred_masks)
    assert alone["instances"].pred_masks.any(0).float().mean() > 0.3
    assert torch.equal(alone["sem_seg"], batched["sem_seg"])

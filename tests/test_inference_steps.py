"""DetrPanoptic.inference_steps, the public view of every step: its values are those of the
ordinary forward pass, with the documented shapes."""
import pytest
import torch
from detectron2.modeling import build_model

from detr_panoptic_d2.modeling import postprocessing

from .helpers import make_input, register_tiny_panoptic_metadata, tiny_cfg


def _batch():
    """Two images of other sizes than their outputs, padded together to 96 x 96 (64 x 96 and
    96 x 40: their valid cells at stride 32 are then ceil(size / 32))."""
    first, second = make_input(64, 96, seed=1, with_targets=False), make_input(96, 40, seed=2, with_targets=False)
    first["height"], first["width"] = 128, 192
    second["height"], second["width"] = 40, 28
    return [first, second]


@pytest.fixture(scope="module")
def model():
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.MODEL.DETR.TEST.INSTANCES_ON = True  # forward then runs the mask head on more queries
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.query_embed.weight.mul_(10)  # scores spread within each image
        model.class_embed.bias[-1] = -3.0
        images, mask = model.preprocess_image(_batch())
        scores = model.detect(images.tensor, mask).logits[-1].softmax(-1)[..., :-1].max(-1).values
    low, high = float(scores.min(1).values.max()), float(scores.max(1).values.min())
    assert low < high
    model.postprocessor.object_score_thresh = (low + high) / 2  # some queries of each image kept, not all
    return model


def test_steps_are_the_forward_pass_values(model):
    batch = _batch()
    steps = model.inference_steps(batch)
    with torch.no_grad():
        results = model(batch)
        images, mask = model.preprocess_image(batch)
        out = model.detect(images.tensor, mask)
        n = out.logits.shape[2]
        every = torch.arange(2).repeat_interleave(n), torch.arange(n).repeat(2)
        all_masks = model.segment(out, *every)  # the head on every query of both images
    assert len(steps) == 2
    for i, (s, result) in enumerate(zip(steps, results)):
        h, w = s.image_size
        grid = (-(-h // 32), -(-w // 32))
        kept = s.queries.tolist()
        probs = out.logits[-1, i].softmax(-1)
        assert 0 < len(kept) < n
        assert kept == ((probs.argmax(-1) != 5) & (probs.max(-1).values > model.postprocessor.object_score_thresh)).nonzero()[:, 0].tolist()
        # Exact by construction (here and below): one batch, the same operations and shapes; steps are slices of them.
        assert torch.equal(s.classes, probs[kept].argmax(-1)) and torch.allclose(s.scores, probs[kept].max(-1).values)
        assert s.encoded.shape == (64, *grid) and torch.equal(s.encoded, out.memory[i, :, : grid[0], : grid[1]])
        assert torch.equal(s.box_embeddings, out.box_embeddings[-1, i]) and s.box_embeddings.shape == (n, 64)
        assert torch.equal(s.class_logits, out.logits[-1, i]) and torch.equal(s.boxes, out.boxes[-1, i])
        assert torch.equal(s.layer_boxes, out.boxes[:, i]) and s.layer_boxes.shape == (2, n, 4)
        assert s.attention_maps.shape == (len(kept), 8, *grid)
        # Softmax over heads and cells: the valid cells hold all of each object's attention.
        assert torch.allclose(s.attention_maps.sum((1, 2, 3)), torch.ones(len(kept)), atol=1e-5)
        assert s.mask_stride == 4 and s.mask_logits.shape == (len(kept), -(-h // 4), -(-w // 4))
        expected = all_masks[i * n + torch.tensor(kept)][:, : -(-h // 4), : -(-w // 4)]
        assert torch.allclose(s.mask_logits, expected, atol=1e-5)
        merged = postprocessing.panoptic_merge(
            s.mask_logits, s.scores, s.classes, model.postprocessor.is_thing, s.image_size, s.output_size, model.postprocessor.small_segment_area,
            s.mask_stride,
        )
        panoptic, segments = result["panoptic_seg"]
        assert s.output_size == tuple(panoptic.shape) == ((128, 192) if i == 0 else (40, 28))
        assert torch.equal(merged[0], panoptic) and merged[1] == segments and segments
        assert torch.equal(s.panoptic_seg[0], panoptic) and s.panoptic_seg[1] == segments


def test_box_only_model_has_no_mask_steps():
    model = build_model(tiny_cfg(mask_on=False, dataset=register_tiny_panoptic_metadata())).eval()
    (steps,) = model.inference_steps([make_input(64, 64, with_targets=False)])
    assert steps.encoded.shape == (64, 2, 2) and steps.box_embeddings.shape == (10, 64)
    assert steps.attention_maps is None and steps.mask_logits is None and steps.panoptic_seg is None


def test_steps_refuse_training_mode():
    model = build_model(tiny_cfg(dataset=register_tiny_panoptic_metadata())).train()
    with pytest.raises(RuntimeError, match="model.eval"):
        model.inference_steps([make_input(64, 64, with_targets=False)])

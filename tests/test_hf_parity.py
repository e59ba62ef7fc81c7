"""Numerical parity with the reference architecture (HuggingFace's port of the official DETR).

A small random DetrForSegmentation is converted with detr_panoptic_d2.checkpoint and loaded into
DetrPanoptic built from tiny_cfg(); both start from the same uint8 RGB pixels: the reference's
through HuggingFace's own DetrImageProcessor (no resize: rescale, ImageNet mean and std, pad),
ours through ``preprocess_image`` (PIXEL_MEAN, PIXEL_STD, size divisibility).
"""
import pytest
import torch
from detectron2.modeling import build_model
from transformers import DetrImageProcessor

from detr_panoptic_d2.checkpoint import convert_state
from detr_panoptic_d2.checkpoint.convert import SourceCheckpoint
from tests.detr_reference import blocky_image, separate_queries_, tiny_hf_detr
from tests.helpers import register_tiny_panoptic_metadata, tiny_cfg
from tests.test_postprocessing import reference_merge

TOLERANCE = 1e-4


def _inputs(sizes, output_sizes=None):
    output_sizes = output_sizes or sizes
    return [
        {"image": blocky_image(h, w, seed=i), "height": oh, "width": ow}
        for i, ((h, w), (oh, ow)) in enumerate(zip(sizes, output_sizes))
    ]


def _reference_input(inputs):
    """HuggingFace's preprocessing of the raw uint8 images: (pixel_values, pixel_mask)."""
    processor = DetrImageProcessor(do_resize=False)
    batch = processor([x["image"].permute(1, 2, 0).numpy() for x in inputs], return_tensors="pt")
    return batch["pixel_values"], batch["pixel_mask"]


def _model_pair(inputs, threshold=0.85, position_embedding="sine"):
    """(ours, reference, our normalized padded images, our padding mask, the reference's
    (pixel_values, pixel_mask)) with the same weights."""
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = threshold
    cfg.MODEL.DETR.POSITION_EMBEDDING = position_embedding
    ours = build_model(cfg).eval()
    images, padding = ours.preprocess_image(inputs)
    pixels = _reference_input(inputs)
    reference = tiny_hf_detr(num_labels=5, position_embedding=position_embedding)
    separate_queries_(reference, *pixels)
    conversion = convert_state(SourceCheckpoint("tiny HuggingFace model", reference.state_dict()), classes="keep")
    incompatible = ours.load_state_dict(conversion.state, strict=False)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    return ours, reference, images, padding, pixels


@torch.no_grad()
def test_preprocessing_equals_huggingface_image_processor():
    """Same normalized pixels (mean, std, channel order) and padding mask as HuggingFace's
    DetrImageProcessor from the same uint8 images; the colours differ per channel, so a swapped
    channel order or mean would show."""
    inputs = _inputs([(96, 128), (64, 100)])
    model = build_model(tiny_cfg()).eval()
    images, padding = model.preprocess_image(inputs)
    pixel_values, pixel_mask = _reference_input(inputs)
    assert images.tensor.shape == pixel_values.shape
    assert (images.tensor - pixel_values).abs().max() <= 1e-5
    # Exact by construction: boolean masks, no arithmetic.
    assert torch.equal(~padding, pixel_mask.bool())
    assert (inputs[0]["image"][0] != inputs[0]["image"][2]).any()


@pytest.mark.parametrize("position_embedding", ["sine", "learned"])
@torch.no_grad()
def test_predictions_match_reference_on_padded_batch(position_embedding):
    inputs = _inputs([(96, 128), (64, 100)])
    ours, reference, images, padding, (pixel_values, pixel_mask) = _model_pair(inputs, position_embedding=position_embedding)
    assert padding.any(), "the batch must be padded for this test to check the padding masks"
    out = ours.detect(images.tensor, padding)
    b, n = out.logits.shape[1:3]
    masks = ours.segment(out, torch.arange(b).repeat_interleave(n), torch.arange(n).repeat(b))  # every query
    ref = reference(pixel_values=pixel_values, pixel_mask=pixel_mask)

    assert (out.logits[-1] - ref.logits).abs().max() <= TOLERANCE
    assert (out.boxes[-1] - ref.pred_boxes).abs().max() <= TOLERANCE
    assert (masks.view_as(ref.pred_masks) - ref.pred_masks).abs().max() <= TOLERANCE
    # Not trivially equal: queries differ from each other, and so do the two images.
    assert ref.pred_masks[0].std(0).mean() > 1e-2 and ref.logits[0].std(0).mean() > 1e-1
    assert (ref.pred_boxes[0] - ref.pred_boxes[1]).abs().max() > 1e-2


@torch.no_grad()
def test_panoptic_ids_match_reference_postprocessing():
    """Our whole inference (mask head on kept queries only, merge) against the reference's
    selection rule and PostProcessPanoptic (test_postprocessing.reference_merge) applied to the
    reference model's outputs, at the reference threshold 0.85, resized to another output size."""
    threshold = 0.85
    inputs = _inputs([(96, 128)], output_sizes=[(120, 160)])
    ours, reference, _, _, (pixel_values, pixel_mask) = _model_pair(inputs, threshold=threshold)
    panoptic, segments = ours(inputs)[0]["panoptic_seg"]

    ref = reference(pixel_values=pixel_values, pixel_mask=pixel_mask)
    scores, labels = ref.logits[0].softmax(-1).max(-1)
    keep = (labels != ref.logits.shape[-1] - 1) & (scores > threshold)
    labels = labels[keep]
    ref_ids, survivors = reference_merge(ref.pred_masks[0][keep], labels, ours.postprocessor.is_thing, (96, 128), (120, 160))
    is_thing = ours.postprocessor.is_thing.tolist()
    stuff = [int(c) for c in labels if not is_thing[c]]
    assert keep.sum() >= 4 and len(survivors) >= 3, "the test input must keep several queries"
    assert len(stuff) > len(set(stuff)), "some stuff class must be predicted twice (merged)"

    # Our ids number segments from 1 (0 = void): pair them with the reference's by pixels.
    # Tolerance: two implementations round differently, which moves pixels only where two masks
    # nearly tie; at most 0.1% of the image may differ (a wrong merge moves whole segments).
    ref_ids = torch.from_numpy(ref_ids.astype("int64"))
    assert panoptic.shape == ref_ids.shape == (120, 160)
    assert len(segments) == len(survivors)
    for seg in segments:
        region = panoptic == seg["id"]
        ref_id = ref_ids[region].mode().values
        assert int((region != (ref_ids == ref_id)).sum()) <= 1e-3 * region.numel(), f"segment {seg['id']}"
        assert seg["category_id"] == int(labels[survivors[int(ref_id)]])
        assert seg["isthing"] == is_thing[seg["category_id"]]

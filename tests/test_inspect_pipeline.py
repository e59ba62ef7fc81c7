"""The pipeline inspector: trace_pipeline records the model's own intermediate results (every
decoder layer's boxes included, for both decoders), and tools/inspect_pipeline.py writes a page
with one section per kept object, naming the model's real strides."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from detr_panoptic_d2.data.predictor_input import predictor_input
from detr_panoptic_d2.inspection import trace_pipeline
from detr_panoptic_d2.predict.cli import build_predictor, setup_inference_cfg
from tests.helpers import load_tool, write_image, write_tiny_panoptic_model

inspect_tool = load_tool("inspect_pipeline")
ANCHOR_BOX_AWARE = ["MODEL.DETR.DECODER", "anchor", "MODEL.DETR.MASK_HEAD.BOX_AWARE", True, "MODEL.DETR.DEC_LAYERS", 3]


@torch.no_grad()
def _model_outputs(predictor, image_bgr):
    """The predictor's model run step by step (detect, segment) on the predictor's input."""
    model = predictor.model
    rgb = image_bgr[:, :, ::-1]
    resized = predictor.aug.get_transform(rgb).apply_image(rgb)
    inputs = [{"image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))}]
    images, padding = model.preprocess_image(inputs)
    return model, model.detect(images.tensor, padding), resized.shape[:2]


def test_trace_records_the_models_own_intermediate_results(tmp_path):
    config, weights = write_tiny_panoptic_model(tmp_path)
    opts = ["MODEL.WEIGHTS", weights]
    predictor, _ = build_predictor(setup_inference_cfg(config, opts, confidence_threshold=0.0))
    image = np.asarray(Image.open(write_image(tmp_path / "a.png", 100, 140)))[:, :, ::-1].copy()
    trace = trace_pipeline(predictor, image)

    model, out, (h, w) = _model_outputs(predictor, image)
    probs = out.logits[-1, 0].softmax(-1)
    kept = ((probs.argmax(-1) != probs.shape[-1] - 1) & (probs.max(-1).values > 0)).nonzero()[:, 0].tolist()
    assert [o.query for o in trace.objects] == kept and len(kept) > 0
    grid = (-(-h // 32), -(-w // 32))
    assert trace.stride == 32 and trace.mask_stride == 4
    assert trace.input_size == (h, w) and tuple(trace.encoded.shape) == (64, *grid)
    assert torch.allclose(trace.encoded, out.memory[0], atol=1e-5)
    masks = model.segment(out, torch.zeros(len(kept), dtype=torch.long), torch.tensor(kept))
    for obj, mask_logits in zip(trace.objects, masks):
        assert obj.attention.shape == (8, *grid)
        assert torch.isclose(obj.attention.sum(), torch.tensor(1.0), atol=1e-4)  # softmax over heads and cells
        assert torch.allclose(obj.mask_logits, mask_logits[: -(-h // 4), : -(-w // 4)], atol=1e-5)
        assert obj.mask.shape == (100, 140) and obj.category_id == int(probs[obj.query].argmax())
        assert 0 <= obj.box[0] <= obj.box[2] <= 140 and 0 <= obj.box[1] <= obj.box[3] <= 100
    with torch.no_grad():
        panoptic, segments = predictor(image)["panoptic_seg"]
    # Exact by construction: the inspector and the predictor run the same operations on the same image.
    assert torch.equal(trace.panoptic_seg, panoptic.cpu()) and trace.segments_info == segments


@pytest.mark.parametrize("opts", [[], ANCHOR_BOX_AWARE], ids=["vanilla", "anchor"])
def test_layer_boxes_and_attention_maps_are_the_models_own(tmp_path, opts):
    config, weights = write_tiny_panoptic_model(tmp_path, opts=opts)
    predictor, _ = build_predictor(setup_inference_cfg(config, ["MODEL.WEIGHTS", weights], confidence_threshold=0.0))
    with torch.no_grad():  # the anchor decoder's box offsets start at zero: make the layers' boxes differ
        predictor.model.bbox_embed.layers[-1].weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
    image = np.asarray(Image.open(write_image(tmp_path / "a.png", 100, 140)))[:, :, ::-1].copy()
    (steps,) = predictor.model.inference_steps([predictor_input(image, predictor.aug, predictor.input_format)])
    trace = trace_pipeline(predictor, image)

    model, out, _ = _model_outputs(predictor, image)
    num_layers = 3 if opts else 2
    assert out.boxes.shape[0] == trace.num_layers == num_layers
    assert (out.boxes[0] - out.boxes[-1]).abs().min() > 1e-4
    assert torch.equal(steps.layer_boxes, out.boxes[:, 0]) and torch.equal(steps.layer_boxes[-1], steps.boxes)
    assert len(trace.objects) > 0
    for obj in trace.objects:
        cx, cy, bw, bh = out.boxes[:, 0, obj.query].unbind(-1)
        corners = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1) * torch.tensor([140, 100] * 2)
        assert obj.layer_boxes.shape == (num_layers, 4)
        assert np.allclose(obj.layer_boxes, corners.numpy(), atol=1e-3)
        assert np.array_equal(obj.layer_boxes[-1], obj.box)
    # The page draws the mask head's maps, DETR's or box-aware alike.
    kept = torch.tensor([obj.query for obj in trace.objects])
    _, maps = model.segment_with_attention(out, torch.zeros_like(kept), kept)
    h, w = trace.encoded.shape[-2:]
    assert trace.box_aware == bool(opts)
    for obj, expected in zip(trace.objects, maps):
        assert torch.allclose(obj.attention, expected[:, :h, :w], atol=1e-5)


def _write_pages(tmp_path, opts=()):
    """Runs tools/inspect_pipeline.py with a tiny model (``opts`` applied) on a 100 x 140 image;
    returns (the page's folder, its HTML)."""
    config, weights = write_tiny_panoptic_model(tmp_path, opts=opts)
    image = write_image(tmp_path / "street.png", 100, 140)
    out = tmp_path / "pages"
    argv = ["--config-file", config, "--input", image, "--output", str(out), "--confidence-threshold", "0"]
    assert inspect_tool.main(argv + ["--opts", "MODEL.WEIGHTS", weights]) == 0
    return out, (out / "street" / "index.html").read_text()


def test_inspect_pipeline_writes_a_page_per_image(tmp_path):
    out, page = _write_pages(tmp_path)
    config, weights = str(tmp_path / "config.yaml"), str(tmp_path / "model.pth")
    image = str(tmp_path / "street.png")
    assert 'href="street/index.html"' in (out / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    for name in sources:
        Image.open(out / "street" / name).verify()
    for name in ("input.png", "object_0_box.png", "object_0_mask.png", "panoptic.png"):
        assert Image.open(out / "street" / name).size == (140, 100)

    predictor, _ = build_predictor(setup_inference_cfg(config, ["MODEL.WEIGHTS", weights], confidence_threshold=0.0))
    _, detected, _ = _model_outputs(predictor, np.asarray(Image.open(image))[:, :, ::-1].copy())
    probs = detected.logits[-1, 0].softmax(-1)
    num_kept = int((probs.argmax(-1) != probs.shape[-1] - 1).sum())
    sections = re.findall(r'<section class="object" id="object-(\d+)">(.*?)</section>', page, re.S)
    assert num_kept > 0 and [int(k) for k, _ in sections] == list(range(num_kept))
    for k, body in sections:
        expected = {f"object_{k}_{part}.png" for part in ("box", "layers", "attention", "mask_logits", "mask")}
        assert set(re.findall(r'<img src="([^"]+)"', body)) == expected
        assert "box after decoder layer 1..2 (Transformer)" in body and "DETR&#x27;s maps" in body
    assert {"input.png", "encoded_pca.png", "encoded_norm.png", "panoptic.png"} <= set(sources)
    assert "decoder Transformer (2 layers)" in page


def test_page_of_an_anchor_box_aware_model_shows_every_layer_and_its_maps(tmp_path):
    out, page = _write_pages(tmp_path, ANCHOR_BOX_AWARE)
    assert "decoder AnchorTransformer (3 layers)" in page
    sections = re.findall(r'<section class="object" id="object-(\d+)">(.*?)</section>', page, re.S)
    assert len(sections) > 0
    for k, body in sections:
        assert "box after decoder layer 1..3 (AnchorTransformer)" in body
        assert re.findall(r"layer (\d+) ", body) == ["1", "2", "3"]
        assert "box-aware maps: each reads the object&#x27;s box embedding, its box and the pixel positions" in body
        for part in ("layers", "attention"):
            Image.open(out / "street" / f"object_{k}_{part}.png").verify()
        assert Image.open(out / "street" / f"object_{k}_layers.png").size == (140, 100)


@pytest.mark.parametrize("level, stride, other", [("res4", 16, 32), ("res5", 32, 16)])
def test_captions_name_the_stride_of_the_level_the_transformer_reads(tmp_path, level, stride, other):
    _, page = _write_pages(tmp_path, ["MODEL.DETR.IN_FEATURE", level])
    # The network sees 96 x 134 px (shortest edge 96): the encoded grid has ceil(96 / s) rows.
    assert f"encoded image 64 x {-(-96 // stride)} x {-(-134 // stride)} (d x H/{stride} x W/{stride})" in page
    assert f"over the encoded image (H/{stride} x W/{stride};" in page
    assert f"H/{other}" not in page
    assert "H/4 x W/4" in page  # the mask logits' stride

"""The pipeline inspector: trace_pipeline records the model's own intermediate results, and
tools/inspect_pipeline.py writes a page with one section per kept object."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from detr_panoptic_d2.inspection import trace_pipeline
from detr_panoptic_d2.predict.cli import build_predictor, setup_inference_cfg
from tests.helpers import load_tool, write_image, write_tiny_panoptic_model

inspect_tool = load_tool("inspect_pipeline")


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


def test_inspect_pipeline_writes_a_page_per_image(tmp_path):
    config, weights = write_tiny_panoptic_model(tmp_path)
    image = write_image(tmp_path / "street.png", 100, 140)
    out = tmp_path / "pages"
    argv = ["--config-file", config, "--input", image, "--output", str(out), "--confidence-threshold", "0"]
    assert inspect_tool.main(argv + ["--opts", "MODEL.WEIGHTS", weights]) == 0

    page = (out / "street" / "index.html").read_text()
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
        expected = {f"object_{k}_{part}.png" for part in ("box", "attention", "mask_logits", "mask")}
        assert set(re.findall(r'<img src="([^"]+)"', body)) == expected
    assert {"input.png", "encoded_pca.png", "encoded_norm.png", "panoptic.png"} <= set(sources)

"""ONNX export (detr_panoptic_d2/export, tools/export_model.py): onnxruntime gives the PyTorch
model's panoptic output on images of any size, including no kept query and images smaller
than the backbone's stride; the export records what inference needs; bad input is named.

Random weights give masks of all queries that agree to about 1e-5, so which query wins a pixel
would be decided by float rounding; ``separate_query_masks_`` makes them differ as a trained
model's do (see benchmark/synthetic.py). Images whose res5 grid is 1 x 1 (at most 32 px a
side) are left out on purpose: there every DETR query has the same box embedding (the decoder
attends to one token), so all masks tie exactly and rounding picks the winner.
"""
import json

import numpy as np
import onnx
import pytest
import torch
from detectron2.modeling import build_model

from detr_panoptic_d2.benchmark.synthetic import calibrate_kept_queries, separate_query_masks_
from detr_panoptic_d2.export import OPSET, ExportedPredictor, OnnxPanopticModel, export_onnx

from .helpers import make_input, register_tiny_panoptic_metadata, tiny_cfg

# (H, W): landscape, wide, portrait, and two smaller than the backbone's stride (32) in height.
SIZES = [(96, 128), (64, 200), (150, 60), (24, 90), (16, 70)]


def _images(sizes=SIZES):
    return [make_input(h, w, seed=i, with_targets=False) for i, (h, w) in enumerate(sizes)]


def _tiny_model(threshold=0.0):
    """A tiny random DetrPanoptic whose queries all predict a real class (kept with threshold 0)
    and whose masks differ on the test images."""
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = threshold
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    separate_query_masks_(model, [x["image"] for x in _images()])
    with torch.no_grad():
        model.class_embed.bias[-1] = -10.0
    return cfg, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(cfg, PyTorch model, path of its model.onnx)."""
    cfg, model = _tiny_model()
    return cfg, model, export_onnx(cfg, model, str(tmp_path_factory.mktemp("onnx")))


def assert_same_panoptic(expected, actual, min_pixels=0.999):
    """Same segments (ids, classes, thing flags, areas within 0.1% of the image), scores
    within 1e-4, and at least ``min_pixels`` of the pixels in the same segment."""
    (seg_a, info_a), (seg_b, info_b) = expected, actual
    assert seg_a.shape == seg_b.shape and seg_b.dtype == torch.int32
    assert [(s["id"], s["category_id"], s["isthing"]) for s in info_a] == [
        (s["id"], s["category_id"], s["isthing"]) for s in info_b
    ]
    for a, b in zip(info_a, info_b):
        assert abs(a["score"] - b["score"]) <= 1e-4
        assert abs(a["area"] - b["area"]) <= 0.001 * seg_a.numel()
    assert (seg_a == seg_b).double().mean().item() >= min_pixels


def _pytorch(model, x):
    with torch.no_grad():
        return model([x])[0]["panoptic_seg"]


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_onnxruntime_gives_the_pytorch_panoptic_output(exported, size):
    cfg, model, path = exported
    runtime = OnnxPanopticModel(path, cfg)
    x = _images()[SIZES.index(size)]
    x["height"], x["width"] = size[0] * 2 + 1, size[1] + 7  # merged at another original size
    expected = _pytorch(model, x)
    assert len(expected[1]) >= 2, "the test needs several segments"
    assert_same_panoptic(expected, runtime([x])[0]["panoptic_seg"])


@pytest.mark.parametrize("top_k", [None, 6], ids=["kept-queries", "top-6"])
def test_only_the_queries_above_the_threshold_are_merged(tmp_path, top_k):
    """A model calibrated so that 4 queries pass 0.85; the dynamic export returns their 4 masks,
    the static one (--top-k 6) 6 masks of which 4 are flagged valid: same panoptic output."""
    cfg, model = _tiny_model(threshold=0.85)
    x = _images()[0]
    calibrate_kept_queries(model, [x], 4)
    runtime = OnnxPanopticModel(export_onnx(cfg, model, str(tmp_path), top_k=top_k), cfg)
    out = runtime.run_graph(x["image"])
    assert out["mask_logits"].shape[0] == (top_k or 4) and int(out["valid"].sum()) == 4
    assert_same_panoptic(_pytorch(model, x), runtime([x])[0]["panoptic_seg"])


def test_no_kept_query_gives_a_void_output(exported):
    cfg, model, path = exported
    strict = cfg.clone()
    strict.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 1.0  # no probability exceeds it
    x = _images()[3]
    seg, info = OnnxPanopticModel(path, strict)([x])[0]["panoptic_seg"]
    assert info == [] and seg.shape == (24, 90) and not seg.any()
    model.object_score_thresh = 1.0
    try:
        assert_same_panoptic(_pytorch(model, x), (seg, info))
    finally:
        model.object_score_thresh = 0.0


def test_export_records_what_inference_needs(exported):
    cfg, model, path = exported
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    image = proto.graph.input[0].type.tensor_type
    assert image.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value or d.dim_param for d in image.shape.dim] == [3, "height", "width"]
    with open(path.replace("model.onnx", "model.json")) as f:
        sidecar = json.load(f)
    embedded = {p.key: json.loads(p.value) for p in proto.metadata_props}["detr_panoptic_d2"]
    assert sidecar == embedded
    assert sidecar["class_names"] == ["cat", "dog", "grass", "sky", "bird"]
    assert (sidecar["thing_ids"], sidecar["stuff_ids"]) == ([0, 1, 4], [2, 3])
    assert sidecar["input"] == {"format": cfg.INPUT.FORMAT, "channels": 3, "dtype": "uint8", "layout": "CHW"}
    assert sidecar["pixel_mean"] == list(cfg.MODEL.PIXEL_MEAN) and sidecar["pixel_std"] == list(cfg.MODEL.PIXEL_STD)
    assert sidecar["test_resize"] == {"min_size": cfg.INPUT.MIN_SIZE_TEST, "max_size": cfg.INPUT.MAX_SIZE_TEST}
    assert (sidecar["score_threshold"], sidecar["small_segment_area"], sidecar["mask_stride"]) == (0.0, 4, 4)
    assert sidecar["sizes"]["MODEL.DETR.NUM_CLASSES"] == 5 and len(sidecar["fingerprint"]) == 16


def test_a_file_that_is_not_an_onnx_model_is_named(tmp_path):
    cfg, _ = _tiny_model()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(ValueError, match=f"{bad} is not an ONNX model"):
        OnnxPanopticModel(str(bad), cfg)
    foreign = tmp_path / "identity.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", 1, [1])], [value("y", 1, [1])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ValueError, match=f"{foreign} has no 'detr_panoptic_d2' metadata"):
        OnnxPanopticModel(str(foreign), cfg)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxPanopticModel(str(tmp_path / "missing.onnx"), cfg)


def test_a_model_exported_from_another_config_is_refused(exported):
    cfg, _, path = exported
    other = cfg.clone()
    other.MODEL.DETR.HIDDEN_DIM = 128
    other.MODEL.DETR.NUM_OBJECT_QUERIES = 20
    with pytest.raises(ValueError, match=f"{path} was exported from another config") as error:
        OnnxPanopticModel(path, other)
    assert "MODEL.DETR.HIDDEN_DIM: exported 64, config 128" in str(error.value)
    assert "MODEL.DETR.NUM_OBJECT_QUERIES: exported 10, config 20" in str(error.value)
    other = cfg.clone()
    other.DATASETS.TEST = ("coco_2017_val_panoptic",)
    other.MODEL.DETR.NUM_CLASSES = 133
    with pytest.raises(ValueError, match="MODEL.DETR.NUM_CLASSES: exported 5, config 133") as error:
        OnnxPanopticModel(path, other)
    assert "classes of 'coco_2017_val_panoptic': exported 5" in str(error.value)


def test_an_image_of_another_channel_count_is_named(exported):
    cfg, _, path = exported
    predictor = ExportedPredictor(cfg, path)
    for image in (np.zeros((40, 50, 4), np.uint8), np.zeros((40, 50), np.uint8)):
        with pytest.raises(ValueError, match=f"{path} takes H x W x 3 images, got an array of shape"):
            predictor(image)
    with pytest.raises(ValueError, match=rf"{path} takes 3 x H x W images \(RGB\), got an array of shape \(1, 40, 50\)"):
        predictor.model([{"image": torch.zeros(1, 40, 50, dtype=torch.uint8)}])

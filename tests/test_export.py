"""ONNX export (detr_panoptic_d2/export, tools/export_model.py): onnxruntime gives the PyTorch
model's panoptic output on images of any size, including no kept query and images smaller
than the backbone's stride; the export records what inference needs; bad input is named.

Random weights give masks of all queries that agree to about 1e-5, so which query wins a pixel
would be decided by float rounding; ``separate_query_masks_`` makes them differ as a trained
model's do (see detr_panoptic_d2/testing/mask_separation.py). Images whose res5 grid is 1 x 1 (at most 32 px a
side) are left out on purpose: there every DETR query has the same box embedding (the decoder
attends to one token), so all masks tie exactly and rounding picks the winner.
"""
import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from panopticapi.utils import rgb2id
from PIL import Image

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.engine import DetrTrainer
from detr_panoptic_d2.export import OPSET, ExportedPredictor, OnnxPanopticModel, export_onnx
from detr_panoptic_d2.export.runtime import _session, denormals_flushed
from detr_panoptic_d2.predict.cli import setup_inference_cfg
from detr_panoptic_d2.testing import separate_query_masks_

from .helpers import (
    assert_same_panoptic,
    keep_queries_,
    load_tool,
    make_input,
    model_from_config_file,
    register_tiny_panoptic_metadata,
    tiny_cfg,
    tiny_training_cfg,
    write_cfg,
    write_image,
    write_tiny_panoptic_model,
)

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
    keep_queries_(model)
    return cfg, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(cfg, PyTorch model, path of its model.onnx)."""
    cfg, model = _tiny_model()
    return cfg, model, export_onnx(cfg, model, str(tmp_path_factory.mktemp("onnx")))


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
    x = _images()[1]  # not the size traced at export
    keep_queries_(model, [x], 4)
    path = export_onnx(cfg, model, str(tmp_path), top_k=top_k)
    runtime = OnnxPanopticModel(path, cfg)
    out = runtime.run_graph(x["image"])
    assert out["mask_logits"].shape == (top_k or 4, 16, 50) and int(out["valid"].sum()) == 4
    # The static variant has no data-dependent shape: no NonZero.
    assert ("NonZero" in {n.op_type for n in onnx.load(path).graph.node}) == (top_k is None)
    assert_same_panoptic(_pytorch(model, x), runtime([x])[0]["panoptic_seg"])


def test_no_kept_query_gives_a_void_output(exported):
    cfg, model, path = exported
    strict = cfg.clone()
    strict.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 1.0  # no probability exceeds it
    x = _images()[3]
    seg, info = OnnxPanopticModel(path, strict)([x])[0]["panoptic_seg"]
    assert info == [] and seg.shape == (24, 90) and not seg.any()
    model.postprocessor.object_score_thresh = 1.0
    try:
        assert_same_panoptic(_pytorch(model, x), (seg, info))
    finally:
        model.postprocessor.object_score_thresh = 0.0


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
    message = rf"{path} takes 3 x H x W images \(RGB\), got an array of shape \(1, 40, 50\)"
    with pytest.raises(ValueError, match=message):
        predictor.model([{"image": torch.zeros(1, 40, 50, dtype=torch.uint8)}])


def test_onnxruntime_flushes_denormals_and_leaves_the_callers_mode(exported, tmp_path):
    """onnxruntime computes with denormal floats flushed to zero (their arithmetic is tens of
    times slower; random attention underflows to them), in its threads and in the caller's
    during a run; the caller's thread keeps its own mode before and after."""
    cfg, _, path = exported
    tiny = np.float32(np.finfo(np.float32).tiny)
    seen = []

    class Probe:
        """The session, noting whether the caller's thread flushes denormals during run."""

        def __init__(self, session):
            self.session, self.get_outputs = session, session.get_outputs

        def run(self, *args):
            seen.append(bool(tiny / np.float32(2) == 0))
            return self.session.run(*args)

    for flushing in (False, True):
        torch.set_flush_denormal(flushing)
        try:
            runtime = OnnxPanopticModel(path, cfg, threads=1)
            runtime.session = Probe(runtime.session)
            runtime.run_graph(_images()[0]["image"])
            # Exact by construction: one IEEE division of a denormal, flushed to zero or not.
            assert bool(tiny / np.float32(2) == 0) == flushing
        finally:
            torch.set_flush_denormal(False)
    assert seen == [True, True]
    assert runtime.session.session.get_session_options().get_session_config_entry("session.set_denormal_as_zero") == "1"
    # onnxruntime computes in the caller's thread with the caller's mode (1 thread: no pool).
    halve = tmp_path / "halve.onnx"
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Mul", ["x", "half"], ["y"])], "g", [value("x", 1, [1])], [value("y", 1, [1])],
        [onnx.helper.make_tensor("half", 1, [], [0.5])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)]), str(halve))
    session, x = _session(str(halve), threads=1), {"x": np.array([tiny])}
    assert session.run(None, x)[0][0] > 0
    with denormals_flushed():
        # Exact by construction: a denormal halved is zero only when flushed.
        assert session.run(None, x)[0][0] == 0


@pytest.mark.slow
def test_r50_at_800x1066_gives_the_pytorch_panoptic_output(tmp_path):
    """The COCO R50 config with random weights, 15 kept queries, DETR's test size."""
    torch.manual_seed(0)
    cfg, model = model_from_config_file("configs/coco/detr_R50_panoptic.yaml")
    x = make_input(800, 1066, with_targets=False)
    separate_query_masks_(model, [x["image"]])
    keep_queries_(model, [x], 15)
    runtime = OnnxPanopticModel(export_onnx(cfg, model, str(tmp_path)), cfg)
    expected = _pytorch(model, x)
    assert len(expected[1]) >= 5
    assert_same_panoptic(expected, runtime([x])[0]["panoptic_seg"])


def _separated_tiny_model_files(folder, images):
    """write_tiny_panoptic_model's config and weights, with masks separated on ``images``
    (paths; the config's test-time resize must leave them unchanged)."""
    config, weights = write_tiny_panoptic_model(folder)
    cfg = setup_inference_cfg(config, ["MODEL.WEIGHTS", weights])
    model = build_model(cfg)
    DetrCheckpointer(model).load_complete(weights)
    pixels = [torch.from_numpy(read_image(p, format=cfg.INPUT.FORMAT).transpose(2, 0, 1).copy()) for p in images]
    separate_query_masks_(model, pixels, class_spread=3.0)
    keep_queries_(model)  # every query predicts a real class
    torch.save({"model": model.state_dict()}, weights)
    return config, weights


def test_demo_with_onnx_writes_the_pytorch_demo_files(tmp_path):
    """tools/export_model.py, then tools/demo.py with and without --onnx on generated photos:
    the same COCO-panoptic PNGs (>= 99.9% of pixels) and segments."""
    (tmp_path / "images").mkdir()
    sizes = {"street": (96, 140), "field": (150, 96), "beach": (96, 96)}  # unchanged by the 96..160 resize
    paths = [write_image(tmp_path / "images" / f"{n}.png", h, w, seed=i) for i, (n, (h, w)) in enumerate(sizes.items())]
    config, weights = _separated_tiny_model_files(tmp_path, paths)
    export_tool = load_tool("export_model")
    assert export_tool.main(["--config-file", config, "--format", "onnx", "--output", str(tmp_path / "exported"),
                             "MODEL.WEIGHTS", weights]) == 0
    demo = load_tool("demo")
    common = ["--config-file", config, "--input", str(tmp_path / "images"), "--save-coco-panoptic",
              "--confidence-threshold", "0.0"]
    assert demo.main(common + ["--output", str(tmp_path / "torch"), "--opts", "MODEL.WEIGHTS", weights]) == 0
    onnx_file = str(tmp_path / "exported" / "model.onnx")
    assert demo.main(common + ["--output", str(tmp_path / "onnx"), "--onnx", onnx_file]) == 0

    def segments(folder):
        with open(tmp_path / folder / "coco_panoptic.json") as f:
            return {a["image_id"]: a["segments_info"] for a in json.load(f)["annotations"]}

    expected, actual = segments("torch"), segments("onnx")
    assert sorted(expected) == sorted(sizes)
    for name in sizes:
        assert len(expected[name]) >= 2
        keys = [[(s["id"], s["category_id"]) for s in run[name]] for run in (expected, actual)]
        assert keys[0] == keys[1]
        ids = [rgb2id(np.asarray(Image.open(tmp_path / d / "coco_panoptic" / f"{name}.png").convert("RGB")))
               for d in ("torch", "onnx")]
        assert (ids[0] == ids[1]).mean() >= 0.999


def test_train_net_evaluates_an_onnx_model_as_the_pytorch_model(tiny_shapes, tmp_path):
    """tools/train_net.py --eval-only --onnx: COCOPanopticEvaluator gets the same segments and
    gives the same PQ for the export as for the PyTorch model on the same split."""
    train, val = tiny_shapes
    cfg = tiny_training_cfg(train, val, tmp_path / "torch")
    cfg.MODEL.DETR.TEST.INSTANCES_ON = cfg.MODEL.DETR.TEST.SEMANTIC_ON = False
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 0.0
    torch.manual_seed(0)
    model = build_model(cfg)
    inputs = [x for batch in DetrTrainer.build_test_loader(cfg, val) for x in batch]
    separate_query_masks_(model, [x["image"] for x in inputs], class_spread=3.0)
    keep_queries_(model)
    expected = DetrTrainer.test(cfg, model)["panoptic_seg"]
    path = export_onnx(cfg, model, str(tmp_path / "exported"))
    config = write_cfg(cfg, tmp_path / "config.yaml")
    train_net = load_tool("train_net")
    args = ["--config-file", config, "--eval-only", "--onnx", path, "OUTPUT_DIR", str(tmp_path / "onnx")]
    assert train_net.main(train_net.parse_args(args))["panoptic_seg"] == pytest.approx(expected, abs=0.5)

    def segments(run):
        with open(tmp_path / run / "inference" / val / "predictions.json") as f:
            annotations = json.load(f)["annotations"]
        return {a["image_id"]: [(s["id"], s["category_id"]) for s in a["segments_info"]] for a in annotations}

    expected_segments = segments("torch")
    assert len(expected_segments) == 4 and all(len(s) >= 2 for s in expected_segments.values())
    assert segments("onnx") == expected_segments


def test_benchmark_times_onnxruntime_next_to_pytorch(tmp_path, capsys):
    from benchmarks.cli import main

    from .test_benchmark import TINY_OPTS

    report = main([
        "--config-file", "configs/coco/detr_R50_panoptic.yaml", "--size", "96", "128", "--task", "inference",
        "--kept-queries", "4", "--warmup", "0", "--runs", "2", "--device", "cpu", "--threads", "1", "--onnx",
        *TINY_OPTS, "MODEL.DETR.TEST.INSTANCES_ON", "False", "MODEL.DETR.TEST.SEMANTIC_ON", "False",
    ])
    section = report["onnxruntime"]
    assert section["threads"] == 1 and section["pytorch"]["total"]["n"] == section["onnxruntime"]["total"]["n"] == 2
    assert section["speedup"] == pytest.approx(
        section["pytorch"]["total"]["median"] / section["onnxruntime"]["total"]["median"]
    )
    assert section["comparison"]["same_segments"] and section["comparison"]["min_pixel_agreement"] >= 0.999
    assert "onnxruntime vs PyTorch, end to end (1 threads" in capsys.readouterr().out



def test_onnxruntime_merges_by_the_configs_rule_as_the_pytorch_model(exported):
    """MODEL.DETR.TEST.MERGE "score_weighted" at run time: onnxruntime's output equals the
    PyTorch model's under that rule, which differs from the reference rule's on these images;
    without a config, the rule the export recorded (the reference's) applies."""
    cfg, model, path = exported
    weighted = cfg.clone()
    weighted.MODEL.DETR.TEST.MERGE = "score_weighted"
    runtime = OnnxPanopticModel(path, weighted)
    assert OnnxPanopticModel(path).postprocessor.merge.rule == "reference"
    images = _images()[:3]
    by_reference = [_pytorch(model, x) for x in images]
    reference_merge = model.postprocessor.merge
    model.postprocessor.merge = dataclasses.replace(reference_merge, rule="score_weighted")
    try:
        by_score = [_pytorch(model, x) for x in images]
    finally:
        model.postprocessor.merge = reference_merge
    for x, expected in zip(images, by_score):
        assert_same_panoptic(expected, runtime([x])[0]["panoptic_seg"])
    # Exact by construction: integer maps; two rules must differ somewhere.
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(by_reference, by_score))

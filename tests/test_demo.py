"""tools/demo.py on generated images with a small random model: one visualization per image,
COCO panoptic PNGs and JSON with dataset category ids."""
import json

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from panopticapi.utils import rgb2id
from PIL import Image

from detr_panoptic_d2.predict.cli import build_predictor, setup_inference_cfg
from tests.helpers import load_tool, write_image, write_tiny_panoptic_model

demo = load_tool("demo")
SIZES = {"street": (100, 140), "field": (120, 90)}


def _run_demo(tmp_path, threshold, extra_opts=()):
    config, weights = write_tiny_panoptic_model(tmp_path)
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for seed, (name, (h, w)) in enumerate(SIZES.items()):
        write_image(images / f"{name}.png", h, w, seed)
    out = tmp_path / f"out_{threshold}"
    argv = ["--config-file", config, "--input", str(images), "--output", str(out), "--save-coco-panoptic"]
    argv += ["--confidence-threshold", str(threshold), "--opts", "MODEL.WEIGHTS", weights, *extra_opts]
    assert demo.main(argv) == 0
    return out, config, weights


def test_demo_writes_visualizations_and_coco_panoptic(tmp_path):
    out, config, weights = _run_demo(tmp_path, threshold=0.0)
    for name, (h, w) in SIZES.items():
        assert Image.open(out / f"{name}.png").size == (w, h)

    predictions = json.loads((out / "coco_panoptic.json").read_text())
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    dataset_ids = set(meta.thing_dataset_id_to_contiguous_id) | set(meta.stuff_dataset_id_to_contiguous_id)
    assert {c["id"] for c in predictions["categories"]} == dataset_ids
    assert sorted(a["image_id"] for a in predictions["annotations"]) == sorted(SIZES)
    for ann in predictions["annotations"]:
        ids = rgb2id(np.asarray(Image.open(out / "coco_panoptic" / ann["file_name"]).convert("RGB")))
        assert ids.shape == SIZES[ann["image_id"]]
        segments = ann["segments_info"]
        assert segments, "with threshold 0 some queries must survive the merge"
        assert set(np.unique(ids)) - {0} == {s["id"] for s in segments}
        for s in segments:
            assert s["category_id"] in dataset_ids and s["area"] == int((ids == s["id"]).sum())

    # Category ids are the model's contiguous ids mapped back to COCO's.
    cfg = setup_inference_cfg(config, ["MODEL.WEIGHTS", weights], confidence_threshold=0.0)
    predictor, _ = build_predictor(cfg)
    with torch.no_grad():
        _, expected = predictor(read_image(str(tmp_path / "images" / "street.png"), format="BGR"))["panoptic_seg"]
    to_dataset = {c: d for d, c in meta.thing_dataset_id_to_contiguous_id.items()}
    to_dataset.update({c: d for d, c in meta.stuff_dataset_id_to_contiguous_id.items()})
    street = next(a for a in predictions["annotations"] if a["image_id"] == "street")
    assert [s["category_id"] for s in street["segments_info"]] == [to_dataset[s["category_id"]] for s in expected]


def test_demo_confidence_threshold_reaches_the_model_and_frozen_weights_are_ignored(tmp_path):
    # A stage-2 config's FROZEN_WEIGHTS (a training input) must not be needed for inference.
    out, _, _ = _run_demo(tmp_path, threshold=1.0, extra_opts=["MODEL.DETR.FROZEN_WEIGHTS", "missing/boxes.pth"])
    predictions = json.loads((out / "coco_panoptic.json").read_text())
    assert all(a["segments_info"] == [] for a in predictions["annotations"])

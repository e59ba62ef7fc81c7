"""Datasets carried by the config (DATASETS.REGISTER, dataloader.register), class names carried
by checkpoints and exports, and official DETR weights as MODEL.WEIGHTS."""
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from PIL import Image

from detr_panoptic_d2.checkpoint import DetrCheckpointer, convert_checkpoint
from detr_panoptic_d2.checkpoint.checkpointer import read_checkpoint_classes
from detr_panoptic_d2.checkpoint.model_classes import dataset_classes
from detr_panoptic_d2.data.user_datasets import register_lazy_splits
from detr_panoptic_d2.engine import load_config
from detr_panoptic_d2.predict.cli import build_predictor, setup_inference_cfg
from tests.detr_reference import official_state, tiny_hf_detr
from tests.helpers import assert_same_inference, load_tool, tiny_cfg, tiny_training_cfg, write_cfg, write_panoptic_split


def _forget(*names):
    """Removes datasets from both catalogs, as a new process starts without them."""
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)


def _categories(panoptic_json):
    """(id, name, isthing) by contiguous id, read off the JSON itself: things first, then stuff,
    each in file order (the coco_panoptic_standard numbering)."""
    with open(panoptic_json) as f:
        categories = json.load(f)["categories"]
    ordered = [c for c in categories if c["isthing"]] + [c for c in categories if not c["isthing"]]
    return [(c["id"], c["name"], c["isthing"]) for c in ordered]


@pytest.fixture
def split(tmp_path):
    """A 3-image COCO-panoptic split on disk: [JSON, IMAGE_DIR, PNG_DIR]."""
    return write_panoptic_split(tmp_path / "split", 3, 1)


def test_register_fills_the_key_and_the_saved_config_registers_again(split, tmp_path, monkeypatch):
    """--register values go into DATASETS.REGISTER with absolute paths; the dumped config,
    loaded in a 'new process' from another folder, registers the same split."""
    base = write_cfg(tiny_training_cfg("keyed_train", "keyed_val", tmp_path / "out"), tmp_path / "base.yaml")
    monkeypatch.chdir(tmp_path)
    relative = [os.path.relpath(p) for p in split]
    cfg, _ = load_config(base, register=[["keyed_val", *relative]])
    assert cfg.DATASETS.REGISTER == [
        {"name": "keyed_val", "json": split[0], "image_dir": split[1], "png_dir": split[2], "sem_seg_dir": ""}
    ]
    assert dataset_classes("keyed_val") is not None and len(DatasetCatalog.get("keyed_val")) == 3
    saved = write_cfg(cfg, tmp_path / "saved.yaml")
    with open(saved) as f:
        assert yaml.safe_load(f)["DATASETS"]["REGISTER"][0]["png_dir"] == split[2]

    _forget("keyed_val")
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    load_config(saved)
    records = DatasetCatalog.get("keyed_val")
    assert [r["file_name"] for r in records] == sorted(os.path.join(split[1], f) for f in os.listdir(split[1]))
    assert MetadataCatalog.get("keyed_val").panoptic_json == split[0]


def test_the_key_with_semantic_pngs_and_its_errors(split, tmp_path):
    base = write_cfg(tiny_cfg(), tmp_path / "base.yaml")
    sem = str(tmp_path / "semantic")
    os.makedirs(sem)
    entry = f"[{{'name': 'keyed_sem', 'json': '{split[0]}', 'image_dir': '{split[1]}', 'png_dir': '{split[2]}', 'sem_seg_dir': '{sem}'}}]"
    load_config(base, ["DATASETS.REGISTER", entry])
    assert DatasetCatalog.get("keyed_sem")[0]["sem_seg_file_name"].startswith(sem + "/")

    with pytest.raises(ValueError, match=r"DATASETS.REGISTER: entry .* lacks \['png_dir'\]"):
        load_config(base, ["DATASETS.REGISTER", f"[{{'name': 'x', 'json': '{split[0]}', 'image_dir': '{split[1]}'}}]"])
    with pytest.raises(ValueError, match=r"DATASETS.REGISTER: entry .* has unknown fields \['pngs'\]"):
        load_config(base, ["DATASETS.REGISTER", entry.replace("'sem_seg_dir'", "'pngs'")])
    gone = entry.replace("keyed_sem", "keyed_gone").replace(sem, str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match=f"DATASETS.REGISTER keyed_gone: {tmp_path}/nothing does not exist"):
        load_config(base, ["DATASETS.REGISTER", gone])
    load_config(base, ["DATASETS.REGISTER", gone], data_optional=True)  # inference tools: skipped
    assert "keyed_gone" not in DatasetCatalog.list()


def test_lazyconfig_key_is_saved_and_registers_again(split, tmp_path):
    cfg = LazyConfig.load("configs/shapes/detr_R18_shapes.py")
    assert register_lazy_splits(cfg, [["lazy_keyed", *split]]) == ["lazy_keyed"]
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    _forget("lazy_keyed")
    again = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert register_lazy_splits(again) == ["lazy_keyed"]
    assert len(DatasetCatalog.get("lazy_keyed")) == 3


def test_evaluating_a_checkpoint_against_other_classes_names_both(tmp_path):
    """A checkpoint saved for shapes_panoptic_val names its 6 classes; load_complete for a
    dataset of 6 other classes (one renamed) refuses it, naming the file, the dataset and the
    first differing class; for its own dataset it loads."""
    cfg = tiny_cfg(num_classes=6, dataset="shapes_panoptic_val")
    DetrCheckpointer(build_model(cfg), save_dir=str(tmp_path), datasets=["shapes_panoptic_val"]).save("shapes")
    path = str(tmp_path / "shapes.pth")
    assert read_checkpoint_classes(path) == dataset_classes("shapes_panoptic_val")
    renamed = MetadataCatalog.get("shapes_renamed")
    for key in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id", "stuff_colors"):
        renamed.set(**{key: MetadataCatalog.get("shapes_panoptic_val").get(key)})
    names = list(MetadataCatalog.get("shapes_panoptic_val").stuff_classes)
    renamed.set(stuff_classes=names[:4] + ["dune"] + names[5:])
    with pytest.raises(ValueError, match=r"shapes.pth' was trained on other classes than dataset 'shapes_renamed'.*"
                       r"the model has 6 classes \(circle.*sand.*the dataset 6 classes \(circle.*dune.*contiguous id 4"):
        DetrCheckpointer(build_model(cfg), datasets=["shapes_renamed"]).load_complete(path)
    DetrCheckpointer(build_model(cfg), datasets=["shapes_panoptic_val"]).load_complete(path)


def _official_files(tmp_path):
    """A random official-layout panoptic checkpoint (tiny R18, 250 + 1 class rows, as the
    released ones) and its file converted by the converter."""
    import argparse

    reference = tiny_hf_detr(num_labels=250)
    official = tmp_path / "detr-tiny-panoptic.pth"
    args = argparse.Namespace(backbone="resnet18", dilation=False, masks=True, nheads=8, hidden_dim=64, num_queries=10)
    torch.save({"model": official_state(reference), "args": args}, official)
    convert_checkpoint(official, tmp_path / "converted.pth")
    return reference, str(official), str(tmp_path / "converted.pth")


def test_official_and_huggingface_weights_load_as_their_converted_file(tmp_path, caplog):
    """MODEL.WEIGHTS naming an official DETR file, a HuggingFace folder or its model.safetensors
    loads the tensors of the converted file (bit-identical outputs), names COCO's classes, and
    says so in the log."""
    reference, official, converted = _official_files(tmp_path)
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    expected = build_model(cfg)
    DetrCheckpointer(expected).load_complete(converted)
    reference.save_pretrained(tmp_path / "hf")
    for weights in (official, str(tmp_path / "hf"), str(tmp_path / "hf" / "model.safetensors")):
        model = build_model(cfg)
        with caplog.at_level(logging.INFO):
            extra = DetrCheckpointer(model, datasets=["coco_2017_val_panoptic"]).load_complete(weights)
        assert extra["classes"] == dataset_classes("coco_2017_val_panoptic")
        assert read_checkpoint_classes(weights) == extra["classes"]
        assert "DETR R18 panoptic checkpoint (not a Detectron2 one), converted on load" in caplog.text
        assert "re-indexed from COCO category ids to the contiguous ids of coco_2017_val_panoptic" in caplog.text
        caplog.clear()
        for key, value in expected.state_dict().items():
            # Exact by construction: converted on load or by the tool, the same copied tensors.
            assert torch.equal(model.state_dict()[key], value), (weights, key)
        assert_same_inference(model, expected)


def test_demo_with_official_weights_writes_the_converted_files_outputs(tmp_path):
    """tools/demo.py with MODEL.WEIGHTS an official checkpoint writes the same files as with
    its converted file."""
    from tests.helpers import write_image

    _, official, converted = _official_files(tmp_path)
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 160
    config = write_cfg(cfg, tmp_path / "config.yaml")
    (tmp_path / "images").mkdir()
    write_image(tmp_path / "images" / "street.png", 100, 140)
    demo = load_tool("demo")
    for name, weights in (("official", official), ("converted", converted)):
        argv = ["--config-file", config, "--input", str(tmp_path / "images"), "--output", str(tmp_path / name),
                "--save-coco-panoptic", "--confidence-threshold", "0.5", "--opts", "MODEL.WEIGHTS", weights]
        assert demo.main(argv) == 0
    for file in ("street.png", "coco_panoptic/street.png", "coco_panoptic.json"):
        # Exact by construction: the same weights through the same operations on the same images.
        assert (tmp_path / "official" / file).read_bytes() == (tmp_path / "converted" / file).read_bytes(), file


@pytest.mark.slow
def test_trained_with_the_key_then_every_tool_from_the_saved_config(tmp_path):
    """train_net --register (2 iterations), then from OUTPUT_DIR/config.yaml alone, each as in
    a new process (catalogs emptied): --eval-only gives the same PQ; with the dataset files
    moved away, demo (dataset category ids, classes from the checkpoint), inspect_pipeline,
    export and demo --onnx; with the files back, the threshold sweep and the benchmark."""
    root = tmp_path / "data"
    train, val = write_panoptic_split(root / "train", 6, 0), write_panoptic_split(root / "val", 3, 1)
    names = ("e2e_train", "e2e_val")
    out = tmp_path / "run"
    base = tiny_training_cfg(*names, out, max_iter=2)
    base.MODEL.DETR.TEST.INSTANCES_ON = base.MODEL.DETR.TEST.SEMANTIC_ON = False
    train_net = load_tool("train_net")
    register = ["--register", names[0], *train, "--register", names[1], *val]
    trained = train_net.main(train_net.parse_args(["--config-file", write_cfg(base, tmp_path / "base.yaml"), *register]))
    saved, final = str(out / "config.yaml"), str(out / "model_final.pth")
    expected_classes = _categories(val[0])
    assert [(c["id"], c["name"], c["isthing"]) for c in read_checkpoint_classes(final)] == expected_classes

    _forget(*names)
    again = train_net.main(train_net.parse_args(["--config-file", saved, "--eval-only", "MODEL.WEIGHTS", final]))
    assert again["panoptic_seg"]["PQ"] == trained["panoptic_seg"]["PQ"]

    _forget(*names)
    shutil.move(str(root), str(tmp_path / "moved"))
    images = str(tmp_path / "moved" / "val" / "images")
    demo = load_tool("demo")
    common = ["--config-file", saved, "--input", images, "--save-coco-panoptic", "--confidence-threshold", "0"]
    assert demo.main([*common, "--output", str(tmp_path / "demo"), "--opts", "MODEL.WEIGHTS", final]) == 0
    predictions = json.loads((tmp_path / "demo" / "coco_panoptic.json").read_text())
    assert [(c["id"], c["name"], c["isthing"]) for c in predictions["categories"]] == expected_classes
    predictor, _ = build_predictor(setup_inference_cfg(saved, ["MODEL.WEIGHTS", final], confidence_threshold=0.0))
    first = sorted(os.listdir(images))[0]
    with torch.no_grad():
        _, segments = predictor(read_image(os.path.join(images, first), format="BGR"))["panoptic_seg"]
    written = next(a for a in predictions["annotations"] if a["image_id"] == os.path.splitext(first)[0])
    assert segments and [s["category_id"] for s in written["segments_info"]] == [
        expected_classes[s["category_id"]][0] for s in segments
    ]

    inspect_tool = load_tool("inspect_pipeline")
    page = tmp_path / "inspect"
    assert inspect_tool.main(["--config-file", saved, "--input", os.path.join(images, first), "--output", str(page),
                              "--confidence-threshold", "0", "--opts", "MODEL.WEIGHTS", final]) == 0
    html = (page / os.path.splitext(first)[0] / "index.html").read_text()
    assert any(name in html for _, name, _ in expected_classes)

    export_tool = load_tool("export_model")
    assert export_tool.main(["--config-file", saved, "--output", str(tmp_path / "exported"), "MODEL.WEIGHTS", final]) == 0
    exported = json.loads((tmp_path / "exported" / "model.json").read_text())
    assert [(c["id"], c["name"], c["isthing"]) for c in exported["classes"]] == expected_classes
    _forget(*names)
    onnx = str(tmp_path / "exported" / "model.onnx")
    assert demo.main([*common, "--output", str(tmp_path / "demo_onnx"), "--onnx", onnx]) == 0
    onnx_predictions = json.loads((tmp_path / "demo_onnx" / "coco_panoptic.json").read_text())
    assert onnx_predictions["categories"] == predictions["categories"]
    ids = {s["category_id"] for a in onnx_predictions["annotations"] for s in a["segments_info"]}
    assert ids and ids <= {i for i, _, _ in expected_classes}
    assert np.asarray(Image.open(tmp_path / "demo_onnx" / f"{os.path.splitext(first)[0]}.png")).ndim == 3

    shutil.move(str(tmp_path / "moved"), str(root))
    _forget(*names)
    sweep = load_tool("dev/sweep_score_threshold")
    swept = sweep.main(["--config-file", saved, "--dataset", names[1], "--thresholds", "0.0", "--opts", "MODEL.WEIGHTS", final])
    assert set(swept) == {0.0} and np.isfinite(swept[0.0]["PQ"])
    _forget(*names)
    from benchmarks.cli import main as benchmark

    report = benchmark(["--config-file", saved, "--task", "inference", "--size", "64", "64", "--runs", "1",
                        "--warmup", "0", "MODEL.WEIGHTS", final])
    assert report["inference"]["modes"]["ours"]["total"]["median"] > 0


def test_an_export_records_its_classes_and_is_refused_for_other_ids(tmp_path):
    """The export's metadata lists the dataset's categories; a config whose dataset has the
    same names under another id is refused (check_fits), the same dataset accepted."""
    from detr_panoptic_d2.export import check_fits, export_metadata

    cfg = tiny_cfg(num_classes=6, dataset="shapes_panoptic_val")
    metadata = export_metadata(cfg, build_model(cfg))
    assert metadata["classes"] == dataset_classes("shapes_panoptic_val")
    check_fits(metadata, cfg, "model.onnx")
    metadata["classes"][3]["id"] = 99
    with pytest.raises(ValueError, match="model.onnx was exported from another config.*classes of 'shapes_panoptic_val'"):
        check_fits(metadata, cfg, "model.onnx")

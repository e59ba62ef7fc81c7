"""tools/run_demo.py's pieces: panoptic pictures of a dataset, the inspector's page of its first
image and the printed block."""
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from PIL import Image

from detr_panoptic_d2.visualization import save_panoptic_visualizations

from .helpers import keep_queries_, load_tool, register_tiny_shapes, tiny_cfg, write_tiny_panoptic_model


def test_pictures_show_input_prediction_and_ground_truth(tmp_path):
    _, val = register_tiny_shapes(str(tmp_path), "shapes_vis", num_train=1, num_val=2)
    cfg = tiny_cfg(num_classes=6, dataset=val)
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 96
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 0.0
    torch.manual_seed(0)
    model = build_model(cfg).train()
    keep_queries_(model)  # every query of the untrained model predicts a class
    paths = save_panoptic_visualizations(cfg, model, val, str(tmp_path / "vis"), num_images=2, scale=2)
    assert model.training
    records = DatasetCatalog.get(val)
    assert [os.path.basename(p) for p in paths] == [
        os.path.basename(r["file_name"]).replace(".jpg", ".png") for r in records
    ]
    for path, record in zip(paths, records):
        picture = np.asarray(Image.open(path))
        width, height = Image.open(record["file_name"]).size
        assert picture.shape == (2 * height, 3 * 2 * width, 3)
        source, prediction, truth = np.split(picture, 3, axis=1)
        # Exact by construction: integer pictures; drawing must change them.
        assert not np.array_equal(source, truth) and not np.array_equal(source, prediction)


def test_demo_prints_every_metric():
    run_demo = load_tool("run_demo")
    panoptic = {k + s: float(i) for i, (k, s) in enumerate((k, s) for s in ("", "_th", "_st") for k in ("PQ", "SQ", "RQ"))}
    text = run_demo.format_results({"panoptic_seg": panoptic, "bbox": {"AP": 12.34}, "sem_seg": {"mIoU": 56.78}})
    lines = text.splitlines()
    assert lines[1].split() == ["all", "0.0", "1.0", "2.0"]
    assert lines[2].split() == ["things", "3.0", "4.0", "5.0"]
    assert lines[3].split() == ["stuff", "6.0", "7.0", "8.0"]
    assert lines[4].split() == ["box", "AP", "12.3", "mask", "AP", "n/a", "mIoU", "56.8"]


def test_demo_writes_and_prints_the_inspector_page_of_the_first_validation_image(tmp_path):
    run_demo = load_tool("run_demo")
    _, val = register_tiny_shapes(str(tmp_path), "shapes_inspected", num_train=1, num_val=2)
    config, weights = write_tiny_panoptic_model(tmp_path, dataset=val)
    opts = ["MODEL.WEIGHTS", weights, "MODEL.DETR.TEST.OBJECT_SCORE_THRESH", 0.0]
    page = run_demo.inspect_first_image(config, opts, val, str(tmp_path / "inspection"))
    first = os.path.splitext(os.path.basename(DatasetCatalog.get(val)[0]["file_name"]))[0]
    assert page == str(tmp_path / "inspection" / first / "index.html")
    with open(page, encoding="utf-8") as f:
        assert '<section class="object" id="object-0">' in f.read()

    text = run_demo.summary(val, ["3"], {}, ["vis/a.png"], page, "out/model_final.pth", 2.0)
    lines = text.splitlines()
    assert lines[0] == f"DETR panoptic on {val}, trained from scratch (3 iterations):"
    assert lines[-4:] == ["  vis/a.png", f"Pipeline, step by step: {page}", "Checkpoint: out/model_final.pth", "Wall time: 2.0 min"]


def test_demo_trains_in_float32_on_a_cpu_without_native_bfloat16(monkeypatch):
    """The recipe's bfloat16 training is several times slower where the CPU emulates bfloat16:
    there the demo turns SOLVER.AMP.ENABLED off, unless the user set it."""
    tool = load_tool("run_demo")
    monkeypatch.setattr(tool, "cpu_has_bfloat16", lambda: False)
    assert tool.without_slow_bfloat16(["SOLVER.MAX_ITER", "10"]) == ["SOLVER.MAX_ITER", "10", "SOLVER.AMP.ENABLED", "False"]
    assert tool.without_slow_bfloat16(["SOLVER.AMP.ENABLED", "True"]) == ["SOLVER.AMP.ENABLED", "True"]
    for native in (True, None):  # native bfloat16, or /proc/cpuinfo unreadable: the recipe as it is
        monkeypatch.setattr(tool, "cpu_has_bfloat16", lambda native=native: native)
        assert tool.without_slow_bfloat16(["SOLVER.MAX_ITER", "10"]) == ["SOLVER.MAX_ITER", "10"]

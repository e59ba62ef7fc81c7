"""Faults and bad input: each case of docs/RELIABILITY.md's "Bad input and faults" table that is not
covered beside its feature (data, checkpoint and model tests name theirs in the table)."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from detectron2.engine import HookBase, default_argument_parser
from detectron2.modeling import build_model
from panopticapi.utils import id2rgb
from PIL import Image

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.data import DetrPanopticDatasetMapper
from detr_panoptic_d2.engine import DetrTrainer

from .helpers import keep_queries_, load_tool, make_input, tiny_cfg, tiny_training_cfg, write_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_complete_checkpoint(tiny_shapes, tiny_shapes_root, tmp_path):
    """SIGKILL a training process between checkpoints, then --resume: it starts after the last
    checkpoint written before the kill, with its weights, and runs to SOLVER.MAX_ITER."""
    out = tmp_path / "run"
    cfg = tiny_training_cfg(*tiny_shapes, out, max_iter=200)
    cfg.SOLVER.CHECKPOINT_PERIOD = 3
    cfg.TEST.EVAL_PERIOD = 0
    cfg.DATASETS.TEST = ()
    cfg.MODEL.DETR.TEST.PANOPTIC_ON = cfg.MODEL.DETR.TEST.INSTANCES_ON = cfg.MODEL.DETR.TEST.SEMANTIC_ON = False
    cfg_file = write_cfg(cfg, tmp_path / "cfg.yaml")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from detectron2.engine import default_argument_parser\n"
        "from tests.helpers import load_tool, register_tiny_shapes\n"
        "register_tiny_shapes(sys.argv[2], 'shapes_tiny')\n"
        "load_tool('train_net').main(default_argument_parser().parse_args(['--config-file', sys.argv[3]]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, ROOT, tiny_shapes_root, cfg_file],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while not (out / "model_0000008.pth").exists():
            assert proc.poll() is None, "training stopped before it was killed"
            assert time.time() < deadline, "no third checkpoint within 4 minutes"
            time.sleep(0.2)
        time.sleep(0.5)  # somewhere between two checkpoints
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    last = (out / "last_checkpoint").read_text()
    saved = sorted(p for p in os.listdir(out) if p.endswith(".pth"))
    assert last in saved and last != "model_final.pth"
    for name in saved:  # every file under a checkpoint's name is complete
        torch.load(out / name, map_location="cpu", weights_only=True)
    last_state = torch.load(out / last, map_location="cpu", weights_only=True)

    trainer = DetrTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == last_state["iteration"] + 1
    for name, value in trainer.model.state_dict().items():
        # Exact by construction: a copy of the same tensors, no arithmetic.
        assert torch.equal(value, last_state["model"][name]), name
    trainer.max_iter = trainer.start_iter + 2  # the rest of the schedule is not needed here
    trainer.train()
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == trainer.start_iter + 1


def _train_losses(cfg, cfg_path):
    """Trains with tools/train_net.py; returns the total losses logged in metrics.json."""
    load_tool("train_net").main(default_argument_parser().parse_args(["--config-file", write_cfg(cfg, cfg_path)]))
    with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json")) as f:
        return [json.loads(line)["total_loss"] for line in f if "total_loss" in line]


@pytest.mark.slow
def test_seeded_deterministic_runs_give_identical_losses(tiny_shapes, tmp_path):
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    losses = []
    try:
        for run in ("a", "b"):
            cfg = tiny_training_cfg(tiny_shapes[0], None, tmp_path / run, max_iter=3)
            cfg.SEED = 7
            cfg.MODEL.DETR.DETERMINISTIC = True
            losses.append(_train_losses(cfg, tmp_path / f"{run}.yaml"))
            assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    # Exact by construction: one seed, one process, the same operations and shapes at one thread count.
    assert len(losses[0]) >= 1 and losses[0] == losses[1]


class _PoisonWeights(HookBase):
    """Sets a class-head weight to NaN before the first iteration."""

    def before_train(self):
        with torch.no_grad():
            self.trainer.model.class_embed.weight[0, 0] = float("nan")


@pytest.mark.slow
def test_non_finite_training_loss_stops_with_detectron2_error_naming_losses(tiny_shapes, tmp_path):
    trainer = DetrTrainer(tiny_training_cfg(tiny_shapes[0], None, tmp_path, max_iter=3))
    trainer.register_hooks([_PoisonWeights()])
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError, match=r"(?s)Loss became infinite or NaN.*loss_ce.: np.float64\(nan\)"):
        trainer.train()


def test_unregistered_dataset_is_named(tiny_shapes, tmp_path):
    cfg = tiny_training_cfg("shapes_tiny_trian", None, tmp_path)
    with pytest.raises(KeyError, match="shapes_tiny_trian"):
        DetrTrainer(cfg)


def test_evaluating_a_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    other = tiny_cfg(num_classes=7)
    DetrCheckpointer(build_model(other), str(tmp_path)).save("seven_classes")
    model = build_model(tiny_cfg(num_classes=5))
    with pytest.raises(ValueError, match=r"seven_classes.pth.*class_embed.weight \(8, 64\) vs \(6, 64\)"):
        DetrCheckpointer(model).load_complete(str(tmp_path / "seven_classes.pth"))
    with pytest.raises(ValueError, match="set MODEL.WEIGHTS"):
        DetrCheckpointer(model).load_complete("")


def test_evaluating_a_box_only_checkpoint_with_a_mask_model_names_the_missing_keys(tmp_path):
    """A checkpoint of the box-only detector (stage 1) holds no mask head: loading it for
    evaluation into a mask model refuses, naming the file and the missing mask-head keys."""
    DetrCheckpointer(build_model(tiny_cfg(mask_on=False)), str(tmp_path)).save("boxes")
    model = build_model(tiny_cfg())
    with pytest.raises(ValueError, match=r"boxes.pth.*missing \[.*'mask_head\."):
        DetrCheckpointer(model).load_complete(str(tmp_path / "boxes.pth"))


def test_loading_for_training_reports_missing_and_extra_keys(tmp_path):
    source = build_model(tiny_cfg(mask_on=False))
    state = {k: v for k, v in source.state_dict().items() if k != "query_embed.weight"}
    state["leftover.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "partial.pth")
    ckpt = DetrCheckpointer(build_model(tiny_cfg(mask_on=False)))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    ckpt.logger.addHandler(handler)
    try:
        ckpt.load(str(tmp_path / "partial.pth"))
    finally:
        ckpt.logger.removeHandler(handler)
    report = "\n".join(r.getMessage() for r in records)
    assert "query_embed.weight" in report and "leftover.weight" in report
    assert ckpt.incompatible.missing_keys == ["query_embed.weight"]


def test_inference_on_tiny_and_mixed_size_images(tmp_path):
    """A 1 x 1, a 20 x 9 and a 70 x 100 image in one batch, every query kept: outputs in each
    image's size. The 1-pixel image is void (every segment has 1 <= SMALL_SEGMENT_AREA pixels);
    the others are covered by segments whose ids and areas are those of ``segments_info``."""
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 0.0
    model = build_model(cfg).eval()
    keep_queries_(model)  # no query says "no object"
    with torch.no_grad():
        batch = [make_input(1, 1, with_targets=False), make_input(20, 9, seed=1, with_targets=False),
                 make_input(70, 100, seed=2, with_targets=False)]
        results = model(batch)
    for x, r in zip(batch, results):
        assert r["panoptic_seg"][0].shape == (x["height"], x["width"])
    seg, info = results[0]["panoptic_seg"]
    assert info == [] and seg.item() == 0
    for seg, info in (r["panoptic_seg"] for r in results[1:]):
        assert info and (seg > 0).all()
        assert {s["id"]: s["area"] for s in info} == {int(i): int((seg == i).sum()) for i in seg.unique()}


def test_non_finite_input_image_is_reported():
    model = build_model(tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")).eval()
    x = make_input(40, 40, with_targets=False)
    x["image"] = x["image"].float()
    x["image"][0, 5, 5] = float("nan")
    with torch.no_grad(), pytest.raises(FloatingPointError, match="synthetic_0.png"):
        model([x])


def _sample(tmp_path, size, ids):
    """A one-image dataset dict: a random RGB image of ``size`` and a panoptic PNG of ``ids``."""
    h, w = size
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "image.jpg")
    Image.fromarray(id2rgb(ids)).save(tmp_path / "pan.png")
    return {"file_name": str(tmp_path / "image.jpg"), "pan_seg_file_name": str(tmp_path / "pan.png"),
            "height": h, "width": w, "image_id": 0}


def _mapper(min_size=64, max_size=96):
    cfg = tiny_cfg(num_classes=6)
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MAX_SIZE_TRAIN = max_size
    cfg.INPUT.CROP.ENABLED = False
    return DetrPanopticDatasetMapper(cfg, is_train=True, dataset_name="synthetic")


def test_huge_image_is_resized_and_its_segments_kept(tmp_path):
    ids = np.zeros((5000, 5000), np.int32)
    ids[:2500] = 7
    ids[2500:] = 9
    d = _sample(tmp_path, (5000, 5000), ids)
    d["segments_info"] = [{"id": 7, "category_id": 3, "iscrowd": 0}, {"id": 9, "category_id": 4, "iscrowd": 0}]
    out = _mapper()(d)
    assert out["image"].shape == (3, 64, 64)
    assert out["instances"].gt_classes.tolist() == [3, 4]
    assert out["instances"].gt_masks.tensor.sum() == 64 * 64


def test_empty_segments_info_with_unlabelled_png_gives_empty_targets(tmp_path):
    d = _sample(tmp_path, (50, 60), np.zeros((50, 60), np.int32))
    d["segments_info"] = []
    inst = _mapper()(d)["instances"]
    assert len(inst) == 0 and inst.gt_masks.tensor.shape[0] == 0

"""A COCO-panoptic split on disk registered from the command line (--register), NUM_CLASSES
checked against it, and fine-tuning from a checkpoint with another number of classes."""
import json
import logging
import math
import os

import pytest
import torch
from detectron2.modeling import build_model

from detr_panoptic_d2.checkpoint import DetrCheckpointer, load_model_state
from detr_panoptic_d2.data import PanopticDataError
from detr_panoptic_d2.data.user_datasets import register_panoptic_files
from detr_panoptic_d2.engine import DetrTrainer

from .helpers import load_tool, tiny_cfg, tiny_training_cfg, write_cfg, write_panoptic_split


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    """Two COCO-panoptic splits (6 classes) written to disk: {"train": [JSON, IMAGE_DIR, PNG_DIR], "val": ...}."""
    root = tmp_path_factory.mktemp("my_data")
    return {"train": write_panoptic_split(root / "train", 6, 0), "val": write_panoptic_split(root / "val", 3, 1)}


def _register_args(on_disk, prefix):
    return ["--register", f"{prefix}_train", *on_disk["train"], "--register", f"{prefix}_val", *on_disk["val"]]


def _log_of(checkpointer):
    """Starts recording the messages of ``checkpointer``'s logger; returns the list."""
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    checkpointer.logger.addHandler(handler)
    return records


def _save_model(cfg, path, seed=1):
    torch.manual_seed(seed)
    state = build_model(cfg).state_dict()
    torch.save({"model": state}, path)
    return state


@pytest.mark.slow
def test_register_option_fine_tunes_from_other_classes_then_evaluates(on_disk, tmp_path):
    """train_net.py --register twice: a checkpoint of a 5-class model fine-tunes on the 6-class
    split (class head new and said so in the log, every other tensor the checkpoint's), trains
    2 iterations, evaluates PQ; --eval-only then reloads the result and prints PQ again."""
    checkpoint = _save_model(tiny_cfg(num_classes=5), tmp_path / "five_classes.pth")
    base = tiny_training_cfg("coco_2017_train_panoptic", "coco_2017_val_panoptic", tmp_path / "run", max_iter=2)
    base.MODEL.DETR.NUM_CLASSES = 133
    base.MODEL.DETR.TEST.INSTANCES_ON = False
    cfg_file = write_cfg(base, tmp_path / "cfg.yaml")
    opts = [
        "DATASETS.TRAIN", "('mine_train',)", "DATASETS.TEST", "('mine_val',)",
        "MODEL.DETR.NUM_CLASSES", "6", "MODEL.WEIGHTS", str(tmp_path / "five_classes.pth"),
    ]
    train_net = load_tool("train_net")
    args = train_net.parse_args(["--config-file", cfg_file, *_register_args(on_disk, "mine"), *opts])

    results = train_net.main(args)
    assert math.isfinite(results["panoptic_seg"]["PQ"])
    final = load_model_state(str(tmp_path / "run" / "model_final.pth"))
    assert final["class_embed.weight"].shape == (7, 64)
    with open(tmp_path / "run" / "log.txt") as f:
        assert "Fine-tuning: class head re-initialized" in f.read()

    # What that run loaded before its first step.
    trainer = DetrTrainer(train_net.setup(args))
    log = _log_of(trainer.checkpointer)
    trainer.resume_or_load(resume=False)
    loaded = trainer.model.state_dict()
    assert loaded["class_embed.weight"].shape == (7, 64) and loaded["class_embed.bias"].shape == (7,)
    assert loaded.keys() == checkpoint.keys()
    for name, value in checkpoint.items():
        if not name.startswith("class_embed."):
            # Exact by construction: a copy of the same tensors, no arithmetic.
            assert torch.equal(loaded[name], value), name
    message = "\n".join(log)
    assert "class head re-initialized" in message
    assert "class_embed.weight (6, 64) in the checkpoint -> (7, 64) in the model" in message
    assert "class_embed.bias (6,) in the checkpoint -> (7,) in the model" in message
    assert "Skip loading parameter" not in message

    eval_args = [*args.opts[:-2], "MODEL.WEIGHTS", str(tmp_path / "run" / "model_final.pth")]
    again = train_net.main(
        train_net.parse_args(["--config-file", cfg_file, "--eval-only", *_register_args(on_disk, "mine"), *eval_args])
    )
    assert again["panoptic_seg"]["PQ"] == results["panoptic_seg"]["PQ"]
    with open(tmp_path / "run" / "log.txt") as f:
        assert f.read().count("Panoptic Evaluation Results") == 2


def test_num_classes_is_checked_against_every_dataset(on_disk, tmp_path):
    train_net = load_tool("train_net")
    cfg_file = write_cfg(tiny_training_cfg("counted_train", "counted_val", tmp_path), tmp_path / "cfg.yaml")
    args = train_net.parse_args(["--config-file", cfg_file, *_register_args(on_disk, "counted"), "MODEL.DETR.NUM_CLASSES", "5"])
    with pytest.raises(
        ValueError, match=r"Dataset 'counted_train' has 6 classes \(things and stuff\) but MODEL.DETR.NUM_CLASSES is 5"
    ):
        train_net.main(args)
    mixed = train_net.parse_args(["--config-file", cfg_file, "DATASETS.TEST", "('coco_2017_val_panoptic',)"])
    with pytest.raises(ValueError, match="'coco_2017_val_panoptic' has 133 classes .* is 6: set MODEL.DETR.NUM_CLASSES 133"):
        train_net.setup(mixed)
    missing = train_net.parse_args(["--config-file", cfg_file, "DATASETS.TRAIN", "('not_registered',)"])
    with pytest.raises(ValueError, match="'not_registered' is not registered: pass --register not_registered"):
        train_net.setup(missing)


def test_register_errors_name_the_dataset_and_path(on_disk, tmp_path):
    json_file, images, pngs = on_disk["val"]
    register_panoptic_files("twice_val", json_file, images, pngs)
    register_panoptic_files("twice_val", json_file, images, pngs)  # the same files again: nothing to do
    with pytest.raises(ValueError, match="--register twice_val: a dataset of that name is already registered"):
        register_panoptic_files("twice_val", json_file, images, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"--register gone: {tmp_path}/no_pngs does not exist"):
        register_panoptic_files("gone", json_file, images, str(tmp_path / "no_pngs"))
    with open(tmp_path / "bare.json", "w") as f:
        json.dump({"images": [], "annotations": []}, f)
    with pytest.raises(PanopticDataError, match=r"dataset 'bare', file .*bare.json: not a COCO panoptic JSON with categories"):
        register_panoptic_files("bare", str(tmp_path / "bare.json"), images, pngs)
    train_net = load_tool("train_net")
    with pytest.raises(SystemExit):
        train_net.parse_args(["--config-file", "x.yaml", "--register", "short", json_file, images])
    assert os.path.isdir(pngs)


def test_a_shape_mismatch_outside_the_class_head_is_an_error(tmp_path):
    """Only class_embed may differ when fine-tuning: a checkpoint with 12 queries (and other
    classes) is refused, naming the key and both shapes; the same with the class head alone
    different loads, leaving the class head as initialized."""
    other = tiny_cfg(num_classes=3)
    other.MODEL.DETR.NUM_OBJECT_QUERIES = 12
    _save_model(other, tmp_path / "twelve_queries.pth")
    model = build_model(tiny_cfg(num_classes=5))
    with pytest.raises(ValueError, match=r"twelve_queries.pth.*query_embed.weight \(12, 64\) vs \(10, 64\)"):
        DetrCheckpointer(model).load(str(tmp_path / "twelve_queries.pth"))

    checkpoint = _save_model(tiny_cfg(num_classes=3), tmp_path / "three_classes.pth")
    model = build_model(tiny_cfg(num_classes=5))
    initial_head = model.class_embed.weight.detach().clone()
    checkpointer = DetrCheckpointer(model)
    log = _log_of(checkpointer)
    checkpointer.load(str(tmp_path / "three_classes.pth"))
    # Exact by construction: a copy of the same tensors, no arithmetic.
    assert torch.equal(model.class_embed.weight, initial_head)
    for name, value in model.state_dict().items():
        if not name.startswith("class_embed."):
            assert torch.equal(value, checkpoint[name]), name
    assert any("class_embed.weight (4, 64) in the checkpoint -> (6, 64) in the model" in m for m in log)
    assert not any("not found in the checkpoint" in m for m in log)

"""The package installs, registers its components and its config keys."""
import os
import subprocess
import sys

import pytest
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY

import detr_panoptic_d2
from detr_panoptic_d2 import add_detr_panoptic_config
from detr_panoptic_d2.modeling import DETR_MASK_HEAD_REGISTRY


def test_import_registers_components():
    assert META_ARCH_REGISTRY.get("DetrPanoptic") is detr_panoptic_d2.modeling.DetrPanoptic
    assert DETR_MASK_HEAD_REGISTRY.get("DetrMaskHead") is detr_panoptic_d2.modeling.DetrMaskHead


def test_config_keys_added_to_fresh_cfg():
    cfg = get_cfg()
    assert not hasattr(cfg.MODEL, "DETR")
    add_detr_panoptic_config(cfg)
    # Exact by construction: config defaults read back as written.
    assert cfg.MODEL.DETR.NUM_OBJECT_QUERIES == 100
    assert cfg.MODEL.DETR.MASK_HEAD.NAME == "DetrMaskHead"
    assert cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH == 0.85
    assert cfg.SOLVER.BACKBONE_MULTIPLIER == 0.1


def test_every_config_key_is_commented():
    """Each key assignment in config.py is preceded by a comment (or carries one), or belongs
    to a commented group of consecutive keys."""
    lines = open(detr_panoptic_d2.config.__file__).read().splitlines()
    assignments = [i for i, line in enumerate(lines) if line.strip().startswith("keys.") and "= CN()" not in line]
    assert len(assignments) > 40
    for i in assignments:
        stripped = lines[i].strip()
        above = [l.strip() for l in lines[max(0, i - 8) : i]]
        assert "#" in stripped or any(l.startswith("#") for l in above), f"uncommented key: {stripped}"


def test_config_keys_of_another_plugin_are_kept():
    """A DETR plugin's own keys under MODEL.DETR survive; one of ours that it set to the same
    default is accepted, to another value refused by name."""
    cfg = get_cfg()
    cfg.MODEL.DETR = CN()
    cfg.MODEL.DETR.ENC_LAYERS = 6
    cfg.MODEL.DETR.OTHER_PLUGIN_KEY = "kept"
    add_detr_panoptic_config(cfg)
    assert cfg.MODEL.DETR.OTHER_PLUGIN_KEY == "kept" and cfg.MODEL.DETR.NUM_OBJECT_QUERIES == 100
    assert add_detr_panoptic_config(cfg) is cfg  # adding twice changes nothing
    cfg.MODEL.DETR.NUM_CLASSES = 80
    with pytest.raises(ValueError, match=r"MODEL\.DETR\.NUM_CLASSES is already in the config as 80.*133"):
        add_detr_panoptic_config(cfg)


def test_yaml_setting_our_keys_loads(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(
        f"_BASE_: {os.path.abspath('configs/Base-DETR-Panoptic.yaml')}\nMODEL:\n  DETR:\n    NUM_OBJECT_QUERIES: 20\n    MASK_HEAD:\n      NHEADS: 4\n"
        "    TEST:\n      OBJECT_SCORE_THRESH: 0.7\n"
    )
    cfg = get_cfg()
    add_detr_panoptic_config(cfg)
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.DETR.NUM_OBJECT_QUERIES == 20
    assert cfg.MODEL.DETR.MASK_HEAD.NHEADS == 4
    assert cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH == 0.7
    assert cfg.MODEL.META_ARCHITECTURE == "DetrPanoptic"


def test_misspelled_key_is_rejected(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("MODEL:\n  DETR:\n    NUM_OBJECT_QUERISE: 20\n")
    cfg = add_detr_panoptic_config(get_cfg())
    with pytest.raises(KeyError, match="NUM_OBJECT_QUERISE"):
        cfg.merge_from_file(str(path))


def test_environment_report_runs():
    out = subprocess.run(
        [sys.executable, "-m", "detr_panoptic_d2.env"], capture_output=True, text=True, check=True
    ).stdout
    # Detectron2's collect_env_info, then the rows it leaves out.
    for name in ("Python", "PyTorch", "torchvision", "GPU available", "detectron2 installed as", "panopticapi",
                 "detr_panoptic_d2"):
        assert name in out
    assert "NOT IMPORTABLE" not in out and "IMPORT FAILED" not in out

"""tools/convert_detr_checkpoint.py on small checkpoints in the official and HuggingFace layouts.

Each source is built from a small random HuggingFace DETR (the reference), written in the
layout the released files have, converted by the tool, loaded with DetectionCheckpointer (no
missing, unexpected or mis-shaped keys) and run against the reference.
"""
import argparse
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from detr_panoptic_d2.checkpoint import convert_checkpoint, convert_state
from detr_panoptic_d2.data.metadata import dataset_category_ids
from detr_panoptic_d2.checkpoint.convert import SourceCheckpoint
from tests.conftest import ROOT
from tests.detr_reference import blocky_image, legacy_hub_state, official_state, tiny_hf_detr
from tests.helpers import load_tool, tiny_cfg

convert_tool = load_tool("convert_detr_checkpoint")


class RecordingCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that keeps the incompatible-keys report of its last load."""

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _load_converted(path, dataset, mask_on=True, extra_opts=()):
    """A tiny model for ``dataset`` with the converted weights; asserts a clean load."""
    cfg = tiny_cfg(num_classes=len(dataset_category_ids(dataset)), mask_on=mask_on, dataset=dataset)
    cfg.merge_from_list(list(extra_opts))
    model = build_model(cfg).eval()
    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(str(path))
    report = checkpointer.incompatible
    assert report.missing_keys == [] and report.unexpected_keys == [] and report.incorrect_shapes == []
    return model


@torch.no_grad()
def _assert_matches_reference(model, reference, dataset):
    """Same boxes and masks as the reference on a padded batch; class logits re-indexed: our
    class i is the reference's row of dataset id i, no-object last in both."""
    inputs = [{"image": blocky_image(96, 128, 0)}, {"image": blocky_image(64, 96, 1)}]
    images, padding = model.preprocess_image(inputs)
    out = model.detect(images.tensor, padding)
    ref = reference(pixel_values=images.tensor, pixel_mask=(~padding).long())
    rows = dataset_category_ids(dataset) + [ref.logits.shape[-1] - 1]
    assert (out.logits[-1] - ref.logits[..., rows]).abs().max() <= 1e-4
    assert (out.boxes[-1] - ref.pred_boxes).abs().max() <= 1e-4
    if model.mask_head is not None:
        b, n = out.logits.shape[1:3]
        masks = model.segment(out, torch.arange(b).repeat_interleave(n), torch.arange(n).repeat(b))
        assert (masks.view_as(ref.pred_masks) - ref.pred_masks).abs().max() <= 1e-4


def _official_args(**overrides):
    """The training-script namespace official checkpoints carry (the fields the tool reads)."""
    args = dict(backbone="resnet18", dilation=False, masks=True, nheads=8, hidden_dim=64, num_queries=10)
    args.update(overrides)
    return argparse.Namespace(**args)


@pytest.mark.parametrize(
    "masks, num_labels, dataset, anchors",
    [
        # COCO category id -> contiguous id of coco_2017_val_panoptic: person 1 -> 0,
        # toothbrush 90 -> 79, banner 92 (first stuff) -> 80, rug-merged 200 -> 132; no-object last.
        (True, 250, "coco_2017_val_panoptic", [(0, 1), (79, 90), (80, 92), (132, 200), (133, 250)]),
        # Box-only COCO detection (coco_2017_val): person, toothbrush, no-object.
        (False, 91, "coco_2017_val", [(0, 1), (79, 90), (80, 91)]),
    ],
    ids=["panoptic", "box_only"],
)
def test_official_checkpoint(tmp_path, masks, num_labels, dataset, anchors):
    reference = tiny_hf_detr(num_labels=num_labels, masks=masks)
    source = tmp_path / "detr-tiny.pth"
    torch.save({"model": official_state(reference), "args": _official_args(masks=masks)}, source)
    output = tmp_path / "converted.pth"
    assert convert_tool.main([str(source), str(output)]) == 0

    state = torch.load(output, weights_only=True)["model"]
    rows = (reference.detr if masks else reference).class_labels_classifier.weight
    for contiguous, category in anchors:
        # Exact by construction: conversion copies rows, no arithmetic.
        assert torch.equal(state["class_embed.weight"][contiguous], rows[category])
    model = _load_converted(output, dataset, mask_on=masks)
    _assert_matches_reference(model, reference, dataset)


@pytest.mark.parametrize("layout", ["transformers5_folder", "legacy_hub_bin"])
def test_huggingface_checkpoint(tmp_path, layout):
    reference = tiny_hf_detr(num_labels=250)
    if layout == "transformers5_folder":
        source = tmp_path / "hf_model"
        reference.save_pretrained(source)  # model.safetensors + config.json, transformers 5 names
        assert (source / "model.safetensors").is_file()
    else:
        source = tmp_path / "pytorch_model.bin"
        torch.save(legacy_hub_state(reference), source)
    output = tmp_path / "converted.pth"
    assert convert_tool.main([str(source), str(output)]) == 0
    model = _load_converted(output, "coco_2017_val_panoptic")
    _assert_matches_reference(model, reference, "coco_2017_val_panoptic")


def test_official_r50_and_dc5_checkpoint(tmp_path):
    """Bottleneck blocks (conv3/bn3, the released R50/R101 models) and a DC5 model's args."""
    reference = tiny_hf_detr(num_labels=250, bottleneck=True)
    source = tmp_path / "detr-tiny-r50-dc5-panoptic.pth"
    torch.save({"model": official_state(reference), "args": _official_args(dilation=True)}, source)
    conversion = convert_checkpoint(source, tmp_path / "converted.pth")
    opts = dict(zip(conversion.opts[::2], conversion.opts[1::2]))
    assert opts["MODEL.RESNETS.DEPTH"] == "50" and opts["MODEL.RESNETS.RES2_OUT_CHANNELS"] == "256"
    assert opts["MODEL.RESNETS.RES5_DILATION"] == "2" and opts["MODEL.DETR.NHEADS"] == "8"

    # The same weights undilated match the (undilated) reference...
    r50 = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.RES2_OUT_CHANNELS", "256"]
    model = _load_converted(tmp_path / "converted.pth", "coco_2017_val_panoptic", extra_opts=r50)
    _assert_matches_reference(model, reference, "coco_2017_val_panoptic")
    # ...and load cleanly into the DC5 model the printed options describe.
    model = _load_converted(tmp_path / "converted.pth", "coco_2017_val_panoptic", extra_opts=conversion.opts)
    assert model.backbone.output_shape()["res5"].stride == 16


def test_checkpoint_with_unsafe_pickle_is_refused_without_flag(tmp_path):
    reference = tiny_hf_detr(num_labels=250)
    source = tmp_path / "detr-with-path.pth"
    # A training script that stored a pathlib path in its args: not in the allow-list.
    args = _official_args(output_dir=pathlib.PurePosixPath("/runs/detr"))
    torch.save({"model": official_state(reference), "args": args}, source)
    output = tmp_path / "converted.pth"
    tool = os.path.join(ROOT, "tools", "convert_detr_checkpoint.py")
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, tool, str(source), str(output)], capture_output=True, text=True, env=env)
    assert run.returncode == 1
    assert "--unsafe-load" in run.stderr + run.stdout and str(source) in run.stderr + run.stdout
    assert not output.exists()

    assert convert_tool.main([str(source), str(output), "--unsafe-load"]) == 0
    _load_converted(output, "coco_2017_val_panoptic")


def test_unknown_layouts_are_rejected_with_the_keys_at_fault():
    with pytest.raises(ValueError, match="neither an official DETR checkpoint"):
        convert_state(SourceCheckpoint("x.pth", {"encoder.weight": torch.zeros(1)}))
    state = official_state(tiny_hf_detr(num_labels=250))
    state["detr.transformer.encoder.layers.0.extra_gate.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="extra_gate"):
        convert_state(SourceCheckpoint("x.pth", state))
    converted = convert_state(SourceCheckpoint("x.pth", official_state(tiny_hf_detr(num_labels=250)))).state
    with pytest.raises(ValueError, match="already a Detectron2 checkpoint"):
        convert_state(SourceCheckpoint("y.pth", converted))


def test_class_rows_of_unknown_size_need_an_explicit_choice():
    state = official_state(tiny_hf_detr(num_labels=5))
    with pytest.raises(ValueError, match="--classes keep"):
        convert_state(SourceCheckpoint("x.pth", state))
    kept = convert_state(SourceCheckpoint("x.pth", state), classes="keep").state
    # Exact by construction: a copy of the same tensors, no arithmetic.
    assert torch.equal(kept["class_embed.weight"], state["detr.class_embed.weight"])

"""DETR checkpoints (official or HuggingFace) -> Detectron2 checkpoints of ``DetrPanoptic``.

``convert_checkpoint(source, output)`` reads the source safely, renames its tensors to this
project's modules, re-indexes the class head to Detectron2's contiguous ids and writes
``{"model": state_dict, "conversion": {...}}``, which ``DetectionCheckpointer`` loads.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from detectron2.utils.file_io import PathManager
from safetensors.torch import load_file as load_safetensors

from .class_rows import RELEASED_LAYOUTS, reindex_class_rows
from .config_from_weights import config_opts
from .huggingface_detr import huggingface_to_official
from .official_detr import official_to_d2
from .renaming import strip_detr_prefix
from .safe_load import load_checkpoint_file, model_state_of

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class SourceCheckpoint:
    """What a DETR checkpoint holds: its state dict, and the settings it was trained with when
    known (official: ``args`` namespace; HuggingFace: ``config.json`` beside the weights)."""

    path: str
    state: dict
    args: Optional[object] = None
    hf_config: Optional[dict] = None


@dataclass
class Conversion:
    """The converted state dict and how it was obtained."""

    state: dict
    source_format: str
    classes: str
    opts: list = field(default_factory=list)


def weights_file(path):
    """``path``, or the weights file of a HuggingFace model folder (HF_WEIGHT_FILES)."""
    if not os.path.isdir(path):
        return path
    for name in HF_WEIGHT_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise FileNotFoundError(f"Folder {path!r} holds none of {HF_WEIGHT_FILES}: pass the weights file itself")


def read_source(path, allow_unsafe=False):
    """Reads a DETR checkpoint: a torch file (official ``.pth`` or HuggingFace
    ``pytorch_model.bin``), a ``.safetensors`` file, or a HuggingFace model folder.
    Torch files are loaded with weights_only (see safe_load). Returns a SourceCheckpoint."""
    weights = weights_file(os.fspath(path))
    if weights.endswith(".safetensors"):
        if not PathManager.isfile(weights):
            raise FileNotFoundError(f"Checkpoint file {weights!r} does not exist")
        state, args = load_safetensors(PathManager.get_local_path(weights)), None
    else:
        obj = load_checkpoint_file(weights, allow_unsafe)
        state = model_state_of(obj, weights)
        args = obj.get("args") if isinstance(obj, dict) and "model" in obj else None
    return SourceCheckpoint(weights, state, args, hf_config_beside(weights))


def hf_config_beside(weights):
    """The HuggingFace ``config.json`` in the folder of ``weights`` as a dict, None if absent."""
    config_file = os.path.join(os.path.dirname(os.fspath(weights)), "config.json")
    if not os.path.isfile(config_file):
        return None
    with open(config_file, encoding="utf-8") as f:
        return json.load(f)


def layout_of(state):
    """The layout of a state dict, from its key names: "detectron2" (this project's
    DetrPanoptic, or any other Detectron2 model), "official" (facebookresearch/detr),
    "huggingface" (DetrForSegmentation / DetrForObjectDetection) or None (unknown)."""
    keys = list(strip_detr_prefix(state))
    if any(k.startswith(("backbone.stem.", "backbone.res")) or ".ffn.linear1." in k for k in keys):
        return "detectron2"
    if any(k.startswith("transformer.") for k in keys) and any(k.startswith("backbone.0.body.") for k in keys):
        return "official"
    if any(k.startswith("model.") for k in keys) and any(k.startswith("class_labels_classifier.") for k in keys):
        return "huggingface"
    return None


def detect_format(state, path):
    """"official" or "huggingface", from the key names; ValueError for anything else."""
    layout = layout_of(state)
    if layout == "detectron2":
        raise ValueError(
            f"{path!r} is already a Detectron2 checkpoint of DetrPanoptic: use it as MODEL.WEIGHTS as it is"
        )
    if layout is not None:
        return layout
    keys = list(strip_detr_prefix(state))
    raise ValueError(
        f"{path!r} is neither an official DETR checkpoint (keys 'detr.transformer.*' or 'transformer.*') "
        f"nor a HuggingFace DETR one (keys 'detr.model.*' or 'model.*'); its first keys: {keys[:5]}"
    )


def convert_state(source: SourceCheckpoint, classes="auto"):
    """Converts a SourceCheckpoint. ``classes``: "auto" (a released model's class head, 251 or
    92 rows indexed by COCO category id, is re-indexed to coco_2017_val_panoptic or coco_2017_val),
    "keep" (rows already in contiguous order) or a registered dataset name whose category ids
    index the rows. Returns a Conversion."""
    fmt = detect_format(source.state, source.path)
    state = source.state
    if fmt == "huggingface":
        state = huggingface_to_official(state, f"HuggingFace checkpoint {source.path!r}")
    state = official_to_d2(state, f"{fmt} checkpoint {source.path!r}")
    if "class_embed.weight" not in state or "query_embed.weight" not in state:
        raise KeyError(f"{source.path!r} has no class head or object queries: is it a full DETR model?")
    if classes == "auto":
        rows = state["class_embed.weight"].shape[0]
        if rows not in RELEASED_LAYOUTS:
            raise ValueError(
                f"{source.path!r}: a class head of {rows} rows is not one of the released DETR models' "
                f"({sorted(RELEASED_LAYOUTS)}); pass --classes keep if its rows are already contiguous ids "
                "(last = no object) or --classes DATASET to re-index them by that dataset's category ids"
            )
        classes = RELEASED_LAYOUTS[rows]
    if classes != "keep":
        reindex_class_rows(state, classes)
    return Conversion(state, fmt, classes, config_opts(state, source.args, source.hf_config))


def convert_checkpoint(source_path, output_path, classes="auto", allow_unsafe=False):
    """Reads ``source_path``, converts it (see convert_state) and saves a Detectron2 checkpoint
    at ``output_path``. Returns the Conversion."""
    conversion = convert_state(read_source(source_path, allow_unsafe), classes)
    output_path = os.fspath(output_path)
    PathManager.mkdirs(os.path.dirname(os.path.abspath(output_path)))
    info = {"source": os.fspath(source_path), "format": conversion.source_format, "classes": conversion.classes}
    with PathManager.open(output_path, "wb") as f:
        torch.save({"model": conversion.state, "conversion": info}, f)
    return conversion

"""COCO-panoptic-format datasets: metadata from a ``categories`` list, loading with clear
errors, and registration on top of Detectron2's ``register_coco_panoptic``.

Metadata follows Detectron2's ``coco_panoptic_standard`` convention (the one of
``coco_2017_val_panoptic``): contiguous ids 0..K-1 run over all K categories, things first;
``thing_classes``/``stuff_classes`` (and ``*_colors``) both list all K;
``thing_dataset_id_to_contiguous_id`` maps the things' dataset ids, and (as in Mask2Former)
``stuff_dataset_id_to_contiguous_id`` maps all K, so that ``SemSegEvaluator``, which maps every
predicted class through it, can score thing classes too. Things are told apart by the thing map.
"""

import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_panoptic
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

from .errors import PanopticDataError
from .metadata import STUFF_MAP, THING_MAP, dataset_to_contiguous, thing_contiguous_ids


def panoptic_metadata(categories):
    """Metadata dict for ``register_coco_panoptic`` from a COCO panoptic ``categories`` list
    (dicts with ``id``, ``name``, ``isthing`` and ``color``). Things get the contiguous ids
    0..T-1 (Detectron2's ``COCOEvaluator`` requires it), stuff T..K-1, each kind in list order.
    """
    return contiguous_metadata([c for c in categories if c["isthing"]] + [c for c in categories if not c["isthing"]])


def contiguous_metadata(ordered):
    """Detectron2 panoptic metadata (``coco_panoptic_standard`` convention) from categories
    already in contiguous order: category i gets contiguous id i."""
    names = [c["name"] for c in ordered]
    colors = [list(c["color"]) for c in ordered]
    return {
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": list(names),
        "stuff_colors": [list(c) for c in colors],
        THING_MAP: {c["id"]: i for i, c in enumerate(ordered) if c["isthing"]},
        STUFF_MAP: {c["id"]: i for i, c in enumerate(ordered)},
    }


def thing_class_ids(dataset_name):
    """Sorted contiguous ids of the thing classes of a registered panoptic dataset (what
    ``DetrPanoptic`` takes as ``thing_ids``). Raises ValueError when its metadata has no
    ``thing_dataset_id_to_contiguous_id``."""
    meta = MetadataCatalog.get(dataset_name)
    if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
        raise ValueError(
            f"Dataset {dataset_name!r} has no thing_dataset_id_to_contiguous_id metadata: register it as a "
            "panoptic dataset (e.g. register_panoptic_dataset, or --register)"
        )
    return thing_contiguous_ids(meta)


def load_panoptic_dicts(
    dataset_name, panoptic_json, image_root, panoptic_root, metadata, sem_seg_root=None
):
    """Detectron2's ``load_coco_panoptic_json`` (``file_name``, ``image_id``,
    ``pan_seg_file_name``, ``segments_info`` with contiguous ``category_id`` and ``isthing``),
    plus ``sem_seg_file_name`` (``<sem_seg_root>/<PNG name>``) when ``sem_seg_root`` is given.

    Raises PanopticDataError naming the dataset and the file for an unknown category id or
    a missing first image/PNG (the checks Detectron2's loader makes).
    """
    try:
        dicts = load_coco_panoptic_json(panoptic_json, image_root, panoptic_root, metadata)
    except KeyError as e:
        unknown = _first_unknown_category(panoptic_json, panoptic_root, metadata)
        if unknown is None:
            raise
        raise PanopticDataError(dataset_name, *unknown) from e
    except AssertionError as e:
        raise PanopticDataError(
            dataset_name, panoptic_json, f"Detectron2's loader failed: {e}"
        ) from e
    if sem_seg_root is not None:
        for d in dicts:
            d["sem_seg_file_name"] = os.path.join(
                sem_seg_root, os.path.basename(d["pan_seg_file_name"])
            )
    return dicts


def _first_unknown_category(panoptic_json, panoptic_root, metadata):
    """(PNG path, problem) of the first segment whose category the metadata lacks, or None."""
    known = dataset_to_contiguous(metadata)
    with open(panoptic_json) as f:
        annotations = json.load(f)["annotations"]
    for ann in annotations:
        for seg in ann["segments_info"]:
            if seg["category_id"] not in known:
                return (
                    os.path.join(panoptic_root, ann["file_name"]),
                    f"segment {seg['id']} has category id {seg['category_id']}, which is not "
                    f"among the categories of {panoptic_json}",
                )
    return None


def register_panoptic_dataset(
    name,
    metadata,
    image_root,
    panoptic_root,
    panoptic_json,
    instances_json=None,
    sem_seg_root=None,
    prepare=None,
):
    """Registers a COCO-panoptic-format dataset under ``name``.

    Detectron2's ``register_coco_panoptic`` sets the metadata its evaluators read
    (``panoptic_root``, ``panoptic_json``, ``json_file``, ``evaluator_type``,
    ``ignore_label``, ``label_divisor`` and ``metadata``); its loader is then replaced by
    ``load_panoptic_dicts``, which names the dataset and file in errors and adds
    ``sem_seg_file_name`` (for ``SemSegEvaluator``) when ``sem_seg_root`` is given.
    ``prepare``, if given, is called without arguments before every load (e.g. to generate
    the files on first use).
    """
    register_coco_panoptic(name, metadata, image_root, panoptic_root, panoptic_json, instances_json)
    DatasetCatalog.remove(name)

    def load():
        if prepare is not None:
            prepare()
        return load_panoptic_dicts(
            name, panoptic_json, image_root, panoptic_root, metadata, sem_seg_root
        )

    DatasetCatalog.register(name, load)
    if sem_seg_root is not None:
        MetadataCatalog.get(name).set(sem_seg_root=sem_seg_root)

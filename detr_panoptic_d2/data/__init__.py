"""Data: COCO-panoptic-format datasets, DETR's augmentation and the dataset mapper.

Importing it registers ``shapes_panoptic_train`` and ``shapes_panoptic_val`` (no files are
written until they are loaded).
"""

from .augmentation import build_detr_augmentation
from .dataset_mapper import DetrPanopticDatasetMapper, dataset_class_ids
from .errors import PanopticDataError
from .panoptic_dataset import load_panoptic_dicts, panoptic_metadata, register_panoptic_dataset, thing_class_ids
from .shapes import register_builtin_shapes, register_shapes_panoptic

register_builtin_shapes()

__all__ = [
    "DetrPanopticDatasetMapper",
    "PanopticDataError",
    "build_detr_augmentation",
    "dataset_class_ids",
    "load_panoptic_dicts",
    "panoptic_metadata",
    "register_panoptic_dataset",
    "register_shapes_panoptic",
    "thing_class_ids",
]

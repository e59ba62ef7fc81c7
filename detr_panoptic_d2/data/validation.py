"""The checks of a config's datasets against the model, in one place, with one error type.

``check_num_classes``: every dataset of a run is registered and has the model's class count
(the tools call it before building anything). ``config_thing_ids``: the thing classes of the
first test (else train) dataset, what ``DetrPanoptic`` takes as ``thing_ids``; for
inference-only use the dataset may have its panoptic metadata in the MetadataCatalog alone.
"""
from detectron2.data import DatasetCatalog, MetadataCatalog

from .metadata import THING_MAP, dataset_category_ids, dataset_to_contiguous
from .panoptic_dataset import thing_class_ids


class DatasetConfigError(KeyError, ValueError):
    """A dataset of the config that the model cannot use (not registered, or classes that do
    not fit). Attributes ``dataset_name`` and ``key`` (the config key at fault) are named in the
    message. Both a KeyError (an unknown name) and a ValueError (unusable contents)."""

    def __init__(self, dataset_name, key, message):
        self.dataset_name = dataset_name
        self.key = key
        super().__init__(message)

    def __str__(self):
        return self.args[0]


def check_num_classes(num_classes, dataset_names, key="MODEL.DETR.NUM_CLASSES"):
    """Raises DatasetConfigError, naming the dataset and both numbers, unless every dataset of
    ``dataset_names`` is registered in the DatasetCatalog and has ``num_classes`` classes
    (things and stuff), the class count the model is built with (config key ``key``)."""
    for name in dataset_names:
        if name not in DatasetCatalog.list():
            raise DatasetConfigError(
                name, key,
                f"Dataset {name!r} is not registered: pass --register {name} JSON IMAGE_DIR PNG_DIR for a "
                "COCO-panoptic-format split on disk, or list it in DATASETS.REGISTER (dataloader.register)",
            )
        count = len(dataset_category_ids(name))
        if count != num_classes:
            raise DatasetConfigError(
                name, key,
                f"Dataset {name!r} has {count} classes (things and stuff) but {key} is {num_classes}: set {key} {count}",
            )


def config_thing_ids(cfg):
    """Contiguous ids of the thing classes, from the metadata of the first of DATASETS.TEST
    (else DATASETS.TRAIN), or None when no dataset is configured. DatasetConfigError when that
    dataset is neither registered in the DatasetCatalog nor has panoptic metadata in the
    MetadataCatalog, or has contiguous ids beyond MODEL.DETR.NUM_CLASSES."""
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    if not names:
        return None
    name, key = names[0], "DATASETS.TEST / DATASETS.TRAIN"
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, THING_MAP) and name not in DatasetCatalog.list():
        raise DatasetConfigError(
            name, key,
            f"Dataset {name!r} ({key}) is not registered; registered panoptic datasets: "
            f"{sorted(n for n in DatasetCatalog.list() if 'panoptic' in n)}",
        )
    things = thing_class_ids(name)  # ValueError when the metadata has no thing table
    ids = dataset_to_contiguous(meta).values()
    if ids and max(ids) >= cfg.MODEL.DETR.NUM_CLASSES:
        raise DatasetConfigError(
            name, "MODEL.DETR.NUM_CLASSES",
            f"Dataset {name!r} has contiguous class ids up to {max(ids)}, but "
            f"MODEL.DETR.NUM_CLASSES={cfg.MODEL.DETR.NUM_CLASSES}; set it to {max(ids) + 1}",
        )
    return things

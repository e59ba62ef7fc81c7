"""The class tables of a panoptic dataset's metadata, read in one place.

Detectron2's panoptic metadata maps dataset category ids to contiguous ids 0..K-1 in two
tables, ``thing_dataset_id_to_contiguous_id`` and ``stuff_dataset_id_to_contiguous_id``
(in the ``coco_panoptic_standard`` convention the stuff table lists every class, things
too). ``meta`` below is a ``Metadata`` from the MetadataCatalog or a plain dict (as given to
``register_coco_panoptic``); a missing table counts as empty.
"""
from detectron2.data import MetadataCatalog

THING_MAP = "thing_dataset_id_to_contiguous_id"
STUFF_MAP = "stuff_dataset_id_to_contiguous_id"


def dataset_to_contiguous(meta):
    """{dataset category id: contiguous id} over things and stuff together."""
    return {**meta.get(THING_MAP, {}), **meta.get(STUFF_MAP, {})}


def contiguous_to_dataset(meta):
    """{contiguous id: dataset category id} over things and stuff together."""
    return {contiguous: dataset_id for dataset_id, contiguous in dataset_to_contiguous(meta).items()}


def dataset_category_ids(dataset_name):
    """Dataset category id of each contiguous id 0..K-1 of a registered dataset (list of K ints)."""
    by_contiguous = contiguous_to_dataset(MetadataCatalog.get(dataset_name))
    if not by_contiguous:
        raise ValueError(
            f"Dataset {dataset_name!r} has no thing_/stuff_dataset_id_to_contiguous_id metadata: register it "
            "(e.g. with register_coco_panoptic) or pass a registered dataset name"
        )
    if sorted(by_contiguous) != list(range(len(by_contiguous))):
        raise ValueError(f"Dataset {dataset_name!r}: contiguous ids are not 0..{len(by_contiguous) - 1}")
    return [by_contiguous[c] for c in range(len(by_contiguous))]


def thing_contiguous_ids(meta):
    """Sorted contiguous ids of the thing classes."""
    return sorted(meta.get(THING_MAP, {}).values())


def class_names(meta):
    """Names of all K classes by contiguous id: ``stuff_classes`` (which lists things and stuff
    together in Detectron2's panoptic metadata), else ``thing_classes`` (thing-only metadata)."""
    return list(meta.get("stuff_classes", None) or meta.get("thing_classes", None) or [])

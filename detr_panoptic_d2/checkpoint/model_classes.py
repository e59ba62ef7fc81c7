"""The classes a model predicts, carried by its checkpoint (and its ONNX export's metadata).

A checkpoint saved by ``DetrCheckpointer`` with a dataset names its classes under ``"classes"``:
the COCO-panoptic ``categories`` of that dataset in contiguous order, ``[{"id", "name",
"isthing", "color"}]`` (``id``: the dataset's category id). Tools that run a trained model
set the metadata of DATASETS.TEST[0] from it when that dataset is not registered (its files
absent), so pictures name the classes and COCO-panoptic outputs use the dataset's ids; a
registered dataset with other classes is an error naming both.
"""
from detectron2.data import MetadataCatalog

from ..data.metadata import class_names, contiguous_to_dataset, thing_contiguous_ids
from ..data.panoptic_dataset import contiguous_metadata

CLASSES_KEY = "classes"


def dataset_classes(dataset_name):
    """The classes of a dataset whose metadata has the class tables, as COCO-panoptic
    categories in contiguous order (see the module docstring); None when it has none."""
    meta = MetadataCatalog.get(dataset_name)
    to_dataset = contiguous_to_dataset(meta)
    if not to_dataset or sorted(to_dataset) != list(range(len(to_dataset))):
        return None
    names = class_names(meta)
    colors = meta.get("stuff_colors", None) or meta.get("thing_colors", None) or []
    things = set(thing_contiguous_ids(meta))
    return [
        {
            "id": int(to_dataset[c]),
            "name": names[c] if c < len(names) else str(to_dataset[c]),
            "isthing": int(c in things),
            "color": [int(v) for v in colors[c]] if c < len(colors) else [0, 0, 0],
        }
        for c in range(len(to_dataset))
    ]


def _key(classes):
    return [(int(c["id"]), str(c["name"]), bool(c["isthing"])) for c in classes]


def describe(classes):
    """A short description: the count and the first names."""
    names = [c["name"] for c in classes]
    return f"{len(names)} classes ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})"


def same_classes(classes, dataset_name):
    """Whether ``classes`` (None: unknown, taken as the same) are those of ``dataset_name``
    (ids, names, thing or stuff; a dataset without class tables counts as the same)."""
    theirs = dataset_classes(dataset_name)
    return classes is None or theirs is None or _key(theirs) == _key(classes)


def check_classes(classes, dataset_name, source):
    """Raises ValueError naming ``source`` (the checkpoint or export) and ``dataset_name`` with
    both class lists unless the dataset's classes are ``classes`` (ids, names, thing or stuff)."""
    if same_classes(classes, dataset_name):
        return
    theirs = dataset_classes(dataset_name)
    first = next((i for i, (a, b) in enumerate(zip(_key(classes), _key(theirs))) if a != b), min(len(classes), len(theirs)))
    raise ValueError(
        f"{source} was trained on other classes than dataset {dataset_name!r}: the model has {describe(classes)}, "
        f"the dataset {describe(theirs)}; they first differ at contiguous id {first}. Evaluate on a dataset of the "
        "model's classes (DATASETS.TEST), or fine-tune it on this one"
    )


def use_model_classes(classes, dataset_name, source, check=True):
    """Makes ``dataset_name`` carry ``classes``: its metadata is set from them when it has no
    class tables, else (with ``check``) they are checked against it (``check_classes``)."""
    if dataset_classes(dataset_name) is not None:
        if check:
            check_classes(classes, dataset_name, source)
        return
    MetadataCatalog.get(dataset_name).set(**contiguous_metadata(classes))

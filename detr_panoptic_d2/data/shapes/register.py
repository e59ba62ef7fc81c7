"""Registration of shapes panoptic splits; the files are generated on first load.

Builtin: ``shapes_panoptic_train`` (seed 0), ``shapes_panoptic_val`` (seed 1) and
``shapes_panoptic_tune`` (seed 2) under ``$DETECTRON2_DATASETS/shapes_panoptic/{train,val,tune}``
(DETECTRON2_DATASETS defaults to ``datasets``). ``tune`` is drawn like the others and never
trained on: inference settings such as the score threshold are chosen on it, so that val stays
unseen (tools/dev/sweep_score_threshold.py). Environment overrides, read at import:
SHAPES_PANOPTIC_NUM_TRAIN (2000), SHAPES_PANOPTIC_NUM_VAL (200), SHAPES_PANOPTIC_NUM_TUNE (200),
SHAPES_PANOPTIC_MIN_SIZE (128), SHAPES_PANOPTIC_MAX_SIZE (192).
"""

import functools
import os

from ..panoptic_dataset import panoptic_metadata, register_panoptic_dataset
from .generate import ensure_split, split_paths
from .render import CATEGORIES


def register_shapes_panoptic(name, root, num_images, seed, min_size=128, max_size=192):
    """Registers under ``name`` a shapes split of ``num_images`` images whose sides are in
    [min_size, max_size] pixels, kept in the directory ``root``. Nothing is written until
    ``DatasetCatalog.get(name)``, which (re)generates the files if needed."""
    paths = split_paths(root)
    register_panoptic_dataset(
        name,
        panoptic_metadata(CATEGORIES),
        image_root=paths["image_root"],
        panoptic_root=paths["panoptic_root"],
        panoptic_json=paths["panoptic_json"],
        instances_json=paths["instances_json"],
        sem_seg_root=paths["sem_seg_root"],
        prepare=functools.partial(ensure_split, root, num_images, seed, min_size, max_size),
    )


def register_builtin_shapes():
    """Registers ``shapes_panoptic_train``, ``_val`` and ``_tune`` (see module docstring)."""
    base = os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "shapes_panoptic"
    )
    sizes = {
        "min_size": int(os.getenv("SHAPES_PANOPTIC_MIN_SIZE", "128")),
        "max_size": int(os.getenv("SHAPES_PANOPTIC_MAX_SIZE", "192")),
    }
    for split, seed, default_num in (("train", 0, "2000"), ("val", 1, "200"), ("tune", 2, "200")):
        num_images = int(os.getenv(f"SHAPES_PANOPTIC_NUM_{split.upper()}", default_num))
        register_shapes_panoptic(
            f"shapes_panoptic_{split}", os.path.join(base, split), num_images, seed, **sizes
        )

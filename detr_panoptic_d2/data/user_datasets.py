"""Datasets a user brings on disk, named on the command line of the training tools.

``--register NAME JSON IMAGE_DIR PNG_DIR`` (repeatable) registers a COCO-panoptic-format
split with ``register_panoptic_files``; ``validation.check_num_classes`` then makes sure the
model's class count is the datasets' own.
"""
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .errors import PanopticDataError
from .panoptic_dataset import panoptic_metadata, register_panoptic_dataset

REGISTER_FIELDS = ("NAME", "JSON", "IMAGE_DIR", "PNG_DIR")


def register_panoptic_files(name, panoptic_json, image_root, panoptic_root):
    """Registers under ``name`` the COCO panoptic split whose annotations are ``panoptic_json``
    (its ``categories`` give the classes, see ``panoptic_metadata``), images ``image_root``
    (``<PNG stem>.jpg``) and panoptic PNGs ``panoptic_root``. PQ is evaluated; box/mask AP and
    mIoU need the Python API (``register_panoptic_dataset``'s instances JSON and semantic PNGs).

    Registering the same files under the same name again does nothing. Raises ValueError when
    ``name`` is taken by other files, FileNotFoundError naming a missing path, and
    PanopticDataError when the JSON has no usable ``categories``."""
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if (meta.get("panoptic_json", None), meta.get("image_root", None), meta.get("panoptic_root", None)) == (
            panoptic_json,
            image_root,
            panoptic_root,
        ):
            return
        raise ValueError(f"--register {name}: a dataset of that name is already registered; choose another name")
    for path in (panoptic_json, image_root, panoptic_root):
        if not os.path.exists(path):
            raise FileNotFoundError(f"--register {name}: {path} does not exist")
    try:
        with open(panoptic_json) as f:
            categories = json.load(f)["categories"]
        metadata = panoptic_metadata(categories)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise PanopticDataError(
            name, panoptic_json, f"not a COCO panoptic JSON with categories (id, name, isthing, color): {e!r}"
        ) from e
    register_panoptic_dataset(name, metadata, image_root, panoptic_root, panoptic_json)


def add_register_argument(parser):
    """Adds the repeatable ``--register NAME JSON IMAGE_DIR PNG_DIR`` option to ``parser``."""
    parser.add_argument(
        "--register",
        nargs=4,
        action="append",
        default=[],
        metavar=REGISTER_FIELDS,
        help="register a COCO-panoptic-format split on disk under NAME (repeatable): its panoptic JSON, "
        "image folder and panoptic PNG folder; then use NAME in the datasets of the config",
    )
    return parser


def register_from_args(args):
    """Registers every ``--register`` split of parsed ``args`` (call it in each process)."""
    for name, panoptic_json, image_root, panoptic_root in getattr(args, "register", None) or []:
        register_panoptic_files(name, panoptic_json, image_root, panoptic_root)

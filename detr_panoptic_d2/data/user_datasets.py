"""Datasets a user brings on disk, carried by the config and registered by every tool.

The config lists COCO-panoptic-format splits, each a dict with the fields of ``SPLIT_FIELDS``
(``sem_seg_dir`` optional: semantic PNGs for mIoU):

- yaml: ``DATASETS.REGISTER`` (see config.py), e.g.
  ``[{"name": "mine_train", "json": ..., "image_dir": ..., "png_dir": ...}]``;
- LazyConfig: ``dataloader.register``, the same list.

``register_config_splits`` (called by ``engine.load_config`` and ``engine.lazy.lazy_setup``, so
by every tool on start-up, in every process) registers them. ``--register NAME JSON IMAGE_DIR
PNG_DIR`` (every tool, repeatable) is a shorthand appending one split to that list, paths
made absolute, so the ``config.yaml`` a run saves in its output folder registers it again.
``validation.check_num_classes`` then makes sure the model's class count is the datasets' own.
"""
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .dataset_checks import check_categories, check_files_present, check_schema
from .errors import PanopticDataError
from .panoptic_dataset import panoptic_metadata, register_panoptic_dataset

logger = logging.getLogger(__name__)

REGISTER_FIELDS = ("NAME", "JSON", "IMAGE_DIR", "PNG_DIR")
# Annotations whose PNG and image registration checks for presence; tools/check_dataset.py checks all.
PRESENCE_SAMPLE = 10
# Fields of one split of DATASETS.REGISTER / dataloader.register; the last is optional.
SPLIT_FIELDS = ("name", "json", "image_dir", "png_dir", "sem_seg_dir")
YAML_KEY = "DATASETS.REGISTER"
LAZY_KEY = "dataloader.register"


def register_panoptic_files(name, panoptic_json, image_root, panoptic_root, sem_seg_root=None, key="--register"):
    """Registers under ``name`` the COCO panoptic split whose annotations are ``panoptic_json``
    (its ``categories`` give the classes, see ``panoptic_metadata``), images ``image_root``
    (``<PNG stem>.jpg``), panoptic PNGs ``panoptic_root`` and, when given, semantic PNGs
    ``sem_seg_root`` (contiguous ids, 255 = unlabeled; tools/prepare_semantic_pngs.py writes
    them), which turn on mIoU. ``key`` names the option or config key in errors.

    Registering the same files under the same name again does nothing. Raises ValueError when
    ``name`` is taken by other files, FileNotFoundError naming a missing path, and
    PanopticDataError when the JSON has no usable ``categories`` or fails the cheap checks of
    ``dataset_checks`` (the category table; the PNG and image of the first PRESENCE_SAMPLE
    annotations exist), listing every problem and naming tools/check_dataset.py for the rest."""
    files = (panoptic_json, image_root, panoptic_root, sem_seg_root or None)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        fields = ("panoptic_json", "image_root", "panoptic_root", "sem_seg_root")
        if tuple(meta.get(f, None) for f in fields) == files:
            return
        raise ValueError(f"{key} {name}: a dataset of that name is already registered; choose another name")
    for path in files:
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"{key} {name}: {path} does not exist")
    try:
        with open(panoptic_json) as f:
            data = json.load(f)
        categories = data["categories"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise PanopticDataError(
            name, panoptic_json, f"not a COCO panoptic JSON with categories (id, name, isthing, color): {e!r}"
        ) from e
    problems = check_schema(data, panoptic_json) or (
        check_categories(categories, panoptic_json)
        + check_files_present(data["annotations"], panoptic_root, image_root, sample=PRESENCE_SAMPLE)
    )
    if problems:
        raise PanopticDataError(
            name, panoptic_json,
            "\n".join(map(str, problems)) + f"\nEvery check: python tools/check_dataset.py --json {panoptic_json} "
            f"--png-dir {panoptic_root} --image-dir {image_root}",
        )
    metadata = panoptic_metadata(categories)
    register_panoptic_dataset(name, metadata, image_root, panoptic_root, panoptic_json, sem_seg_root=files[3])


def split_entry(name, panoptic_json, image_dir, png_dir, sem_seg_dir=""):
    """One split of DATASETS.REGISTER (a dict of SPLIT_FIELDS) from ``--register`` values,
    paths made absolute so that a saved config works from any folder."""
    paths = [os.path.abspath(p) if p else "" for p in (panoptic_json, image_dir, png_dir, sem_seg_dir)]
    return dict(zip(SPLIT_FIELDS, [name, *paths]))


def _checked(split, key):
    """``split`` as a plain dict of SPLIT_FIELDS; ValueError naming ``key`` when a field is
    missing or unknown."""
    if not hasattr(split, "keys"):
        raise ValueError(f"{key}: each entry must be a dict with {SPLIT_FIELDS}, got {split!r}")
    split = {k: split[k] for k in split.keys()}
    missing = [f for f in SPLIT_FIELDS[:4] if not split.get(f)]
    unknown = sorted(set(split) - set(SPLIT_FIELDS))
    if missing or unknown:
        raise ValueError(
            f"{key}: entry {split!r} " + (f"lacks {missing}" if missing else f"has unknown fields {unknown}")
            + f"; the fields are {SPLIT_FIELDS} (sem_seg_dir optional)"
        )
    return split


def register_config_splits(splits, key=YAML_KEY, files_optional=False):
    """Registers every split of ``splits`` (the list of DATASETS.REGISTER or
    dataloader.register; ``key`` names it in errors). With ``files_optional`` (tools that only
    run a trained model), a split whose files are absent is skipped with a warning: the class
    names then come from the checkpoint. Returns the names registered."""
    names = []
    for split in splits or []:
        split = _checked(split, key)
        try:
            register_panoptic_files(
                split["name"], split["json"], split["image_dir"], split["png_dir"], split.get("sem_seg_dir") or None,
                key=key,
            )
        except FileNotFoundError as e:
            if not files_optional:
                raise
            logger.warning(f"{e}: not registering it; the classes come from the checkpoint")
            continue
        names.append(split["name"])
    return names


def add_register_argument(parser):
    """Adds the repeatable ``--register NAME JSON IMAGE_DIR PNG_DIR`` option to ``parser``."""
    parser.add_argument(
        "--register",
        nargs=4,
        action="append",
        default=[],
        metavar=REGISTER_FIELDS,
        help=f"register a COCO-panoptic-format split on disk under NAME (repeatable; appended to {YAML_KEY}, or "
        f"{LAZY_KEY} in a LazyConfig, so the saved config.yaml carries it): its panoptic JSON, image folder and "
        "panoptic PNG folder; then use NAME in the datasets of the config",
    )
    return parser


def register_yaml_splits(cfg, register=(), files_optional=False):
    """Appends the ``--register`` values ``register`` ([NAME, JSON, IMAGE_DIR, PNG_DIR] each) to
    ``cfg.DATASETS.REGISTER`` (yacs, unfrozen) and registers every split listed there."""
    cfg.DATASETS.REGISTER = list(cfg.DATASETS.REGISTER) + [split_entry(*values) for values in register]
    return register_config_splits(cfg.DATASETS.REGISTER, YAML_KEY, files_optional)


def register_lazy_splits(cfg, register=(), files_optional=False):
    """As ``register_yaml_splits`` for a LazyConfig: ``cfg.dataloader.register``."""
    splits = list(cfg.dataloader.get("register", None) or []) + [split_entry(*values) for values in register]
    cfg.dataloader.register = splits
    return register_config_splits(cfg.dataloader.register, LAZY_KEY, files_optional)


"""The in-memory sample cache (DATALOADER.CACHE_DECODED): the training loader gives the same
batches with it as without it for the same seed (flip, crop and random resize still drawn per
sample), it serves later epochs without reading the files, and its arrays cannot be changed."""
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng

from detr_panoptic_d2 import add_detr_panoptic_config
from detr_panoptic_d2.data import DetrPanopticDatasetMapper, register_shapes_panoptic
from detr_panoptic_d2.engine import DetrTrainer

NAME = "test_sample_cache_split"


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    register_shapes_panoptic(NAME, str(tmp_path_factory.mktemp("shapes") / "split"), 6, 3, 64, 96)
    yield DatasetCatalog.get(NAME)
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _cfg(cache):
    """DETR's augmentation at small sizes: flip, a crop with probability 0.5, random resize."""
    cfg = add_detr_panoptic_config(get_cfg())
    cfg.merge_from_list([
        "DATASETS.TRAIN", (NAME,), "DATASETS.TEST", (NAME,), "INPUT.FORMAT", "RGB",
        "INPUT.MIN_SIZE_TRAIN", (48, 64, 80), "INPUT.MAX_SIZE_TRAIN", 120, "INPUT.RANDOM_FLIP", "horizontal",
        "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute_range", "INPUT.CROP.SIZE", [40, 60],
        "INPUT.DETR.CROP_PRE_RESIZE", [64], "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0,
        "DATALOADER.CACHE_DECODED", cache,
    ])
    return cfg


def _batches(cfg, count, seed=0):
    seed_all_rng(seed)
    loader = iter(DetrTrainer.build_train_loader(cfg))
    return [next(loader) for _ in range(count)]


def _same_sample(a, b):
    # Exact by construction: integer images and masks, the same augmentations from the same seed.
    return (
        a["file_name"] == b["file_name"]
        and torch.equal(a["image"], b["image"])
        and torch.equal(a["instances"].gt_classes, b["instances"].gt_classes)
        and torch.equal(a["instances"].gt_masks.tensor, b["instances"].gt_masks.tensor)
        and torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
    )


def test_cached_loader_gives_the_uncached_batches_for_the_same_seed(dicts):
    # 9 batches of 2 over 6 images: every image is seen three times, the later ones from the cache.
    plain, cached = _batches(_cfg(False), 9), _batches(_cfg(True), 9)
    pairs = [(a, b) for x, y in zip(plain, cached) for a, b in zip(x, y)]
    assert all(_same_sample(a, b) for a, b in pairs)
    # The augmentation is still random per sample: one file gives different samples.
    by_file = {}
    for a, _ in pairs:
        by_file.setdefault(a["file_name"], []).append(tuple(a["image"].shape))
    assert any(len(set(shapes)) > 1 for shapes in by_file.values())


def test_the_cache_serves_later_epochs_without_the_files_and_is_read_only(dicts, tmp_path):
    mapper = DetrPanopticDatasetMapper(_cfg(True), is_train=True)
    for d in dicts:
        mapper(d)
    assert len(mapper.cache) == len(dicts)
    hidden = []
    for d in dicts:  # move the files away: the cache alone must serve
        for key in ("file_name", "pan_seg_file_name"):
            target = str(tmp_path / f"{len(hidden)}.png")
            os.rename(d[key], target)
            hidden.append((target, d[key]))
    try:
        np.random.seed(0)
        out = [mapper(d) for d in dicts]
        assert all(len(o["instances"]) > 0 for o in out)
        with pytest.raises(Exception, match="cannot read"):
            DetrPanopticDatasetMapper(_cfg(False), is_train=True)(dicts[0])
    finally:
        for target, original in hidden:
            os.rename(target, original)
    image, pan_rgb = mapper.cache[dicts[0]["file_name"]]
    with pytest.raises(ValueError, match="read-only"):
        image[0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        pan_rgb[0, 0, 0] = 1

"""DetrPanopticDatasetMapper and DETR's augmentation on generated shapes data: targets match
the files, stay consistent under flip/crop/resize, bad data is reported by file name, and
Detectron2's builtin COCO panoptic splits load from the folder layout of docs/DATASETS.md."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data import transforms as T
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from panopticapi.utils import rgb2id
from PIL import Image

from detr_panoptic_d2 import add_detr_panoptic_config
from detr_panoptic_d2.data import (
    DetrPanopticDatasetMapper,
    PanopticDataError,
    build_detr_augmentation,
    panoptic_metadata,
    register_panoptic_dataset,
    register_shapes_panoptic,
)
from detr_panoptic_d2.data.shapes import CATEGORIES, generate_split, split_paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "test_data_mapper_split"


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    """Dataset dicts of a registered 8-image shapes split (sides 64..96 px)."""
    register_shapes_panoptic(NAME, str(tmp_path_factory.mktemp("shapes") / "split"), 8, 7, 64, 96)
    yield DatasetCatalog.get(NAME)
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _cfg(options=None):
    """Config for the test split with the given ``{"INPUT.KEY": value}`` options."""
    cfg = get_cfg()
    add_detr_panoptic_config(cfg)
    cfg.DATASETS.TRAIN = (NAME,)
    cfg.DATASETS.TEST = (NAME,)
    cfg.INPUT.FORMAT = "RGB"
    cfg.merge_from_list([x for item in (options or {}).items() for x in item])
    return cfg


# DETR's augmentation as the Base config sets it.
DETR_INPUT = {
    "INPUT.MIN_SIZE_TRAIN": tuple(range(480, 801, 32)),
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "INPUT.RANDOM_FLIP": "horizontal",
    "INPUT.CROP.ENABLED": True,
    "INPUT.CROP.TYPE": "absolute_range",
    "INPUT.CROP.SIZE": [384, 600],
    "INPUT.CROP.PROB": 0.5,
    "INPUT.DETR.CROP_PRE_RESIZE": [400, 500, 600],
}


def _mapper(augmentations=None, is_train=True):
    """The mapper ``_cfg()`` builds; ``augmentations`` replaces the cfg's when given."""
    args = DetrPanopticDatasetMapper.from_config(_cfg(), is_train)
    if augmentations is not None:
        args["augmentations"] = augmentations
    return DetrPanopticDatasetMapper(**args)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _check_targets(out, full_cover=True):
    """Checks the invariants of one mapped training sample; returns the masks (N x H x W)."""
    image, inst = out["image"], out["instances"]
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert inst.image_size == tuple(image.shape[1:])
    masks = inst.gt_masks.tensor.numpy()
    assert masks.dtype == bool and masks.shape == (len(inst),) + inst.image_size
    assert inst.gt_classes.dtype == torch.int64
    assert masks.sum(0).max() <= 1, "masks overlap"
    if full_cover:  # shapes images have no unlabeled pixels and no crowd here
        assert masks.sum(0).min() == 1
    boxes = inst.gt_boxes.tensor.numpy()
    for mask, box in zip(masks, boxes):
        assert mask.any()
        # Exact by construction: boxes of integer masks.
        np.testing.assert_array_equal(box, _tight_box(mask))
    return masks


def test_round_trip_matches_the_files(dicts):
    meta = MetadataCatalog.get(NAME)
    to_contiguous = {
        **meta.thing_dataset_id_to_contiguous_id,
        **meta.stuff_dataset_id_to_contiguous_id,
    }
    with open(meta.panoptic_json) as f:
        annotations = {a["image_id"]: a for a in json.load(f)["annotations"]}
    mapper = _mapper([])
    for d in dicts:
        out = mapper(d)
        masks = _check_targets(out)
        image = np.asarray(Image.open(d["file_name"]))
        # Exact by construction: integer pixels and masks, no floating-point arithmetic.
        np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), image)
        assert (out["height"], out["width"]) == image.shape[:2]
        segments = annotations[d["image_id"]]["segments_info"]
        assert out["instances"].gt_classes.tolist() == [
            to_contiguous[s["category_id"]] for s in segments
        ]
        assert masks.sum((1, 2)).tolist() == [s["area"] for s in segments]
        ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"])))
        for mask, s in zip(masks, segments):
            np.testing.assert_array_equal(mask, ids == s["id"])


def test_flip_keeps_image_and_targets_together(dicts):
    plain, flip = _mapper([]), _mapper([T.RandomFlip(prob=1.0)])
    for d in dicts:
        a, b = plain(d), flip(d)
        masks = _check_targets(b)
        # Exact by construction: integer pixels and masks, no floating-point arithmetic.
        np.testing.assert_array_equal(b["image"].numpy(), a["image"].flip(-1).numpy())
        np.testing.assert_array_equal(masks, a["instances"].gt_masks.tensor.flip(-1).numpy())
        assert b["instances"].gt_classes.tolist() == a["instances"].gt_classes.tolist()
        w = a["image"].shape[-1]
        x1, y1, x2, y2 = a["instances"].gt_boxes.tensor.unbind(1)
        torch.testing.assert_close(
            b["instances"].gt_boxes.tensor, torch.stack([w - x2, y1, w - x1, y2], 1)
        )


def test_crop_keeps_image_and_targets_together(dicts):
    x0, y0, w, h = 20, 12, 36, 28
    plain, crop = _mapper([]), _mapper([T.CropTransform(x0, y0, w, h)])
    dropped = 0
    for d in dicts:
        a, b = plain(d), crop(d)
        masks = _check_targets(b)
        # Exact by construction: integer pixels and masks, no floating-point arithmetic.
        np.testing.assert_array_equal(
            b["image"].numpy(), a["image"][:, y0 : y0 + h, x0 : x0 + w].numpy()
        )
        cropped = a["instances"].gt_masks.tensor[:, y0 : y0 + h, x0 : x0 + w]
        visible = cropped.flatten(1).any(1)
        dropped += int((~visible).sum())
        np.testing.assert_array_equal(masks, cropped[visible].numpy())
        assert b["instances"].gt_classes.tolist() == a["instances"].gt_classes[visible].tolist()
    assert dropped > 0, "no segment fell outside the crop: the dropping path went untested"


def test_resize_keeps_targets_consistent(dicts):
    """After ResizeShortestEdge each mask lies where the file's segment, scaled to the new
    size, lies (IoU > 0.9: only boundary pixels may differ), so a shifted, flipped or swapped
    mask fails, not only a wrong area."""
    mapper = _mapper([T.ResizeShortestEdge(150, 1000)])
    for d in dicts:
        b = mapper(d)
        masks = _check_targets(b)
        assert min(b["image"].shape[1:]) == 150
        ids = torch.from_numpy(rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]))).astype(np.int64))
        files = torch.stack([ids == s["id"] for s in d["segments_info"]])
        scaled = torch.nn.functional.interpolate(files[:, None].float(), size=masks.shape[1:], mode="nearest")
        scaled = scaled[:, 0].numpy() > 0.5
        iou = (masks & scaled).sum((1, 2)) / (masks | scaled).sum((1, 2))
        assert iou.min() > 0.9, iou


def test_detr_augmentation_from_config():
    cfg = _cfg(DETR_INPUT)
    flip, crop, resize = build_detr_augmentation(cfg, is_train=True)
    assert isinstance(flip, T.RandomFlip) and flip.horizontal and not flip.vertical
    assert isinstance(crop, T.RandomApply) and crop.prob == 0.5
    pre_resize, random_crop = crop.aug.augs
    assert tuple(pre_resize.short_edge_length) == (400, 500, 600) and pre_resize.is_range is False
    assert (random_crop.crop_type, tuple(random_crop.crop_size)) == ("absolute_range", (384, 600))
    assert tuple(resize.short_edge_length) == tuple(range(480, 801, 32)) and resize.max_size == 1333
    (test_resize,) = build_detr_augmentation(cfg, is_train=False)
    assert tuple(test_resize.short_edge_length) == (800, 800) and test_resize.max_size == 1333

    image = np.zeros((480, 640, 3), np.uint8)
    np.random.seed(0)
    for _ in range(20):
        out = T.AugmentationList(build_detr_augmentation(cfg, True))(T.AugInput(image.copy()))
        h, w = out.apply_image(image).shape[:2]
        assert min(h, w) in range(480, 801, 32) or max(h, w) == 1333


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_detr_augmentation_crops_with_its_probability(dicts, prob):
    small = {"INPUT.MIN_SIZE_TRAIN": (80, 96, 112), "INPUT.MAX_SIZE_TRAIN": 400}
    small.update({"INPUT.CROP.SIZE": [40, 70], "INPUT.DETR.CROP_PRE_RESIZE": [72, 88]})
    cfg = _cfg({**DETR_INPUT, **small, "INPUT.CROP.PROB": prob})
    mapper = DetrPanopticDatasetMapper(cfg, True)
    np.random.seed(0)
    aspect_changed = []
    for d in dicts * 2:
        out = mapper(d)
        _check_targets(out)
        h, w = out["image"].shape[1:]
        assert min(h, w) in (80, 96, 112)
        original = out["width"] / out["height"]
        aspect_changed.append(abs(w / h - original) > 0.05 * original)
    assert any(aspect_changed) == (prob == 1.0)


def test_detectron2_train_loader_batches_mapped_samples(dicts):
    cfg = _cfg({**DETR_INPUT, "INPUT.MIN_SIZE_TRAIN": (64, 80), "INPUT.MAX_SIZE_TRAIN": 200})
    cfg.merge_from_list(["INPUT.CROP.SIZE", [40, 60], "INPUT.DETR.CROP_PRE_RESIZE", [64]])
    cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0])
    loader = build_detection_train_loader(cfg, mapper=DetrPanopticDatasetMapper(cfg, True))
    batch = next(iter(loader))
    assert len(batch) == 2
    for out in batch:
        _check_targets(out)


def test_test_mapping_resizes_the_image_only(dicts):
    cfg = _cfg({"INPUT.MIN_SIZE_TEST": 128, "INPUT.MAX_SIZE_TEST": 1000})
    mapper = DetrPanopticDatasetMapper(cfg, is_train=False)
    d = {**dicts[0], "pan_seg_file_name": "/nonexistent.png"}
    out = mapper(d)
    assert "instances" not in out
    assert min(out["image"].shape[1:]) == 128 and out["image"].dtype == torch.uint8
    assert (out["height"], out["width"]) == Image.open(d["file_name"]).size[::-1]


def test_crowd_segments_are_left_out_and_empty_targets_are_allowed(dicts):
    mapper = _mapper([])
    d = dicts[0]
    crowd_id = d["segments_info"][-1]["id"]
    segments = [dict(s, iscrowd=int(s["id"] == crowd_id)) for s in d["segments_info"]]
    a, b = mapper(d), mapper({**d, "segments_info": segments})
    masks = _check_targets(b, full_cover=False)
    # Exact by construction: integer pixels and masks, no floating-point arithmetic.
    np.testing.assert_array_equal(masks, a["instances"].gt_masks.tensor[:-1].numpy())
    assert b["instances"].gt_classes.tolist() == a["instances"].gt_classes[:-1].tolist()

    all_crowd = [dict(s, iscrowd=1) for s in d["segments_info"]]
    empty = mapper({**d, "segments_info": all_crowd})["instances"]
    h, w = empty.image_size
    assert len(empty) == 0
    assert empty.gt_masks.tensor.shape == (0, h, w) and empty.gt_boxes.tensor.shape == (0, 4)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_and_palette_images_are_converted(dicts, tmp_path, mode):
    d = dicts[0]
    source = Image.open(d["file_name"]).convert(mode)
    path = str(tmp_path / f"image_{mode}.png")
    source.save(path)
    out = _mapper([])({**d, "file_name": path})
    _check_targets(out)
    # Exact by construction: integer pixels and masks, no floating-point arithmetic.
    np.testing.assert_array_equal(
        out["image"].permute(1, 2, 0).numpy(), np.asarray(source.convert("RGB"))
    )


def test_16_bit_grayscale_keeps_its_high_byte(dicts, tmp_path):
    d = dicts[0]
    gray = np.asarray(Image.open(d["file_name"]).convert("L")).astype(np.uint16)
    wide = gray * 256 + 100  # the 16-bit value whose high byte is the 8-bit one
    path = str(tmp_path / "image16.png")
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I")
    out = _mapper([])({**d, "file_name": path})
    for channel in out["image"].numpy():
        # Exact by construction: integer pixels and masks, no floating-point arithmetic.
        np.testing.assert_array_equal(channel, gray)


def _missing_image(d, tmp_path):
    return {**d, "file_name": str(tmp_path / "missing.jpg")}, str(tmp_path / "missing.jpg")


def _missing_png(d, tmp_path):
    return {**d, "pan_seg_file_name": str(tmp_path / "missing.png")}, str(tmp_path / "missing.png")


def _unreadable_image(d, tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"this is not a JPEG")
    return {**d, "file_name": str(path)}, str(path)


def _unlisted_segment(d, tmp_path):
    return {**d, "segments_info": d["segments_info"][1:]}, d["pan_seg_file_name"]


def _absent_segment(d, tmp_path):
    ghost = dict(d["segments_info"][0], id=max(s["id"] for s in d["segments_info"]) + 7)
    return {**d, "segments_info": d["segments_info"] + [ghost]}, d["pan_seg_file_name"]


def _truncated_image(d, tmp_path):
    path = tmp_path / "truncated.jpg"
    data = open(d["file_name"], "rb").read()
    path.write_bytes(data[: len(data) // 2])
    return {**d, "file_name": str(path)}, str(path)


def _unknown_category(d, tmp_path):
    segments = [dict(s, category_id=99) for s in d["segments_info"]]
    return {**d, "segments_info": segments}, d["pan_seg_file_name"]


def _small_png(d, tmp_path):
    path = str(tmp_path / "small.png")
    Image.open(d["pan_seg_file_name"]).crop((0, 0, 20, 20)).save(path)
    return {**d, "pan_seg_file_name": path}, path


def _wrong_image_size(d, tmp_path):
    return {**d, "width": d["width"] + 1}, d["file_name"]


# case -> (corruption giving the bad dict and the file to be named, expected problem)
BAD_SAMPLES = {
    "missing image": (_missing_image, "cannot read"),
    "missing png": (_missing_png, "cannot read"),
    "unreadable image": (_unreadable_image, "cannot read"),
    "truncated image": (_truncated_image, "cannot read"),
    "unlisted segment": (_unlisted_segment, "not in segments_info"),
    "segment absent from png": (_absent_segment, "cover no pixel"),
    "unknown category": (_unknown_category, "category id 99"),
    "png size": (_small_png, "differs from image"),
    "image size": (_wrong_image_size, "Mismatched image shape"),
}


@pytest.mark.parametrize("case", list(BAD_SAMPLES))
def test_bad_samples_raise_naming_dataset_and_file(dicts, tmp_path, case):
    corrupt, problem = BAD_SAMPLES[case]
    image = Image.open(dicts[0]["file_name"])
    bad, path = corrupt({**dicts[0], "height": image.height, "width": image.width}, tmp_path)
    with pytest.raises(PanopticDataError, match=problem) as info:
        _mapper()(bad)
    assert path in str(info.value) and repr(NAME) in str(info.value)
    assert info.value.path == path


@pytest.mark.parametrize("case", ["unknown category", "missing image"])
def test_loading_bad_annotations_raises_naming_dataset_and_file(dicts, tmp_path, case):
    meta = MetadataCatalog.get(NAME)
    with open(meta.panoptic_json) as f:
        data = json.load(f)
    image_root = meta.image_root
    ann = data["annotations"][3 if case == "unknown category" else 0]
    if case == "unknown category":
        ann["segments_info"][0]["category_id"] = 99
        expected = (os.path.join(meta.panoptic_root, ann["file_name"]), "category id 99")
    else:
        image_root = str(tmp_path / "no_images")
        expected = (
            os.path.join(image_root, ann["file_name"].replace(".png", ".jpg")),
            "loader failed",
        )
    json_file = str(tmp_path / "panoptic.json")
    with open(json_file, "w") as f:
        json.dump(data, f)
    name = "test_data_mapper_bad_json"
    register_panoptic_dataset(
        name, panoptic_metadata(CATEGORIES), image_root, meta.panoptic_root, json_file
    )
    try:
        with pytest.raises(PanopticDataError, match=expected[1]) as info:
            DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert expected[0] in str(info.value) and repr(name) in str(info.value)


def test_builtin_coco_panoptic_splits_load_from_the_readme_layout(tmp_path):
    """coco_2017_{train,val}_panoptic, via DETECTRON2_DATASETS, mapped to contiguous ids."""
    generate_split(str(tmp_path / "src"), num_images=2, seed=0, min_size=48, max_size=64)
    src = split_paths(str(tmp_path / "src"))
    coco_things = [c for c in COCO_CATEGORIES if c["isthing"]]
    coco_stuff = [c for c in COCO_CATEGORIES if not c["isthing"]]
    to_coco = {
        1: coco_things[0]["id"],
        2: coco_things[2]["id"],
        3: coco_things[17]["id"],
        11: coco_stuff[0]["id"],
        12: coco_stuff[1]["id"],
        13: coco_stuff[2]["id"],
    }
    with open(src["panoptic_json"]) as f:
        data = json.load(f)
    data["categories"] = COCO_CATEGORIES
    for ann in data["annotations"]:
        for s in ann["segments_info"]:
            s["category_id"] = to_coco[s["category_id"]]
    coco = tmp_path / "coco"
    os.makedirs(coco / "annotations")
    for split in ("train2017", "val2017"):
        shutil.copytree(src["image_root"], coco / split)
        shutil.copytree(src["panoptic_root"], coco / f"panoptic_{split}")
        with open(coco / "annotations" / f"panoptic_{split}.json", "w") as f:
            json.dump(data, f)
    code = """
        import json
        from detectron2.config import get_cfg
        from detectron2.data import DatasetCatalog
        from detr_panoptic_d2 import add_detr_panoptic_config
        from detr_panoptic_d2.data import DetrPanopticDatasetMapper
        cfg = get_cfg()
        add_detr_panoptic_config(cfg)
        result = {}
        for name in ("coco_2017_train_panoptic", "coco_2017_val_panoptic"):
            cfg.DATASETS.TRAIN = (name,)
            mapper = DetrPanopticDatasetMapper(cfg, True)
            dicts = DatasetCatalog.get(name)
            result[name] = [mapper(d)["instances"].gt_classes.tolist() for d in dicts]
        print(json.dumps(result))
    """
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": REPO, "DETECTRON2_DATASETS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    coco_contiguous = {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}
    expected = [
        [coco_contiguous[s["category_id"]] for s in a["segments_info"]] for a in data["annotations"]
    ]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"coco_2017_train_panoptic": expected, "coco_2017_val_panoptic": expected}


def test_skipping_bad_samples_counts_and_logs_in_training_only(dicts, tmp_path, caplog):
    bad, path = _truncated_image(dict(dicts[0]), tmp_path)
    args = DetrPanopticDatasetMapper.from_config(_cfg(), True)
    mapper = DetrPanopticDatasetMapper(**{**args, "skip_bad_samples": True})
    with caplog.at_level("WARNING"):
        assert mapper(bad) is None
        assert mapper(bad) is None
    assert mapper.num_skipped == 2
    assert path in caplog.text and "2 skipped" in caplog.text
    assert mapper(dicts[1])["instances"] is not None
    test_args = DetrPanopticDatasetMapper.from_config(_cfg(), False)
    evaluation = DetrPanopticDatasetMapper(**{**test_args, "skip_bad_samples": True})
    with pytest.raises(PanopticDataError, match="truncated.jpg"):
        evaluation(bad)


def test_skip_bad_samples_through_the_training_loader(dicts, tmp_path, caplog):
    """DetrTrainer's loader over a split whose first image is truncated: with
    DATALOADER.SKIP_BAD_SAMPLES the first two batches (which must draw every index once) hold
    only good images and the bad one is logged; without it, the loader stops naming the file."""
    from detr_panoptic_d2.engine import DetrTrainer

    bad, path = _truncated_image(dict(dicts[0]), tmp_path)
    name = "test_data_mapper_one_bad_image"
    DatasetCatalog.register(name, lambda: [bad] + [dict(d) for d in dicts[1:4]])
    MetadataCatalog.get(name).set(**{k: v for k, v in MetadataCatalog.get(NAME).as_dict().items() if k != "name"})
    try:
        cfg = _cfg({"INPUT.MIN_SIZE_TRAIN": (64,), "INPUT.MAX_SIZE_TRAIN": 96, "INPUT.CROP.ENABLED": False})
        cfg.merge_from_list(["DATASETS.TRAIN", (name,), "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0])
        cfg.DATALOADER.SKIP_BAD_SAMPLES = True
        with caplog.at_level("WARNING"):
            batches = iter(DetrTrainer.build_train_loader(cfg))
            samples = next(batches) + next(batches)
        assert len(samples) == 4 and path not in [x["file_name"] for x in samples]
        assert path in caplog.text and "skipped" in caplog.text
        cfg.DATALOADER.SKIP_BAD_SAMPLES = False
        with pytest.raises(PanopticDataError, match="truncated.jpg"):
            batches = iter(DetrTrainer.build_train_loader(cfg))
            next(batches), next(batches)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

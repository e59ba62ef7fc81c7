"""tools/prepare_semantic_pngs.py and tools/convert_instances_to_panoptic.py against the shapes
generator, which writes a split's panoptic PNGs, instance annotations and semantic PNGs from the
same masks (an independent oracle), and on hand-made overlapping instances."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_util

from detr_panoptic_d2.data.shapes import split_paths
from detr_panoptic_d2.data.user_datasets import register_panoptic_files
from detr_panoptic_d2.engine import PanopticSemSegEvaluator
from tests.helpers import load_tool, write_panoptic_split


@pytest.fixture(scope="module")
def shapes_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    write_panoptic_split(root / "split", 4, 3)
    return split_paths(str(root / "split"))


def _png(path):
    return np.asarray(Image.open(path))


def _category_map(png_path, segments):
    """H x W dataset category id of each pixel (0: void) of a panoptic PNG."""
    ids = rgb2id(np.asarray(Image.open(png_path).convert("RGB")))
    out = np.zeros(ids.shape, np.int64)
    for s in segments:
        out[ids == s["id"]] = s["category_id"]
    return ids, out


def test_semantic_pngs_are_the_generators_and_give_miou(shapes_split, tmp_path):
    tool = load_tool("prepare_semantic_pngs")
    out = tmp_path / "semantic"
    p = shapes_split
    assert tool.main(["--json", p["panoptic_json"], "--png-dir", p["panoptic_root"], "--output", str(out)]) == 0
    names = sorted(os.listdir(p["sem_seg_root"]))
    assert sorted(os.listdir(out)) == names and len(names) == 4
    for name in names:
        # Exact by construction: integer class maps.
        assert np.array_equal(_png(out / name), _png(os.path.join(p["sem_seg_root"], name))), name

    # The written folder as a split's sem_seg_dir: mIoU of the ground truth itself is 100.
    register_panoptic_files("prep_semantic", p["panoptic_json"], p["image_root"], p["panoptic_root"], str(out))
    evaluator = PanopticSemSegEvaluator("prep_semantic", distributed=False)
    evaluator.reset()
    for record in DatasetCatalog.get("prep_semantic"):
        truth = torch.as_tensor(_png(record["sem_seg_file_name"]).astype(np.int64))
        scores = torch.nn.functional.one_hot(truth.clamp(max=5), 6).permute(2, 0, 1).float()
        evaluator.process([{"file_name": record["file_name"]}], [{"sem_seg": scores}])
    assert evaluator.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_semantic_pngs_name_an_unknown_category(shapes_split, tmp_path):
    with open(shapes_split["panoptic_json"]) as f:
        content = json.load(f)
    content["categories"] = [c for c in content["categories"] if c["id"] != 12]
    with open(tmp_path / "fewer.json", "w") as f:
        json.dump(content, f)
    tool = load_tool("prepare_semantic_pngs")
    with pytest.raises(ValueError, match=r"panoptic/\d+\.png: segment \d+ has category id 12, not in the JSON"):
        tool.main(["--json", str(tmp_path / "fewer.json"), "--png-dir", shapes_split["panoptic_root"],
                   "--output", str(tmp_path / "out")])


def test_instances_and_stuff_pngs_give_back_the_panoptic_split(shapes_split, tmp_path):
    """The generator's instances JSON plus stuff PNGs made from its semantic PNGs (dataset ids;
    under things a stuff id or the thing's) convert to the same panoptic split: per pixel the same category, and
    the same segments as pixel sets."""
    p = shapes_split
    with open(p["panoptic_json"]) as f:
        original = json.load(f)
    ordered = [c for c in original["categories"] if c["isthing"]] + [c for c in original["categories"] if not c["isthing"]]
    stuff = [{"id": c["id"], "name": c["name"]} for c in ordered if not c["isthing"]]
    stuff_dir = tmp_path / "stuff"
    stuff_dir.mkdir()
    for name in os.listdir(p["sem_seg_root"]):
        contiguous = _png(os.path.join(p["sem_seg_root"], name))
        values = np.zeros(contiguous.shape, np.uint8)
        for index, c in enumerate(ordered):
            values[contiguous == index] = c["id"]
        # Under things: a stuff id on even rows (the things must win), the thing's id on odd ones (ignored).
        under_things = np.isin(contiguous, [i for i, c in enumerate(ordered) if c["isthing"]])
        under_things[1::2] = False
        values[under_things] = stuff[0]["id"]
        Image.fromarray(values).save(stuff_dir / name)
    with open(tmp_path / "stuff.json", "w") as f:
        json.dump(stuff, f)
    tool = load_tool("convert_instances_to_panoptic")
    out_json, out_dir = tmp_path / "panoptic.json", tmp_path / "panoptic"
    assert tool.main(["--instances", p["instances_json"], "--stuff-dir", str(stuff_dir), "--stuff-categories",
                      str(tmp_path / "stuff.json"), "--output-json", str(out_json), "--output-dir", str(out_dir)]) == 0
    with open(out_json) as f:
        converted = json.load(f)
    assert [(c["id"], c["isthing"]) for c in converted["categories"]] == [(c["id"], c["isthing"]) for c in ordered]
    by_image = {a["image_id"]: a for a in converted["annotations"]}
    for ann in original["annotations"]:
        mine = by_image[ann["image_id"]]
        ids_a, cats_a = _category_map(os.path.join(p["panoptic_root"], ann["file_name"]), ann["segments_info"])
        ids_b, cats_b = _category_map(out_dir / mine["file_name"], mine["segments_info"])
        # Exact by construction: integer ids.
        assert np.array_equal(cats_a, cats_b)
        masks = lambda ids, segs: sorted(tuple(np.flatnonzero(ids == s["id"])) for s in segs)  # noqa: E731
        assert masks(ids_a, ann["segments_info"]) == masks(ids_b, mine["segments_info"])
        for s in mine["segments_info"]:
            assert s["area"] == int((ids_b == s["id"]).sum())
    register_panoptic_files("prep_converted", str(out_json), p["image_root"], str(out_dir))
    assert len(DatasetCatalog.get("prep_converted")) == 4


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def test_overlapping_instances_go_to_the_earlier_or_stop(tmp_path):
    """Two 3 x 3 squares sharing 2 pixels on a 4 x 6 image, and one inside the first: with
    --overlap first the second keeps 7 pixels, the third none (dropped, listed); with
    --overlap error the conversion stops naming the annotation."""
    a, b, c = (np.zeros((4, 6), bool) for _ in range(3))
    a[0:3, 0:3] = True
    b[1:4, 2:5] = True
    c[1, 1] = True
    content = {
        "images": [{"id": 7, "file_name": "seven.jpg", "height": 4, "width": 6}],
        "annotations": [
            {"id": i + 1, "image_id": 7, "category_id": 1, "segmentation": _rle(m), "area": int(m.sum()),
             "bbox": [0, 0, 1, 1], "iscrowd": 0}
            for i, m in enumerate((a, b, c))
        ],
        "categories": [{"id": 1, "name": "box", "supercategory": "box"}],
    }
    with open(tmp_path / "instances.json", "w") as f:
        json.dump(content, f)
    tool = load_tool("convert_instances_to_panoptic")
    common = ["--instances", str(tmp_path / "instances.json"), "--output-dir", str(tmp_path / "pngs")]
    assert tool.main(common + ["--output-json", str(tmp_path / "first.json")]) == 0
    with open(tmp_path / "first.json") as f:
        segments = json.load(f)["annotations"][0]["segments_info"]
    assert [s["area"] for s in segments] == [9, 7]
    ids = rgb2id(np.asarray(Image.open(tmp_path / "pngs" / "seven.png").convert("RGB")))
    # Exact by construction: integer masks.
    assert np.array_equal(ids == segments[0]["id"], a) and np.array_equal(ids == segments[1]["id"], b & ~a)
    from detr_panoptic_d2.data.preparation import instances_to_panoptic

    summary = instances_to_panoptic(str(tmp_path / "instances.json"), str(tmp_path / "s.json"), str(tmp_path / "pngs"))
    assert summary == {"images": 1, "segments": 2, "overlapping_pixels": 3, "dropped": [3]}
    with pytest.raises(ValueError, match="annotation 2 of image seven.jpg shares 2 pixels with an earlier one"):
        tool.main(common + ["--output-json", str(tmp_path / "error.json"), "--overlap", "error"])

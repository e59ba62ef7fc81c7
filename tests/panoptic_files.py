"""Tiny COCO panoptic files written by the tests: segment-id maps to PNGs and JSON."""
import json
import os

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image

CATEGORIES = [
    {"id": 1, "name": "cat", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "dog", "isthing": 1, "color": [0, 82, 200]},
    {"id": 10, "name": "grass", "isthing": 0, "color": [60, 160, 60]},
    {"id": 11, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
]


def segment_info(ids, segment_id, category_id, iscrowd=0):
    """COCO segments_info entry of ``segment_id`` in the H x W id map ``ids``."""
    ys, xs = np.nonzero(ids == segment_id)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return {"id": segment_id, "category_id": category_id, "iscrowd": iscrowd, "area": int(len(ys)), "bbox": bbox}


def write_split(folder, images, categories=CATEGORIES, crowd=()):
    """images: [(ids H x W, {segment id: category id})], one per image (ids 1..); crowd:
    [(image index from 0, segment id)] marked iscrowd. Writes ``folder``.json and the PNGs in
    ``folder``/; returns (json path, PNG folder)."""
    os.makedirs(folder, exist_ok=True)
    data = {"images": [], "annotations": [], "categories": categories}
    for index, (ids, classes) in enumerate(images, start=1):
        name = f"{index:06d}"
        Image.fromarray(id2rgb(ids)).save(os.path.join(folder, name + ".png"))
        data["images"].append({"id": index, "file_name": name + ".jpg", "height": ids.shape[0], "width": ids.shape[1]})
        data["annotations"].append({"image_id": index, "file_name": name + ".png",
                                    "segments_info": [segment_info(ids, s, c, int((index - 1, s) in crowd))
                                                      for s, c in classes.items()]})
    with open(folder + ".json", "w") as f:
        json.dump(data, f)
    return folder + ".json", folder


def read_split(json_path, png_dir):
    """[(ids H x W, {segment id: category id})] of a COCO panoptic split, in JSON order."""
    from panopticapi.utils import rgb2id

    with open(json_path) as f:
        data = json.load(f)
    return [(rgb2id(np.array(Image.open(os.path.join(png_dir, a["file_name"])), dtype=np.uint32)),
             {s["id"]: s["category_id"] for s in a["segments_info"]}) for a in data["annotations"]], data["categories"]


def perturbed(images, categories, seed=0):
    """Predictions made from ground truth ``images`` (read_split's list) with every kind of
    error: each id map shifted by up to 6 px, a fifth of the segments given another category, a
    tenth erased (void), a tenth of the images' void borders left by the shift."""
    rng = np.random.default_rng(seed)
    ids_of = [c["id"] for c in categories]
    out = []
    for ids, classes in images:
        ids = np.roll(ids, tuple(rng.integers(-6, 7, size=2)), axis=(0, 1)).copy()
        kept = {}
        for s, c in classes.items():
            draw = rng.random()
            if draw < 0.1:
                ids[ids == s] = 0
            elif draw < 0.3:
                kept[s] = int(rng.choice([i for i in ids_of if i != c]))
            else:
                kept[s] = c
        kept = {s: c for s, c in kept.items() if (ids == s).any()}
        ids[~np.isin(ids, list(kept))] = 0
        out.append((ids, kept))
    return out

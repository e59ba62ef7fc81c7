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


def write_split(folder, images, categories=CATEGORIES):
    """images: [(ids H x W, {segment id: category id})], one per image (ids 1..). Writes
    ``folder``.json and the PNGs in ``folder``/; returns (json path, PNG folder)."""
    os.makedirs(folder, exist_ok=True)
    data = {"images": [], "annotations": [], "categories": categories}
    for index, (ids, classes) in enumerate(images, start=1):
        name = f"{index:06d}"
        Image.fromarray(id2rgb(ids)).save(os.path.join(folder, name + ".png"))
        data["images"].append({"id": index, "file_name": name + ".jpg", "height": ids.shape[0], "width": ids.shape[1]})
        data["annotations"].append({"image_id": index, "file_name": name + ".png",
                                    "segments_info": [segment_info(ids, s, c) for s, c in classes.items()]})
    with open(folder + ".json", "w") as f:
        json.dump(data, f)
    return folder + ".json", folder

"""Ground truth and predictions as COCO panoptic files (a JSON and a folder of PNGs), paired by
image id, read as panopticapi reads them."""
import json
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image
from panopticapi.utils import rgb2id


@dataclass
class PanopticFiles:
    """json_path: a COCO panoptic JSON; png_dir: its PNG folder; data: the loaded JSON."""

    json_path: str
    png_dir: str
    data: dict

    @classmethod
    def load(cls, json_path, png_dir, option="--gt-json"):
        """Reads ``json_path``; FileNotFoundError / ValueError naming ``option`` and the path."""
        for path in (json_path, png_dir):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{option}: {path} does not exist")
        try:
            with open(json_path, encoding="utf-8") as f:
                data = json.load(f)
            data["annotations"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{option} {json_path}: not a COCO panoptic JSON with annotations ({e!r})") from e
        return cls(json_path, png_dir, data)

    def ids(self, annotation):
        """H x W uint32 segment ids of an annotation's PNG (``rgb2id``, as panopticapi)."""
        path = os.path.join(self.png_dir, annotation["file_name"])
        try:
            with Image.open(path) as image:
                return rgb2id(np.array(image, dtype=np.uint32))
        except OSError as e:
            raise ValueError(f"{path}: cannot read the panoptic PNG ({e})") from e


def paired_annotations(gt, pred):
    """[(gt annotation, pred annotation)] in the ground truth's order; ValueError naming the
    prediction JSON and the first image id it lacks."""
    by_id = {a["image_id"]: a for a in pred.data["annotations"]}
    missing = [a["image_id"] for a in gt.data["annotations"] if a["image_id"] not in by_id]
    if missing:
        raise ValueError(f"{pred.json_path}: no prediction for {len(missing)} images of {gt.json_path}, "
                         f"the first with image id {missing[0]}")
    return [(a, by_id[a["image_id"]]) for a in gt.data["annotations"]]

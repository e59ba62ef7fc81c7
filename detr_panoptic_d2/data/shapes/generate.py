"""Writes a split of the shapes dataset in COCO panoptic format, deterministically, once.

Layout of a split directory ``root`` (see ``split_paths``)::

    images/000001.jpg ...     RGB images
    panoptic/000001.png ...   panoptic PNGs (segment id = R + 256 G + 256^2 B)
    semantic/000001.png ...   semantic PNGs (contiguous class ids, 255 = unlabeled)
    panoptic.json             COCO panoptic: images, annotations (segments_info), categories
    instances.json            COCO instances of the things (RLE masks), all categories
    stamp.json                generator version and parameters; written last
"""

import json
import logging
import os
import shutil

import numpy as np
import pycocotools.mask as mask_util
from iopath.common.file_io import file_lock
from panopticapi.utils import id2rgb
from PIL import Image

from ..metadata import THING_MAP, dataset_to_contiguous
from ..panoptic_dataset import panoptic_metadata
from .render import CATEGORIES, render_sample

# Bump when the files written for the same parameters change; existing splits regenerate.
GENERATOR_VERSION = 2
JPEG_QUALITY = 90

logger = logging.getLogger(__name__)


def split_paths(root):
    """Paths of a split directory: image_root, panoptic_root, sem_seg_root, panoptic_json,
    instances_json, stamp."""
    return {
        "image_root": os.path.join(root, "images"),
        "panoptic_root": os.path.join(root, "panoptic"),
        "sem_seg_root": os.path.join(root, "semantic"),
        "panoptic_json": os.path.join(root, "panoptic.json"),
        "instances_json": os.path.join(root, "instances.json"),
        "stamp": os.path.join(root, "stamp.json"),
    }


def ensure_split(root, num_images, seed, min_size, max_size):
    """Generates the split into ``root`` unless ``root`` holds one made by this generator
    version with these parameters. Holds the file lock ``root + ".lock"`` meanwhile, so a
    concurrent caller waits and then reuses the result. Returns whether it generated."""
    stamp = {
        "version": GENERATOR_VERSION,
        "num_images": num_images,
        "seed": seed,
        "min_size": min_size,
        "max_size": max_size,
    }
    stamp_file = split_paths(root)["stamp"]
    with file_lock(root):
        if os.path.isfile(stamp_file):
            with open(stamp_file) as f:
                if json.load(f) == stamp:
                    return False
        logger.info(f"Generating {num_images} shapes panoptic images into {root} ...")
        shutil.rmtree(root, ignore_errors=True)
        generate_split(root, num_images, seed, min_size, max_size)
        with open(stamp_file, "w") as f:
            json.dump(stamp, f)
    return True


def generate_split(root, num_images, seed, min_size, max_size):
    """Writes ``num_images`` samples into ``root`` (see the module docstring). Image i uses
    the generator ``np.random.default_rng([seed, i])`` and a height and width drawn from
    [min_size, max_size]; image ids are 1..num_images."""
    paths = split_paths(root)
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        os.makedirs(paths[key], exist_ok=True)
    meta = panoptic_metadata(CATEGORIES)
    contiguous = dataset_to_contiguous(meta)
    things = set(meta[THING_MAP])

    images, panoptic_annotations, instance_annotations = [], [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        height, width = (int(x) for x in rng.integers(min_size, max_size + 1, size=2))
        image, ids, segments = render_sample(rng, height, width)
        image_id = index + 1
        stem = f"{image_id:06d}"
        semantic = np.full((height, width), 255, np.uint8)
        segments_info = []
        for segment_id, category_id in segments:
            mask = ids == segment_id
            semantic[mask] = contiguous[category_id]
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            area = int(mask_util.area(rle))
            bbox = [int(x) for x in mask_util.toBbox(rle)]
            segments_info.append(
                {
                    "id": segment_id,
                    "category_id": category_id,
                    "iscrowd": 0,
                    "bbox": bbox,
                    "area": area,
                }
            )
            if category_id in things:
                rle["counts"] = rle["counts"].decode("ascii")
                instance_annotations.append(
                    {
                        "id": len(instance_annotations) + 1,
                        "image_id": image_id,
                        "category_id": category_id,
                        "segmentation": rle,
                        "area": area,
                        "bbox": bbox,
                        "iscrowd": 0,
                    }
                )
        Image.fromarray(image).save(
            os.path.join(paths["image_root"], stem + ".jpg"), quality=JPEG_QUALITY
        )
        Image.fromarray(id2rgb(ids)).save(os.path.join(paths["panoptic_root"], stem + ".png"))
        Image.fromarray(semantic).save(os.path.join(paths["sem_seg_root"], stem + ".png"))
        images.append(
            {"id": image_id, "file_name": stem + ".jpg", "height": height, "width": width}
        )
        panoptic_annotations.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments_info}
        )

    info = {"description": f"shapes panoptic, generator version {GENERATOR_VERSION}, seed {seed}"}
    common = {"info": info, "licenses": [], "images": images, "categories": CATEGORIES}
    with open(paths["panoptic_json"], "w") as f:
        json.dump({**common, "annotations": panoptic_annotations}, f)
    with open(paths["instances_json"], "w") as f:
        json.dump({**common, "annotations": instance_annotations}, f)

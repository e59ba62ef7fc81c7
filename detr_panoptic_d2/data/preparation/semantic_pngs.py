"""Semantic PNGs from COCO-panoptic annotations, the ground truth of mIoU (SemSegEvaluator).

Each ``<PNG name>`` of the panoptic PNG folder gets a single-channel uint8 PNG of the same name:
every pixel the contiguous id of its segment's category, in the numbering every tool here uses
for the split (``panoptic_metadata``: things first, then stuff, each in the JSON's order);
255 where no segment is (void). Crowd segments keep their class, as in panopticapi's
panoptic-to-semantic converter.
"""
import json
import os

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image
from tqdm import tqdm

from ..metadata import dataset_to_contiguous
from ..panoptic_dataset import panoptic_metadata

UNLABELED = 255


def semantic_map(ids, segments_info, to_contiguous, png_path):
    """ids: H x W segment ids (panopticapi's rgb2id of a panoptic PNG); segments_info: its
    annotation's. Returns the H x W uint8 semantic map. ValueError naming ``png_path`` for a
    category not in ``to_contiguous`` or pixels of a segment id that segments_info lacks."""
    semantic = np.full(ids.shape, UNLABELED, np.uint8)
    listed = set()
    for seg in segments_info:
        if seg["category_id"] not in to_contiguous:
            raise ValueError(f"{png_path}: segment {seg['id']} has category id {seg['category_id']}, not in the JSON")
        semantic[ids == seg["id"]] = to_contiguous[seg["category_id"]]
        listed.add(seg["id"])
    stray = sorted(set(np.unique(ids).tolist()) - listed - {0})
    if stray:
        raise ValueError(f"{png_path}: pixels of segment ids {stray[:5]} that its segments_info does not list")
    return semantic


def write_semantic_pngs(panoptic_json, panoptic_root, output_dir):
    """Writes the semantic PNG of every annotation of ``panoptic_json`` (PNGs in
    ``panoptic_root``) into ``output_dir`` (created). Returns the number written. Raises
    ValueError with more than 255 classes (uint8 PNGs, 255 = unlabeled) or naming the file
    for an unknown category, and FileNotFoundError naming a missing PNG."""
    with open(panoptic_json) as f:
        content = json.load(f)
    to_contiguous = dataset_to_contiguous(panoptic_metadata(content["categories"]))
    if len(to_contiguous) > UNLABELED:
        raise ValueError(f"{panoptic_json}: {len(to_contiguous)} classes do not fit uint8 PNGs (255 = unlabeled)")
    os.makedirs(output_dir, exist_ok=True)
    for ann in tqdm(content["annotations"], desc="semantic PNGs", unit="img"):
        png_path = os.path.join(panoptic_root, ann["file_name"])
        if not os.path.isfile(png_path):
            raise FileNotFoundError(f"{png_path} does not exist ({panoptic_json} lists it)")
        ids = rgb2id(np.asarray(Image.open(png_path).convert("RGB")))
        semantic = semantic_map(ids, ann["segments_info"], to_contiguous, png_path)
        Image.fromarray(semantic).save(os.path.join(output_dir, ann["file_name"]))
    return len(content["annotations"])

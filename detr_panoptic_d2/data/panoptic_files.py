"""Panoptic predictions as files in the COCO panoptic format (PNG of segment ids in RGB + JSON
segments with dataset category ids)."""
import numpy as np
import torch
from panopticapi.utils import id2rgb

from .metadata import class_names, contiguous_to_dataset, thing_contiguous_ids


def coco_categories(metadata):
    """COCO panoptic "categories": [{"id", "name", "isthing"}] in contiguous order."""
    to_dataset = contiguous_to_dataset(metadata)
    things = set(thing_contiguous_ids(metadata))
    names = class_names(metadata)
    return [{"id": to_dataset[c], "name": names[c], "isthing": int(c in things)} for c in sorted(to_dataset)]


def to_coco_panoptic(panoptic_seg, segments_info, metadata):
    """panoptic_seg: H x W ids (0 = void); segments_info: the model's, contiguous ids.

    Returns (H x W x 3 uint8 PNG content, COCO segments_info: "id", "category_id" (dataset
    id), "iscrowd", "area", "bbox" [x, y, w, h], "score")."""
    ids = panoptic_seg.to("cpu", torch.int64)
    to_dataset = contiguous_to_dataset(metadata)
    segments = []
    for seg in segments_info:
        ys, xs = torch.nonzero(ids == seg["id"], as_tuple=True)
        bbox = [0, 0, 0, 0]
        if len(ys):
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        segments.append(
            {
                "id": int(seg["id"]),
                "category_id": int(to_dataset[seg["category_id"]]),
                "iscrowd": 0,
                "area": int(len(ys)),
                "bbox": bbox,
                "score": float(seg.get("score", 1.0)),
            }
        )
    return id2rgb(ids.numpy()).astype(np.uint8), segments

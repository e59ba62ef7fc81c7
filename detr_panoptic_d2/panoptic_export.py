"""Panoptic predictions as pictures and files: a Detectron2 visualization, and the COCO
panoptic format (PNG of segment ids in RGB + JSON segments with dataset category ids)."""
import numpy as np
import torch
from detectron2.utils.visualizer import ColorMode, Visualizer
from panopticapi.utils import id2rgb


def draw_panoptic(image_rgb, panoptic_seg, segments_info, metadata, seed=0):
    """image_rgb: H x W x 3 uint8; panoptic_seg: H x W segment ids; segments_info: the model's
    (contiguous category ids). Returns the H x W x 3 uint8 visualization with class names.

    The colours the Visualizer jitters with NumPy's global random generator come from ``seed``
    (the generator's state is restored after), so a picture depends on its inputs only."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        visualizer = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
        return visualizer.draw_panoptic_seg(panoptic_seg.to("cpu"), segments_info).get_image()
    finally:
        np.random.set_state(state)


def contiguous_to_dataset_ids(metadata):
    """{contiguous id: dataset category id} from thing_/stuff_dataset_id_to_contiguous_id."""
    mapping = dict(getattr(metadata, "thing_dataset_id_to_contiguous_id", {}))
    mapping.update(getattr(metadata, "stuff_dataset_id_to_contiguous_id", {}))
    return {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}


def class_names(metadata):
    """Names of all classes by contiguous id (Detectron2's panoptic metadata lists things and
    stuff together in stuff_classes; thing-only metadata in thing_classes)."""
    return getattr(metadata, "stuff_classes", None) or metadata.thing_classes


def coco_categories(metadata):
    """COCO panoptic "categories": [{"id", "name", "isthing"}] in contiguous order."""
    to_dataset = contiguous_to_dataset_ids(metadata)
    things = set(getattr(metadata, "thing_dataset_id_to_contiguous_id", {}).values())
    names = class_names(metadata)
    return [{"id": to_dataset[c], "name": names[c], "isthing": int(c in things)} for c in sorted(to_dataset)]


def to_coco_panoptic(panoptic_seg, segments_info, metadata):
    """panoptic_seg: H x W ids (0 = void); segments_info: the model's, contiguous ids.

    Returns (H x W x 3 uint8 PNG content, COCO segments_info: "id", "category_id" (dataset
    id), "iscrowd", "area", "bbox" [x, y, w, h], "score")."""
    ids = panoptic_seg.to("cpu", torch.int64)
    to_dataset = contiguous_to_dataset_ids(metadata)
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

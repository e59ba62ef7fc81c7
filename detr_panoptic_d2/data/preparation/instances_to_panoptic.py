"""COCO instance annotations (and, optionally, stuff PNGs) -> a COCO-panoptic split.

Things: every instance annotation (polygons or RLE, read with pycocotools) becomes one
segment, ``iscrowd`` kept, in the JSON's order. Pixels two instances share go to the earlier
one (``overlap="first"``, the count is reported) or stop the conversion (``"error"``, as
panopticapi's detection-to-panoptic converter does); an instance left without pixels is
dropped and reported. Stuff (optional): ``<stuff_dir>/<image stem>.png``, one channel whose
values are stuff category ids (0 and 255 unlabeled; thing ids are ignored, things come from
the instances); the pixels of one stuff class that no thing covers become one segment.
Segment ids and thing colours come from panopticapi's ``IdGenerator`` (drawn from a fixed
seed, so a conversion is reproducible); the PNGs use panopticapi's ``id2rgb`` encoding.
"""
import contextlib
import json
import os

import numpy as np
from panopticapi.utils import IdGenerator, id2rgb
from PIL import Image
from tqdm import tqdm

UNLABELED_VALUES = (0, 255)


@contextlib.contextmanager
def _numpy_seed(seed):
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _with_colors(categories, isthing, taken):
    """Copies of ``categories`` with ``isthing`` and a colour each (its own when given, else a
    fixed-seed one not in ``taken``, never black: black is segment id 0, void)."""
    rng = np.random.default_rng(len(taken))
    out = []
    for c in categories:
        color = [int(v) for v in c["color"]] if c.get("color") else None
        while color is None or tuple(color) in taken or color == [0, 0, 0]:
            color = [int(v) for v in rng.integers(16, 240, size=3)]
        taken.add(tuple(color))
        out.append({"id": int(c["id"]), "name": c["name"], "isthing": isthing, "color": color})
    return out


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _read_stuff(path, shape, stuff_ids, thing_ids):
    """The stuff PNG at ``path`` as an H x W int array; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Stuff PNG {path} does not exist (one per image: <image stem>.png)")
    values = np.asarray(Image.open(path))
    if values.ndim != 2 or values.shape != shape:
        raise ValueError(f"{path}: a {shape[0]} x {shape[1]} single-channel PNG expected, got shape {values.shape}")
    unknown = sorted(set(np.unique(values).tolist()) - set(stuff_ids) - set(thing_ids) - set(UNLABELED_VALUES))
    if unknown:
        raise ValueError(f"{path}: values {unknown[:10]} are no category id (stuff: {sorted(stuff_ids)[:10]}...)")
    return values.astype(np.int64)


def instances_to_panoptic(
    instances_json, output_json, output_dir, stuff_dir=None, stuff_categories=(), overlap="first"
):
    """Converts ``instances_json`` (COCO instances; its categories are the things, but for those
    also in ``stuff_categories``) and, with
    ``stuff_dir``, the stuff PNGs of ``stuff_categories`` (dicts with "id", "name", optional
    "color") into ``output_json`` (COCO panoptic: images, annotations, categories) and the
    panoptic PNGs ``output_dir/<image stem>.png``. Returns a summary: {"images", "segments",
    "overlapping_pixels", "dropped": [instance annotation ids left without pixels]}."""
    from pycocotools.coco import COCO

    if overlap not in ("first", "error"):
        raise ValueError(f"overlap must be 'first' or 'error', got {overlap!r}")
    if stuff_dir and not stuff_categories:
        raise ValueError("stuff PNGs need their categories (stuff_categories: [{'id', 'name'}])")
    with contextlib.redirect_stdout(None):
        coco = COCO(instances_json)
    taken = set()
    stuff = _with_colors(list(stuff_categories), 0, taken)
    stuff_ids = [c["id"] for c in stuff]
    things = _with_colors([c for c in coco.loadCats(sorted(coco.getCatIds())) if c["id"] not in stuff_ids], 1, taken)
    thing_ids = [c["id"] for c in things]
    categories = things + stuff
    os.makedirs(output_dir, exist_ok=True)
    summary = {"images": 0, "segments": 0, "overlapping_pixels": 0, "dropped": []}
    annotations = []
    with _numpy_seed(0):
        generator = IdGenerator({c["id"]: c for c in categories})
        for image in tqdm(sorted(coco.dataset["images"], key=lambda i: i["id"]), desc="images", unit="img"):
            stem = os.path.splitext(os.path.basename(image["file_name"]))[0]
            ids = np.zeros((image["height"], image["width"]), np.int64)
            segments = []

            def add(mask, category_id, iscrowd=0):
                segment_id = generator.get_id(category_id)
                ids[mask] = segment_id
                segments.append(
                    {"id": int(segment_id), "category_id": int(category_id), "iscrowd": int(iscrowd),
                     "bbox": _bbox(mask), "area": int(mask.sum())}
                )

            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
                if ann["category_id"] not in thing_ids:
                    raise ValueError(
                        f"{instances_json}: annotation {ann['id']} has category id {ann['category_id']}, which is "
                        "no thing category (it is a stuff one, or not in the JSON's categories)"
                    )
                mask = coco.annToMask(ann).astype(bool)
                shared_pixels = int((mask & (ids != 0)).sum())
                if shared_pixels and overlap == "error":
                    raise ValueError(
                        f"{instances_json}: annotation {ann['id']} of image {image['file_name']} shares {shared_pixels} "
                        "pixels with an earlier one (overlap='first' gives them to the earlier)"
                    )
                summary["overlapping_pixels"] += shared_pixels
                mask &= ids == 0
                if not mask.any():
                    summary["dropped"].append(ann["id"])
                    continue
                add(mask, ann["category_id"], ann.get("iscrowd", 0))
            if stuff_dir:
                values = _read_stuff(os.path.join(stuff_dir, stem + ".png"), ids.shape, stuff_ids, thing_ids)
                free = ids == 0
                for category_id in stuff_ids:
                    mask = (values == category_id) & free
                    if mask.any():
                        add(mask, category_id)
            Image.fromarray(id2rgb(ids)).save(os.path.join(output_dir, stem + ".png"))
            annotations.append({"image_id": image["id"], "file_name": stem + ".png", "segments_info": segments})
            summary["images"] += 1
            summary["segments"] += len(segments)
    with open(output_json, "w") as f:
        json.dump({"images": coco.dataset["images"], "annotations": annotations, "categories": categories}, f)
    return summary

"""The checks of a COCO-panoptic-format split on disk, each in one function, shared by
tools/check_dataset.py (every check) and registration (``user_datasets``: the cheap ones).

Every check returns a list of ``Problem`` (the file and, where one is at fault, the image and
segment) instead of stopping at the first:

- ``check_schema``: the JSON's top level;
- ``check_categories``: the category table (ids unique integers, names unique, ``isthing`` 0 or
  1, ``color`` three values in 0..255);
- ``check_annotations``: images and annotations linked one to one, each segment with a unique
  id > 0, a declared ``category_id``, ``iscrowd`` 0 or 1, ``area`` and ``bbox``, a stuff class
  in one segment per image;
- ``check_files_present``: each annotation's PNG (and input image, ``<PNG stem>.jpg`` as
  Detectron2's loader reads it) exists; ``sample`` limits it to the first annotations;
- ``check_png``: one PNG decodes as RGB at its image's size, its segment ids are those of
  ``segments_info`` and ``area`` / ``bbox`` agree with its pixels (it also returns the
  measured values, from which ``fixed_annotations`` rewrites area and bbox).
"""
import os
from dataclasses import dataclass

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

TOP_LEVEL = ("images", "annotations", "categories")


@dataclass(frozen=True)
class Problem:
    """file: the file at fault; message: what is wrong; image_id, segment_id: where, if known."""

    file: str
    message: str
    image_id: object = None
    segment_id: object = None

    def __str__(self):
        where = [f"image id {self.image_id}"] if self.image_id is not None else []
        where += [f"segment {self.segment_id}"] if self.segment_id is not None else []
        return f"{self.file}: {', '.join(where) + ': ' if where else ''}{self.message}"


def check_schema(data, json_path):
    """The top level: a dict with the lists of TOP_LEVEL."""
    if not isinstance(data, dict):
        return [Problem(json_path, f"the JSON is a {type(data).__name__}, not an object with {TOP_LEVEL}")]
    return [Problem(json_path, f"'{key}' is missing or not a list") for key in TOP_LEVEL
            if not isinstance(data.get(key), list)]


def check_categories(categories, json_path):
    """The category table of a COCO panoptic JSON."""
    problems, ids, names = [], {}, {}
    for index, c in enumerate(categories):
        where = f"categories[{index}]"
        if not isinstance(c, dict):
            problems.append(Problem(json_path, f"{where} is not an object"))
            continue
        if not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool):
            problems.append(Problem(json_path, f"{where} has id {c.get('id')!r}, not an integer"))
        else:
            ids.setdefault(c["id"], []).append(index)
        if not isinstance(c.get("name"), str) or not c["name"]:
            problems.append(Problem(json_path, f"{where} has name {c.get('name')!r}, not a non-empty string"))
        else:
            names.setdefault(c["name"], []).append(index)
        if c.get("isthing") not in (0, 1) or isinstance(c.get("isthing"), float):
            problems.append(Problem(json_path, f"{where} ({c.get('name')!r}) has isthing {c.get('isthing')!r}, "
                                    "not 0 or 1"))
        color = c.get("color")
        if not (isinstance(color, list) and len(color) == 3
                and all(isinstance(v, int) and 0 <= v <= 255 for v in color)):
            problems.append(Problem(json_path, f"{where} ({c.get('name')!r}) has color {color!r}, "
                                    "not [R, G, B] in 0..255"))
    problems += [Problem(json_path, f"category id {i} is listed {len(at)} times (categories{at})")
                 for i, at in ids.items() if len(at) > 1]
    problems += [Problem(json_path, f"category name {n!r} is listed {len(at)} times (categories{at})")
                 for n, at in names.items() if len(at) > 1]
    return problems


def check_annotations(data, json_path):
    """Images and annotations of a JSON that passed check_schema, and their segments_info."""
    problems, images = [], {}
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image:
            problems.append(Problem(json_path, f"images[{index}] has no id"))
            continue
        if image["id"] in images:
            problems.append(Problem(json_path, f"images[{index}] repeats image id {image['id']}"))
        images[image["id"]] = image
        for key in ("height", "width"):
            if not isinstance(image.get(key), int) or image[key] <= 0:
                problems.append(Problem(json_path, f"{key} is {image.get(key)!r}, not a positive integer", image["id"]))
    categories = {c.get("id"): c for c in data["categories"] if isinstance(c, dict)}
    annotated = set()
    for index, annotation in enumerate(data["annotations"]):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if image_id is None or not isinstance(annotation.get("segments_info"), list) or not annotation.get("file_name"):
            problems.append(Problem(json_path, f"annotations[{index}] lacks image_id, file_name or a "
                                    "segments_info list"))
            continue
        if image_id not in images:
            problems.append(Problem(json_path, f"annotations[{index}] is for image id {image_id}, not in 'images'"))
        if image_id in annotated:
            problems.append(Problem(json_path, f"annotations[{index}] is a second annotation of its image", image_id))
        annotated.add(image_id)
        problems += _check_segments(annotation, categories, json_path)
    problems += [Problem(json_path, "the image has no annotation", i) for i in images if i not in annotated]
    return problems


def _check_segments(annotation, categories, json_path):
    problems, seen, stuff_segments = [], set(), {}
    image_id = annotation["image_id"]
    for s in annotation["segments_info"]:
        sid = s.get("id") if isinstance(s, dict) else None
        if not isinstance(sid, int) or sid <= 0:
            problems.append(Problem(json_path, f"segment id {sid!r} is not a positive integer (0 is void)", image_id))
            continue
        if sid in seen:
            problems.append(Problem(json_path, "the segment id is listed twice in segments_info", image_id, sid))
        seen.add(sid)
        category = categories.get(s.get("category_id"))
        if category is None:
            problems.append(Problem(json_path, f"category_id {s.get('category_id')!r} is not among the categories",
                                    image_id, sid))
        elif category.get("isthing") == 0:
            stuff_segments.setdefault(s["category_id"], []).append(sid)
        if s.get("iscrowd") not in (0, 1):
            problems.append(Problem(json_path, f"iscrowd is {s.get('iscrowd')!r}, not 0 or 1", image_id, sid))
        if not isinstance(s.get("area"), (int, float)):
            problems.append(Problem(json_path, f"area is {s.get('area')!r}, not a number", image_id, sid))
        if not (isinstance(s.get("bbox"), list) and len(s["bbox"]) == 4):
            problems.append(Problem(json_path, f"bbox is {s.get('bbox')!r}, not [x, y, w, h]", image_id, sid))
    for category_id, segments in stuff_segments.items():
        if len(segments) > 1:
            name = categories[category_id].get("name")
            problems.append(Problem(json_path, f"stuff category {category_id} ({name!r}) is split over segments "
                                    f"{segments}; a stuff class is one segment per image", image_id))
    return problems


def input_image_path(image_dir, annotation):
    """The input image Detectron2's loader reads for an annotation: ``<PNG stem>.jpg``."""
    return os.path.join(image_dir, os.path.splitext(annotation["file_name"])[0] + ".jpg")


def check_files_present(annotations, png_dir, image_dir=None, sample=None):
    """Each annotation's PNG (and, with ``image_dir``, input image) exists; the first
    ``sample`` annotations only when given."""
    problems = []
    for index, annotation in enumerate(annotations[:sample]):
        if not isinstance(annotation, dict) or not isinstance(annotation.get("file_name"), str):
            problems.append(Problem(png_dir, f"annotations[{index}] names no PNG (file_name)"))
            continue
        paths = [os.path.join(png_dir, annotation["file_name"])]
        paths += [input_image_path(image_dir, annotation)] if image_dir else []
        problems += [Problem(p, "the file does not exist", annotation.get("image_id"))
                     for p in paths if not os.path.isfile(p)]
    return problems


def segment_pixels(ids):
    """ids: H x W segment ids -> {id: (area, [x, y, w, h])} of every id but 0 (void)."""
    flat = ids.ravel()
    order = np.argsort(flat, kind="stable")
    values, starts, counts = np.unique(flat[order], return_index=True, return_counts=True)
    ys, xs = np.divmod(order, ids.shape[1])
    x0, x1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts)
    y0, y1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
    return {int(v): (int(n), [int(a), int(b), int(c - a + 1), int(d - b + 1)])
            for v, n, a, b, c, d in zip(values, counts, x0, y0, x1, y1) if v != 0}


def check_png(annotation, image, png_dir):
    """One annotation's PNG against its segments_info and ``image`` (its ``images`` entry, or
    None). Returns (problems, {segment id: (area, bbox)} measured, or None when unreadable)."""
    path = os.path.join(png_dir, annotation["file_name"])
    image_id = annotation.get("image_id")
    if not os.path.isfile(path):
        return [Problem(path, "the PNG does not exist", image_id)], None
    try:
        with Image.open(path) as png:
            mode, pixels = png.mode, np.array(png, dtype=np.uint32)
    except OSError as e:
        return [Problem(path, f"cannot be decoded: {e}", image_id)], None
    if mode != "RGB":
        return [Problem(path, f"mode {mode}, not RGB (segment id = R + 256 G + 256^2 B): not checked further",
                        image_id)], None
    problems = []
    if image and (image.get("height"), image.get("width")) != pixels.shape[:2]:
        problems.append(Problem(path, f"the PNG is {pixels.shape[0]} x {pixels.shape[1]} (H x W), the image "
                                f"{image.get('height')} x {image.get('width')} in the JSON", image_id))
    measured = segment_pixels(rgb2id(pixels))
    declared = {s["id"]: s for s in annotation["segments_info"] if isinstance(s, dict) and "id" in s}
    for sid in sorted(set(declared) - set(measured)):
        problems.append(Problem(path, "in segments_info but not in the PNG", image_id, sid))
    for sid in sorted(set(measured) - set(declared)):
        problems.append(Problem(path, f"in the PNG ({measured[sid][0]} pixels) but not in segments_info",
                                image_id, sid))
    for sid in sorted(set(declared) & set(measured)):
        area, bbox = measured[sid]
        if declared[sid].get("area") != area:
            problems.append(Problem(path, f"area {declared[sid].get('area')!r} in the JSON, {area} in the PNG",
                                    image_id, sid))
        if declared[sid].get("bbox") != bbox:
            problems.append(Problem(path, f"bbox {declared[sid].get('bbox')!r} in the JSON, {bbox} in the PNG",
                                    image_id, sid))
    return problems, measured


def check_input_image(annotation, image, image_dir):
    """The input image exists and, read from its header, has the JSON's height and width."""
    path = input_image_path(image_dir, annotation)
    if not os.path.isfile(path):
        return [Problem(path, "the input image does not exist", annotation.get("image_id"))]
    try:
        with Image.open(path) as f:
            width, height = f.size
    except OSError as e:
        return [Problem(path, f"cannot be decoded: {e}", annotation.get("image_id"))]
    if image and (image.get("height"), image.get("width")) != (height, width):
        return [Problem(path, f"the image is {height} x {width}, "
                        f"{image.get('height')} x {image.get('width')} in the JSON",
                        annotation.get("image_id"))]
    return []


def fixed_annotations(annotations, measured):
    """A copy of ``annotations`` with ``area`` and ``bbox`` of every segment found in its PNG
    replaced by the measured ones ({image id: check_png's measured}). Returns (annotations,
    number of segments changed)."""
    fixed, changed = [], 0
    for annotation in annotations:
        if not isinstance(annotation, dict) or not isinstance(annotation.get("segments_info"), list):
            fixed.append(annotation)
            continue
        pixels = measured.get(annotation.get("image_id")) or {}
        segments = []
        for s in annotation["segments_info"]:
            if isinstance(s, dict) and s.get("id") in pixels:
                area, bbox = pixels[s["id"]]
                changed += (s.get("area"), s.get("bbox")) != (area, bbox)
                s = {**s, "area": area, "bbox": bbox}
            segments.append(s)
        fixed.append({**annotation, "segments_info": segments})
    return fixed, changed


def check_split(json_path, png_dir, image_dir=None):
    """Every check on a split: (problems, the loaded JSON or None, {image id: measured
    segments} for fixed_annotations)."""
    import json

    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        return [Problem(json_path, f"cannot be read as JSON: {e}")], None, {}
    problems = check_schema(data, json_path)
    if problems:
        return problems, None, {}
    problems = check_categories(data["categories"], json_path) + check_annotations(data, json_path)
    if not os.path.isdir(png_dir):
        return problems + [Problem(png_dir, "the PNG folder does not exist")], data, {}
    images = {i.get("id"): i for i in data["images"] if isinstance(i, dict)}
    measured = {}
    for annotation in data["annotations"]:
        if not (isinstance(annotation, dict) and annotation.get("file_name")
                and isinstance(annotation.get("segments_info"), list)):
            continue  # reported by check_annotations
        image = images.get(annotation.get("image_id"))
        found, measured[annotation.get("image_id")] = check_png(annotation, image, png_dir)
        problems += found
        if image_dir:
            problems += check_input_image(annotation, image, image_dir)
    return problems, data, measured

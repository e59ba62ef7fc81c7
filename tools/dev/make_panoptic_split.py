#!/usr/bin/env python
r"""Write a synthetic COCO-panoptic split and predictions for it, at any size, to time
tools/check_dataset.py and tools/analyze_panoptic.py (docs/ANALYSIS.md).

    python tools/dev/make_panoptic_split.py --output synthetic/ --images 5000 --size 64 --segments 20

Writes synthetic/gt.json + synthetic/gt/ (each image a Voronoi tiling into --segments segments:
COCO's 80 thing and 53 stuff categories, stuff classes at most once per image) and
synthetic/pred.json + synthetic/pred/ (the same tiling shifted by a few pixels, a tenth of the
segments given another category, a tenth erased).
"""
import argparse
import json
import os

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image

from detr_panoptic_d2.data.dataset_checks import segment_pixels

CATEGORIES = [{"id": i, "name": f"thing{i}", "isthing": 1, "color": [i, 0, 0]} for i in range(1, 81)] + [
    {"id": i, "name": f"stuff{i}", "isthing": 0, "color": [0, i, 0]} for i in range(81, 134)]


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for gt.json, gt/, pred.json, pred/")
    parser.add_argument("--images", type=int, default=5000, help="number of images (%(default)s, COCO val's)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (%(default)s)")
    parser.add_argument("--segments", type=int, default=20, help="segments per image (%(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def tiling(rng, size, n):
    """size x size ids 1..n: each pixel's nearest of n random seeds."""
    seeds = rng.random((n, 2)) * size
    ys, xs = np.mgrid[:size, :size]
    return (((ys[..., None] - seeds[:, 0]) ** 2 + (xs[..., None] - seeds[:, 1]) ** 2).argmin(-1) + 1).astype(np.uint32)


def write(folder, name, ids, classes, data, image_id):
    """Saves one PNG and appends its image and annotation entries to ``data``."""
    Image.fromarray(id2rgb(ids)).save(os.path.join(folder, name + ".png"))
    pixels = segment_pixels(ids)
    data["images"].append({"id": image_id, "file_name": name + ".jpg", "height": ids.shape[0], "width": ids.shape[1]})
    data["annotations"].append({"image_id": image_id, "file_name": name + ".png", "segments_info": [
        {"id": s, "category_id": c, "iscrowd": 0, "area": pixels[s][0], "bbox": pixels[s][1]}
        for s, c in classes.items() if s in pixels]})


def main(argv=None):
    args = get_parser().parse_args(argv)
    rng = np.random.default_rng(args.seed)
    splits = {k: {"images": [], "annotations": [], "categories": CATEGORIES} for k in ("gt", "pred")}
    for k in splits:
        os.makedirs(os.path.join(args.output, k), exist_ok=True)
    for index in range(1, args.images + 1):
        ids = tiling(rng, args.size, args.segments)
        stuff = rng.choice(np.arange(81, 134), size=args.segments // 4, replace=False)
        things = rng.integers(1, 81, size=args.segments - len(stuff))
        classes = {s + 1: int(c) for s, c in enumerate(np.concatenate([stuff, things]))}
        write(os.path.join(args.output, "gt"), f"{index:06d}", ids, classes, splits["gt"], index)
        shifted = np.roll(ids, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
        draws = rng.random(len(classes))
        shifted[np.isin(shifted, [s for s, d in zip(classes, draws) if d < 0.1])] = 0
        predicted = {s: (int(rng.integers(1, 81)) if c <= 80 else c) if d < 0.2 else c
                     for (s, c), d in zip(classes.items(), draws) if d >= 0.1}
        write(os.path.join(args.output, "pred"), f"{index:06d}", shifted, predicted, splits["pred"], index)
    for k, data in splits.items():
        with open(os.path.join(args.output, k + ".json"), "w") as f:
            json.dump(data, f)
    print(f"Wrote {args.images} images, {sum(len(a['segments_info']) for a in splits['gt']['annotations'])} "
          f"segments to {args.output}")


if __name__ == "__main__":
    main()

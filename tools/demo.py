#!/usr/bin/env python
r"""Panoptic segmentation of images with a DETR panoptic model, in the manner of Detectron2's demo.

    python tools/demo.py --config-file configs/coco/detr_R50_panoptic.yaml \
        --input photos/*.jpg --output out/ --opts MODEL.WEIGHTS models/detr_R50_panoptic.pth

Writes <output>/<image name>.png (Detectron2's panoptic visualization, class names from the
metadata of DATASETS.TEST[0]); with --save-coco-panoptic also <output>/coco_panoptic/<name>.png
(segment ids in COCO's RGB encoding) and <output>/coco_panoptic.json (segments with the
dataset's category ids). Runs on the GPU when MODEL.DEVICE is cuda and one is available, else
on the CPU.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

from detr_panoptic_d2.data.image_io import read_image
from detr_panoptic_d2.panoptic_export import coco_categories, draw_panoptic, to_coco_panoptic
from detr_panoptic_d2.tool_setup import add_inference_arguments, start_inference_tool


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_arguments(parser, output_help="folder for the outputs (created if needed)")
    parser.add_argument(
        "--save-coco-panoptic", action="store_true", help="also write COCO panoptic PNGs and a predictions JSON"
    )
    return parser


def _save_png(array, path):
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def main(argv=None):
    args = get_parser().parse_args(argv)
    paths, predictor, metadata = start_inference_tool(args)
    coco_dir = os.path.join(args.output, "coco_panoptic")
    if args.save_coco_panoptic:
        os.makedirs(coco_dir, exist_ok=True)
    annotations = []
    for path in tqdm(paths, desc="images", unit="img"):
        image = read_image(path, format="BGR")
        panoptic_seg, segments_info = predictor(image)["panoptic_seg"]
        name = os.path.splitext(os.path.basename(path))[0]
        picture = draw_panoptic(image[:, :, ::-1], panoptic_seg, segments_info, metadata)
        _save_png(picture, os.path.join(args.output, f"{name}.png"))
        if args.save_coco_panoptic:
            png, segments = to_coco_panoptic(panoptic_seg, segments_info, metadata)
            _save_png(png, os.path.join(coco_dir, f"{name}.png"))
            annotations.append({"image_id": name, "file_name": f"{name}.png", "segments_info": segments})
    if args.save_coco_panoptic:
        with open(os.path.join(args.output, "coco_panoptic.json"), "w", encoding="utf-8") as f:
            json.dump({"annotations": annotations, "categories": coco_categories(metadata)}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
r"""The pipeline inspector: for each image, an HTML page showing what every step of the DETR
panoptic pipeline produced (input, encoded image, per kept object its box and class, M attention
heat-maps, mask logits and binary mask, and the final argmax panoptic map).

    python tools/inspect_pipeline.py --config-file configs/coco/detr_R50_panoptic.yaml \
        --input photo.jpg --output inspect/ --opts MODEL.WEIGHTS models/detr_R50_panoptic.pth

Writes <output>/<image name>/index.html (open it in a browser) with its PNGs, and
<output>/index.html linking the pages.
"""
import argparse
import sys

from tqdm import tqdm

from detr_panoptic_d2.inspection import inspect_images
from detr_panoptic_d2.predict.cli import add_inference_arguments, start_inference_tool


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_arguments(parser, output_help="folder for the pages (created if needed)", exported=False)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    paths, predictor, metadata = start_inference_tool(args)
    inspect_images(predictor, metadata, tqdm(paths, desc="images", unit="img"), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The pipeline inspector: for each image, an HTML page showing what every step of the DETR
panoptic pipeline produced (input, encoded image, per kept object its box and class, M attention
heat-maps, mask logits and binary mask, and the final argmax panoptic map).

    python tools/inspect_pipeline.py --config-file configs/coco/detr_R50_panoptic.yaml \
        --input photo.jpg --output inspect/ --opts MODEL.WEIGHTS models/detr_R50_panoptic.pth

Writes <output>/<image name>/index.html (open it in a browser) with its PNGs, and
<output>/index.html linking the pages.
"""
import argparse
import html
import os
import sys
from urllib.parse import quote

from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from detr_panoptic_d2.inspection import trace_pipeline, write_pipeline_page
from detr_panoptic_d2.tool_setup import build_predictor, list_images, setup_inference_cfg


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--input", nargs="+", required=True, help="image files, glob patterns or folders")
    parser.add_argument("--output", required=True, help="folder for the pages (created if needed)")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="keep queries whose best class probability exceeds this (MODEL.DETR.TEST.OBJECT_SCORE_THRESH)",
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config options: KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="detr_panoptic_d2")
    cfg = setup_inference_cfg(args.config_file, args.opts, args.confidence_threshold)
    paths = list_images(args.input)
    predictor, metadata = build_predictor(cfg)
    links = []
    for path in tqdm(paths, desc="images", unit="img"):
        image = read_image(path, format="BGR")
        name = os.path.splitext(os.path.basename(path))[0]
        trace = trace_pipeline(predictor, image)
        write_pipeline_page(trace, image[:, :, ::-1], metadata, os.path.join(args.output, name), os.path.basename(path))
        links.append(f'<li><a href="{quote(name)}/index.html">{html.escape(os.path.basename(path))}</a></li>')
    with open(os.path.join(args.output, "index.html"), "w", encoding="utf-8") as f:
        f.write('<!DOCTYPE html><html><head><meta charset="utf-8"><title>DETR pipeline</title></head><body>')
        f.write("<h1>DETR panoptic pipeline</h1><ul>" + "".join(links) + "</ul></body></html>\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

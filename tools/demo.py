#!/usr/bin/env python
r"""Panoptic segmentation of images with a DETR panoptic model, in the manner of Detectron2's demo.

    python tools/demo.py --config-file configs/coco/detr_R50_panoptic.yaml \
        --input photos/ --output out/ --batch-size 4 --num-workers 4 \
        --opts MODEL.WEIGHTS models/detr_R50_panoptic.pth

Writes <output>/<image name>.png (Detectron2's panoptic visualization, class names from the
metadata of DATASETS.TEST[0]); with --save-coco-panoptic also <output>/coco_panoptic/<name>.png
(segment ids in COCO's RGB encoding) with its segments in <output>/coco_panoptic/<name>.json,
and <output>/coco_panoptic.json merging them (dataset category ids). Every file is written
atomically. An image that cannot be read is reported with the reason and skipped; the exit
status is then 1. --skip-existing continues a killed run. --num-gpus N runs N processes (one
per GPU, or CPU processes without GPUs), each on its share of the images. Runs on the GPU when
MODEL.DEVICE is cuda and one is available, else on the CPU.

    python tools/demo.py --config-file CONFIG --video-input clip.mp4 --output clip_panoptic.avi \
        --opts MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file CONFIG --webcam --opts MODEL.WEIGHTS model_final.pth

--video-input writes every frame annotated to --output (a .avi or .mp4 file, or a folder:
<folder>/<video name>.avi) at the input's frame rate, with Detectron2's VideoVisualizer (a
segment keeps its colour from frame to frame) and a progress bar; a frame that cannot be
decoded is reported and skipped (exit status 1), the others are written. --webcam shows the
annotated frames of camera 0 live (Esc quits). Both run in one process.
"""
import argparse
import sys

import torch.multiprocessing as mp
from detectron2.engine import launch

from detectron2.utils.logger import setup_logger

from detr_panoptic_d2.predict import run_demo_process
from detr_panoptic_d2.predict.cli import add_inference_arguments, build_predictor, setup_inference_cfg
from detr_panoptic_d2.predict.video import FrameDrawer, UnreadableVideo, annotate_video, show_webcam


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_arguments(
        parser, output_help="folder for the outputs (created if needed); with --video-input the video file to write",
        images_required=False,
    )
    parser.add_argument("--video-input", metavar="FILE", default=None, help="a video file to annotate (instead of --input)")
    parser.add_argument("--webcam", action="store_true", help="annotate camera 0 live (instead of --input)")
    parser.add_argument(
        "--save-coco-panoptic", action="store_true", help="also write COCO panoptic PNGs and a predictions JSON"
    )
    parser.add_argument(
        "--skip-existing", action="store_true",
        help="leave the images whose outputs all exist (continues a killed run; the JSON still lists them)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1,
        help="images per model call; only images of the same size after the test-time resize are batched "
        "together, so results do not depend on it (%(default)s)",
    )
    parser.add_argument(
        "--num-workers", type=int, default=0, help="processes reading and decoding images (0: the main one)"
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine: one per GPU (CPU processes without GPUs)")
    parser.add_argument("--num-machines", type=int, default=1, help="machines taking part (%(default)s)")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (0 .. num-machines - 1)")
    parser.add_argument(
        "--dist-url", default="auto",
        help="tcp://<machine 0>:<port> with several machines (auto: a free local port, one machine)",
    )
    return parser


def run_video(args):
    """--video-input or --webcam, in this process. Returns the exit status."""
    setup_logger(name="detr_panoptic_d2")
    cfg = setup_inference_cfg(args.config_file, args.opts, args.confidence_threshold, args.register)
    drawer = FrameDrawer(*build_predictor(cfg, args.onnx))
    try:
        if args.webcam:
            show_webcam(drawer)
            return 0
        _, broken = annotate_video(drawer, args.video_input, args.output)
    except UnreadableVideo as e:
        raise SystemExit(str(e)) from e
    return 1 if broken else 0


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    sources = [name for name in ("input", "video_input", "webcam") if getattr(args, name)]
    if len(sources) != 1:
        parser.error("give one of --input, --video-input and --webcam")
    if not args.webcam and not args.output:
        parser.error("--output is required with --input and --video-input")
    if args.video_input or args.webcam:
        return run_video(args)
    for name, least in (("batch_size", 1), ("num_workers", 0), ("num_gpus", 1), ("num_machines", 1)):
        if getattr(args, name) < least:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}")
    failed = mp.get_context("spawn").Value("i", 0)
    launch(
        run_demo_process, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
        dist_url=args.dist_url, args=(args, failed),
    )
    return 1 if failed.value else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
r"""Export a DETR panoptic model for deployment, in the manner of Detectron2's deploy tool.

    python tools/export_model.py --config-file configs/coco/detr_R50_panoptic.yaml \
        --format onnx --output exported/ MODEL.WEIGHTS models/detr_R50_panoptic.pth

Writes <output>/model.onnx (one uint8 C x H x W image in INPUT.FORMAT, after the test-time
resize, and the score threshold -> per-query scores, classes, boxes and the kept queries'
mask logits; opset 17) and <output>/model.json (classes, thing/stuff ids, input format,
normalization, test-time resize, post-processing values, the config sizes and their
fingerprint). The classes come with the model: those its checkpoint names, or the
dataset's. Run it with tools/demo.py --onnx, tools/train_net.py --eval-only --onnx,
or detr_panoptic_d2.export.OnnxPanopticModel. Trailing KEY VALUE pairs override the config.
"""
import argparse
import logging
import sys

from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.data.user_datasets import add_register_argument
from detr_panoptic_d2.predict.cli import setup_inference_cfg, use_checkpoint_classes

logger = logging.getLogger("detr_panoptic_d2")
FORMATS = ["onnx", "torch-export"]


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (torch-export: see docs/EXPORT.md)")
    parser.add_argument("--output", required=True, help="folder for model.onnx and model.json (created if needed)")
    parser.add_argument(
        "--top-k", type=int, default=None,
        help="static shapes: mask logits of the K best-scoring queries with a validity flag, instead of those "
        "of the queries that pass the threshold (dynamic count; the default)",
    )
    add_register_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config options: KEY VALUE pairs")
    return parser


def main(argv=None):
    from detr_panoptic_d2.export import export_onnx

    args = get_parser().parse_args(argv)
    setup_logger(name="detr_panoptic_d2")
    if args.format == "torch-export":
        raise SystemExit(
            "--format torch-export is not available: torch.export cannot trace the data-dependent number of kept "
            "queries through the mask head's GroupNorm (see docs/EXPORT.md); use --format onnx"
        )
    cfg = setup_inference_cfg(args.config_file, args.opts, register=args.register)
    use_checkpoint_classes(cfg)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetrCheckpointer(model, datasets=cfg.DATASETS.TEST[:1]).load_complete(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting random weights")
    path = export_onnx(cfg, model.cpu(), args.output, top_k=args.top_k)
    logger.info(f"Wrote {path} and its model.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
r"""Convert a DETR checkpoint into a Detectron2 checkpoint of this project's DetrPanoptic.

Sources: the official DETR models (facebookresearch/detr: detr-r50-panoptic-00ce5173.pth,
detr-r50-dc5-panoptic-da08f1b1.pth, detr-r101-panoptic-40021d53.pth and the box-only COCO
ones) and HuggingFace DetrForSegmentation / DetrForObjectDetection weights (model.safetensors,
pytorch_model.bin, or the model folder). The class head of the released models is re-indexed
from COCO category ids to Detectron2's contiguous ids (see --classes).

    python tools/convert_detr_checkpoint.py detr-r50-panoptic-00ce5173.pth models/detr_R50_panoptic.pth
    python tools/train_net.py --config-file configs/coco/detr_R50_panoptic.yaml --eval-only \
        MODEL.WEIGHTS models/detr_R50_panoptic.pth

MODEL.WEIGHTS may also name the source itself: it is converted on load the same way.
"""
import argparse
import sys

from detectron2.utils.logger import setup_logger

from detr_panoptic_d2.checkpoint import UnsafeCheckpointError, convert_checkpoint
from detr_panoptic_d2.data.user_datasets import add_register_argument, register_config_splits, split_entry


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="official .pth, HuggingFace .safetensors / .bin file, or a HuggingFace folder")
    parser.add_argument("output", help="Detectron2 checkpoint to write (.pth)")
    parser.add_argument(
        "--classes",
        default="auto",
        metavar="auto|keep|DATASET",
        help="class-head rows: 'auto' re-indexes the released models (251 rows -> coco_2017_val_panoptic, "
        "92 rows -> coco_2017_val); 'keep' leaves rows as they are (already contiguous ids); a registered "
        "dataset name re-indexes rows given by that dataset's category ids (default: auto)",
    )
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="unpickle arbitrary objects in the source (only for files you trust); by default only tensors, "
        "plain containers and argparse.Namespace are loaded",
    )
    add_register_argument(parser)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    logger = setup_logger(name="detr_panoptic_d2")
    register_config_splits([split_entry(*values) for values in args.register], key="--register")
    try:
        conversion = convert_checkpoint(args.source, args.output, args.classes, allow_unsafe=args.unsafe_load)
    except (UnsafeCheckpointError, FileNotFoundError, KeyError, ValueError) as e:
        logger.error(f"{type(e).__name__}: {e.args[0] if e.args else e}")
        return 1
    classes = "kept as they are" if conversion.classes == "keep" else f"re-indexed to {conversion.classes}"
    logger.info(
        f"Converted {args.source} ({conversion.source_format} layout, {len(conversion.state)} tensors; "
        f"class rows {classes}) -> {args.output}"
    )
    logger.info("Config options this checkpoint fits: " + " ".join(conversion.opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

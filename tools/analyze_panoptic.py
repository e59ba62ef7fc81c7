#!/usr/bin/env python
r"""Where panoptic quality is lost: per-class PQ, errors by type, class and size, PQ lost per
error type, the worst images drawn (detr_panoptic_d2/analysis/, docs/ANALYSIS.md).

    python tools/analyze_panoptic.py --gt-json gt/panoptic_val.json --gt-dir gt/panoptic_val \
        --pred-json out/coco_panoptic.json --pred-dir out/coco_panoptic --output analysis/
    python tools/analyze_panoptic.py --dataset shapes_panoptic_val \
        --pred-json out/coco_panoptic.json --pred-dir out/coco_panoptic --output analysis/

Ground truth: a registered dataset (--dataset; --register or --config-file register yours) or
COCO panoptic files (--gt-json, --gt-dir, optional --image-dir for the pictures). Predictions:
COCO panoptic files as tools/demo.py --save-coco-panoptic and the evaluator write them.
Writes analysis.json, summary.txt (also printed), pq_lost.png and worst/<image>.png.
"""
import argparse

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata

from detr_panoptic_d2.analysis.inputs import PanopticFiles, paired_annotations
from detr_panoptic_d2.analysis.run import image_paths_from_folder, run_analysis
from detr_panoptic_d2.data import panoptic_metadata
from detr_panoptic_d2.engine.any_config import add_tool_dataset_arguments, register_tool_datasets


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gt = parser.add_mutually_exclusive_group(required=True)
    gt.add_argument("--dataset", help="ground truth: a registered COCO-panoptic-format dataset")
    gt.add_argument("--gt-json", help="ground truth: a COCO panoptic JSON (with --gt-dir)")
    parser.add_argument("--gt-dir", help="the ground truth's PNG folder (with --gt-json)")
    parser.add_argument("--image-dir", help="the input images (with --gt-json; for the pictures only)")
    parser.add_argument("--pred-json", required=True, help="predictions: a COCO panoptic JSON")
    parser.add_argument("--pred-dir", required=True, help="the predictions' PNG folder")
    parser.add_argument("--output", required=True, help="folder for the report, plot and pictures")
    parser.add_argument("--worst", type=int, default=8, help="pictures of the N images of lowest PQ (%(default)s)")
    add_tool_dataset_arguments(parser)
    return parser


def ground_truth(args):
    """(PanopticFiles, metadata, {image id: input path}) of the ground truth the arguments name."""
    if args.dataset:
        register_tool_datasets(args.config_file, args.opts, args.register)
        dicts = DatasetCatalog.get(args.dataset)  # also writes the files of generated splits
        meta = MetadataCatalog.get(args.dataset)
        gt = PanopticFiles.load(meta.panoptic_json, meta.panoptic_root, option="--dataset")
        return gt, meta, {d["image_id"]: d["file_name"] for d in dicts}
    if not args.gt_dir:
        raise SystemExit("--gt-json needs --gt-dir (the ground truth's PNG folder)")
    gt = PanopticFiles.load(args.gt_json, args.gt_dir)
    meta = Metadata(name=args.gt_json).set(**panoptic_metadata(gt.data["categories"]))
    return gt, meta, image_paths_from_folder(gt, args.image_dir) if args.image_dir else {}


def main(argv=None):
    args = get_parser().parse_args(argv)
    gt, meta, images = ground_truth(args)
    pred = PanopticFiles.load(args.pred_json, args.pred_dir, option="--pred-json")
    report = run_analysis(gt, pred, paired_annotations(gt, pred), args.output, meta, images, args.worst)
    with open(f"{args.output}/summary.txt", encoding="utf-8") as f:
        print(f.read())
    return report


if __name__ == "__main__":
    main()

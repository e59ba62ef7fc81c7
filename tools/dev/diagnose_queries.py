#!/usr/bin/env python
"""Diagnose a checkpoint's queries on a dataset with ground truth (detr_panoptic_d2/protocol/diagnosis.py):
class accuracy of the queries matched to real segments, mean IoU of their masks, recall of the
segments at the score threshold, duplicates (kept queries overlapping a matched one) and false
positives per image.

    tools/dev/diagnose_queries.py --config-file configs/shapes/detr_R18_shapes.yaml \\
        MODEL.WEIGHTS output/shapes/detr_R18_shapes/model_final.pth

The images go through the test-time resize only; the threshold is MODEL.DETR.TEST.OBJECT_SCORE_THRESH
unless --threshold is given. Trailing KEY VALUE pairs override the config.
"""
import argparse
import json

import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.data import DetrPanopticDatasetMapper, build_detr_augmentation, dataset_class_ids
from detr_panoptic_d2.engine import load_config
from detr_panoptic_d2.protocol.diagnosis import diagnose_image, summarize_diagnosis


def argument_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default=None, help="a registered panoptic dataset (DATASETS.TEST[0])")
    p.add_argument("--threshold", type=float, default=None, help="score threshold of kept queries (the config's)")
    p.add_argument("--duplicate-iou", type=float, default=0.5, help="mask IoU with a matched query that makes a duplicate (%(default)s)")
    p.add_argument("--max-images", type=int, default=0, help="diagnose the first N images only (0: all)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the summary as JSON")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (MODEL.WEIGHTS ...)")
    return p


def main(argv=None):
    args = argument_parser().parse_args(argv)
    cfg, _ = load_config(args.config_file, args.opts, eval_only=True)
    name = args.dataset or cfg.DATASETS.TEST[0]
    model = build_model(cfg).eval()
    DetrCheckpointer(model).load_complete(cfg.MODEL.WEIGHTS)
    mapper = DetrPanopticDatasetMapper(
        is_train=True, augmentations=build_detr_augmentation(cfg, is_train=False), image_format=cfg.INPUT.FORMAT,
        dataset_name=name, class_ids=dataset_class_ids(name),
    )
    dicts = DatasetCatalog.get(name)[: args.max_images or None]
    threshold = cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH if args.threshold is None else args.threshold
    with torch.no_grad():
        per_image = [diagnose_image(model, mapper(d), threshold, args.duplicate_iou) for d in dicts]
    summary = {"dataset": name, "threshold": threshold, **summarize_diagnosis(per_image)}
    for key, value in summary.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()

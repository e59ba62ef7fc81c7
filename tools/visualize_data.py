#!/usr/bin/env python
r"""Draw a split's ground truth, to check a dataset before training (Detectron2's tool, for
COCO-panoptic splits).

    python tools/visualize_data.py --config-file configs/shapes/detr_R18_shapes.yaml \
        --source annotation --output-dir vis/
    python tools/visualize_data.py --config-file output/mine/config.yaml --source dataloader \
        --output-dir vis/ --dataset mine_val INPUT.CROP.ENABLED False

--source annotation: each image with its panoptic annotation (segments and class names, as
loaded from the JSON and PNGs). --source dataloader: each image as the training mapper feeds it
to the model (DETR's augmentation drawn once), with its targets: one box and mask per segment,
the class names. One picture per image: <output-dir>/<image name>.png. Images come from the
config's training datasets (or --dataset). yaml or LazyConfig; trailing KEY VALUE pairs
(LazyConfig: a.b=c) override the config; --register adds a split on disk.
"""
import argparse
import copy
import os
import sys

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from PIL import Image
from tqdm import tqdm

from detr_panoptic_d2.data.image_io import read_image
from detr_panoptic_d2.data.metadata import class_names
from detr_panoptic_d2.data.user_datasets import add_register_argument
from detr_panoptic_d2.engine.any_config import load_any_config


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["annotation", "dataloader"], required=True,
                        help="annotation: the ground truth as loaded; dataloader: as the training mapper feeds it")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--output-dir", required=True, help="folder for the pictures (created if needed)")
    parser.add_argument("--dataset", default=None, help="a registered split (default: the config's training ones)")
    parser.add_argument("--show", action="store_true", help="also show each picture in a window")
    add_register_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config options: KEY VALUE pairs")
    return parser


def draw_annotation(record, metadata):
    """The RGB picture of a dataset record's panoptic annotation (Detectron2's draw_dataset_dict)."""
    record = copy.deepcopy(record)
    record.pop("sem_seg_file_name", None)  # the panoptic PNG already shows every class
    image = read_image(record["file_name"], format="RGB")
    return Visualizer(image, metadata).draw_dataset_dict(record).get_image()


def draw_mapped(mapped, metadata, image_format):
    """The RGB picture of a mapper output: its image with one box, mask and class name per target."""
    image = mapped["image"].permute(1, 2, 0).numpy()
    image = image[:, :, ::-1] if image_format == "BGR" else image
    targets = mapped["instances"]
    names = class_names(metadata)
    classes = targets.gt_classes.tolist()
    colors = metadata.get("stuff_colors", None) or metadata.get("thing_colors", None)
    visualizer = Visualizer(np.ascontiguousarray(image), metadata)
    return visualizer.overlay_instances(
        labels=[names[c] if c < len(names) else str(c) for c in classes],
        boxes=targets.gt_boxes,
        masks=targets.gt_masks.tensor.numpy(),
        assigned_colors=[np.asarray(colors[c]) / 255 for c in classes] if colors else None,
    ).get_image()


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="detr_panoptic_d2")
    config = load_any_config(args.config_file, args.opts, args.register)
    names = [args.dataset] if args.dataset else config.train_names
    os.makedirs(args.output_dir, exist_ok=True)
    written = {}
    for name in names:
        metadata = MetadataCatalog.get(name)
        mapper = config.mapper(True, name) if args.source == "dataloader" else None
        for record in tqdm(DatasetCatalog.get(name), desc=name, unit="img"):
            if mapper is None:
                picture = draw_annotation(record, metadata)
            else:
                picture = draw_mapped(mapper(copy.deepcopy(record)), metadata, mapper.image_format)
            stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
            if written.setdefault(stem, record["file_name"]) != record["file_name"]:
                raise ValueError(f"{written[stem]} and {record['file_name']} have the same name; pictures would collide")
            Image.fromarray(picture).save(os.path.join(args.output_dir, f"{stem}.png"))
            if args.show:
                import cv2

                cv2.imshow("visualize_data", picture[:, :, ::-1])
                cv2.waitKey()
    print(f"Wrote {len(written)} pictures to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

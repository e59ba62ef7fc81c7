#!/usr/bin/env python
r"""Write the semantic PNGs that mIoU needs (MODEL.DETR.TEST.SEMANTIC_ON) from a COCO-panoptic split.

    python tools/prepare_semantic_pngs.py --json mine/panoptic_val.json --png-dir mine/panoptic_val \
        --output mine/semantic_val

Writes <output>/<PNG name> for every annotation: one channel, the contiguous class id of each
pixel as every tool here numbers the split's classes (things first, then stuff, in the JSON's
order), 255 where no segment is. Give the folder as the split's sem_seg_dir in DATASETS.REGISTER.
"""
import argparse
import sys

from detr_panoptic_d2.data.preparation import write_semantic_pngs


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="the split's COCO panoptic JSON")
    parser.add_argument("--png-dir", required=True, help="its panoptic PNG folder")
    parser.add_argument("--output", required=True, help="folder for the semantic PNGs (created if needed)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    count = write_semantic_pngs(args.json, args.png_dir, args.output)
    print(f"Wrote {count} semantic PNGs to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
r"""Convert COCO instance annotations (and, optionally, stuff PNGs) to a COCO-panoptic split.

    python tools/convert_instances_to_panoptic.py --instances mine/instances_train.json \
        --output-json mine/panoptic_train.json --output-dir mine/panoptic_train
    python tools/convert_instances_to_panoptic.py --instances mine/instances_train.json \
        --stuff-dir mine/stuff_train --stuff-categories mine/stuff_categories.json \
        --output-json mine/panoptic_train.json --output-dir mine/panoptic_train

Things: one segment per instance annotation (polygons or RLE); pixels two instances share go to
the earlier one (--overlap first, counted in the summary) or stop the conversion (--overlap
error); an instance left without pixels is dropped and listed. Stuff: <stuff-dir>/<image
stem>.png, one channel of stuff category ids (0 and 255: unlabeled), the categories in
--stuff-categories (a JSON list of {"id", "name"}, optional "color"); what no thing covers
becomes one segment per class. Then register the split (--register or DATASETS.REGISTER).
"""
import argparse
import json
import sys

from detr_panoptic_d2.data.preparation import instances_to_panoptic


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--instances", required=True, help="COCO instances JSON (its categories are the things, but for stuff ones)"
    )
    parser.add_argument("--stuff-dir", default=None, help="folder of stuff PNGs, <image stem>.png (optional)")
    parser.add_argument("--stuff-categories", default=None, help="JSON list of the stuff categories (with --stuff-dir)")
    parser.add_argument("--overlap", choices=["first", "error"], default="first", help="shared pixels (%(default)s)")
    parser.add_argument("--output-json", required=True, help="COCO panoptic JSON to write")
    parser.add_argument("--output-dir", required=True, help="folder for the panoptic PNGs (created if needed)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if bool(args.stuff_dir) != bool(args.stuff_categories):
        raise SystemExit("--stuff-dir and --stuff-categories go together")
    stuff = []
    if args.stuff_categories:
        with open(args.stuff_categories) as f:
            stuff = json.load(f)
    summary = instances_to_panoptic(
        args.instances, args.output_json, args.output_dir, args.stuff_dir, stuff, overlap=args.overlap
    )
    print(
        f"Wrote {args.output_json} and {summary['images']} PNGs in {args.output_dir}: {summary['segments']} segments; "
        f"{summary['overlapping_pixels']} pixels shared by instances given to the earlier one; "
        f"{len(summary['dropped'])} instances left without pixels dropped" + (f" (ids {summary['dropped'][:20]})" if summary["dropped"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

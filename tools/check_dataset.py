#!/usr/bin/env python
r"""Check a COCO-panoptic-format split before training: report every problem, with the file
and segment at fault; exit status 0 only when nothing is wrong, 1 otherwise.

    python tools/check_dataset.py --json mine/panoptic_val.json --png-dir mine/panoptic_val --image-dir mine/val
    python tools/check_dataset.py --dataset shapes_panoptic_val

The checks (detr_panoptic_d2/data/dataset_checks.py): the JSON's schema and category table
(unique ids and names, isthing 0/1, colours); images and annotations one to one; each segment's
id, declared category, iscrowd, area and bbox; each PNG exists, decodes as RGB at its image's
size and holds exactly the segment ids of its segments_info, with their area and bbox; a stuff
class in one segment per image; with --image-dir, each input image (<PNG stem>.jpg) exists at
the JSON's size. --write-fixed OUT.json writes a copy of the JSON with area and bbox measured
from the PNGs (the fixes that are certain); it never overwrites a file.
"""
import argparse
import json
import os
import sys

from detectron2.data import DatasetCatalog, MetadataCatalog

from detr_panoptic_d2.atomic_files import atomic_write
from detr_panoptic_d2.data.dataset_checks import check_split, fixed_annotations
from detr_panoptic_d2.engine.any_config import add_tool_dataset_arguments, register_tool_datasets


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    split = parser.add_mutually_exclusive_group(required=True)
    split.add_argument("--json", help="the split's COCO panoptic JSON (with --png-dir)")
    split.add_argument("--dataset", help="a registered COCO-panoptic-format dataset")
    parser.add_argument("--png-dir", help="the split's panoptic PNG folder (with --json)")
    parser.add_argument("--image-dir", help="the split's input images, <PNG stem>.jpg (with --json)")
    parser.add_argument("--write-fixed", metavar="OUT.json",
                        help="write the JSON with area and bbox measured from the PNGs (never over a file)")
    add_tool_dataset_arguments(parser)
    return parser


def split_files(args):
    """(JSON, PNG folder, image folder or None) of the split the arguments name."""
    if args.json:
        if not args.png_dir:
            raise SystemExit("--json needs --png-dir (the split's panoptic PNG folder)")
        return args.json, args.png_dir, args.image_dir
    register_tool_datasets(args.config_file, args.opts, args.register)
    if args.dataset not in DatasetCatalog.list():
        raise SystemExit(f"--dataset {args.dataset}: not registered (use --register or --config-file)")
    try:
        DatasetCatalog.get(args.dataset)  # writes the files of generated splits
    except Exception as e:  # noqa: BLE001 - the checks below name every problem
        print(f"Loading {args.dataset!r} failed ({e}); checking its files")
    meta = MetadataCatalog.get(args.dataset)
    return meta.panoptic_json, meta.panoptic_root, meta.get("image_root", None)


def write_fixed(out, json_path, data, measured):
    """Writes ``data`` with measured area and bbox to ``out``; SystemExit when ``out`` is the
    input or exists."""
    if os.path.exists(out):
        same = os.path.samefile(out, json_path) if os.path.exists(json_path) else False
        raise SystemExit(f"--write-fixed {out}: {'that is the input JSON' if same else 'the file exists'}; "
                         "not overwriting it, choose a new path")
    annotations, changed = fixed_annotations(data["annotations"], measured)
    text = json.dumps({**data, "annotations": annotations}).encode("utf-8")
    atomic_write(out, lambda f: f.write(text))
    print(f"Wrote {out}: area or bbox of {changed} segments replaced by the PNGs' values")


def main(argv=None):
    args = get_parser().parse_args(argv)
    json_path, png_dir, image_dir = split_files(args)
    problems, data, measured = check_split(json_path, png_dir, image_dir)
    for problem in problems:
        print(problem)
    segments = sum(len(a.get("segments_info", [])) for a in data["annotations"] if isinstance(a, dict)) if data else 0
    images = len(data["images"]) if data else 0
    print(f"{json_path}: {images} images, {segments} segments, {len(problems)} problems")
    if args.write_fixed:
        if data is None:
            raise SystemExit(f"--write-fixed: {json_path} cannot be read, nothing to fix")
        write_fixed(args.write_fixed, json_path, data, measured)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""tools/analyze_panoptic.py's work: analyse predictions against ground truth and write the
report, its plot and the pictures of the worst images into one folder.

Files written into ``output``: ``analysis.json`` (every number, ``report.DatasetErrors.report``
plus ``worst_images``), ``summary.txt`` (also printed), ``pq_lost.png`` and
``worst/<image>.png`` for the ``worst`` images of lowest PQ (images with no segment counted
have no PQ and are not ranked).
"""
import json
import math
import os

from PIL import Image
from tabulate import tabulate

from ..data.image_io import read_image
from .errors import ERROR_TYPES, classify_errors
from .per_class import per_class_table
from .pictures import draw_errors_picture, plot_pq_lost
from .report import analyze, match_files


def run_analysis(gt, pred, pairs, output, metadata, image_paths=None, worst=8):
    """gt, pred: inputs.PanopticFiles; pairs: their paired annotations; metadata: Detectron2
    panoptic metadata of the ground truth's categories; image_paths: {image id: input image
    path} for the pictures (missing: a grey canvas). Writes the files of the module docstring
    and returns the report dict."""
    errors = analyze(gt, pred, pairs)
    report = errors.report()
    os.makedirs(os.path.join(output, "worst"), exist_ok=True)
    ranked = sorted((i for i in errors.images if not math.isnan(i["pq"])), key=lambda i: i["pq"])[:worst]
    by_id = {g["image_id"]: (g, p) for g, p in pairs}
    report["worst_images"] = []
    for image in ranked:
        gt_ann, pred_ann = by_id[image["image_id"]]
        match, gt_ids, pred_ids = match_files(gt, pred, gt_ann, pred_ann, errors.categories)
        events = classify_errors(match)
        path = (image_paths or {}).get(image["image_id"])
        rgb = read_image(path, format="RGB") if path and os.path.isfile(path) else None
        if rgb is not None and rgb.shape[:2] != gt_ids.shape:
            rgb = None
        picture = os.path.join(output, "worst", os.path.splitext(gt_ann["file_name"])[0] + ".png")
        Image.fromarray(draw_errors_picture(rgb, match, events, gt_ids, pred_ids, metadata)).save(picture)
        report["worst_images"].append({**image, "picture": picture})
    plot_pq_lost(report["pq_lost"], os.path.join(output, "pq_lost.png"))
    with open(os.path.join(output, "analysis.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    text = summary_text(report, gt.json_path, pred.json_path)
    with open(os.path.join(output, "summary.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    return report


def summary_text(report, gt_json, pred_json):
    """The report in words and tables (what the tool prints)."""
    pq = report["pq"]
    lines = [
        f"Panoptic analysis of {pred_json} against {gt_json}: {report['images']} images",
        f"PQ {pq['all']['pq']:.1f} (things {pq['things']['pq']:.1f}, stuff {pq['stuff']['pq']:.1f}); "
        f"matched {report['matched']}, false negatives {report['false_negatives']}, "
        f"false positives {report['false_positives']}",
        "PQ by size: " + ", ".join(f"{k} {v['pq']:.1f} ({v['n']} classes)" if v["n"] else f"{k}: no segment"
                                   for k, v in report["pq_by_size"].items()),
        "",
        "Errors (events; the FN and FP they account for; PQ points gained if not counted):",
        tabulate([[t, report["errors"][t], report["errors_fn_fp"][t]["fn"], report["errors_fn_fp"][t]["fp"],
                   f"{report['pq_lost'][t]:.2f}"] for t in ERROR_TYPES],
                 headers=["type", "events", "FN", "FP", "PQ lost"], tablefmt="pipe"),
        "",
        "Errors by size:",
        tabulate([[size, *(counts[t] for t in ERROR_TYPES)] for size, counts in report["errors_by_size"].items()],
                 headers=["size", *ERROR_TYPES], tablefmt="pipe"),
        "",
        "Per class:",
        per_class_table(pq["per_class"]),
        "",
        "Errors by class:",
        tabulate([[name, *(counts[t] for t in ERROR_TYPES)] for name, counts in report["errors_by_class"].items()],
                 headers=["class", *ERROR_TYPES], tablefmt="pipe"),
        "",
    ]
    confusion = report["class_confusion"]
    pairs = [(confusion["matrix"][i][j], a, b) for i, a in enumerate(confusion["classes"])
             for j, b in enumerate(confusion["classes"]) if confusion["matrix"][i][j]]
    lines.append("Class confusion (ground truth -> prediction): "
                 + (", ".join(f"{a} -> {b} {n}" for n, a, b in sorted(pairs, reverse=True)) or "none"))
    if report.get("worst_images"):
        worst = ", ".join(f"{w['file_name']} {w['pq']:.1f}" for w in report["worst_images"])
        lines.append(f"Worst images (PQ): {worst}")
    return "\n".join(lines) + "\n"


def image_paths_from_folder(gt, image_dir):
    """{image id: path} of the inputs in ``image_dir``: ``<PNG stem>.jpg`` as Detectron2's
    loader reads them, else the ``file_name`` of the JSON's ``images`` entry."""
    names = {i["id"]: i.get("file_name") for i in gt.data.get("images", [])}
    paths = {}
    for annotation in gt.data["annotations"]:
        jpg = os.path.join(image_dir, os.path.splitext(annotation["file_name"])[0] + ".jpg")
        listed = os.path.join(image_dir, names.get(annotation["image_id"]) or "")
        paths[annotation["image_id"]] = jpg if os.path.isfile(jpg) else listed
    return paths


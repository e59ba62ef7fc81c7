"""Per-class panoptic quality, read from panopticapi's own statistics (``PQStat``).

``panoptic_statistics`` runs panopticapi's matching (``pq_compute_multi_core``, what
``pq_compute`` runs) and returns its ``PQStat``; ``pq_summary`` averages it with
``PQStat.pq_average`` into All / Things / Stuff and one row per class (PQ, SQ, RQ in percent,
TP, FP, FN). A class with no segment in the ground truth nor in the predictions (TP + FP + FN
= 0) is "absent": its PQ is None and, as in panopticapi, it does not count in the averages.
"""
import contextlib
import csv
import io
import json

from panopticapi.evaluation import pq_compute_multi_core
from tabulate import tabulate

KINDS = (("all", None), ("things", True), ("stuff", False))
COLUMNS = ("name", "id", "kind", "pq", "sq", "rq", "tp", "fp", "fn")


def panoptic_statistics(gt_json, pred_json, gt_folder, pred_folder):
    """panopticapi's PQStat of the predictions (COCO panoptic JSON path ``pred_json``, PNGs in
    ``pred_folder``) against the ground truth (``gt_json``, ``gt_folder``), and the categories
    {dataset id: category dict} of ``gt_json``. Every ground-truth image needs a prediction
    (ValueError naming the image otherwise); panopticapi's progress prints are silenced."""
    with open(gt_json, encoding="utf-8") as f:
        gt = json.load(f)
    with open(pred_json, encoding="utf-8") as f:
        predictions = {a["image_id"]: a for a in json.load(f)["annotations"]}
    pairs = []
    for annotation in gt["annotations"]:
        if annotation["image_id"] not in predictions:
            raise ValueError(f"{pred_json}: no prediction for image id {annotation['image_id']} of {gt_json}")
        pairs.append((annotation, predictions[annotation["image_id"]]))
    categories = {c["id"]: c for c in gt["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        return pq_compute_multi_core(pairs, gt_folder, pred_folder, categories), categories


def average(pq_stat, categories, isthing):
    """panopticapi's ``pq_average`` in percent: {"pq", "sq", "rq", "n"} over the present classes
    of the kind ``isthing`` (None: all); NaN values when no class of that kind is present."""
    present = {i: c for i, c in categories.items() if _counts(pq_stat, i) != (0, 0, 0)}
    if not any(isthing is None or (c["isthing"] == 1) == isthing for c in present.values()):
        return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}
    result, _ = pq_stat.pq_average(categories, isthing=isthing)
    return {**{k: 100 * result[k] for k in ("pq", "sq", "rq")}, "n": result["n"]}


def pq_summary(pq_stat, categories):
    """{"all", "things", "stuff": ``average``, "per_class": [row]}, a row per category of
    ``categories`` in its order: {"name", "id", "kind" ("thing"/"stuff"), "pq", "sq", "rq"
    (percent, None when absent), "tp", "fp", "fn"}."""
    summary = {name: average(pq_stat, categories, isthing) for name, isthing in KINDS}
    any_present = any(_counts(pq_stat, i) != (0, 0, 0) for i in categories)
    per_class = pq_stat.pq_average(categories, isthing=None)[1] if any_present else {}
    rows = []
    for i, category in categories.items():
        tp, fp, fn = _counts(pq_stat, i)
        present = tp + fp + fn > 0
        row = {"name": category["name"], "id": i, "kind": "thing" if category["isthing"] == 1 else "stuff"}
        row.update({k: 100 * per_class[i][k] if present else None for k in ("pq", "sq", "rq")})
        rows.append({**row, "tp": tp, "fp": fp, "fn": fn})
    summary["per_class"] = rows
    return summary


def _counts(pq_stat, category_id):
    stat = pq_stat.pq_per_cat.get(category_id)
    return (stat.tp, stat.fp, stat.fn) if stat is not None else (0, 0, 0)


def per_class_metrics(rows):
    """Per-class entries for a Detectron2 results dict: "PQ-<name>", "SQ-<name>", "RQ-<name>" of
    each present class (the "-" keeps them out of Detectron2's copypaste line, as its "AP-<name>"
    of COCOEvaluator; metrics.json and TensorBoard show them as "panoptic_seg/PQ-<name>")."""
    return {f"{k.upper()}-{r['name']}": r[k] for r in rows if r["pq"] is not None for k in ("pq", "sq", "rq")}


def per_class_table(rows):
    """The per-class rows as a text table (Detectron2's tabulate "pipe" format)."""
    data = [[r["name"], r["kind"], *(_fmt(r[k]) for k in ("pq", "sq", "rq")), r["tp"], r["fp"], r["fn"]] for r in rows]
    return tabulate(data, headers=["class", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN"], tablefmt="pipe",
                    stralign="center", numalign="center")


def _fmt(value):
    return "absent" if value is None else f"{value:.3f}"


def write_per_class(rows, json_path, csv_path):
    """Writes the per-class rows as JSON (a list of rows) and CSV (a row each, COLUMNS)."""
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

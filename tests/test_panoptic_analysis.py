"""The error analysis of tools/analyze_panoptic.py (detr_panoptic_d2/analysis/): hand-made
files where every error type occurs a known number of times, and panopticapi's pq_compute as
the oracle of the matching."""
import contextlib
import io
import json
import os

import numpy as np
from PIL import Image
import pytest
from panopticapi.evaluation import pq_compute

from detr_panoptic_d2.analysis.inputs import PanopticFiles, paired_annotations
from detr_panoptic_d2.analysis.report import analyze

from .panoptic_files import perturbed, read_split, write_split

CAT, DOG, GRASS, SKY = 1, 2, 10, 11


def hand_made():
    """One 40 x 100 image; void (0) wherever no segment is drawn. Ground truth: g1 (cat)
    rows 0-9 cols 0-9; g2 (cat) cols 20-29; g3, g4 (cat) cols 40-44 and 45-49; g5 (cat) cols
    60-69; g6 (cat) rows 20-29 cols 0-9; grass rows 30-39 (all columns); sky rows 20-29 cols
    50-99. Prediction: p1 (cat) g1's cols 0-7 (IoU 0.8, matched) and p2 (cat) its cols 8-9
    (a duplicate, IoU 0.2); p3 a dog exactly on g2 (class confusion); p4 (cat) over g3 and g4
    (merge; IoU 0.5 with each, not a match); p5, p6 (cat) g5's halves (split); p7 (cat) g6's
    cols 0-3 (near miss, IoU 0.4); no grass (missed stuff); sky exact."""
    gt = np.zeros((40, 100), np.uint32)
    gt[0:10, 0:10], gt[0:10, 20:30], gt[0:10, 40:45], gt[0:10, 45:50], gt[0:10, 60:70] = 1, 2, 3, 4, 5
    gt[20:30, 0:10], gt[30:40, :], gt[20:30, 50:100] = 6, 7, 8
    gt_classes = {1: CAT, 2: CAT, 3: CAT, 4: CAT, 5: CAT, 6: CAT, 7: GRASS, 8: SKY}
    pred = np.zeros((40, 100), np.uint32)
    pred[0:10, 0:8], pred[0:10, 8:10], pred[0:10, 20:30], pred[0:10, 40:50] = 11, 12, 13, 14
    pred[0:10, 60:65], pred[0:10, 65:70], pred[20:30, 0:4], pred[20:30, 50:100] = 15, 16, 17, 18
    pred_classes = {11: CAT, 12: CAT, 13: DOG, 14: CAT, 15: CAT, 16: CAT, 17: CAT, 18: SKY}
    return [(gt, gt_classes)], [(pred, pred_classes)]


def run(gt_files, pred_files):
    gt, pred = PanopticFiles.load(*gt_files), PanopticFiles.load(*pred_files, option="--pred-json")
    return analyze(gt, pred, paired_annotations(gt, pred)).report()


@pytest.fixture
def hand_made_files(tmp_path):
    gt_images, pred_images = hand_made()
    return write_split(str(tmp_path / "gt"), gt_images), write_split(str(tmp_path / "pred"), pred_images)


def test_every_error_type_counted_and_its_pq_loss(hand_made_files):
    report = run(*hand_made_files)
    assert report["errors_fn_fp"]["merge"] == {"fn": 2, "fp": 1} and report["errors_fn_fp"]["split"] == {"fn": 1, "fp": 2}
    assert report["errors"] == {"missed": 1, "class_confusion": 1, "near_miss": 1, "duplicate": 1,
                                "false_positive": 0, "merge": 1, "split": 1}
    assert report["errors_by_class"]["grass"]["missed"] == 1 and report["errors_by_class"]["cat"]["merge"] == 1
    classes = report["class_confusion"]["classes"]
    assert report["class_confusion"]["matrix"][classes.index("cat")][classes.index("dog")] == 1
    assert sum(map(sum, report["class_confusion"]["matrix"])) == 1
    # By hand: cat TP 1 (IoU 0.8), FN 5 (g2..g6), FP 5 (p2, p4, p5, p6, p7); dog FP 1; grass FN 1; sky TP 1.
    pq_cat = 0.8 / (1 + 5 / 2 + 5 / 2)
    rows = {r["name"]: r for r in report["pq"]["per_class"]}
    assert (rows["cat"]["tp"], rows["cat"]["fp"], rows["cat"]["fn"]) == (1, 5, 5)
    assert rows["cat"]["pq"] == pytest.approx(100 * pq_cat) and rows["dog"]["pq"] == 0 and rows["sky"]["pq"] == 100
    assert report["pq"]["all"]["pq"] == pytest.approx(100 * (pq_cat + 0 + 0 + 1) / 4)
    # PQ lost: the per-class gain with that type's FN and FP not counted, averaged over the 4 classes;
    # a class left with nothing (dog without p3, grass without its miss) counts 100.
    cat_without = {  # cat's PQ with the type's FN and FP removed
        "duplicate": 0.8 / (1 + 4 / 2 + 5 / 2), "merge": 0.8 / (1 + 4 / 2 + 3 / 2),
        "split": 0.8 / (1 + 3 / 2 + 4 / 2), "near_miss": 0.8 / (1 + 4 / 2 + 4 / 2),
        "class_confusion": 0.8 / (1 + 5 / 2 + 4 / 2),
    }
    expected = {t: 100 * (v - pq_cat) / 4 for t, v in cat_without.items()}
    expected["class_confusion"] += 100 * (1 - 0) / 4  # dog: from 0 to nothing left
    expected["missed"] = 100 * (1 - 0) / 4  # grass
    expected["false_positive"] = 0.0
    assert report["pq_lost"] == pytest.approx(expected)


def test_ground_truth_as_prediction_is_perfect(hand_made_files):
    gt_files, _ = hand_made_files
    report = run(gt_files, gt_files)
    assert report["pq"]["all"]["pq"] == pytest.approx(100)
    assert all(v == 0 for v in report["errors"].values()) and report["false_positives"] == 0
    assert report["pq_lost"] == {t: 0 for t in report["errors"]}


def test_matching_and_pq_equal_panopticapi(tmp_path):
    """Shapes ground truth (some segments made crowd, some void) against predictions shifted,
    relabelled and erased: the analysis's TP/FP/FN and PQ per class are pq_compute's."""
    from .helpers import write_panoptic_split

    gt_json, _, gt_dir = write_panoptic_split(tmp_path / "shapes", 12, seed=5)
    images, categories = read_split(gt_json, gt_dir)
    predictions = perturbed(images, categories)
    for ids, classes in images[1::2]:  # the last segment of every other image becomes void
        ids[ids == classes.popitem()[0]] = 0
    crowd = [(i, s) for i, (_, classes) in enumerate(images) for s in list(classes)[:1] if i % 3 == 0]
    gt_files = write_split(str(tmp_path / "gt"), images, categories, crowd=crowd)
    pred_files = write_split(str(tmp_path / "pred"), predictions, categories)
    report = run(gt_files, pred_files)
    with contextlib.redirect_stdout(io.StringIO()):
        oracle = pq_compute(gt_files[0], pred_files[0], gt_folder=gt_files[1], pred_folder=pred_files[1])
    for kind, name in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        assert report["pq"][kind]["pq"] == pytest.approx(100 * oracle[name]["pq"])
        assert report["pq"][kind]["n"] == oracle[name]["n"]
    for row in report["pq"]["per_class"]:
        assert row["pq"] == pytest.approx(100 * oracle["per_class"][row["id"]]["pq"])
        assert row["sq"] == pytest.approx(100 * oracle["per_class"][row["id"]]["sq"])
    # The counts behind it: pq_compute's PQStat, through the function pq_compute runs.
    from panopticapi.evaluation import pq_compute_single_core

    with open(gt_files[0]) as f, open(pred_files[0]) as g:
        pairs = list(zip(json.load(f)["annotations"], json.load(g)["annotations"]))
    with contextlib.redirect_stdout(io.StringIO()):
        stat = pq_compute_single_core(0, pairs, gt_files[1], pred_files[1], {c["id"]: c for c in categories})
    totals = [sum(getattr(s, k) for s in stat.pq_per_cat.values()) for k in ("tp", "fn", "fp")]
    assert [report["matched"], report["false_negatives"], report["false_positives"]] == totals
    assert 0 < totals[0] and totals[1] > 0 and totals[2] > 0
    # Every false negative and false positive has exactly one error type.
    by_type = report["errors_fn_fp"].values()
    assert [sum(t["fn"] for t in by_type), sum(t["fp"] for t in by_type)] == totals[1:]
    assert sum(v > 0 for v in report["errors"].values()) >= 4


def test_tool_writes_report_plot_and_pictures(hand_made_files, tmp_path):
    from .helpers import load_tool

    (gt_json, gt_dir), (pred_json, pred_dir) = hand_made_files
    out = tmp_path / "analysis"
    load_tool("analyze_panoptic").main(["--gt-json", gt_json, "--gt-dir", gt_dir, "--pred-json", pred_json,
                                        "--pred-dir", pred_dir, "--output", str(out), "--worst", "1"])
    written = json.load(open(out / "analysis.json"))
    assert written["errors"]["merge"] == 1 and set(written["pq"]) == {"all", "things", "stuff", "per_class"}
    picture = np.asarray(Image.open(out / "worst" / "000001.png"))
    assert picture.shape == (80, 800, 3)  # 4 panels of 40 x 100, twice the size
    assert picture[:, 600:].std() > 0 and Image.open(out / "pq_lost.png").size[0] > 0
    assert "class_confusion" in (out / "summary.txt").read_text()


def test_tool_reads_a_registered_dataset(tmp_path):
    """--register then --dataset, as every tool registers a split; the ground truth as
    prediction is perfect and the worst image is drawn over its input."""
    from .helpers import load_tool, write_panoptic_split

    gt_json, image_dir, png_dir = write_panoptic_split(tmp_path / "split", 3, seed=6)
    out = tmp_path / "analysis"
    report = load_tool("analyze_panoptic").main([
        "--register", "analysis_registered", gt_json, image_dir, png_dir, "--dataset", "analysis_registered",
        "--pred-json", gt_json, "--pred-dir", png_dir, "--output", str(out), "--worst", "1"])
    assert report["pq"]["all"]["pq"] == pytest.approx(100) and sum(report["errors"].values()) == 0
    picture = np.asarray(Image.open(report["worst_images"][0]["picture"]))
    image = np.asarray(Image.open(os.path.join(image_dir, report["worst_images"][0]["file_name"][:-4] + ".jpg")))
    assert picture.shape[1] == 8 * image.shape[1] and picture[:, : 2 * image.shape[1]].std() > 0

"""Per-class PQ in every panoptic evaluation (PerClassPanopticEvaluator): equal to panopticapi's
pq_compute per-class results on the same predictions."""
import contextlib
import csv
import io
import json
import logging
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.evaluation import pq_compute

from detr_panoptic_d2.data.metadata import dataset_to_contiguous
from detr_panoptic_d2.engine.evaluators import PerClassPanopticEvaluator

from .helpers import register_tiny_shapes
from .panoptic_files import perturbed, read_split, write_split


def test_per_class_table_equals_pq_compute(tmp_path, caplog):
    _, val = register_tiny_shapes(tmp_path, "shapes_per_class", num_train=1, num_val=8)
    dicts = DatasetCatalog.get(val)
    meta = MetadataCatalog.get(val)
    images, categories = read_split(meta.panoptic_json, meta.panoptic_root)
    predictions = perturbed(images, categories, seed=3)
    pred_json, pred_dir = write_split(str(tmp_path / "oracle_pred"), predictions, categories)
    with contextlib.redirect_stdout(io.StringIO()):
        oracle = pq_compute(meta.panoptic_json, _rewrite_ids(pred_json, dicts), meta.panoptic_root, pred_dir)

    contiguous, things = dataset_to_contiguous(meta), set(meta.thing_dataset_id_to_contiguous_id)
    evaluator = PerClassPanopticEvaluator(val, str(tmp_path / "eval"))
    evaluator.reset()
    for d, (ids, classes) in zip(dicts, predictions):
        segments = [{"id": s, "category_id": contiguous[c], "isthing": c in things} for s, c in classes.items()]
        evaluator.process([d], [{"panoptic_seg": (torch.from_numpy(ids.astype("int32")), segments)}])
    with caplog.at_level(logging.INFO):
        results = evaluator.evaluate()["panoptic_seg"]

    assert results["PQ"] == pytest.approx(100 * oracle["All"]["pq"]) and 0 < results["PQ"] < 100
    assert results["PQ_th"] == pytest.approx(100 * oracle["Things"]["pq"])
    assert results["RQ_st"] == pytest.approx(100 * oracle["Stuff"]["rq"])
    for c in categories:
        for k in ("pq", "sq", "rq"):
            assert results[f"{k.upper()}-{c['name']}"] == pytest.approx(100 * oracle["per_class"][c["id"]][k])
    written = json.load(open(tmp_path / "eval" / "per_class_pq.json"))
    assert [r["name"] for r in written] == [c["name"] for c in categories]
    with open(tmp_path / "eval" / "per_class_pq.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["pq"]) == pytest.approx(100 * oracle["per_class"][categories[0]["id"]]["pq"])
    assert {r["kind"] for r in rows} == {"thing", "stuff"}
    assert "Panoptic quality per class" in caplog.text and "circle" in caplog.text
    assert os.path.isfile(tmp_path / "eval" / "predictions" / os.path.basename(dicts[0]["pan_seg_file_name"]))


def _rewrite_ids(pred_json, dicts):
    """The prediction JSON with image ids in the dataset's order (write_split numbers from 1)."""
    with open(pred_json) as f:
        data = json.load(f)
    for annotation, d in zip(data["annotations"], dicts):
        annotation["image_id"] = d["image_id"]
    with open(pred_json, "w") as f:
        json.dump(data, f)
    return pred_json

"""Evaluators for a panoptic dataset, all fed by one inference pass.

For a dataset whose metadata says ``evaluator_type: "coco_panoptic_seg"`` (Detectron2's COCO
panoptic datasets and those registered with ``register_panoptic_dataset``):

- PQ, SQ, RQ, and the same per class: ``PerClassPanopticEvaluator`` (Detectron2's
  ``COCOPanopticEvaluator`` plus the per-class table), with MODEL.DETR.TEST.PANOPTIC_ON;
- box AP (and mask AP with MODEL.MASK_ON) on the things: ``ThingsCOCOEvaluator``, with
  MODEL.DETR.TEST.INSTANCES_ON and an instances JSON (metadata ``json_file``);
- mIoU over all classes: ``PanopticSemSegEvaluator``, with MODEL.DETR.TEST.SEMANTIC_ON and
  semantic PNGs (``sem_seg_file_name`` in the dataset dicts).

For a COCO detection dataset (``evaluator_type: "coco"``, e.g. Detectron2's ``coco_2017_val``
or one registered with ``register_coco_instances``), as for DETR's box-only detection models:
box AP (and mask AP with MODEL.MASK_ON) with Detectron2's ``COCOEvaluator``, with INSTANCES_ON.

Each one left out is logged with the reason. ``panoptic_evaluators`` takes these switches as
arguments (LazyConfigs link them to the model's ``panoptic_on``, ``instances_on``,
``semantic_on``); ``build_panoptic_evaluator`` reads them from a yacs config.
"""
import itertools
import json
import logging
import os
import tempfile

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluators, SemSegEvaluator
from detectron2.evaluation.panoptic_evaluation import _print_panoptic_results
from detectron2.utils import comm

from ..analysis.per_class import panoptic_statistics, per_class_metrics, per_class_table, pq_summary, write_per_class
from ..data.image_io import load_semantic_png
from ..data.metadata import contiguous_to_dataset

logger = logging.getLogger(__name__)


class PanopticSemSegEvaluator(SemSegEvaluator):
    """Detectron2's ``SemSegEvaluator`` over all classes of a panoptic dataset.

    It reads the ground truth with ``data.image_io.load_semantic_png``. Detectron2's evaluator
    maps predicted contiguous ids back to dataset ids through
    ``stuff_dataset_id_to_contiguous_id`` alone, which in the standard COCO panoptic metadata
    holds no thing class (its JSON export then fails on the first predicted thing pixel);
    this one maps through the thing and stuff tables together. Metrics are unchanged.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None):
        super().__init__(
            dataset_name, distributed=distributed, output_dir=output_dir, sem_seg_loading_fn=load_semantic_png
        )
        self._contiguous_id_to_dataset_id = contiguous_to_dataset(MetadataCatalog.get(dataset_name))


class PerClassPanopticEvaluator(COCOPanopticEvaluator):
    """Detectron2's ``COCOPanopticEvaluator`` that also reports PQ per class.

    The metrics dict keeps Detectron2's keys (``PQ``, ``SQ``, ``RQ``, ``PQ_th``, ... ``RQ_st``)
    and adds ``PQ-<class>``, ``SQ-<class>``, ``RQ-<class>`` for every class present in the ground
    truth or the predictions (``analysis.per_class.per_class_metrics``). After Detectron2's
    All/Things/Stuff table the log gets the per-class table (PQ, SQ, RQ, TP, FP, FN, thing or
    stuff), from panopticapi's own ``PQStat``. With an ``output_dir`` it writes there
    ``predictions.json`` (as Detectron2), the prediction PNGs in ``predictions/`` (Detectron2
    deletes them; tools/analyze_panoptic.py reads them) and ``per_class_pq.json`` / ``.csv``.
    """

    def evaluate(self):
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None
        with tempfile.TemporaryDirectory(prefix="panoptic_eval") as tmp:
            output_dir = self._output_dir or tmp
            pred_dir = os.path.join(output_dir, "predictions")
            os.makedirs(pred_dir, exist_ok=True)
            annotations = []
            for p in predictions:
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p["png_string"])
                annotations.append({k: v for k, v in p.items() if k != "png_string"})
            with open(self._metadata.panoptic_json, encoding="utf-8") as f:
                json_data = json.load(f)
            json_data["annotations"] = annotations
            pred_json = os.path.join(output_dir, "predictions.json")
            with open(pred_json, "w", encoding="utf-8") as f:
                json.dump(json_data, f)
            pq_stat, categories = panoptic_statistics(
                self._metadata.panoptic_json, pred_json, self._metadata.panoptic_root, pred_dir
            )
            summary = pq_summary(pq_stat, categories)
            if self._output_dir:
                write_per_class(summary["per_class"], os.path.join(output_dir, "per_class_pq.json"),
                                os.path.join(output_dir, "per_class_pq.csv"))
        _print_panoptic_results({name.capitalize(): {**{k: v / 100 for k, v in summary[name].items() if k != "n"},
                                                     "n": summary[name]["n"]} for name in ("all", "things", "stuff")})
        logger.info("Panoptic quality per class:\n" + per_class_table(summary["per_class"]))
        res = {}
        for suffix, name in (("", "all"), ("_th", "things"), ("_st", "stuff")):
            res.update({f"{k.upper()}{suffix}": summary[name][k] for k in ("pq", "sq", "rq")})
        res.update(per_class_metrics(summary["per_class"]))
        return {"panoptic_seg": res}


class ThingsCOCOEvaluator(COCOEvaluator):
    """Detectron2's ``COCOEvaluator`` (box and mask AP) for a panoptic dataset's things.

    Under the standard COCO panoptic metadata ``thing_classes`` lists all classes (133 for COCO)
    while the instances JSON has the thing categories only (80), and Detectron2's per-category
    AP table asserts that the two counts agree. This evaluator names the categories of the
    instances JSON itself (in its category-id order, the order of COCO's AP arrays).
    Metrics are unchanged.
    """

    def __init__(self, dataset_name, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        categories = self._coco_api.loadCats(sorted(self._coco_api.getCatIds()))
        self._metadata = Metadata(**{**self._metadata.as_dict(), "thing_classes": [c["name"] for c in categories]})


def build_panoptic_evaluator(cfg, dataset_name, output_dir):
    """``panoptic_evaluators`` with the outputs turned on in a yacs config:
    MODEL.DETR.TEST.{PANOPTIC,INSTANCES,SEMANTIC}_ON, MODEL.MASK_ON, TEST.DETECTIONS_PER_IMAGE."""
    test = cfg.MODEL.DETR.TEST
    return panoptic_evaluators(
        dataset_name,
        output_dir,
        panoptic_on=test.PANOPTIC_ON,
        instances_on=test.INSTANCES_ON,
        semantic_on=test.SEMANTIC_ON,
        mask_on=cfg.MODEL.MASK_ON,
        detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
    )


def panoptic_evaluators(
    dataset_name, output_dir, *, panoptic_on=True, instances_on=False, semantic_on=False, mask_on=True,
    detections_per_image=100,
):
    """DatasetEvaluators for ``dataset_name`` (see the module docstring), writing their files
    under ``output_dir``: PQ with ``panoptic_on``, box AP (and mask AP with ``mask_on``) with
    ``instances_on``, mIoU with ``semantic_on`` (the model's outputs of the same names; yaml:
    MODEL.DETR.TEST.*_ON). Raises NotImplementedError, which Detectron2's trainer reports and
    skips, when none applies; ValueError for a dataset of another evaluator type."""
    meta = MetadataCatalog.get(dataset_name)
    evaluator_type = meta.get("evaluator_type", None)
    tasks = ("bbox", "segm") if mask_on else ("bbox",)
    if evaluator_type == "coco":
        return _detection_evaluator(dataset_name, output_dir, instances_on, tasks, detections_per_image)
    if evaluator_type != "coco_panoptic_seg":
        raise ValueError(
            f"Dataset {dataset_name!r} has evaluator_type {evaluator_type!r}; DETR panoptic evaluates "
            "COCO-panoptic-format datasets ('coco_panoptic_seg'), e.g. registered with register_panoptic_dataset, "
            "and COCO detection datasets ('coco') for box AP"
        )
    # Loading first also writes the files of lazily generated datasets (shapes).
    dicts = DatasetCatalog.get(dataset_name)
    evaluators, skipped = [], []
    if not panoptic_on:
        skipped.append("PQ (COCOPanopticEvaluator): PANOPTIC_ON is off (MODEL.DETR.TEST.PANOPTIC_ON, model.postprocessor.panoptic_on)")
    else:
        evaluators.append(PerClassPanopticEvaluator(dataset_name, output_dir))
    if not instances_on:
        skipped.append("AP (COCOEvaluator): INSTANCES_ON is off (MODEL.DETR.TEST.INSTANCES_ON, model.postprocessor.instances_on)")
    elif not meta.get("json_file", None):
        skipped.append(f"AP (COCOEvaluator): the metadata of {dataset_name!r} has no json_file (instances JSON)")
    else:
        evaluators.append(
            ThingsCOCOEvaluator(dataset_name, tasks, output_dir=output_dir, max_dets_per_image=detections_per_image)
        )
    if not semantic_on:
        skipped.append("mIoU (SemSegEvaluator): SEMANTIC_ON is off (MODEL.DETR.TEST.SEMANTIC_ON, model.postprocessor.semantic_on)")
    elif not all("sem_seg_file_name" in d for d in dicts):
        skipped.append(f"mIoU (SemSegEvaluator): the dicts of {dataset_name!r} have no sem_seg_file_name")
    else:
        evaluators.append(PanopticSemSegEvaluator(dataset_name, output_dir=output_dir))
    for reason in skipped:
        logger.info(f"Evaluation on {dataset_name!r} skips {reason}")
    if not evaluators:
        raise NotImplementedError(f"No evaluator applies to {dataset_name!r}: " + "; ".join(skipped))
    return DatasetEvaluators(evaluators)


def _detection_evaluator(dataset_name, output_dir, instances_on, tasks, detections_per_image):
    """Detectron2's ``COCOEvaluator`` for a COCO detection dataset (no panoptic or semantic
    ground truth: PQ and mIoU are not computed). Raises NotImplementedError without INSTANCES_ON."""
    if not instances_on:
        raise NotImplementedError(
            f"No evaluator applies to {dataset_name!r}: a COCO detection dataset is evaluated for AP, which needs "
            "INSTANCES_ON (MODEL.DETR.TEST.INSTANCES_ON, model.postprocessor.instances_on)"
        )
    logger.info(f"Evaluation on {dataset_name!r} (a COCO detection dataset): AP only, no PQ or mIoU")
    return COCOEvaluator(dataset_name, tasks, output_dir=output_dir, max_dets_per_image=detections_per_image)

"""Box-only evaluation on a COCO detection dataset (evaluator_type "coco"), as for DETR's
box-only COCO models: configs/coco/detr_R50_detection.yaml run by tools/train_net.py --eval-only.
The data (two images, two classes with non-contiguous dataset ids) is written by the test."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from PIL import Image

from detr_panoptic_d2.engine import DetrTrainer, load_config

from .helpers import keep_queries_, load_tool

CONFIG = "configs/coco/detr_R50_detection.yaml"
DATASET = "tiny_coco_detection"
# Dataset category id -> contiguous id, as Detectron2's builtin COCO metadata gives it.
CATEGORIES = {3: 0, 7: 1}
# image id -> boxes (x, y, w, h) with their dataset category ids
BOXES = {1: [((4, 6, 20, 30), 3), ((30, 10, 25, 20), 7)], 2: [((10, 12, 40, 28), 7)]}
# A small model: the box config's keys with tiny widths, 64 px images.
SMALL = [
    "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.DETR.HIDDEN_DIM", "64", "MODEL.DETR.DIM_FEEDFORWARD", "128", "MODEL.DETR.ENC_LAYERS", "1",
    "MODEL.DETR.DEC_LAYERS", "1", "MODEL.DETR.NUM_OBJECT_QUERIES", "10", "MODEL.DETR.NUM_CLASSES", "2",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0",
    "DATASETS.TEST", f"('{DATASET}',)",
]


@pytest.fixture(scope="module")
def detection_dataset(tmp_path_factory):
    """Registers DATASET: a COCO instances JSON and its two JPEGs (64 x 80)."""
    root = tmp_path_factory.mktemp("coco_detection")
    images, annotations = [], []
    for image_id, boxes in BOXES.items():
        name = f"{image_id:06d}.jpg"
        pixels = np.random.default_rng(image_id).integers(0, 256, (64, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name)
        images.append({"id": image_id, "file_name": name, "height": 64, "width": 80})
        for (x, y, w, h), category in boxes:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
            })
    categories = [{"id": i, "name": f"class{i}"} for i in CATEGORIES]
    json_file = root / "instances.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    if DATASET not in DatasetCatalog.list():
        metadata = {"thing_classes": [c["name"] for c in categories], "thing_dataset_id_to_contiguous_id": CATEGORIES}
        register_coco_instances(DATASET, metadata, str(json_file), str(root))
    return DATASET


def _cfg(output_dir, *opts):
    cfg, _ = load_config(CONFIG, SMALL + ["OUTPUT_DIR", str(output_dir), *opts], eval_only=True)
    return cfg


def test_ground_truth_as_predictions_gives_box_ap_100(detection_dataset, tmp_path):
    """The evaluator chosen for a COCO detection dataset maps contiguous classes back to the
    dataset's ids: the ground truth fed as predictions scores AP 100."""
    cfg = _cfg(tmp_path)
    evaluator = DetrTrainer.build_evaluator(cfg, detection_dataset)
    evaluator.reset()
    for d in DatasetCatalog.get(detection_dataset):
        boxes = [a["bbox"] for a in d["annotations"]]
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32))
        instances.scores = torch.ones(len(boxes))
        instances.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        evaluator.process([d], [{"instances": instances}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert "panoptic_seg" not in results and "sem_seg" not in results


def test_train_net_eval_only_on_a_detection_dataset_reports_box_ap(detection_dataset, tmp_path):
    """tools/train_net.py --eval-only with the box-only detection config: no refusal of the
    class count or the evaluator type, box AP computed over every image's detections."""
    torch.set_num_threads(1)
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    keep_queries_(model)
    weights = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    train_net = load_tool("train_net")
    args = train_net.parse_args(
        ["--config-file", CONFIG, "--eval-only", *SMALL, "OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", weights]
    )
    results = train_net.main(args)
    assert 0.0 <= results["bbox"]["AP"] <= 100.0
    assert set(results) == {"bbox"}
    with open(os.path.join(tmp_path, "inference", DATASET, "coco_instances_results.json")) as f:
        detections = json.load(f)
    assert {d["image_id"] for d in detections} == set(BOXES)
    assert {d["category_id"] for d in detections} <= set(CATEGORIES)
    assert MetadataCatalog.get(DATASET).evaluator_type == "coco"

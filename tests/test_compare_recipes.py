"""The measurement protocol (tools/compare_recipes.py, detr_panoptic_d2/protocol): the paired
statistics on hand-computed numbers, metrics.json parsing, and a 2-arm x 2-seed run of a few
iterations that resumes without running finished runs again."""
import json
import math
import os

from types import SimpleNamespace

import pytest
import torch
from detectron2.structures import BitMasks, ImageList, Instances

from detr_panoptic_d2.modeling import DetrPanoptic, HungarianMatcher
from detr_panoptic_d2.protocol import compare_arms, evaluations, mean_and_standard_error
from detr_panoptic_d2.protocol.diagnosis import diagnose_image, summarize_diagnosis

from .helpers import load_tool


def test_mean_and_standard_error_by_hand():
    mean, se = mean_and_standard_error([1.0, 2.0, 3.0, 4.0])
    # sample variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; se = sqrt(5/3 / 4)
    assert mean == 2.5 and se == pytest.approx(math.sqrt(5 / 12))
    mean, se = mean_and_standard_error([7.0])
    assert mean == 7.0 and math.isnan(se)


def test_paired_gain_adopts_only_beyond_two_standard_errors():
    values = {
        "baseline": {0: 50.0, 1: 54.0, 2: 46.0},
        "steady": {0: 52.0, 1: 56.5, 2: 47.5},  # +2, +2.5, +1.5 per seed
        "noisy": {0: 55.0, 1: 50.0, 2: 49.0},  # +5, -4, +3 per seed
        "borderline": {0: 51.0, 1: 56.0, 2: 46.0},  # +1, +2, 0: gain 1, se 1/sqrt(3), 1.73 se
    }
    report = compare_arms(values)
    assert report["baseline"]["mean"] == 50.0 and report["baseline"]["se"] == pytest.approx(4 / math.sqrt(3))
    assert "gain" not in report["baseline"]
    steady = report["steady"]
    # Unpaired, 52.0 +- 2.6 against 50.0 +- 2.3 would be inconclusive; paired, the gain is clear.
    assert steady["gain"] == pytest.approx(2.0) and steady["gain_se"] == pytest.approx(0.5 / math.sqrt(3))
    assert steady["adopt"] and steady["paired"] == 3
    noisy = report["noisy"]
    # diffs 5, -4, 3: mean 4/3, sample variance ((11/3)^2 + (16/3)^2 + (5/3)^2) / 2 = 67/3
    assert noisy["gain"] == pytest.approx(4 / 3) and noisy["gain_se"] == pytest.approx(math.sqrt(67 / 3 / 3))
    assert not noisy["adopt"]
    borderline = report["borderline"]
    assert borderline["gain"] == pytest.approx(1.0) and borderline["gain_se"] == pytest.approx(1 / math.sqrt(3))
    assert not borderline["adopt"]  # above one standard error, below two


def test_gains_pair_the_seeds_both_arms_have():
    report = compare_arms({"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {1: 4.0, 2: 4.0}})
    assert report["b"]["paired"] == 2 and report["b"]["gain"] == pytest.approx(1.5)


def test_evaluations_are_read_from_metrics_json_and_a_cut_line_is_ignored(tmp_path):
    lines = [
        {"iteration": 0, "total_loss": 3.0},
        {"iteration": 9, "panoptic_seg/PQ": 40.0, "panoptic_seg/PQ_th": 20.0, "panoptic_seg/PQ_st": 60.0,
         "ema/panoptic_seg/PQ": 42.0, "bbox/AP": 1.0},
        {"iteration": 19, "panoptic_seg/PQ": 45.0},
    ]
    with open(tmp_path / "metrics.json", "w") as f:
        f.write("\n".join(json.dumps(x) for x in lines) + '\n{"iteration": 29, "panoptic_seg/P')
    assert evaluations(str(tmp_path)) == {
        9: {"PQ": 40.0, "PQ_th": 20.0, "PQ_st": 60.0, "ema/PQ": 42.0},
        19: {"PQ": 45.0},
    }
    assert evaluations(str(tmp_path / "missing")) == {}


def test_bad_arms_are_named(tmp_path):
    tool = load_tool("compare_recipes")
    base = ["--config-file", "configs/shapes/detr_R18_shapes.yaml", "--output-dir", str(tmp_path)]
    with pytest.raises(SystemExit, match="--arm lr: overrides come in KEY VALUE pairs"):
        tool.main(base + ["--arm", "base", "--arm", "lr", "SOLVER.BASE_LR"])
    with pytest.raises(SystemExit, match="--arm typo: .*SOLVER.BASE_LRR"):
        tool.main(base + ["--arm", "base", "--arm", "typo", "SOLVER.BASE_LRR", "0.1"])
    with pytest.raises(SystemExit, match="SEED and OUTPUT_DIR are set by the protocol"):
        tool.main(base + ["--arm", "base", "SEED", "3"])


@pytest.fixture
def tiny_builtin_shapes(tmp_path, monkeypatch):
    """The builtin shapes splits, tiny, generated under tmp_path by the runs themselves."""
    for key, value in {
        "DETECTRON2_DATASETS": str(tmp_path / "datasets"), "SHAPES_PANOPTIC_NUM_TRAIN": "8",
        "SHAPES_PANOPTIC_NUM_VAL": "2", "SHAPES_PANOPTIC_MIN_SIZE": "64", "SHAPES_PANOPTIC_MAX_SIZE": "80",
    }.items():
        monkeypatch.setenv(key, value)


TINY = [
    "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "()", "TEST.EVAL_PERIOD", "2", "SOLVER.IMS_PER_BATCH", "2",
    "MODEL.DETR.HIDDEN_DIM", "32", "MODEL.DETR.DIM_FEEDFORWARD", "32", "MODEL.DETR.ENC_LAYERS", "1",
    "MODEL.DETR.DEC_LAYERS", "1", "MODEL.DETR.ENCODER_SEMANTIC_WEIGHT", "0.0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MIN_SIZE_TEST", "64", "SOLVER.AMP.ENABLED", "False", "SOLVER.CHECKPOINT_PERIOD", "100",
]


def test_two_arms_two_seeds_run_report_and_resume(tiny_builtin_shapes, tmp_path, capsys):
    tool = load_tool("compare_recipes")
    out = tmp_path / "compare"
    args = [
        "--config-file", "configs/shapes/detr_R18_shapes.yaml", "--output-dir", str(out), "--seeds", "0", "1",
        "--jobs", "2", "--common", *TINY, "--arm", "base", "--arm", "slow_lr", "SOLVER.BASE_LR", "0.00002",
    ]
    summary = tool.main(args)
    for arm in ("base", "slow_lr"):
        for seed in (0, 1):
            assert os.path.isfile(out / arm / f"seed{seed}" / "protocol_done.json")
    # Evaluations at iteration 1 (TEST.EVAL_PERIOD 2) and after training (logged at 3).
    assert sorted(summary) == [1, 3]
    final = summary[3]
    assert set(final) == {"PQ", "PQ_th", "PQ_st"}
    assert final["PQ"]["base"]["n"] == 2 and final["PQ"]["slow_lr"]["paired"] == 2
    seeds = [evaluations(str(out / "base" / f"seed{s}"))[3]["PQ"] for s in (0, 1)]
    assert final["PQ"]["base"]["mean"] == pytest.approx(sum(seeds) / 2)
    assert json.load(open(out / "summary.json"))["arms"] == {"base": [], "slow_lr": ["SOLVER.BASE_LR", "0.00002"]}
    assert "| PQ | slow_lr | 2 |" in capsys.readouterr().out
    # Resuming: finished runs are not run again; a run without its marker (killed) is.
    capsys.readouterr()
    tool.main(args + ["--dry-run"])
    assert capsys.readouterr().out == ""
    os.remove(out / "slow_lr" / "seed1" / "protocol_done.json")
    tool.main(args + ["--dry-run"])
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == 1 and commands[0].endswith(f"SEED 1 OUTPUT_DIR {out / 'slow_lr' / 'seed1'}")


class _StubModel:
    """What diagnose_image reads of a DetrPanoptic, with hand-set predictions on an 8 x 8 image
    (stride 1): per query, class logits, a box and mask logits."""

    device = torch.device("cpu")

    def __init__(self, logits, boxes, masks):
        self.logits, self.boxes, self.masks = logits, boxes, masks
        self.criterion = SimpleNamespace(matcher=HungarianMatcher())
        self.mask_head = SimpleNamespace(stride=1)

    def preprocess_image(self, batched_inputs):
        return ImageList(torch.zeros(1, 3, 8, 8), [(8, 8)]), None

    def detect(self, images, padding_mask):
        return SimpleNamespace(logits=self.logits[None, None], boxes=self.boxes[None, None])

    def prepare_targets(self, batched_inputs, images):
        return DetrPanoptic.prepare_targets(self, batched_inputs, images)

    def segment(self, out, batch_idx, query_idx):
        return self.masks[query_idx]


def test_diagnosis_counts_by_hand():
    top, bottom = torch.zeros(8, 8, dtype=torch.bool), torch.zeros(8, 8, dtype=torch.bool)
    top[:4], bottom[4:] = True, True
    x = {"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}
    x["instances"] = Instances((8, 8), gt_classes=torch.tensor([0, 1]), gt_masks=BitMasks(torch.stack([top, bottom])))
    x["instances"].gt_boxes = x["instances"].gt_masks.get_bounding_boxes()
    # q0: class 0 on the top segment, its exact mask; q1: class 0 (wrong) on the bottom one,
    # half its mask; q2: a class-0 duplicate of q0 (rows 0-2, IoU 0.75 with q0); q3: a class-1
    # query on nothing (its mask, the last column, overlaps no matched mask with IoU >= 0.5).
    logits = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0]])
    boxes = torch.tensor([[0.5, 0.25, 1, 0.5], [0.5, 0.75, 1, 0.5], [0.1, 0.1, 0.05, 0.05], [0.9, 0.9, 0.05, 0.05]])
    masks = torch.full((4, 8, 8), -1.0)
    masks[0, :4], masks[1, 4:6], masks[2, :3], masks[3, :, 7] = 1.0, 1.0, 1.0, 1.0
    counts = diagnose_image(_StubModel(logits, boxes, masks), x, threshold=0.5)
    assert counts == {
        "segments": 2, "kept": 4, "matched_correct_class": 1, "recalled": 1, "iou_sum": 1.5,
        "duplicates": 1, "false_positives": 1,
    }
    summary = summarize_diagnosis([counts, {**counts, "duplicates": 0, "false_positives": 2}])
    assert summary == {
        "images": 2, "segments": 4, "class_accuracy": 0.5, "mean_matched_iou": 0.75, "recall_at_threshold": 0.5,
        "duplicates_per_image": 0.5, "false_positives_per_image": 1.5, "kept_per_image": 4.0,
    }

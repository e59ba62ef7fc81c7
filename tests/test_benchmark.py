"""The benchmark tool (tools/benchmark.py, benchmarks/): it runs, its JSON has
the promised fields, and its parts (stage timer, statistics, synthetic inputs, kept-query
calibration, peak memory) do what they say. Nothing here asserts a speed."""
import contextlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

from benchmarks.cli import main
from benchmarks.stage_timer import StageTimer
from benchmarks.stats import summarize
from benchmarks.synthetic import synthetic_batch
from detr_panoptic_d2.testing import calibrate_kept_queries

from .conftest import ROOT
from .helpers import tiny_cfg

TINY_OPTS = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.DETR.HIDDEN_DIM", "64",
    "MODEL.DETR.DIM_FEEDFORWARD", "128", "MODEL.DETR.ENC_LAYERS", "2", "MODEL.DETR.DEC_LAYERS", "2",
    "MODEL.DETR.NUM_OBJECT_QUERIES", "10",
]
INFERENCE_STAGES = {"backbone", "encoder", "decoder", "attention_map", "mask_head", "postprocessing", "other"}
TRAINING_STAGES = {"forward", "matching", "loss", "backward", "optimizer", "other"}
SUMMARY = {"median", "q1", "q3", "min", "max", "n"}


def test_compare_all_queries_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, "tools/benchmark.py", "--config-file", "configs/coco/detr_R50_panoptic.yaml",
        "--size", "64", "96", "--compare-all-queries", "--kept-queries", "3", "--targets-per-image", "4",
        "--warmup", "0", "--runs", "2", "--device", "cpu", "--threads", "1", "--clock", "cpu", "--json", str(out),
        *TINY_OPTS,
        # The config's stage-1 checkpoint does not exist: the tool writes one of its own weights.
        "MODEL.DETR.FROZEN_WEIGHTS", str(tmp_path / "missing.pth"),
        "MODEL.DETR.TEST.INSTANCES_ON", "False", "MODEL.DETR.TEST.SEMANTIC_ON", "False",
    ]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "outputs: panoptic_seg identical" in proc.stdout and "| backbone" in proc.stdout
    report = json.loads(out.read_text())
    assert report["image_size"] == [64, 96] and report["runs"] == 2 and report["clock"] == "cpu"
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch_threads"] == 1
    assert report["model"]["kept_queries"] == 3 and report["model"]["frozen_detector"]

    inference = report["inference"]
    ours, ref = inference["modes"]["ours"], inference["modes"]["reference"]
    for mode in (ours, ref):
        assert set(mode["stages"]) == INFERENCE_STAGES
        assert set(mode["total"]) == SUMMARY and mode["total"]["n"] == 2 and mode["total"]["median"] > 0
        assert mode["total"]["median"] == pytest.approx(sum(s["median"] for s in mode["stages"].values()), rel=0.5)
        assert mode["images_per_s"] > 0 and mode["peak_memory_mib"] >= mode["memory_at_start_mib"] > 0
        assert mode["memory_kind"] in ("cpu_peak_rss", "cpu_peak_rss_process_lifetime")
    assert not ours["all_queries"] and ref["all_queries"]
    assert ours["mask_head_queries_per_image"] == 3 and ref["mask_head_queries_per_image"] == 10
    assert inference["comparison"]["identical"] and inference["comparison"]["panoptic_seg"]
    assert inference["speedup"] == pytest.approx(ref["total"]["median"] / ours["total"]["median"])

    training = report["training"]
    ours, ref = training["modes"]["ours"], training["modes"]["reference"]
    for mode in (ours, ref):
        assert set(mode["stages"]) == TRAINING_STAGES and mode["peak_memory_mib"] > 0
    assert ours["mask_head_queries_per_image"] == 4 and ref["mask_head_queries_per_image"] == 10
    comparison = training["comparison"]
    assert comparison["losses_max_abs_diff"] <= 1e-6
    assert comparison["grads_max_abs_diff"] <= 1e-4 * comparison["grads_max_abs"]
    assert training["speedup"] == pytest.approx(ref["total"]["median"] / ours["total"]["median"])
    for section in (inference, training):
        assert f"x{section['speedup']:.2f} end to end" in proc.stdout


@pytest.mark.parametrize("outputs, rows", [("panoptic", 2), ("all", 6)])
def test_outputs_choice_and_queries_above_floor_set_the_mask_head_rows(outputs, rows, capsys):
    report = main([
        "--config-file", "configs/coco/detr_R50_panoptic.yaml", "--size", "64", "96", "--task", "inference",
        "--compare-all-queries", "--kept-queries", "2", "--queries-above-floor", "6", "--outputs", outputs,
        "--warmup", "0", "--runs", "1", "--device", "cpu", *TINY_OPTS, "MODEL.DETR.FROZEN_WEIGHTS", "",
    ])
    enabled = ["panoptic"] + (["instances", "semantic"] if outputs == "all" else [])
    assert report["outputs"] == {"chosen_by": outputs, "enabled": enabled}
    modes = report["inference"]["modes"]
    assert modes["ours"]["mask_head_queries_per_image"] == rows
    assert modes["reference"]["mask_head_queries_per_image"] == 10
    assert report["inference"]["comparison"]["panoptic_seg"]
    assert f"outputs: {', '.join(enabled)} (--outputs {outputs})" in capsys.readouterr().out


def test_module_entry_point_has_help():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--compare-all-queries" in proc.stdout and "--kept-queries" in proc.stdout


def test_notes_warn_about_all_query_outputs_and_a_busy_machine():
    from benchmarks.cli import _notes

    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    quiet = {"cpu_count": 2, "load_average_1min": 0.2}
    assert _notes(cfg, True, quiet, "wall") == []
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
    assert "MASK_SCORE_FLOOR" in " ".join(_notes(cfg, True, quiet, "wall"))
    assert _notes(cfg, False, quiet, "wall") == []
    busy = {"cpu_count": 2, "load_average_1min": 3.5}
    assert "--clock cpu" in _notes(cfg, False, busy, "wall")[0] and _notes(cfg, False, busy, "cpu") == []


def test_missing_config_file_is_named():
    with pytest.raises(FileNotFoundError, match="configs/nope.yaml"):
        main(["--config-file", "configs/nope.yaml", "--device", "cpu"])


def test_cpu_clock_is_refused_for_a_gpu():
    with pytest.raises(SystemExit, match="--clock cpu .* cuda"):
        main(["--config-file", "configs/coco/detr_R50_panoptic.yaml", "--device", "cuda", "--clock", "cpu"])


@pytest.mark.parametrize("kept, above_floor", [(0, None), (1, None), (4, None), (10, None), (2, 7)])
def test_calibration_keeps_exactly_k_queries_and_m_above_the_floor(kept, above_floor):
    torch.manual_seed(0)
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    model = build_model(cfg).eval()
    batch = synthetic_batch(2, 64, 80, 133)
    calibrate_kept_queries(model, batch, kept, above_floor)
    with torch.no_grad():
        images, padding_mask = model.preprocess_image(batch)
        logits = model.detect(images.tensor, padding_mask).logits[-1]
    scores = logits.softmax(-1)[..., :-1].max(-1).values  # B x N, each query's best real class
    threshold, floor = model.postprocessor.object_score_thresh, cfg.MODEL.DETR.TEST.MASK_SCORE_FLOOR
    assert ((scores > threshold).sum(-1) == kept).all()
    assert ((scores >= floor).sum(-1) == (kept if above_floor is None else above_floor)).all()


def test_calibration_of_a_bfloat16_model_holds_in_both_precisions():
    """A model whose inference autocasts to bfloat16 is benchmarked against its float32
    reference with the same weights: the fitted logits must hold in both (on R50, a head fitted
    to the float32 embeddings alone kept 15 queries in float32 and none in bfloat16; on this
    small model its logits move by 0.2 between precisions, against 3e-5 when fitted to both)."""
    torch.manual_seed(0)
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    cfg.MODEL.DETR.TEST.AMP_DTYPE = "bfloat16"
    model = build_model(cfg).eval()
    batch = synthetic_batch(1, 64, 80, 133)
    calibrate_kept_queries(model, batch, 4)
    logits = {}
    with torch.no_grad():
        images, padding_mask = model.preprocess_image(batch)
        for name, context in (("float32", contextlib.nullcontext()), ("bfloat16", model.precision.autocast(model.device, training=False))):
            with context:
                logits[name] = model.detect(images.tensor, padding_mask).logits[-1, 0].float()
    kept = {k: (v.softmax(-1)[:, :-1].max(-1).values > model.postprocessor.object_score_thresh).nonzero() for k, v in logits.items()}
    # Exact by margin: calibration puts every score far from the threshold, beyond bfloat16 rounding.
    assert len(kept["float32"]) == 4 and torch.equal(kept["float32"], kept["bfloat16"])
    assert (logits["float32"] - logits["bfloat16"]).abs().max() < 1e-3


def test_calibration_refuses_more_queries_than_the_model_has():
    model = build_model(tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic"))
    with pytest.raises(ValueError, match=r"--kept-queries \(11\).*NUM_OBJECT_QUERIES=10"):
        calibrate_kept_queries(model, synthetic_batch(1, 64, 64, 133), 11)


def test_synthetic_targets_tile_the_image_with_disjoint_segments():
    batch = synthetic_batch(2, 40, 56, num_classes=7, targets_per_image=6, seed=3)
    # Exact by construction: integer images from one generator.
    assert not torch.equal(batch[0]["image"], batch[1]["image"])
    for x in batch:
        inst = x["instances"]
        masks = inst.gt_masks.tensor
        assert masks.shape == (6, 40, 56) and (masks.sum(0) == 1).all() and masks.flatten(1).any(1).all()
        assert ((inst.gt_classes >= 0) & (inst.gt_classes < 7)).all()
        for box, mask in zip(inst.gt_boxes.tensor, masks):
            ys, xs = mask.nonzero(as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    inference = synthetic_batch(3, 40, 56, num_classes=7)
    assert all(torch.equal(x["image"], inference[0]["image"]) and "instances" not in x for x in inference)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_stage_timer_counts_nested_stages_once(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(time, "perf_counter", clock)

    class Inner(nn.Module):
        def forward(self, x):
            clock.now += 2
            return x

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, x):
            clock.now += 1
            x = self.inner(x)
            clock.now += 3
            return x

        def helper(self, x):
            clock.now += 5
            return self(x)

    outer = Outer()
    timer = StageTimer("cpu")
    with timer.attach([("outer", outer), ("inner", outer.inner), ("helper", (outer, "helper"))]):
        with timer.stage("total"):
            clock.now += 7
            outer.helper(torch.zeros(1))
    assert dict(timer.seconds) == {"inner": 2, "outer": 4, "helper": 5, "total": 7}
    timer.reset()
    outer.helper(torch.zeros(1))
    assert dict(timer.seconds) == {} and "helper" not in vars(outer)


def test_summarize_gives_median_quartiles_and_range():
    assert summarize([5, 1, 3, 2, 4]) == {"median": 3, "q1": 2, "q3": 4, "min": 1, "max": 5, "n": 5}
    assert summarize([0.5]) == {"median": 0.5, "q1": 0.5, "q3": 0.5, "min": 0.5, "max": 0.5, "n": 1}


def test_peak_memory_sees_a_temporary_allocation():
    """In a fresh process: after the suite's other tests, freed heap memory that is still
    resident can hold the allocation without the resident set growing."""
    code = (
        "import json, torch\n"
        "from benchmarks.memory import PeakMemory\n"
        "with PeakMemory('cpu') as peak:\n"
        "    big = torch.ones(64 * 2**20)  # 256 MiB, touched\n"
        "    del big\n"
        "print(json.dumps([peak.kind, peak.mib, peak.start_mib]))\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kind, mib, start_mib = json.loads(proc.stdout.strip().splitlines()[-1])
    assert kind == "cpu_peak_rss_process_lifetime" or mib - start_mib > 200


def test_reference_and_baseline_models_share_weights_and_differ_by_their_overrides():
    from benchmarks.models import build_models, load_cfg
    from detr_panoptic_d2.testing import REFERENCE_OVERRIDES, as_reference

    cfg = load_cfg("configs/coco/detr_R50_panoptic.yaml", TINY_OPTS + ["MODEL.DETR.FROZEN_WEIGHTS", ""], "cpu")
    cfg.MODEL.DETR.CHANNELS_LAST = True
    variants = {"ours": [], "reference": REFERENCE_OVERRIDES, "baseline": ["MODEL.DETR.TEST.FOLD_BATCHNORM", "False"]}
    inputs = synthetic_batch(1, 64, 96, 133)
    models, info = build_models(cfg, variants, kept_queries=3, calibration_inputs=inputs, workdir=None)
    assert info["variants"] == variants
    as_reference(models["reference"])
    switches = {
        k: (getattr(m, "all_queries", False), m.precision.fold_batchnorm, m.precision.channels_last) for k, m in models.items()
    }
    assert switches == {"ours": (False, True, True), "reference": (True, False, False), "baseline": (False, False, True)}
    state = models["ours"].state_dict()
    for model in models.values():
        # Exact by construction: a copy of the same tensors, no arithmetic.
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_training_runs_detectron2s_trainer_step():
    from detectron2.engine import SimpleTrainer

    from benchmarks.training import build_trainer

    model = build_model(tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for amp in ("none", "bfloat16"):  # on the CPU the model autocasts itself
        trainer = build_trainer(model, [], optimizer, amp=amp, device="cpu")
        assert type(trainer) is SimpleTrainer and trainer.model is model


def test_cpu_bfloat16_training_builds_the_model_with_its_own_autocast(monkeypatch):
    from benchmarks import training

    seen = []
    build_trainer = training.build_trainer
    monkeypatch.setattr(training, "build_trainer", lambda model, *a, **k: seen.append(model.precision.cpu_training_amp) or build_trainer(model, *a, **k))
    def run(amp):
        main(["--config-file", "configs/coco/detr_R50_panoptic.yaml", "--size", "64", "96", "--task", "training",
              "--amp", amp, "--warmup", "0", "--runs", "1", "--device", "cpu", *TINY_OPTS, "MODEL.DETR.FROZEN_WEIGHTS", ""])

    run("bfloat16")
    run("none")
    assert seen == [True, False]
    with pytest.raises(SystemExit, match="float16 training needs CUDA"):
        run("float16")

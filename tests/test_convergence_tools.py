"""The tools of the convergence study: tools/dev/sweep_score_threshold.py (PQ per score threshold
on a held-out split) and tools/dev/plot_convergence.py (PQ against training time)."""
import json

import pytest
import torch
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

from .helpers import load_tool, tiny_training_cfg, write_cfg


def test_sweep_evaluates_once_per_threshold_with_that_threshold(tiny_shapes, tmp_path, monkeypatch):
    train, val = tiny_shapes
    cfg = tiny_training_cfg(train, val, tmp_path / "run")
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "model.pth")
    cfg_file = write_cfg(cfg, tmp_path / "cfg.yaml")
    sweep = load_tool("dev/sweep_score_threshold")
    seen = []

    def recording(model, loader, evaluator):
        seen.append((model.postprocessor.object_score_thresh, model.postprocessor.instances_on, model.postprocessor.semantic_on))
        return inference_on_dataset(model, loader, evaluator)

    monkeypatch.setattr(sweep, "inference_on_dataset", recording)
    results = sweep.main(
        ["--config-file", cfg_file, "--dataset", val, "--thresholds", "0.3", "1", "--opts", "MODEL.WEIGHTS", str(tmp_path / "model.pth")]
    )
    assert seen == [(0.3, False, False), (1.0, False, False)]  # panoptic output only
    assert list(results) == [0.3, 1.0]
    assert {"PQ", "PQ_th", "PQ_st"} <= set(results[1.0])
    # Exact by construction: with no segment every PQ term is zero.
    assert results[1.0]["PQ"] == 0.0  # no query passes a threshold of 1: no segment


def _metrics(path, evaluations, seconds):
    lines = [{"iteration": i, "time": seconds, "total_loss": 1.0} for i in range(19, 100, 20)]  # MAX_ITER 100
    lines += [
        {"iteration": i, "panoptic_seg/PQ": pq, "panoptic_seg/PQ_th": pq - 10, "panoptic_seg/PQ_st": pq + 10}
        for i, pq in evaluations
    ]
    path.mkdir()
    (path / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return str(path)


def test_plot_times_evaluations_by_the_runs_own_or_given_seconds_per_iteration(tmp_path, capsys):
    a = _metrics(tmp_path / "a", [(49, 20.0), (99, 40.0)], 0.5)
    b = _metrics(tmp_path / "b", [(100, 50.0)], 0.9)  # the final evaluation, logged at MAX_ITER
    plot = load_tool("dev/plot_convergence")
    plot.main([f"{a}:baseline", f"{b}:groups:0.25", "--output", str(tmp_path / "curve.png")])
    out = capsys.readouterr().out
    assert "| baseline | 0.500 | 50: 20.0 (10.0 / 30.0), 100: 40.0 (30.0 / 50.0) |" in out
    assert "| groups | 0.250 | 100: 50.0 (40.0 / 60.0) |" in out
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no panoptic evaluation"):
        plot.main([_metrics(tmp_path / "c", [], 0.5), "--output", str(tmp_path / "c.png")])

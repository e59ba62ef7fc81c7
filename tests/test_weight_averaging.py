"""The weight average (SOLVER.EMA, engine/weight_averaging.py) and the warm-up + cosine schedule:
the average equals the EMA computed by hand over a few steps (parameters and BatchNorm
buffers); in DetrTrainer both weight sets are evaluated, model_final.pth deploys the average,
checkpoints keep it and --resume restores it; WarmupCosineLR follows its formula."""
import math
import os

import pytest
import torch
from detectron2.engine import HookBase
from torch import nn

from detr_panoptic_d2.engine import DetrTrainer
from detr_panoptic_d2.engine.weight_averaging import WeightAveraging

from .helpers import load_tool, tiny_training_cfg, write_panoptic_split

DECAY = 0.75


def test_the_average_is_the_hand_computed_ema_of_parameters_and_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    hook = WeightAveraging(model, DECAY)
    snapshots = []
    for step in range(4):
        loss = model(torch.randn(8, 3)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        hook.after_step()
        snapshots.append({k: v.detach().double().clone() for k, v in model.state_dict().items()})
    expected = dict(snapshots[0])  # the first step copies the model
    for snap in snapshots[1:]:
        expected = {k: DECAY * expected[k] + (1 - DECAY) * snap[k] for k in expected}
    averaged = hook.averaged_model.state_dict()
    for name in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        assert not torch.allclose(expected[name], snapshots[-1][name]), name  # it is an average, not a copy
        torch.testing.assert_close(averaged[name].double(), expected[name], rtol=1e-6, atol=1e-6)
    assert int(hook.averaged.n_averaged) == 4


class _Interrupt(Exception):
    pass


class _StopAt(HookBase):
    def __init__(self, iteration):
        self.iteration = iteration

    def before_step(self):
        if self.trainer.iter == self.iteration:
            raise _Interrupt


class _RecordLR(HookBase):
    def __init__(self):
        self.lrs = []

    def before_step(self):
        self.lrs.append(self.trainer.optimizer.param_groups[0]["lr"])


def _cfg(train, val, output_dir):
    cfg = tiny_training_cfg(train, val, output_dir, max_iter=6)
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.WARMUP_FACTOR = 0.1
    cfg.SOLVER.WARMUP_METHOD = "linear"
    cfg.SOLVER.BASE_LR_END = 0.0
    cfg.SOLVER.EMA.ENABLED = True
    cfg.SOLVER.EMA.DECAY = DECAY
    return cfg


def test_trainer_evaluates_both_deploys_the_average_and_resume_restores_it(tiny_shapes, tmp_path):
    train, val = tiny_shapes
    cfg = _cfg(train, val, tmp_path / "full")
    trainer = DetrTrainer(cfg)
    record = _RecordLR()
    trainer.register_hooks([record])
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    # Both weight sets evaluated; the average's metrics under "ema".
    assert "PQ" in results["panoptic_seg"] and "PQ" in results["ema"]["panoptic_seg"]
    assert "ema/panoptic_seg/PQ" in trainer.storage.latest() and "panoptic_seg/PQ" in trainer.storage.latest()
    # The cosine from 1 to 0 over 6 iterations; during the 2 warm-up ones, Detectron2's linear
    # ramp from 0.1 x cosine(0) to cosine(2).
    cosine = [0.5 * (1 + math.cos(math.pi * i / 6)) for i in range(6)]
    expected = [0.1 * cosine[0] + i / 2 * (cosine[2] - 0.1 * cosine[0]) if i < 2 else cosine[i] for i in range(6)]
    assert record.lrs == pytest.approx([1e-3 * e for e in expected], rel=1e-6)
    # model_final deploys the average; the raw weights are kept beside it and stay in the model.
    final = torch.load(tmp_path / "full" / "model_final.pth", weights_only=False)
    averaged = trainer.weight_averaging.averaged_model.state_dict()
    raw = trainer.model.state_dict()
    # Exact by construction (here and below): saved, loaded and deployed tensors are copies.
    assert all(torch.equal(final["model"][k], v) for k, v in averaged.items())
    assert all(torch.equal(final["raw_model"][k], v) for k, v in raw.items())
    assert not torch.equal(final["model"]["class_embed.weight"], raw["class_embed.weight"])

    # Interrupted after the checkpoint of iteration 3, then resumed.
    cfg = _cfg(train, None, tmp_path / "resumed")
    first = DetrTrainer(cfg)
    first.register_hooks([_StopAt(4)])
    first.resume_or_load(resume=False)
    with pytest.raises(_Interrupt):
        first.train()
    assert not os.path.exists(tmp_path / "resumed" / "model_final.pth")  # no deployment of an unfinished run
    saved = torch.load(tmp_path / "resumed" / "model_0000003.pth", weights_only=False)
    second = DetrTrainer(cfg)
    second.resume_or_load(resume=True)
    restored = second.weight_averaging.averaged.state_dict()
    assert int(restored["n_averaged"]) == 4
    assert restored.keys() == saved["ema"].keys()
    assert all(torch.equal(restored[k], v) for k, v in saved["ema"].items())
    assert not torch.equal(restored["module.class_embed.weight"], saved["model"]["class_embed.weight"])
    # Resuming from a deployed model_final puts the raw weights back into the model.
    third = DetrTrainer(_cfg(train, None, tmp_path / "full"))
    third.resume_or_load(resume=True)
    assert all(torch.equal(third.model.state_dict()[k], v) for k, v in raw.items())


def test_lazyconfig_training_averages_evaluates_and_deploys(tmp_path):
    """tools/lazyconfig_train_net.py with train.ema.enabled: both weight sets evaluated, the
    average deployed in model_final.pth."""
    tool = load_tool("lazyconfig_train_net")
    train = write_panoptic_split(tmp_path / "train", 4, 0)
    val = write_panoptic_split(tmp_path / "val", 2, 1)
    out = tmp_path / "run"
    results = tool.main(tool.parse_args([
        "--config-file", "configs/shapes/detr_R18_shapes.py",
        "--register", "ema_lazy_train", *train, "--register", "ema_lazy_val", *val,
        "dataloader.train.dataset.names=ema_lazy_train", "dataloader.test.dataset.names=ema_lazy_val",
        "dataloader.train.total_batch_size=2", f"train.output_dir={out}", "train.device=cpu",
        "train.max_iter=2", "lr_multiplier.milestones=[]", "lr_multiplier.values=[1.0]",
        "train.ema.enabled=True", "train.ema.decay=0.5",
    ]))
    assert "PQ" in results["panoptic_seg"] and "PQ" in results["ema"]["panoptic_seg"]
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert set(final["raw_model"]) == set(final["model"]) and "ema" in final
    assert not torch.equal(final["model"]["class_embed.weight"], final["raw_model"]["class_embed.weight"])

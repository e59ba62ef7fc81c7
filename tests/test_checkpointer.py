"""DetrCheckpointer: safe loading of .pth and model-zoo .pkl files, atomic saving."""
import multiprocessing
import os
import pickle
import random
import re
import signal
import socket
import time

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from detr_panoptic_d2.checkpoint import DetrCheckpointer, UnsafeCheckpointError

from .helpers import make_input, tiny_cfg


class Gadget:
    """A class a malicious pickle could reference."""


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_cfg())


def test_save_then_load_round_trip_with_optimizer_and_scheduler_state(model, tmp_path):
    """--resume restores the weights, AdamW's step counts and moments (values) and the
    learning-rate schedule's position, from the file ``last_checkpoint`` names."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.1)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        sum(model([make_input(64, 64, classes=(1,))]).values()).backward()
        optimizer.step()
        scheduler.step()
    ckpt = DetrCheckpointer(model, str(tmp_path), optimizer=optimizer, scheduler=scheduler)
    ckpt.save("model_0000009", iteration=9)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    assert open(tmp_path / "last_checkpoint").read() == "model_0000009.pth"
    fresh = build_model(tiny_cfg())
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-4)
    fresh_sched = torch.optim.lr_scheduler.MultiStepLR(fresh_opt, milestones=[2], gamma=0.1)
    extra = DetrCheckpointer(fresh, str(tmp_path), optimizer=fresh_opt, scheduler=fresh_sched).resume_or_load(
        "", resume=True
    )
    assert extra["iteration"] == 9
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        # Exact by construction: saved and loaded tensors (and optimizer state) are copies.
        assert torch.equal(a, b), name
    saved, restored = optimizer.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert saved and saved.keys() == restored.keys()
    for k in saved:
        assert restored[k]["step"].item() == 3
        assert torch.equal(restored[k]["exp_avg"], saved[k]["exp_avg"])
        assert torch.equal(restored[k]["exp_avg_sq"], saved[k]["exp_avg_sq"])
    assert fresh_sched.last_epoch == 3
    assert [g["lr"] for g in fresh_opt.param_groups] == pytest.approx([1e-5])


def test_pth_with_foreign_object_is_refused(model, tmp_path):
    path = str(tmp_path / "evil.pth")
    torch.save({"model": model.state_dict(), "extra": Gadget()}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        DetrCheckpointer(model).load(path)
    DetrCheckpointer(model, allow_unsafe=True).load(path)


def test_model_zoo_pickle_of_arrays_loads_and_foreign_pickle_is_refused(model, tmp_path):
    arrays = {k: v.numpy() for k, v in model.state_dict().items() if k.startswith("backbone.stem")}
    good = str(tmp_path / "zoo.pkl")
    with open(good, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "test"}, f)
    stem_before = model.backbone.stem.conv1.weight.detach().clone()
    with torch.no_grad():
        model.backbone.stem.conv1.weight.zero_()
    DetrCheckpointer(model).load(good)
    # Exact by construction: a copy of the same tensors, no arithmetic.
    assert torch.equal(model.backbone.stem.conv1.weight, stem_before)
    evil = str(tmp_path / "zoo_evil.pkl")
    with open(evil, "wb") as f:
        pickle.dump({"model": {"x": np.zeros(2)}, "__author__": "test", "payload": Gadget()}, f)
    with pytest.raises(UnsafeCheckpointError, match="zoo_evil.pkl.*Gadget"):
        DetrCheckpointer(model).load(evil)


def test_truncated_checkpoint_is_reported_with_its_name(model, tmp_path):
    path = tmp_path / "cut.pth"
    DetrCheckpointer(model, str(tmp_path)).save("cut")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="cut.pth.*truncated or corrupt"):
        DetrCheckpointer(model).load(str(path))


def test_weights_url_that_cannot_be_downloaded_is_named(model):
    with socket.socket() as s:  # a local port nothing listens on: the download is refused at once
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/R-50.pkl"
    with pytest.raises(OSError, match=f"{re.escape(url)}.*MODEL.WEIGHTS.*could not be downloaded"):
        DetrCheckpointer(model).load(url)


def test_failed_save_leaves_no_partial_file_and_keeps_the_last_tag(model, tmp_path, monkeypatch):
    ckpt = DetrCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001")

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save("model_0000002")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert open(tmp_path / "last_checkpoint").read() == "model_0000001.pth"


def _save_until_killed(folder, first, parent):
    """Child process: saves checkpoints of a 4 MB model, numbered from ``first``, until killed;
    it stops on its own after 500 saves or when the test process ``parent`` is gone, so that a
    test killed half-way does not leave it filling the disk."""
    module = torch.nn.Linear(1000, 1000)
    torch.nn.init.constant_(module.weight, 0.5)
    ckpt = DetrCheckpointer(module, folder)
    for i in range(first, first + 500):
        if os.getppid() != parent:
            return
        ckpt.save(f"model_{i:07d}")


def _checkpoints(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".pth"))


def test_killed_while_saving_leaves_only_complete_checkpoints(tmp_path):
    """SIGKILL a process that does nothing but save, after its first save, several times: every
    file under a checkpoint's name loads in full, and ``last_checkpoint`` names one of them. A
    kill inside a save leaves its temporary file (``.tmp.<pid>``); the test insists on two such kills."""
    # A spawned child: a forked one can hang in torch's thread pool, inherited mid-use.
    context = multiprocessing.get_context("spawn")
    for attempt in range(10):
        before = len(_checkpoints(tmp_path))
        child = context.Process(target=_save_until_killed, args=(str(tmp_path), 1000 * attempt, os.getpid()))
        child.start()
        deadline = time.monotonic() + 120
        while len(_checkpoints(tmp_path)) == before:
            assert child.is_alive() and time.monotonic() < deadline, "the saving child wrote nothing"
            time.sleep(0.005)
        time.sleep(random.Random(attempt).uniform(0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        for name in _checkpoints(tmp_path):
            weight = torch.load(tmp_path / name, weights_only=True)["model"]["weight"]
            assert weight.shape == (1000, 1000) and (weight == 0.5).all(), name
        assert (tmp_path / "last_checkpoint").read_text() in _checkpoints(tmp_path)
        if sum(".tmp." in f for f in os.listdir(tmp_path)) >= 2:
            return
    pytest.fail("fewer than two kills landed inside a save")

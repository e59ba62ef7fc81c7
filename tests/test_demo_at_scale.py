"""tools/demo.py at scale: bad images are reported and skipped, a killed run continues with
--skip-existing, batches and several processes give the same files as one image at a time."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from detr_panoptic_d2.predict import images as demo_images
from detr_panoptic_d2.predict.cli import setup_inference_cfg
from detr_panoptic_d2.predict.outputs import DemoOutputs

from .conftest import ROOT
from .helpers import load_tool, write_image, write_tiny_panoptic_model

demo = load_tool("demo")
# Original sizes; with the test-time resize to 96..160 px the first five become 96 x 134 and
# the last three 128 x 96, so batches of 4 are full only for some images.
SIZES = [(100, 140), (50, 70), (200, 280), (150, 210), (75, 105), (120, 90), (60, 45), (240, 180)]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return write_tiny_panoptic_model(str(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def good_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, (h, w) in enumerate(SIZES):
        write_image(folder / f"img{i}.png", h, w, seed=i)
    return folder


def _argv(model_files, inputs, out, *extra):
    config, weights = model_files
    return [
        "--config-file", config, "--input", *map(str, inputs), "--output", str(out), "--save-coco-panoptic",
        "--confidence-threshold", "0.0", *extra, "--opts", "MODEL.WEIGHTS", weights,
    ]


def _tree(folder):
    """{relative path: bytes} of every file under ``folder``."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def _run_tool(argv):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "tools/demo.py", *argv]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Every run of this module, in this process or in the tools' subprocesses (OMP_NUM_THREADS
    in _run_tool), uses one torch thread: results are compared byte for byte, and float sums
    split over another number of threads round differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_run(model_files, good_images, tmp_path_factory):
    """The files of an uninterrupted run, one image at a time in one process."""
    out = tmp_path_factory.mktemp("reference")
    assert demo.main(_argv(model_files, [good_images], out)) == 0
    return _tree(out)


def test_bad_images_are_named_skipped_and_summarized(model_files, good_images, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("img0.png", "img5.png"):
        (folder / name).write_bytes((good_images / name).read_bytes())
    whole = (good_images / "img1.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not a picture, a text file\n")
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    proc = _run_tool(_argv(model_files, [folder, missing], out))
    assert proc.returncode == 1, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    summary = log[log.index("6 images: 2 written, 0 skipped") :]
    reasons = {"truncated.png": "truncated or corrupt", "empty.jpg": "empty file", "notes.png": "not an image"}
    reasons[str(missing)] = "missing"
    for name, reason in reasons.items():
        path = name if os.path.isabs(name) else str(folder / name)
        assert f"Cannot read {path}: {reason}" in log
        assert f"  {path}: {reason}" in summary
    files = _tree(out)
    assert sorted(files) == sorted(
        ["img0.png", "img5.png", "coco_panoptic.json"] + [f"coco_panoptic/img{i}.{e}" for i in (0, 5) for e in ("png", "json")]
    )


def test_tools_compute_the_panoptic_output_only(model_files):
    config, _ = model_files
    cfg = setup_inference_cfg(config, ["MODEL.DETR.TEST.INSTANCES_ON", "True", "MODEL.DETR.TEST.SEMANTIC_ON", "True"])
    assert cfg.MODEL.DETR.TEST.PANOPTIC_ON and not cfg.MODEL.DETR.TEST.INSTANCES_ON and not cfg.MODEL.DETR.TEST.SEMANTIC_ON


def test_reader_reports_a_wrong_channel_count(monkeypatch, good_images):
    monkeypatch.setattr(demo_images, "read_image", lambda path, format: np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(demo_images.UnreadableImage, match=r"shape \(4, 5, 2\).*wrong channel count"):
        demo_images.read_rgb(str(good_images / "img0.png"))


def test_killed_run_continues_with_skip_existing(model_files, good_images, reference_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    original_write = DemoOutputs.write
    calls = []

    def dying_write(self, name, *args):
        if len(calls) == 3:
            # Killed while writing the 4th image: an earlier run's PNG of it is there, not its
            # picture, and a temporary is left behind.
            (out / "coco_panoptic" / f"{name}.png").write_bytes(b"stale")
            (out / f"{name}.png.tmp.4242").write_bytes(b"partial")
            raise KeyboardInterrupt
        calls.append(name)
        return original_write(self, name, *args)

    monkeypatch.setattr(DemoOutputs, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        demo.main(_argv(model_files, [good_images], out))
    assert not (out / "coco_panoptic.json").exists()
    finished = {name: (out / f"{name}.png").stat().st_mtime_ns for name in calls}

    calls.clear()
    monkeypatch.setattr(DemoOutputs, "write", lambda self, name, *args: calls.append(name) or original_write(self, name, *args))
    assert demo.main(_argv(model_files, [good_images], out, "--skip-existing")) == 0
    assert sorted(calls) == sorted(f"img{i}" for i in range(len(SIZES)) if f"img{i}" not in finished)
    assert {name: (out / f"{name}.png").stat().st_mtime_ns for name in finished} == finished
    # Exact by construction: the model sees one image at a time, the same operations at one thread count.
    assert _tree(out) == reference_run


def test_batches_of_4_with_workers_equal_one_image_at_a_time(model_files, good_images, reference_run, tmp_path):
    out = tmp_path / "out"
    assert demo.main(_argv(model_files, [good_images], out, "--batch-size", "4", "--num-workers", "2")) == 0
    # Exact by construction: the model sees one image at a time, the same operations at one thread count.
    assert _tree(out) == reference_run


def test_batches_equal_single_images_with_two_threads(model_files, good_images, tmp_path):
    """With 2 threads a batched forward rounds differently from single images (seen in CI:
    scores moved by 1e-8), so the batch size must not reach the model."""
    torch.set_num_threads(2)
    try:
        runs = []
        for batch in ("1", "4"):
            out = tmp_path / f"batch{batch}"
            assert demo.main(_argv(model_files, [good_images], out, "--batch-size", batch)) == 0
            runs.append(_tree(out))
    finally:
        torch.set_num_threads(1)
    # Exact by construction: the model sees one image at a time, the same operations at one thread count.
    assert runs[0] == runs[1]


def test_same_size_batches_group_by_network_input_size():
    import torch

    batches = demo_images.SameSizeBatches(2)
    records = [{"i": i, "image": torch.zeros(3, *size)} for i, size in enumerate([(8, 9), (9, 8), (8, 9), (9, 8), (9, 8)])]
    done = [[r["i"] for r in batch] for record in records for batch in batches.add(record)]
    assert done == [[0, 2], [1, 3]]
    assert [[r["i"] for r in batch] for batch in batches.flush()] == [[4]]


@pytest.mark.slow
def test_two_cpu_processes_write_each_image_once_as_one_process(model_files, good_images, reference_run, tmp_path):
    out = tmp_path / "out"
    proc = _run_tool(_argv(model_files, [good_images], out, "--num-gpus", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(SIZES)} images: {len(SIZES)} written, 0 skipped" in proc.stdout + proc.stderr
    # Exact by construction: the model sees one image at a time, the same operations at one thread count.
    assert _tree(out) == reference_run

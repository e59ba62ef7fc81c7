"""The synthetic shapes dataset: generation (determinism, lock, version stamp), registration,
content, and Detectron2's evaluators run unchanged on its metadata."""

import filecmp
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator, SemSegEvaluator
from detectron2.structures import BitMasks, Instances
from panopticapi.utils import rgb2id
from PIL import Image

import detr_panoptic_d2  # noqa: F401  (registers the builtin shapes splits)
from detr_panoptic_d2.engine.evaluators import PanopticSemSegEvaluator, ThingsCOCOEvaluator
from detr_panoptic_d2.data.shapes import CATEGORIES, ensure_split, generate, generate_split
from detr_panoptic_d2.data.shapes import register_shapes_panoptic, split_paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"num_images": 12, "seed": 5, "min_size": 64, "max_size": 96}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Name of a registered 12-image shapes split, loaded once (which generates it)."""
    name = "test_data_shapes_split"
    register_shapes_panoptic(name, str(tmp_path_factory.mktemp("shapes") / "split"), **SMALL)
    DatasetCatalog.get(name)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _read_ids(path):
    return rgb2id(np.asarray(Image.open(path).convert("RGB")))


def _files(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


def _run_python(code, env=None):
    """Runs ``code`` in a fresh interpreter with this worktree first on the path."""
    full_env = {**os.environ, "PYTHONPATH": REPO, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _communicate(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def test_generator_is_deterministic(tmp_path):
    params = {"num_images": 4, "min_size": 48, "max_size": 80}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_split(str(tmp_path / name), seed=seed, **params)
    files = _files(tmp_path / "a")
    assert len(files) == 3 * 4 + 2
    assert files == _files(tmp_path / "b")
    # Exact by construction: one generator, one seed, the same machine and process.
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert mismatch == [] and errors == []
    assert not filecmp.cmp(
        tmp_path / "a" / "panoptic.json", tmp_path / "c" / "panoptic.json", shallow=False
    )


def test_stamp_skips_or_regenerates(tmp_path, monkeypatch):
    root = str(tmp_path / "split")
    params = {"num_images": 2, "seed": 0, "min_size": 40, "max_size": 60}
    assert ensure_split(root, **params)
    sentinel = os.path.join(root, "sentinel")
    open(sentinel, "w").close()
    assert not ensure_split(root, **params)
    assert os.path.exists(sentinel)

    monkeypatch.setattr(generate, "GENERATOR_VERSION", generate.GENERATOR_VERSION + 1)
    assert ensure_split(root, **params)
    assert not os.path.exists(sentinel)
    with open(split_paths(root)["stamp"]) as f:
        assert json.load(f)["version"] == generate.GENERATOR_VERSION

    assert ensure_split(root, **{**params, "num_images": 3})
    assert len(os.listdir(split_paths(root)["image_root"])) == 3


def test_lock_lets_one_of_two_processes_generate(tmp_path):
    root = tmp_path / "split"
    params = dict(num_images=40, seed=0, min_size=64, max_size=96)
    code = f"""
        import os, time
        from detr_panoptic_d2.data.shapes import ensure_split
        open(os.path.join({str(tmp_path)!r}, f"ready-{{os.getpid()}}"), "w").close()
        while not os.path.exists({str(tmp_path / "go")!r}):
            time.sleep(0.005)
        print(ensure_split({str(root)!r}, **{params!r}))
    """
    procs = [_run_python(code) for _ in range(2)]
    while len([f for f in os.listdir(tmp_path) if f.startswith("ready-")]) < 2:
        assert all(p.poll() is None for p in procs), "a child exited before the start signal"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    results = sorted(_communicate(p).strip() for p in procs)
    assert results == ["False", "True"]
    generate_split(str(tmp_path / "reference"), **params)
    files = _files(tmp_path / "reference")
    # Exact by construction: one generator, one seed, the same machine.
    _, mismatch, errors = filecmp.cmpfiles(root, tmp_path / "reference", files, shallow=False)
    assert mismatch == [] and errors == []


def test_builtin_splits_register_on_import_and_generate_lazily(tmp_path):
    code = """
        import os
        from detectron2.data import DatasetCatalog, MetadataCatalog
        import detr_panoptic_d2
        root = os.environ["DETECTRON2_DATASETS"]
        assert os.listdir(root) == [], os.listdir(root)
        assert {"shapes_panoptic_train", "shapes_panoptic_val", "shapes_panoptic_tune"} <= set(DatasetCatalog.list())
        meta = MetadataCatalog.get("shapes_panoptic_val")
        assert meta.panoptic_json == os.path.join(root, "shapes_panoptic", "val", "panoptic.json")
        dicts = DatasetCatalog.get("shapes_panoptic_val")
        assert len(dicts) == 3
        assert os.path.isfile(meta.panoptic_json)
        assert not os.path.exists(os.path.join(root, "shapes_panoptic", "train"))
        tune = DatasetCatalog.get("shapes_panoptic_tune")
        assert len(tune) == 2 and tune[0]["file_name"].startswith(os.path.join(root, "shapes_panoptic", "tune"))
        # Another draw than val (seed 2 vs 1): the first images differ.
        with open(tune[0]["file_name"], "rb") as a, open(dicts[0]["file_name"], "rb") as b:
            assert a.read() != b.read()
        print(sorted(d["file_name"][len(root):] for d in dicts))
    """
    env = {
        "DETECTRON2_DATASETS": str(tmp_path),
        "SHAPES_PANOPTIC_NUM_VAL": "3",
        "SHAPES_PANOPTIC_NUM_TUNE": "2",
        "SHAPES_PANOPTIC_MIN_SIZE": "40",
        "SHAPES_PANOPTIC_MAX_SIZE": "50",
    }
    out = _communicate(_run_python(code, env))
    assert "/shapes_panoptic/val/images/000003.jpg" in out


def test_metadata_follows_the_standard_convention(shapes):
    meta = MetadataCatalog.get(shapes)
    names = [c["name"] for c in CATEGORIES]
    assert meta.thing_classes == meta.stuff_classes == names
    assert len(meta.thing_colors) == len(meta.stuff_colors) == len(names)
    things = {c["id"] for c in CATEGORIES if c["isthing"]}
    assert len(things) >= 3 and len(names) - len(things) >= 2
    assert set(meta.thing_dataset_id_to_contiguous_id) == things
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == list(range(len(things)))
    # The stuff map covers every class (Mask2Former's convention) so SemSegEvaluator can
    # score things too.
    assert sorted(meta.stuff_dataset_id_to_contiguous_id.values()) == list(range(len(names)))
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert (meta.ignore_label, meta.label_divisor) == (255, 1000)
    for key in ("panoptic_root", "panoptic_json", "json_file", "sem_seg_root", "image_root"):
        assert os.path.exists(meta.get(key)), key
    with open(meta.panoptic_json) as f:
        categories = json.load(f)["categories"]
    assert all({"id", "name", "isthing", "color"} <= set(c) for c in categories)


def test_generated_files_are_consistent(shapes):
    meta = MetadataCatalog.get(shapes)
    with open(meta.json_file) as f:
        instances = json.load(f)
    by_image = {}
    for ann in instances["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    things = set(meta.thing_dataset_id_to_contiguous_id.values())
    same_class_touching = False
    for d in DatasetCatalog.get(shapes):
        image = Image.open(d["file_name"])
        ids = _read_ids(d["pan_seg_file_name"])
        semantic = np.asarray(Image.open(d["sem_seg_file_name"]))
        assert image.mode == "RGB" and image.size == ids.shape[::-1] == semantic.shape[::-1]
        assert 64 <= min(ids.shape) and max(ids.shape) <= 96
        segs = d["segments_info"]
        assert set(np.unique(ids)) == {s["id"] for s in segs}
        n_things = sum(s["category_id"] in things for s in segs)
        assert 1 <= n_things <= 5 and 1 <= len(segs) - n_things <= 3
        for s in segs:
            mask = ids == s["id"]
            assert mask.sum() == s["area"]
            assert np.all(semantic[mask] == s["category_id"])
        thing_areas = sorted(s["area"] for s in segs if s["category_id"] in things)
        assert thing_areas == sorted(a["area"] for a in by_image[d["image_id"]])
        # Two instances of one class sharing a border (4-neighbourhood).
        classes = {s["id"]: s["category_id"] for s in segs}
        for a, b in ((ids[:, 1:], ids[:, :-1]), (ids[1:], ids[:-1])):
            pairs = {(int(x), int(y)) for x, y in zip(a[a != b], b[a != b])}
            same_class_touching |= any(
                classes[x] == classes[y] and classes[x] in things for x, y in pairs
            )
    assert same_class_touching


def _ground_truth_panoptic(d):
    ids = torch.from_numpy(_read_ids(d["pan_seg_file_name"]))
    segments = [
        {"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
        for s in d["segments_info"]
    ]
    return ids, segments


def test_ground_truth_scores_pq_100(shapes, tmp_path):
    evaluator = COCOPanopticEvaluator(shapes, str(tmp_path))
    evaluator.reset()
    for d in DatasetCatalog.get(shapes):
        evaluator.process([d], [{"panoptic_seg": _ground_truth_panoptic(d)}])
    result = evaluator.evaluate()["panoptic_seg"]
    assert result["PQ"] == pytest.approx(100.0)
    assert result["PQ_th"] == pytest.approx(100.0) and result["PQ_st"] == pytest.approx(100.0)


@pytest.fixture
def things_only_json_split(shapes, tmp_path):
    """``shapes`` again, with an instances JSON listing the thing categories only, as COCO's
    instances_val2017.json does beside the 133-class panoptic metadata."""
    meta = MetadataCatalog.get(shapes)
    with open(meta.json_file) as f:
        instances = json.load(f)
    instances["categories"] = [c for c in instances["categories"] if c["id"] in meta.thing_dataset_id_to_contiguous_id]
    json_file = str(tmp_path / "things_only.json")
    with open(json_file, "w") as f:
        json.dump(instances, f)
    name = shapes + "_things_json"
    DatasetCatalog.register(name, lambda: DatasetCatalog.get(shapes))
    MetadataCatalog.get(name).set(**{**meta.as_dict(), "name": name, "json_file": json_file})
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.mark.parametrize("things_only_json", [False, True])
def test_ground_truth_scores_ap_100_with_coco_evaluator(shapes, things_only_json, request):
    if things_only_json:
        shapes = request.getfixturevalue("things_only_json_split")
    # use_fast_impl=False: the fast COCOeval needs detectron2's compiled _C.
    evaluator = ThingsCOCOEvaluator(shapes, tasks=("bbox", "segm"), distributed=False, use_fast_impl=False)
    evaluator.reset()
    for d in DatasetCatalog.get(shapes):
        ids, segments = _ground_truth_panoptic(d)
        things = [s for s in segments if s["isthing"]]
        masks = BitMasks(torch.stack([ids == s["id"] for s in things]))
        instances = Instances(tuple(ids.shape))
        instances.pred_masks = masks.tensor
        instances.pred_boxes = masks.get_bounding_boxes()
        instances.pred_classes = torch.tensor([s["category_id"] for s in things])
        instances.scores = torch.ones(len(things))
        evaluator.process([d], [{"instances": instances}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)


def _ground_truth_as_scores(evaluator, dataset_name):
    """Feeds ``evaluator`` the one-hot scores of each image's semantic PNG; returns the set of
    contiguous ids seen."""
    evaluator.reset()
    num_classes = len(MetadataCatalog.get(dataset_name).stuff_classes)
    seen = set()
    for d in DatasetCatalog.get(dataset_name):
        semantic = torch.from_numpy(np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64))
        seen |= set(semantic.unique().tolist())
        scores = torch.nn.functional.one_hot(semantic, num_classes).permute(2, 0, 1).float()
        evaluator.process([d], [{"sem_seg": scores}])
    return seen


def test_ground_truth_through_sem_seg_evaluator(shapes):
    # The default sem_seg_loading_fn of Detectron2 fails under NumPy 2 (np.array(copy=False)).
    evaluator = SemSegEvaluator(
        shapes,
        distributed=False,
        sem_seg_loading_fn=lambda f, dtype: np.asarray(Image.open(f), dtype=dtype),
    )
    _ground_truth_as_scores(evaluator, shapes)
    assert evaluator.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_panoptic_sem_seg_evaluator_maps_thing_pixels_back_to_dataset_ids(shapes):
    """Under Detectron2's COCO panoptic convention the stuff map holds the stuff classes only:
    Detectron2's SemSegEvaluator cannot name a thing pixel's dataset id in its JSON export,
    PanopticSemSegEvaluator maps it through the thing map. Ground truth in: mIoU 100, and the
    exported category ids are the dataset ids of the classes present."""
    meta = MetadataCatalog.get(shapes)
    name = f"{shapes}_stuff_map_without_things"
    stuff_ids = {c["id"] for c in CATEGORIES if not c["isthing"]}
    stuff_only = {k: v for k, v in meta.stuff_dataset_id_to_contiguous_id.items() if k in stuff_ids}
    DatasetCatalog.register(name, lambda: DatasetCatalog.get(shapes))
    MetadataCatalog.get(name).set(
        **{k: v for k, v in meta.as_dict().items() if k not in ("name", "stuff_dataset_id_to_contiguous_id")},
        stuff_dataset_id_to_contiguous_id=stuff_only,
    )
    try:
        evaluator = PanopticSemSegEvaluator(name, distributed=False)
        seen = _ground_truth_as_scores(evaluator, name)
        to_dataset = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
        to_dataset.update({v: k for k, v in stuff_only.items()})
        assert seen - set(stuff_only.values()), "no thing pixel: the remapping went untested"
        assert {p["category_id"] for p in evaluator._predictions} == {to_dataset[c] for c in seen}
        assert evaluator.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

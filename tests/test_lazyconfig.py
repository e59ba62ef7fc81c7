"""LazyConfigs (configs/**/*.py) and tools/lazyconfig_train_net.py: the Python configs build what
the yaml ones build, save and reload, train, evaluate and resume, and take another Detectron2
backbone (ViT + SimpleFeaturePyramid) with no other change."""
import json
import math
import os

import detectron2.data.transforms as T
import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler

from detr_panoptic_d2.data import DetrPanopticDatasetMapper
from detr_panoptic_d2.engine import build_optimizer
from detr_panoptic_d2.checkpoint.frozen_detector import load_frozen_detector
from detr_panoptic_d2.engine.lazy import adapt_lazy_config
from detr_panoptic_d2.modeling import MergeRule, Precision

from .helpers import load_tool, model_from_config_file, write_panoptic_split

PAIRS = {
    "R50_panoptic": ("configs/coco/detr_R50_panoptic.py", "configs/coco/detr_R50_panoptic.yaml"),
    "R50_boxes": ("configs/coco/detr_R50_boxes.py", "configs/coco/detr_R50_boxes.yaml"),
    "R50_joint": ("configs/coco/detr_R50_joint.py", "configs/coco/detr_R50_joint.yaml"),
    "R18_shapes": ("configs/shapes/detr_R18_shapes.py", "configs/shapes/detr_R18_shapes.yaml"),
    "R18_shapes_anchor": ("configs/shapes/detr_R18_shapes_anchor.py", "configs/shapes/detr_R18_shapes_anchor.yaml"),
    "R50_anchor_joint": ("configs/coco/detr_R50_anchor_joint.py", "configs/coco/detr_R50_anchor_joint.yaml"),
}


def _lazy_model(path, **overrides):
    cfg = LazyConfig.load(path)
    for key, value in overrides.items():
        setattr(cfg.model, key, value)
    return cfg, instantiate(cfg.model)


def _plain_attributes(model):
    """(module name, attribute) -> value of every bool/int/float/str/tuple attribute of every
    module, and of the settings objects modules hold (Precision, MergeRule): the settings a
    state dict does not show (strides, dilations, thresholds, dropout, loss weights, frozen
    flags, merge rule, precision...)."""

    def settings(obj, prefix):
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            if isinstance(value, (bool, int, float, str, tuple)) or value is None:
                yield (prefix, attr), value
            elif isinstance(value, (Precision, MergeRule)):
                yield from settings(value, f"{prefix}.{attr}")

    return {key: value for name, module in model.named_modules() for key, value in settings(module, name)}


def _assert_same_model(lazy, yaml):
    lazy_state, yaml_state = lazy.state_dict(), yaml.state_dict()
    assert list(lazy_state) == list(yaml_state)
    assert {k: v.shape for k, v in lazy_state.items()} == {k: v.shape for k, v in yaml_state.items()}
    assert _plain_attributes(lazy) == _plain_attributes(yaml)
    assert {n: p.requires_grad for n, p in lazy.named_parameters()} == {
        n: p.requires_grad for n, p in yaml.named_parameters()
    }
    for name in ("pixel_mean", "pixel_std", "postprocessor.is_thing"):
        # Exact by construction: both models initialized by the same operations from the same seed.
        assert torch.equal(lazy.get_buffer(name), yaml.get_buffer(name)), name


@pytest.mark.parametrize("pair", list(PAIRS), ids=list(PAIRS))
def test_lazyconfig_builds_the_yaml_model(pair):
    """Same state-dict keys (in order) and shapes, same settings of every module, same frozen
    parameters and thing classes as the yaml config of the same name."""
    lazy_path, yaml_path = PAIRS[pair]
    _, lazy = _lazy_model(lazy_path)
    _, yaml = model_from_config_file(yaml_path)
    _assert_same_model(lazy, yaml)


def _settings(value):
    """Augmentations as nested plain values (class name and attributes; tuples as lists, since
    a LazyConfig holds lists where a yacs config holds tuples)."""
    if isinstance(value, (list, tuple)):
        return [_settings(v) for v in value]
    if isinstance(value, T.Augmentation):
        return [type(value).__name__, {k: _settings(v) for k, v in vars(value).items()}]
    return value


def _yaml_cfg(path):
    cfg, _ = model_from_config_file(path)
    return cfg


def test_shapes_lazyconfig_has_the_yaml_data_optimizer_schedule_and_run_settings():
    cfg = LazyConfig.load("configs/shapes/detr_R18_shapes.py")
    yaml = _yaml_cfg("configs/shapes/detr_R18_shapes.yaml")
    # Data: datasets, mapper (augmentation, format, classes), batch, workers.
    for split, is_train, names in (("train", True, yaml.DATASETS.TRAIN), ("test", False, yaml.DATASETS.TEST)):
        loader_cfg = cfg.dataloader[split]
        assert [loader_cfg.dataset.names] == list(names)
        lazy_mapper = instantiate(loader_cfg.mapper)
        yaml_mapper = DetrPanopticDatasetMapper(yaml, is_train=is_train)
        assert _settings(lazy_mapper.augmentations) == _settings(yaml_mapper.augmentations)
        for attr in ("is_train", "image_format", "dataset_name", "class_ids", "skip_bad_samples"):
            assert getattr(lazy_mapper, attr) == getattr(yaml_mapper, attr), (split, attr)
        assert loader_cfg.num_workers == yaml.DATALOADER.NUM_WORKERS
    assert cfg.dataloader.train.total_batch_size == yaml.SOLVER.IMS_PER_BATCH

    # Optimizer: the same parameter groups (lr, weight decay per parameter), the same class,
    # the same full-model clipping (after a step, the joint gradient norm is the clip value).
    _, model = _lazy_model("configs/shapes/detr_R18_shapes.py")
    cfg.optimizer.params.model = model
    optimizers = [instantiate(cfg.optimizer), build_optimizer(yaml, model)]
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [
        sorted((names[id(p)], g["lr"], g["weight_decay"]) for g in o.param_groups for p in g["params"]) for o in optimizers
    ]
    assert groups[0] == groups[1]
    assert type(optimizers[0]).__name__ == type(optimizers[1]).__name__ == "AdamWFullModelClipping"
    for optimizer in optimizers:
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        joint = torch.cat([p.grad.flatten() for p in model.parameters()]).double().norm()
        assert joint.item() == pytest.approx(yaml.SOLVER.CLIP_GRADIENTS.CLIP_VALUE, rel=1e-4)

    # Schedule: the same multiplier at every iteration around the drop.
    yaml_schedule = build_lr_scheduler(yaml, optimizers[1])
    lazy_schedule = instantiate(cfg.lr_multiplier)
    (step,) = yaml.SOLVER.STEPS
    for it in (0, 1, step - 1, step, yaml.SOLVER.MAX_ITER - 1):
        where = it / yaml.SOLVER.MAX_ITER
        assert lazy_schedule(where) == pytest.approx(yaml_schedule._multiplier(where)), it

    # Run settings.
    assert cfg.train.max_iter == yaml.SOLVER.MAX_ITER
    assert cfg.train.checkpointer.period == yaml.SOLVER.CHECKPOINT_PERIOD
    assert cfg.train.eval_period == yaml.TEST.EVAL_PERIOD
    assert cfg.train.seed == yaml.SEED
    assert cfg.train.output_dir == yaml.OUTPUT_DIR
    assert cfg.train.init_checkpoint == yaml.MODEL.WEIGHTS
    assert cfg.train.amp.enabled == yaml.SOLVER.AMP.ENABLED


@pytest.mark.parametrize("path", ["configs/shapes/detr_R18_shapes.py", "configs/coco/detr_R50_panoptic.py"])
def test_saved_lazyconfig_reloads_and_builds_the_same_model(path, tmp_path):
    """LazyConfig.save writes plain yaml (no pickle fallback: no lambda or object in the
    config); the reloaded config saves to the same text and builds the same model."""
    cfg = LazyConfig.load(path)
    LazyConfig.save(cfg, str(tmp_path / "saved.yaml"))
    assert os.listdir(tmp_path) == ["saved.yaml"]
    again = LazyConfig.load(str(tmp_path / "saved.yaml"))
    LazyConfig.save(again, str(tmp_path / "again.yaml"))
    assert (tmp_path / "again.yaml").read_text() == (tmp_path / "saved.yaml").read_text()
    assert "dataset_name: '${..test.dataset.names}'" in (tmp_path / "saved.yaml").read_text()  # links kept
    models = []
    for c in (cfg, again):
        models.append(instantiate(c.model))
    _assert_same_model(*models)


def test_frozen_detector_stage_and_eval_only_adaptation(tmp_path, monkeypatch):
    """With train.frozen_weights (stage 2, loaded as lazy_train does), the optimizer holds the mask head alone and the
    detector is the box-only checkpoint's; --eval-only ignores frozen_weights, and without
    CUDA train.device falls back to cpu and AMP is turned off, each with a warning."""
    cfg = LazyConfig.load("configs/shapes/detr_R18_shapes.py")
    cfg.model.mask_head = None
    cfg.model.postprocessor.panoptic_on = cfg.model.postprocessor.semantic_on = False
    torch.manual_seed(0)
    boxes = instantiate(cfg.model).state_dict()
    torch.save({"model": boxes}, tmp_path / "boxes.pth")

    cfg = LazyConfig.load("configs/shapes/detr_R18_shapes.py")
    cfg.train.frozen_weights = str(tmp_path / "boxes.pth")
    cfg.model.criterion.encoder_semantic = None  # the encoder is frozen in this stage
    model = load_frozen_detector(instantiate(cfg.model), cfg.train.frozen_weights, key="train.frozen_weights")
    cfg.optimizer.params.model = model
    held = {id(p) for g in instantiate(cfg.optimizer).param_groups for p in g["params"]}
    assert held == {id(p) for p in model.mask_head.parameters()}
    detector = {k: v for k, v in model.state_dict().items() if not k.startswith("mask_head.")}
    # Exact by construction: a copy of the same tensors, no arithmetic.
    assert detector and all(torch.equal(value, boxes[name]) for name, value in detector.items())

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg.train.amp.enabled = True
    warnings = adapt_lazy_config(cfg, eval_only=True)
    # train.amp.enabled stays: on the CPU it means bfloat16 autocast in the model.
    assert cfg.train.frozen_weights == "" and cfg.train.device == "cpu" and cfg.train.amp.enabled
    assert len(warnings) == 2 and "train.frozen_weights" in warnings[0]


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy_data")
    return {"train": write_panoptic_split(root / "train", 6, 0), "val": write_panoptic_split(root / "val", 3, 1)}


# Overrides for a one-iteration run (the schedule's drop removed).
ONE_STEP = ["train.max_iter=1", "lr_multiplier.milestones=[]", "lr_multiplier.values=[1.0]"]


def _tool_args(on_disk, output_dir, *opts):
    return [
        "--register", "lazy_train", *on_disk["train"], "--register", "lazy_val", *on_disk["val"],
        "dataloader.train.dataset.names=lazy_train", "dataloader.test.dataset.names=lazy_val",
        "dataloader.train.total_batch_size=2", f"train.output_dir={output_dir}", "train.device=cpu",
        "train.log_period=1",
        *opts,
    ]


def _log(output_dir):
    with open(os.path.join(output_dir, "log.txt")) as f:
        return f.read()


@pytest.mark.slow
def test_lazyconfig_train_net_trains_evaluates_and_resumes(on_disk, tmp_path):
    """The shapes LazyConfig on a split registered with --register: 2 iterations then PQ; then
    --eval-only of the final checkpoint prints the same PQ; --resume with train.max_iter=3 runs
    the third iteration only."""
    tool = load_tool("lazyconfig_train_net")
    out = tmp_path / "run"
    schedule = ["lr_multiplier.milestones=[1]"]
    args = ["--config-file", "configs/shapes/detr_R18_shapes.py"]
    results = tool.main(tool.parse_args(args + _tool_args(on_disk, out, "train.max_iter=2", *schedule)))
    assert math.isfinite(results["panoptic_seg"]["PQ"])
    assert os.path.isfile(out / "model_final.pth") and os.path.isfile(out / "config.yaml")

    again = tool.main(
        tool.parse_args(
            args + ["--eval-only"]
            + _tool_args(on_disk, out, f"train.init_checkpoint={out / 'model_final.pth'}")
        )
    )
    assert again["panoptic_seg"]["PQ"] == results["panoptic_seg"]["PQ"]
    assert _log(out).count("Panoptic Evaluation Results") == 2

    tool.main(tool.parse_args(args + ["--resume"] + _tool_args(on_disk, out, "train.max_iter=3", *schedule)))
    with open(out / "metrics.json") as f:
        trained = [m["iteration"] for m in map(json.loads, f) if "total_loss" in m]
    assert trained == [0, 1, 2]  # the resumed run did iteration 2 only (logged every iteration here)
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 2


def test_lazyconfig_num_classes_is_checked(on_disk, tmp_path):
    tool = load_tool("lazyconfig_train_net")
    args = tool.parse_args(
        [
            "--config-file", "configs/shapes/detr_R18_shapes.py",
            *_tool_args(on_disk, tmp_path, "model.num_classes=5", *ONE_STEP),
        ]
    )
    with pytest.raises(ValueError, match="'lazy_train' has 6 classes .* model.num_classes is 5: set model.num_classes 6"):
        tool.main(args)


def _vit_simple_feature_pyramid():
    """Detectron2's ViT (tiny: 2 blocks, width 64) with its SimpleFeaturePyramid (p2..p5)."""
    from detectron2.modeling import SimpleFeaturePyramid, ViT

    return L(SimpleFeaturePyramid)(
        net=L(ViT)(
            img_size=128, patch_size=16, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, drop_path_rate=0.0,
            window_size=0, use_rel_pos=False, out_feature="last_feat",
        ),
        in_feature="last_feat",
        out_channels=64,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        norm="LN",
    )


@pytest.mark.slow
def test_vit_simple_feature_pyramid_swapped_in_trains_a_step(on_disk, tmp_path):
    """cfg.model.backbone of the shapes LazyConfig replaced by ViT + SimpleFeaturePyramid and
    nothing else: the saved config trains a step with tools/lazyconfig_train_net.py; the
    transformer reads p5, the mask head adds back p4, p3, p2."""
    cfg = LazyConfig.load("configs/shapes/detr_R18_shapes.py")
    cfg.model.backbone = _vit_simple_feature_pyramid()
    LazyConfig.save(cfg, str(tmp_path / "vit.yaml"))
    tool = load_tool("lazyconfig_train_net")
    out = tmp_path / "run"
    results = tool.main(
        tool.parse_args(
            ["--config-file", str(tmp_path / "vit.yaml"),
             *_tool_args(on_disk, out, *ONE_STEP)]
        )
    )
    assert math.isfinite(results["panoptic_seg"]["PQ"])
    state = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert any(k.startswith("backbone.net.blocks.1.") for k in state)
    assert state["input_proj.weight"].shape[1] == 64
    model = instantiate(LazyConfig.load(str(tmp_path / "vit.yaml")).model)
    assert model.in_feature == "p5" and model.mask_head.in_features == ["p4", "p3", "p2"]


def _lazy_tool_worker(argv):
    """One process of a --num-gpus run (the tool module is loaded in each process)."""
    tool = load_tool("lazyconfig_train_net")
    tool.main(tool.parse_args(argv))


@pytest.mark.slow
def test_lazyconfig_train_net_two_processes_on_cpu(on_disk, tmp_path):
    """--num-gpus 2 without GPUs: 2 processes over GLOO, each registering the --register
    splits itself; rank 0 writes the checkpoint, each rank its log."""
    from detectron2.engine import launch

    out = tmp_path / "run"
    argv = ["--config-file", "configs/shapes/detr_R18_shapes.py", "--num-gpus", "2"]
    argv += _tool_args(on_disk, out, "dataloader.train.total_batch_size=4", *ONE_STEP)
    launch(_lazy_tool_worker, 2, dist_url="auto", args=(argv,))
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 0
    assert os.path.isfile(out / "log.txt.rank1")
    assert "Panoptic Evaluation Results" in _log(out)

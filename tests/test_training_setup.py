"""The trainer's parts: optimizer groups and full-model clipping, machine adaptation of the
config, and the choice of evaluators."""
import logging
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from detr_panoptic_d2 import add_detr_panoptic_config
from detr_panoptic_d2.data import register_panoptic_dataset
from detr_panoptic_d2.engine import (
    PanopticSemSegEvaluator,
    PerClassPanopticEvaluator,
    ThingsCOCOEvaluator,
    adapt_to_machine,
    build_optimizer,
    build_panoptic_evaluator,
    with_full_model_clipping,
)

from .helpers import model_from_config_file, register_tiny_shapes, tiny_cfg


def _lr_of(optimizer, param):
    return next(g["lr"] for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_optimizer_is_adamw_with_backbone_multiplier_and_full_model_clipping():
    cfg = tiny_cfg()
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert _lr_of(optimizer, model.backbone.res3[0].conv1.weight) == pytest.approx(1e-5)
    assert _lr_of(optimizer, model.query_embed.weight) == pytest.approx(1e-4)
    assert _lr_of(optimizer, model.mask_head.fpn.mask_predictor.weight) == pytest.approx(1e-4)
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert held == trainable
    assert id(model.backbone.stem.conv1.weight) not in held  # frozen by FREEZE_AT


def test_full_model_clipping_bounds_the_joint_norm_not_each_tensor():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(4))
    optimizer = with_full_model_clipping(torch.optim.SGD, max_norm=0.1)([a, b], lr=1.0)
    a.grad = torch.full((3,), 3.0)
    b.grad = torch.full((4,), 4.0)
    joint = torch.cat([a.grad, b.grad]).norm()
    optimizer.step()
    # The joint norm is 0.1; the direction of the whole gradient is kept.
    assert torch.cat([a.grad, b.grad]).norm() == pytest.approx(0.1, rel=1e-5)
    assert torch.allclose(-a.data, torch.full((3,), 3.0) * 0.1 / joint)
    assert torch.allclose(-b.data, torch.full((4,), 4.0) * 0.1 / joint)


def test_unknown_optimizer_is_named():
    cfg = tiny_cfg()
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER='LAMB'"):
        build_optimizer(cfg, build_model(cfg))


def test_eval_only_ignores_frozen_weights_and_cpu_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tiny_cfg()
    cfg.MODEL.DEVICE = "cuda"
    cfg.SOLVER.AMP.ENABLED = True
    cfg.MODEL.DETR.FROZEN_WEIGHTS = "stage1/model_final.pth"
    warnings = adapt_to_machine(cfg, eval_only=True)
    # SOLVER.AMP.ENABLED stays: on the CPU it means bfloat16 autocast (test_amp.py).
    assert cfg.MODEL.DETR.FROZEN_WEIGHTS == "" and cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED
    assert len(warnings) == 2 and "stage1/model_final.pth" in warnings[0]
    training = tiny_cfg()
    training.MODEL.DETR.FROZEN_WEIGHTS = "stage1/model_final.pth"
    assert adapt_to_machine(training, eval_only=False) == []
    assert training.MODEL.DETR.FROZEN_WEIGHTS == "stage1/model_final.pth"


@pytest.mark.parametrize("native", [True, False, None])
def test_cpu_bfloat16_training_warns_without_native_bfloat16(monkeypatch, native):
    from detr_panoptic_d2.engine import defaults

    monkeypatch.setattr(defaults, "cpu_has_bfloat16", lambda: native)
    cfg = tiny_cfg()
    cfg.MODEL.DEVICE, cfg.SOLVER.AMP.ENABLED = "cpu", True
    warnings = adapt_to_machine(cfg)
    assert cfg.SOLVER.AMP.ENABLED  # a warning, not a change
    assert len(warnings) == (native is False) and all("no native bfloat16" in w for w in warnings)
    assert adapt_to_machine(cfg, eval_only=True) == []


def test_evaluators_follow_the_enabled_outputs_and_metadata(tmp_path, caplog):
    _, val = register_tiny_shapes(tmp_path, "shapes_evalsel", num_train=1, num_val=2)
    cfg = tiny_cfg(num_classes=6, dataset=val)
    cfg.MODEL.DETR.TEST.INSTANCES_ON = True
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
    kinds = [type(e) for e in build_panoptic_evaluator(cfg, val, str(tmp_path))._evaluators]
    assert kinds == [PerClassPanopticEvaluator, ThingsCOCOEvaluator, PanopticSemSegEvaluator]

    cfg.MODEL.DETR.TEST.SEMANTIC_ON = False
    with caplog.at_level(logging.INFO, logger="detr_panoptic_d2"):
        kinds = [type(e) for e in build_panoptic_evaluator(cfg, val, str(tmp_path))._evaluators]
    assert kinds == [PerClassPanopticEvaluator, ThingsCOCOEvaluator]
    assert "SEMANTIC_ON is off" in caplog.text

    # The same files registered without instances JSON or semantic PNGs.
    meta = MetadataCatalog.get(val)
    bare = "shapes_evalsel_bare"
    register_panoptic_dataset(
        bare, {k: meta.get(k) for k in ("thing_classes", "stuff_classes", "thing_dataset_id_to_contiguous_id",
                                        "stuff_dataset_id_to_contiguous_id")},
        meta.image_root, meta.panoptic_root, meta.panoptic_json,
    )
    try:
        cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="detr_panoptic_d2"):
            kinds = [type(e) for e in build_panoptic_evaluator(cfg, bare, str(tmp_path))._evaluators]
        assert kinds == [PerClassPanopticEvaluator]
        assert "has no json_file" in caplog.text and "no sem_seg_file_name" in caplog.text
        cfg.MODEL.DETR.TEST.PANOPTIC_ON = False
        with pytest.raises(NotImplementedError, match="No evaluator applies to 'shapes_evalsel_bare'"):
            build_panoptic_evaluator(cfg, bare, str(tmp_path))
    finally:
        DatasetCatalog.remove(bare)
        MetadataCatalog.remove(bare)


def test_other_evaluator_types_are_refused():
    with pytest.raises(ValueError, match="'lvis_v1_val'.*evaluator_type 'lvis'"):
        build_panoptic_evaluator(tiny_cfg(), "lvis_v1_val", None)
    # A COCO detection dataset is evaluated for AP only: without instance outputs nothing applies.
    with pytest.raises(NotImplementedError, match="'coco_2017_val'.*INSTANCES_ON"):
        build_panoptic_evaluator(tiny_cfg(), "coco_2017_val", None)


@pytest.mark.parametrize("path", ["configs/shapes/detr_R18_shapes.yaml", "configs/shapes/detr_R18_shapes_boxes.yaml",
                                  "configs/shapes/detr_R18_shapes_panoptic.yaml"])
def test_shapes_configs_build_for_the_builtin_dataset(path):
    cfg, model = model_from_config_file(path)
    assert model.class_embed.out_features == 7 and cfg.DATASETS.TEST == ("shapes_panoptic_val",)
    assert (model.mask_head is not None) == cfg.MODEL.MASK_ON
    assert "res5" not in model.backbone.output_shape()  # read at res4, res5 not built


def test_coco_schedules_are_the_papers_in_iterations():
    """300 box epochs (lr drop at 200), then 25 mask epochs (drop at 15), 118287 images, batch 64."""
    epoch = math.ceil(118287 / 64)
    for path, (epochs, drop) in {"configs/coco/detr_R50_boxes.yaml": (300, 200),
                                 "configs/coco/detr_R50_joint.yaml": (300, 200),
                                 "configs/coco/detr_R50_panoptic.yaml": (25, 15)}.items():
        cfg = add_detr_panoptic_config(get_cfg())
        cfg.merge_from_file(path)
        assert cfg.SOLVER.IMS_PER_BATCH == 64
        assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (epochs * epoch, (drop * epoch,)), path

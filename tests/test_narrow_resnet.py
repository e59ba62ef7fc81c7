"""The BasicBlock ResNet of any width (MODEL.BACKBONE.NAME "build_basic_resnet_backbone",
modeling/narrow_resnet.py): at R18's settings it is Detectron2's R18; narrowed and shallowed it
builds from yaml and LazyConfig into the same Detectron2 layout and trains a step."""
import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone.resnet import BasicStem, ResNet

from detr_panoptic_d2.engine import build_optimizer, load_config
from detr_panoptic_d2.modeling import basic_resnet_stages

from .helpers import make_input

NARROW = [
    "MODEL.BACKBONE.NAME", "build_basic_resnet_backbone",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "32",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
    "MODEL.RESNETS.BASIC_BLOCKS_PER_STAGE", "[1, 1, 1]",
    "MODEL.DEVICE", "cpu",
]


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_at_r18_settings_it_is_detectron2s_r18():
    ours = ResNet(BasicStem(3, 64, norm="BN"), basic_resnet_stages([2, 2, 2, 2], norm="BN"), out_features=["res5"])
    d2 = ResNet(BasicStem(3, 64, norm="BN"), ResNet.make_default_stages(18, norm="BN"), out_features=["res5"])
    assert _shapes(ours) == _shapes(d2)


def _yaml_model():
    cfg, _ = load_config("configs/shapes/detr_R18_shapes.yaml", NARROW)
    return cfg, build_model(cfg)


def test_yaml_builds_the_narrow_backbone_in_detectron2s_layout():
    cfg, model = _yaml_model()
    shapes = model.backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {"res2": (32, 4), "res3": (64, 8), "res4": (128, 16)}
    keys = _shapes(model.backbone)
    assert keys["stem.conv1.weight"] == (32, 3, 7, 7)
    assert keys["res2.0.conv1.weight"] == (32, 32, 3, 3)
    assert keys["res3.0.shortcut.weight"] == (64, 32, 1, 1)
    assert keys["res4.0.conv2.weight"] == (128, 128, 3, 3)
    assert not any(k.startswith(("res5.", "res2.1.")) for k in keys)  # res5 not built, one block per stage


def test_lazyconfig_builds_the_same_model_as_yaml():
    lazy = LazyConfig.load("configs/shapes/detr_R18_shapes.py")
    lazy.model.backbone = L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=32, norm="BN"),
        stages=L(basic_resnet_stages)(blocks_per_stage=[1, 1, 1], in_channels=32, res2_out_channels=32, norm="BN"),
        out_features=["res2", "res3", "res4"],
        freeze_at=0,
    )
    lazy.model.postprocessor.thing_ids = [0, 1, 2]
    _, yaml_model = _yaml_model()
    assert _shapes(instantiate(lazy.model)) == _shapes(yaml_model)


def test_the_narrow_model_trains_a_step():
    cfg, model = _yaml_model()
    model.train()
    inputs = [make_input(96, 128, classes=(0, 3), seed=i) for i in range(2)]
    optimizer = build_optimizer(cfg, model)
    before = {k: v.detach().clone() for k, v in model.backbone.named_parameters()}
    losses = model(inputs)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    # Exact by construction: a training step must move every weight.
    assert all(not torch.equal(before[k], v) for k, v in model.backbone.named_parameters())


def test_bad_settings_are_named():
    cfg, _ = load_config("configs/shapes/detr_R18_shapes.yaml", NARROW)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4", "res5"]
    with pytest.raises(ValueError, match="OUT_FEATURES.*res5.*BASIC_BLOCKS_PER_STAGE"):
        build_backbone(cfg, ShapeSpec(channels=3))
    cfg.MODEL.RESNETS.BASIC_BLOCKS_PER_STAGE = [1, 0, 1]
    with pytest.raises(ValueError, match="BASIC_BLOCKS_PER_STAGE"):
        build_backbone(cfg, ShapeSpec(channels=3))


def test_benchmark_times_the_narrow_backbone_against_r18_on_their_own_weights():
    """tools/benchmark.py --baseline with another width: each model gets its own seeded weights."""
    from benchmarks.models import build_models

    cfg, _ = load_config("configs/shapes/detr_R18_shapes.yaml", NARROW)
    r18 = ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.RESNETS.STEM_OUT_CHANNELS", "64",
           "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
    models, info = build_models(
        cfg, {"ours": [], "baseline": r18}, kept_queries=None, calibration_inputs=[make_input(96, 128)], workdir=None
    )
    assert info["own_weights"] == ["baseline"]
    assert models["ours"].backbone.res2[0].conv1.weight.shape[0] == 32
    assert models["baseline"].backbone.res2[0].conv1.weight.shape[0] == 64

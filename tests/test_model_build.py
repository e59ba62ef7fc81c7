"""Full-size configs build; backbones of several depths feed the mask head; the frozen stage."""
import glob

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from detr_panoptic_d2.checkpoint.frozen_detector import load_frozen_detector
from detr_panoptic_d2.modeling import FPNMaskHead, HungarianMatcher
from detr_panoptic_d2.modeling.detector_weights import detector_parameters

from .helpers import make_input, model_from_config_file, tiny_cfg


@pytest.mark.parametrize("path", sorted(glob.glob("configs/coco/*.yaml") + glob.glob("configs/experimental/*.yaml")))
def test_coco_configs_build_full_size_models(path):
    cfg, model = model_from_config_file(path)
    assert model.class_embed.out_features == (81 if "detection" in path else 134)
    assert model.query_embed.num_embeddings == 100
    assert (model.mask_head is not None) == cfg.MODEL.MASK_ON
    res5 = model.backbone.res5
    if "DC5" in path:
        assert model.backbone.output_shape()["res5"].stride == 16
        assert res5[0].conv2.dilation == (1, 1) and res5[1].conv2.dilation == (2, 2)
    depth = 101 if "R101" in path else 50
    assert len(model.backbone.res4) == {50: 6, 101: 23}[depth]


@pytest.mark.parametrize("depth,dilation", [(34, 1), (50, 1), (50, 2)])
def test_mask_head_widths_follow_the_backbone(depth, dilation):
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.RES5_DILATION = dilation
    model = build_model(cfg)
    shapes = model.backbone.output_shape()
    assert [a.in_channels for a in model.mask_head.fpn.skip_projections] == [shapes[f].channels for f in ("res4", "res3", "res2")]
    losses = model.train()([make_input(64, 64, classes=(1,))])
    assert torch.isfinite(sum(losses.values()))


def test_frozen_detector_gets_no_gradient_and_keeps_its_weights(tmp_path):
    torch.manual_seed(0)
    box_cfg = tiny_cfg(mask_on=False)
    box_cfg.MODEL.RESNETS.NORM = "BN"  # running statistics that a training forward would update
    box_model = build_model(box_cfg)
    path = str(tmp_path / "boxes.pth")
    DetectionCheckpointer(box_model, save_dir=str(tmp_path)).save("boxes")
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.NORM = "BN"
    model = load_frozen_detector(build_model(cfg), path)
    box_state = box_model.state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith("mask_head."):
            # Exact by construction: a copy of the same tensors, no arithmetic.
            assert torch.equal(value, box_state[name]), name
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("mask_head.") for n in trainable)
    model.train()
    assert model.mask_head.training and not model.transformer.training and not model.backbone.training
    losses = model([make_input(64, 80, classes=(1, 2))])
    assert set(losses) == {"loss_mask", "loss_dice"}
    sum(losses.values()).backward()
    assert all(p.grad is None for _, p in detector_parameters(model))
    assert model.mask_head.fpn.mask_predictor.weight.grad is not None
    for name, value in model.state_dict().items():
        if not name.startswith("mask_head."):
            # Exact by construction: a copy of the same tensors, no arithmetic.
            assert torch.equal(value, box_state[name]), name


def test_frozen_weights_that_do_not_fit_are_reported(tmp_path):
    other = tiny_cfg(mask_on=False)
    other.MODEL.DETR.NUM_OBJECT_QUERIES = 7
    DetectionCheckpointer(build_model(other), save_dir=str(tmp_path)).save("wrong")
    model = build_model(tiny_cfg())
    trainable = [p.requires_grad for p in model.parameters()]
    with pytest.raises(ValueError, match=r"wrong.pth.*\(MODEL.DETR.FROZEN_WEIGHTS\).*query_embed.weight \(7, 64\) vs \(10, 64\)"):
        load_frozen_detector(model, str(tmp_path / "wrong.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_frozen_detector(model, str(tmp_path / "missing.pth"))
    assert not model.frozen_detector and [p.requires_grad for p in model.parameters()] == trainable


def test_mask_head_widths_not_fitting_group_norm_are_reported():
    cfg = tiny_cfg()
    cfg.MODEL.DETR.MASK_HEAD.NHEADS = 4
    with pytest.raises(
        ValueError, match=r"hidden_dim=64 \(MODEL.DETR.HIDDEN_DIM\) \+ num_heads=4 \(MODEL.DETR.MASK_HEAD.NHEADS\) gives 68"
    ):
        build_model(cfg)


def test_mask_head_initialized_as_detr():
    """DETR initializes every mask-head conv with kaiming_uniform (a=1) and a zero bias: weights
    uniform on +-sqrt(3 / fan_in), so with std sqrt(1 / fan_in)."""
    torch.manual_seed(0)
    head = FPNMaskHead(64, 8, [256, 128, 64])
    convs = [head.fuse_conv, head.narrow_conv, *head.skip_projections, *head.refine_convs, head.mask_predictor]
    for conv in convs:
        fan_in = conv.weight[0].numel()
        bound = (3 / fan_in) ** 0.5
        assert conv.bias.abs().max() == 0
        assert conv.weight.abs().max() <= bound
        if conv.weight.numel() > 1000:
            assert abs(conv.weight.std().item() * fan_in**0.5 - 1) < 0.05
    assert isinstance(head.fuse_conv.norm, torch.nn.GroupNorm)


def test_errors_of_direct_construction_name_the_argument_and_its_key():
    with pytest.raises(ValueError, match=r"cost_class, cost_l1 and cost_giou \(MODEL.DETR.COST_CLASS, COST_L1"):
        HungarianMatcher(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"hidden_dim=8 \(MODEL.DETR.HIDDEN_DIM\) is too small"):
        FPNMaskHead(8, 8, [16, 16, 16])

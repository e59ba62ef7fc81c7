"""Any Detectron2 backbone: ResNets (R18, R50, DC5) and a ResNet-FPN named by
MODEL.BACKBONE.NAME, and a ViT + SimpleFeaturePyramid passed to a directly constructed
DetrPanoptic. Each trains a step (finite loss, gradients in the backbone) and infers."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.modeling.backbone import SimpleFeaturePyramid, ViT

from detr_panoptic_d2.modeling import DetrMaskHead, DetrPanoptic, DetrPostProcessor, HungarianMatcher, SetCriterion, Transformer

from .helpers import make_input, register_tiny_panoptic_metadata, tiny_cfg


def _cfg(kind):
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    if kind in ("R50", "DC5"):
        cfg.MODEL.RESNETS.DEPTH = 50
        cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8  # bottlenecks 8..64 wide, outputs 32..256
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
        cfg.MODEL.RESNETS.RES5_DILATION = 2 if kind == "DC5" else 1
    if kind == "FPN":
        cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
        cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.OUT_CHANNELS = 32
    return cfg


def _vit_model(**overrides):
    """A ViT (patch 16, 1 block, width 32) + SimpleFeaturePyramid (p2..p5, 16 channels) and
    DetrPanoptic built from its parts, without a config; ``overrides``: other arguments."""
    vit = ViT(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, pretrain_img_size=64,
              pretrain_use_cls_token=False)
    backbone = SimpleFeaturePyramid(vit, "last_feat", out_channels=16, scale_factors=(4.0, 2.0, 1.0, 0.5))
    args = dict(
        backbone=backbone,
        transformer=Transformer(d_model=64, nhead=8, num_encoder_layers=1, num_decoder_layers=1,
                                dim_feedforward=64, dropout=0.0),
        num_classes=5,
        num_queries=10,
        criterion=SetCriterion(5, HungarianMatcher()),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
        mask_head=DetrMaskHead(backbone.output_shape(), hidden_dim=64, num_heads=8),
        postprocessor=DetrPostProcessor(num_classes=5, thing_ids=[0, 1, 4]),
    )
    return DetrPanoptic(**{**args, **overrides})


# kind -> (the level the transformer reads, the mask head's levels, the mask stride)
EXPECTED = {
    "R18": ("res5", ["res4", "res3", "res2"], 4),
    "R50": ("res5", ["res4", "res3", "res2"], 4),
    "DC5": ("res5", ["res4", "res3", "res2"], 4),
    "FPN": ("p6", ["p4", "p3", "p2"], 4),
    "ViT": ("p5", ["p4", "p3", "p2"], 4),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_backbone_trains_a_step_and_infers(kind):
    torch.manual_seed(0)
    model = _vit_model() if kind == "ViT" else build_model(_cfg(kind))
    in_feature, skips, stride = EXPECTED[kind]
    assert (model.in_feature, model.mask_head.in_features, model.mask_head.stride) == (in_feature, skips, stride)
    if kind == "DC5":
        assert model.backbone.output_shape()["res5"].stride == 16
        assert model.backbone.res5[0].conv2.dilation == (1, 1) and model.backbone.res5[1].conv2.dilation == (2, 2)

    losses = model.train()([make_input(64, 96, classes=(1, 2)), make_input(80, 64, classes=(3,), seed=1)])
    total = sum(losses.values())
    assert torch.isfinite(total) and {"loss_ce", "loss_mask"} <= set(losses)
    total.backward()
    trained = [(n, p) for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for _, p in trained), [n for n, p in trained if p.grad is None]
    assert any(p.grad.abs().sum() > 0 for _, p in trained)

    image = make_input(72, 88, seed=2, with_targets=False)
    image["height"], image["width"] = 144, 176
    model.postprocessor.object_score_thresh = 0.0
    with torch.no_grad():
        model.class_embed.bias[-1] = -10.0  # every query kept: the mask head runs on all of them
        (result,) = model.eval()([image])
    panoptic, segments = result["panoptic_seg"]
    assert panoptic.shape == (144, 176) and segments
    assert set(panoptic.unique().tolist()) - {0} == {s["id"] for s in segments}


def test_backbone_with_too_few_levels_for_the_mask_head_is_reported():
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4", "res5"]
    with pytest.raises(ValueError, match=r"3 backbone outputs.*'res4': 16, 'res5': 32.*MODEL.DETR.MASK_HEAD.IN_FEATURES"):
        build_model(cfg)
    cfg.MODEL.DETR.MASK_HEAD.IN_FEATURES = ["res5", "res4", "res3"]
    with pytest.raises(ValueError, match=r"\(MODEL.DETR.MASK_HEAD.IN_FEATURES\) \['res3'\] are not backbone outputs"):
        build_model(cfg)


def test_unknown_transformer_level_is_reported():
    cfg = tiny_cfg()
    cfg.MODEL.DETR.IN_FEATURE = "p5"
    with pytest.raises(ValueError, match=r"in_feature='p5' \(MODEL.DETR.IN_FEATURE\) is not an output.*'res5': 32"):
        build_model(cfg)


def test_direct_construction_errors_name_the_argument_and_the_key():
    with pytest.raises(ValueError, match=r"in_feature='res5' \(MODEL.DETR.IN_FEATURE\).*'p2': 4"):
        _vit_model(in_feature="res5")
    with pytest.raises(ValueError, match=r"criterion.num_classes=7 differs from num_classes=5 \(MODEL.DETR.NUM_CLASSES\)"):
        _vit_model(criterion=SetCriterion(7, HungarianMatcher()))

"""Step 1, a cheaper backbone: a ResNet of BasicBlocks at any width and depth per stage.

Detectron2's ``build_resnet_backbone`` builds BasicBlock ResNets at R18/R34's width only (it
asserts RES2_OUT_CHANNELS 64). ``basic_resnet_stages`` builds the same stages from
``ResNet.make_stage`` and ``BasicBlock`` with a chosen res2 width (doubling per stage, as
ResNet does) and blocks per stage; ``build_basic_resnet_backbone`` is its yaml builder
(MODEL.BACKBONE.NAME). The result is Detectron2's ``ResNet``: the same module names
(``stem.conv1``, ``res2.0.conv1``, ...), outputs and checkpoint layout, only narrower or shallower.
"""
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet


def basic_resnet_stages(blocks_per_stage, *, in_channels=64, res2_out_channels=64, norm="BN"):
    """ResNet stages res2, res3, ... of BasicBlocks, as ``ResNet(stem, stages, ...)`` takes them.

    Args:
        blocks_per_stage: blocks of each stage from res2 on, e.g. [2, 2, 2, 2] (R18) or [1, 1, 1]
            (res2..res4, one block each); the first block of res3 and later has stride 2.
        in_channels: channels of the stem's output.
        res2_out_channels: width of res2; each later stage doubles it (R18: 64).
        norm: normalization of every convolution (Detectron2's names: "BN", "FrozenBN", "GN", ...).
    """
    if not blocks_per_stage or min(blocks_per_stage) < 1 or len(blocks_per_stage) > 4:
        raise ValueError(
            f"blocks_per_stage (MODEL.RESNETS.BASIC_BLOCKS_PER_STAGE) needs 1 to 4 stages of >= 1 block, got {blocks_per_stage}"
        )
    stages, out_channels = [], res2_out_channels
    for i, n in enumerate(blocks_per_stage):
        first_stride = 1 if i == 0 else 2
        stages.append(
            ResNet.make_stage(
                BasicBlock, n, stride_per_block=[first_stride] + [1] * (n - 1),
                in_channels=in_channels, out_channels=out_channels, norm=norm,
            )
        )
        in_channels, out_channels = out_channels, out_channels * 2
    return stages


@BACKBONE_REGISTRY.register()
def build_basic_resnet_backbone(cfg, input_shape):
    """A BasicBlock ResNet from MODEL.RESNETS: STEM_OUT_CHANNELS, RES2_OUT_CHANNELS (any width),
    BASIC_BLOCKS_PER_STAGE, NORM, OUT_FEATURES, and MODEL.BACKBONE.FREEZE_AT. Stages after the
    last of OUT_FEATURES are not built."""
    r = cfg.MODEL.RESNETS
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages = basic_resnet_stages(
        list(r.BASIC_BLOCKS_PER_STAGE), in_channels=r.STEM_OUT_CHANNELS, res2_out_channels=r.RES2_OUT_CHANNELS, norm=r.NORM
    )
    missing = [f for f in r.OUT_FEATURES if f not in [f"res{i + 2}" for i in range(len(stages))] and f != "stem"]
    if missing:
        raise ValueError(
            f"MODEL.RESNETS.OUT_FEATURES {list(r.OUT_FEATURES)} names {missing}, beyond the "
            f"{len(stages)} stages of MODEL.RESNETS.BASIC_BLOCKS_PER_STAGE {list(r.BASIC_BLOCKS_PER_STAGE)}"
        )
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)

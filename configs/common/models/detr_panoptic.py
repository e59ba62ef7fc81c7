# DETR panoptic, the paper's R50 model (Carion et al. 2020), as DetrPanoptic's arguments; the
# same model as configs/Base-DETR-Panoptic.yaml with detr_panoptic_d2/config.py's defaults.
# Only what differs from the constructors' defaults (which are config.py's) is set here.
# `model.backbone` may be any Detectron2 Backbone: the transformer reads its coarsest output and
# the mask head adds back the three finest, widths taken from its output_shape().
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from detr_panoptic_d2.data import thing_class_ids
from detr_panoptic_d2.modeling import (
    DetrMaskHead,
    DetrPanoptic,
    DetrPostProcessor,
    HungarianMatcher,
    Precision,
    SetCriterion,
    Transformer,
)

model = L(DetrPanoptic)(
    # Detectron2's ResNet-50, torchvision-style (stride in the 3x3 conv), frozen BatchNorm,
    # stem and res2 frozen.
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res2", "res3", "res4", "res5"],
        freeze_at=2,
    ),
    transformer=L(Transformer)(
        d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048, dropout=0.1,
    ),
    num_classes=133,  # things and stuff of the datasets; the class head has num_classes + 1 outputs
    num_queries=100,
    # The paper's losses and matching costs are SetCriterion's and HungarianMatcher's defaults.
    criterion=L(SetCriterion)(num_classes="${..num_classes}", matcher=L(HungarianMatcher)()),
    pixel_mean=[123.675, 116.280, 103.530],  # RGB input, torchvision normalization
    pixel_std=[58.395, 57.120, 57.375],
    # Built on the backbone's output_shape(), so a swapped backbone needs no change here.
    mask_head=L(DetrMaskHead.builder)(hidden_dim="${..transformer.d_model}", num_heads=8),
    # Inference (step 8): the outputs are set here because dataloader.evaluator reads them
    # (${model.postprocessor.panoptic_on}, ...); the other settings are the constructor's.
    postprocessor=L(DetrPostProcessor)(
        num_classes="${..num_classes}",
        thing_ids=L(thing_class_ids)(dataset_name="${dataloader.test.dataset.names}"),
        panoptic_on=True,
        instances_on=False,
        semantic_on=False,
        detections_per_image=100,
    ),
    precision=L(Precision)(cpu_training_amp="${train.amp.enabled}"),  # on the CPU, train.amp means bfloat16 autocast
)

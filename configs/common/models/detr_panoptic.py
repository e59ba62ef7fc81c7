# DETR panoptic, the paper's R50 model (Carion et al. 2020), as DetrPanoptic's arguments; the
# same model as configs/Base-DETR-Panoptic.yaml with detr_panoptic_d2/config.py's defaults.
# `model.backbone` may be any Detectron2 Backbone: the transformer reads its coarsest output and
# the mask head adds back the three finest, widths taken from its output_shape().
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from detr_panoptic_d2.data import thing_class_ids
from detr_panoptic_d2.modeling import DetrMaskHead, DetrPanoptic, HungarianMatcher, SetCriterion, Transformer

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
        pre_norm=False,
    ),
    num_classes=133,  # things and stuff of the datasets; the class head has num_classes + 1 outputs
    num_queries=100,
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=1.0, cost_l1=5.0, cost_giou=2.0),
        class_weight=1.0, no_object_weight=0.1, l1_weight=5.0, giou_weight=2.0,
        mask_weight=1.0, dice_weight=1.0, focal_alpha=0.25, focal_gamma=2.0,
        deep_supervision=True, mask_loss_all_groups=False,
    ),
    pixel_mean=[123.675, 116.280, 103.530],  # RGB input, torchvision normalization
    pixel_std=[58.395, 57.120, 57.375],
    in_feature="",  # "": the backbone's coarsest output
    position_encoding=None,  # None: DETR's sine encoding (or L(PositionEmbeddingLearned)(num_pos_feats=d/2))
    # Built on the backbone's output_shape(), so a swapped backbone needs no change here.
    mask_head=L(DetrMaskHead.builder)(hidden_dim="${..transformer.d_model}", num_heads=8, in_features=[], fuse_per_image=True),
    channels_last=False,
    train_query_groups=1,
    encoder_semantic_weight=0.0,  # training-only dense semantic loss on the encoded image; 0: off
    denoising_groups=0,  # training-only denoising queries (DN-DETR; MODEL.DETR.DN); 0: off
    denoising_label_noise=0.2,
    denoising_box_noise=0.4,
    frozen_weights="",  # a box-only checkpoint whose detector is loaded and frozen (stage 2)
    all_queries=False,
    thing_ids=L(thing_class_ids)(dataset_name="${dataloader.test.dataset.names}"),
    object_score_thresh=0.85,
    small_segment_area=4,
    merge="reference",  # the panoptic merge rule, or "score_weighted" (detr_panoptic_d2/config.py, MODEL.DETR.TEST.MERGE)
    merge_mask_threshold=0.5,
    merge_overlap_threshold=0.8,
    merge_stuff_fills_void=True,
    panoptic_on=True,
    instances_on=False,
    semantic_on=False,
    detections_per_image=100,
    mask_score_floor=0.05,
    amp_dtype="none",
    cpu_training_amp="${train.amp.enabled}",  # on the CPU, train.amp means bfloat16 autocast
    fold_batchnorm=True,  # frozen BatchNorm folded into the backbone's convs at inference
)

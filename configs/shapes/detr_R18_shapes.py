# The built-in CPU demo's recipe (detr_R18_shapes.yaml) as a LazyConfig: DETR panoptic trained
# from scratch, boxes and masks together, on the synthetic shapes dataset (6 classes, images of
# 128-192 px). R18 read at res4 (res5 not built), d=128, 2+3 layers, 10 queries, inputs resized
# to 96 px, batch 8, bfloat16 on the CPU, a training-only dense semantic loss on the encoded
# image, every layer trained (BN, nothing frozen) at one learning rate.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detr_panoptic_d2.modeling import EncoderSemanticLoss, MergeRule

from ..common.data.coco_panoptic_detr import dataloader
from ..common.models.detr_panoptic import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

model.backbone = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
    stages=L(ResNet.make_default_stages)(depth=18, norm="BN"),
    out_features=["res2", "res3", "res4"],  # the transformer reads the coarsest, res4
    freeze_at=0,
)
model.transformer.update(
    d_model=128, nhead=8, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=256, dropout=0.0, pre_norm=True
)
model.num_classes = 6
model.num_queries = 10  # at most 8 segments per image; 10 learn faster than 20
model.precision.channels_last = True  # NHWC convolutions (same values; see detr_panoptic_d2/config.py)
# Training only: the encoded image's dense semantic loss (see detr_R18_shapes.yaml).
model.criterion.encoder_semantic = L(EncoderSemanticLoss)(
    hidden_dim="${...transformer.d_model}", num_classes="${...num_classes}", weight=2.0
)
# Rule and threshold chosen on shapes_panoptic_tune (see detr_R18_shapes.yaml).
model.postprocessor.object_score_thresh = 0.3
model.postprocessor.merge = L(MergeRule)(rule="score_weighted")
model.postprocessor.instances_on = True
model.postprocessor.semantic_on = True

dataloader.train.dataset.names = "shapes_panoptic_train"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True, vertical=False),
    L(T.ResizeShortestEdge)(short_edge_length=[96], max_size=144, sample_style="choice"),
]
dataloader.train.mapper.cache_decoded = True  # decoded samples kept in memory (see detr_R18_shapes.yaml)
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "shapes_panoptic_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=96, max_size=144, sample_style="choice")
]
dataloader.test.num_workers = 0

optimizer.lr = 2e-4
optimizer.params.lr_factor_func.multiplier = 1.0
optimizer.full_model_clip = 1.0

train.max_iter = 3400  # the demo's CPU schedule (docs/experiments/shapes_recipe.md)
train.amp.enabled = True  # on the CPU: bfloat16 autocast in the model (see detr_R18_shapes.yaml)
train.checkpointer.period = 1000
train.seed = 0
train.output_dir = "output/shapes/detr_R18_shapes"
lr_multiplier = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[2900], num_updates="${train.max_iter}")

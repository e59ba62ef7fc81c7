# Stage 1 of the paper's recipe: box-only DETR on COCO panoptic, things and stuff as boxes.
# 300 epochs at batch 64 (1849 iterations per epoch on 118k images), lr drop at epoch 200.
# The LazyConfig of detr_R50_boxes.yaml.
from detectron2.config import LazyCall as L
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ..common.data.coco_panoptic_detr import dataloader
from ..common.models.detr_panoptic import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

model.mask_head = None
model.postprocessor.panoptic_on = False
model.postprocessor.instances_on = True
dataloader.evaluator.mask_on = False

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.max_iter = 554700
train.output_dir = "output/coco/detr_R50_boxes"
lr_multiplier = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[369800], num_updates="${train.max_iter}")

# Variant: boxes and masks trained together from ImageNet weights, no frozen stage
# (300 epochs, lr drop at 200). The LazyConfig of detr_R50_joint.yaml.
from detectron2.config import LazyCall as L
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ..common.data.coco_panoptic_detr import dataloader
from ..common.models.detr_panoptic import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

model.postprocessor.instances_on = True
model.postprocessor.semantic_on = True

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.max_iter = 554700
train.output_dir = "output/coco/detr_R50_joint"
lr_multiplier = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[369800], num_updates="${train.max_iter}")

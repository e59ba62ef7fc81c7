# Stage 2 of the paper's recipe: the stage-1 detector (detr_R50_boxes.py) frozen, the mask head
# trained alone for 25 epochs at batch 64, lr drop at epoch 15. Evaluates PQ, box/mask AP
# (things) and mIoU. The LazyConfig of detr_R50_panoptic.yaml.
from detectron2.config import LazyCall as L
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ..common.data.coco_panoptic_detr import dataloader
from ..common.models.detr_panoptic import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

train.frozen_weights = "output/coco/detr_R50_boxes/model_final.pth"
model.postprocessor.instances_on = True
model.postprocessor.semantic_on = True

train.max_iter = 46225
train.output_dir = "output/coco/detr_R50_panoptic"
lr_multiplier = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[27735], num_updates="${train.max_iter}")

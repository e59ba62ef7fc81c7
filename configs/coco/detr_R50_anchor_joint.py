# The anchor-box decoder with denoising on its anchors and the box-aware attention map, boxes
# and masks trained together from ImageNet weights for 50 epochs (lr drop at 40); not trained
# here. The LazyConfig of detr_R50_anchor_joint.yaml.
from ..common.models.anchor_decoder import use_anchor_decoder
from .detr_R50_joint import dataloader, lr_multiplier, model, optimizer, train

use_anchor_decoder(model)

train.max_iter = 92450
train.output_dir = "output/coco/detr_R50_anchor_joint"
lr_multiplier.milestones = [73960]

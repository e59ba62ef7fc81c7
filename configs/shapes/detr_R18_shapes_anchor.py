# The shapes demo recipe with the anchor-box decoder, the box-aware attention map and
# denoising on the anchors with contrastive negatives, 2300 iterations. The LazyConfig of
# detr_R18_shapes_anchor.yaml.
from ..common.models.anchor_decoder import use_anchor_decoder
from .detr_R18_shapes import dataloader, lr_multiplier, model, optimizer, train

use_anchor_decoder(model)

train.max_iter = 2300
train.output_dir = "output/shapes/detr_R18_shapes_anchor"
lr_multiplier.milestones = [1950]

# The anchor-box decoder with denoising on its anchors and the box-aware attention map, boxes
# and masks trained together from ImageNet weights for 50 epochs (lr drop at 40); not trained
# here. The LazyConfig of detr_R50_anchor_joint.yaml.
from detectron2.config import LazyCall as L

from detr_panoptic_d2.modeling import AnchorTransformer, DenoisingQueries, TrainingQueries

from .detr_R50_joint import dataloader, lr_multiplier, model, optimizer, train

model.transformer = L(AnchorTransformer)(**{k: v for k, v in model.transformer.items() if k != "_target_"})
model.mask_head.box_aware = True
model.training_queries = L(TrainingQueries)(
    query_dim=4,
    num_queries="${..num_queries}",
    denoising=L(DenoisingQueries)(
        hidden_dim="${...transformer.d_model}", num_classes="${...num_classes}", groups=5, anchors=True, negatives=True
    ),
)

train.max_iter = 92450
train.output_dir = "output/coco/detr_R50_anchor_joint"
lr_multiplier.milestones = [73960]

# The shapes demo recipe with the anchor-box decoder, the box-aware attention map and
# denoising on the anchors with contrastive negatives, 2300 iterations. The LazyConfig of
# detr_R18_shapes_anchor.yaml.
from detectron2.config import LazyCall as L

from detr_panoptic_d2.modeling import AnchorTransformer, DenoisingQueries, TrainingQueries

from .detr_R18_shapes import dataloader, lr_multiplier, model, optimizer, train

model.transformer = L(AnchorTransformer)(**{k: v for k, v in model.transformer.items() if k != "_target_"})
model.mask_head.box_aware = True
model.training_queries = L(TrainingQueries)(
    query_dim=4,
    num_queries="${..num_queries}",
    denoising=L(DenoisingQueries)(
        hidden_dim="${...transformer.d_model}", num_classes="${...num_classes}", groups=5, anchors=True, negatives=True
    ),
)

train.max_iter = 2300
train.output_dir = "output/shapes/detr_R18_shapes_anchor"
lr_multiplier.milestones = [1950]

# The anchor-box decoder as a change of a LazyConfig model (a DetrPanoptic node): anchor-box
# queries refined at every layer, the box-aware attention map, and denoising on the anchors with
# contrastive negatives (as MODEL.DETR.DECODER "anchor", MASK_HEAD.BOX_AWARE True,
# DN.GROUPS 5, DN.NEGATIVES True in yaml).
from detectron2.config import LazyCall as L

from detr_panoptic_d2.modeling import AnchorTransformer, DenoisingQueries, TrainingQueries


def use_anchor_decoder(model):
    """Turns the LazyConfig ``model`` (its transformer's sizes kept) into the anchor-box one, in place."""
    model.transformer = L(AnchorTransformer)(**{k: v for k, v in model.transformer.items() if k != "_target_"})
    model.mask_head.box_aware = True
    model.training_queries = L(TrainingQueries)(
        query_dim=4,
        num_queries="${..num_queries}",
        denoising=L(DenoisingQueries)(
            hidden_dim="${...transformer.d_model}",
            num_classes="${...num_classes}",
            groups=5,
            anchors=True,
            negatives=True,
        ),
    )

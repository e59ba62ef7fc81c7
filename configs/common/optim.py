# DETR's optimizer (Carion et al. 2020): AdamW at lr 1e-4, 1e-5 for the backbone, weight decay
# 1e-4 on every parameter (norm layers included), the norm of all gradients together clipped
# to 0.1. tools/lazyconfig_train_net.py sets params.model. Same as Base-DETR-Panoptic.yaml's SOLVER.
from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

from detr_panoptic_d2.engine import backbone_lr_factor, detr_optimizer

AdamW = L(detr_optimizer)(
    params=L(get_default_optimizer_params)(
        base_lr="${..lr}",
        weight_decay=1e-4,
        weight_decay_norm=1e-4,
        lr_factor_func=L(backbone_lr_factor)(multiplier=0.1),  # under "backbone."
    ),
    lr=1e-4,
    name="ADAMW",
    full_model_clip=0.1,  # 0: no clipping
    norm_type=2.0,
)

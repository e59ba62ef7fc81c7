"""Model components; importing this module registers them in Detectron2's registries."""
from .backbone import DetrBackbone, DetrFeatures
from .criterion import SetCriterion
from .mask_head import DETR_MASK_HEAD_REGISTRY, DetrMaskHead, FPNMaskHead, build_mask_head
from .attention_map import MultiHeadAttentionMap
from .matcher import HungarianMatcher
from .meta_arch import DetrOutputs, DetrPanoptic
from .position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine
from .transformer import Transformer

__all__ = [
    "DETR_MASK_HEAD_REGISTRY",
    "DetrBackbone",
    "DetrFeatures",
    "DetrMaskHead",
    "DetrOutputs",
    "DetrPanoptic",
    "FPNMaskHead",
    "HungarianMatcher",
    "MultiHeadAttentionMap",
    "PositionEmbeddingLearned",
    "PositionEmbeddingSine",
    "SetCriterion",
    "Transformer",
    "build_mask_head",
]

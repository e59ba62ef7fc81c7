"""Model components; importing this module registers them in Detectron2's registries."""
from .anchor_transformer import AnchorTransformer, init_anchor_queries
from .backbone import levels_fine_to_coarse, torchvision_dilation
from .box_attention_map import BoxAwareAttentionMap
from .criterion import SetCriterion
from .denoising import DenoisingQueries
from .encoder_supervision import EncoderSemanticLoss
from .mask_head import DETR_MASK_HEAD_REGISTRY, DetrMaskHead, FPNMaskHead, build_mask_head
from .attention_map import MultiHeadAttentionMap
from .matcher import HungarianMatcher
from .meta_arch import DetrPanoptic
from .narrow_resnet import basic_resnet_stages, build_basic_resnet_backbone
from .outputs import DetrOutputs, ImageSteps
from .position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine
from .postprocessing import MergeRule
from .postprocessor import DetrPostProcessor
from .precision import Precision
from .training_queries import TrainingQueries
from .transformer import Transformer

__all__ = [
    "AnchorTransformer",
    "BoxAwareAttentionMap",
    "DETR_MASK_HEAD_REGISTRY",
    "DenoisingQueries",
    "DetrMaskHead",
    "DetrOutputs",
    "DetrPanoptic",
    "DetrPostProcessor",
    "EncoderSemanticLoss",
    "FPNMaskHead",
    "HungarianMatcher",
    "ImageSteps",
    "MergeRule",
    "MultiHeadAttentionMap",
    "PositionEmbeddingLearned",
    "PositionEmbeddingSine",
    "Precision",
    "SetCriterion",
    "TrainingQueries",
    "Transformer",
    "basic_resnet_stages",
    "build_basic_resnet_backbone",
    "build_mask_head",
    "init_anchor_queries",
    "levels_fine_to_coarse",
    "torchvision_dilation",
]

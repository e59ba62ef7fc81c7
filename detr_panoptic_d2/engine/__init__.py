"""Training and evaluation: ``DetrTrainer``, its optimizer and evaluators, and the config of a
run (``load_config``, ``setup``)."""
from .defaults import adapt_to_machine, load_config, setup
from .evaluators import (
    PanopticSemSegEvaluator,
    PerClassPanopticEvaluator,
    ThingsCOCOEvaluator,
    build_panoptic_evaluator,
    panoptic_evaluators,
)
from .optimizer import backbone_lr_factor, build_optimizer, detr_optimizer, with_full_model_clipping
from .trainer import DetrTrainer, create_detr_ddp_model

__all__ = [
    "DetrTrainer",
    "PanopticSemSegEvaluator",
    "PerClassPanopticEvaluator",
    "ThingsCOCOEvaluator",
    "adapt_to_machine",
    "backbone_lr_factor",
    "build_optimizer",
    "build_panoptic_evaluator",
    "load_config",
    "create_detr_ddp_model",
    "detr_optimizer",
    "panoptic_evaluators",
    "setup",
    "with_full_model_clipping",
]

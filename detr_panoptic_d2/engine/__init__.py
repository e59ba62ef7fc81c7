"""Training and evaluation: ``DetrTrainer``, its optimizer and evaluators, and ``setup``."""
from .defaults import adapt_to_machine, setup
from .evaluators import PanopticSemSegEvaluator, ThingsCOCOEvaluator, build_panoptic_evaluator
from .optimizer import build_optimizer, with_full_model_clipping
from .trainer import DetrTrainer

__all__ = [
    "DetrTrainer",
    "PanopticSemSegEvaluator",
    "ThingsCOCOEvaluator",
    "adapt_to_machine",
    "build_optimizer",
    "build_panoptic_evaluator",
    "setup",
    "with_full_model_clipping",
]

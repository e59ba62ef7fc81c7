"""Training and evaluation: ``DetrTrainer``, its optimizer and evaluators, and the config of a
run (``load_config``, ``setup``)."""
from .defaults import adapt_to_machine, load_config, setup
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
    "load_config",
    "setup",
    "with_full_model_clipping",
]

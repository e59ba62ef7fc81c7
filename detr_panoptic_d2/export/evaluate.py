"""``evaluate_exported``: PQ of an exported model on the datasets of DATASETS.TEST, through the
trainer's own data loader and evaluators (Detectron2's COCOPanopticEvaluator)."""
import logging

from ..engine import DetrTrainer
from .runtime import OnnxPanopticModel

logger = logging.getLogger(__name__)


def evaluate_exported(cfg, path):
    """Runs ``DetrTrainer.test`` with ``OnnxPanopticModel(path, cfg)`` in place of the model.
    The export gives the panoptic output only, so the instance and semantic evaluators are
    turned off. Returns the results by dataset, as DetrTrainer.test."""
    cfg = cfg.clone()
    cfg.defrost()
    if cfg.MODEL.DETR.TEST.INSTANCES_ON or cfg.MODEL.DETR.TEST.SEMANTIC_ON:
        logger.warning(
            f"{path}: an exported model gives panoptic output only; skipping the instance and semantic evaluators"
        )
    cfg.MODEL.DETR.TEST.INSTANCES_ON = False
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = False
    cfg.freeze()
    return DetrTrainer.test(cfg, OnnxPanopticModel(path, cfg))

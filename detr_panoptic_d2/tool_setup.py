"""Set-up shared by the inference tools (tools/demo.py, tools/inspect_pipeline.py): the config,
the device, the model with its weights, and the list of input images."""
import glob
import logging
import os

import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor

from .config import add_detr_panoptic_config

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger(__name__)


def setup_inference_cfg(config_file, opts=(), confidence_threshold=None):
    """A frozen config for panoptic inference: ``config_file`` + ``opts`` (["KEY", "VALUE", ...]).

    confidence_threshold: sets MODEL.DETR.TEST.OBJECT_SCORE_THRESH when given. MODEL.DEVICE
    falls back to "cpu" when it asks for CUDA and none is available. Raises ValueError when the
    config cannot give a panoptic output or names no dataset for the class names."""
    cfg = get_cfg()
    add_detr_panoptic_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if confidence_threshold is not None:
        cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = confidence_threshold
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.info(f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but CUDA is not available: running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    if not (cfg.MODEL.MASK_ON and cfg.MODEL.DETR.TEST.PANOPTIC_ON):
        raise ValueError(
            f"{config_file}: panoptic output needs MODEL.MASK_ON True and MODEL.DETR.TEST.PANOPTIC_ON True "
            "(a box-only config cannot be used here)"
        )
    if not cfg.DATASETS.TEST:
        raise ValueError(f"{config_file}: set DATASETS.TEST to a registered dataset; its metadata names the classes")
    cfg.freeze()
    return cfg


def build_predictor(cfg):
    """Detectron2's DefaultPredictor (model in eval mode, MODEL.WEIGHTS loaded, test-time resize,
    INPUT.FORMAT handled) and the metadata of DATASETS.TEST[0]."""
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: the model has random weights")
    return DefaultPredictor(cfg), MetadataCatalog.get(cfg.DATASETS.TEST[0])


def list_images(inputs):
    """Expands files, glob patterns and folders (their images, not recursive) into a sorted
    list of image paths. Raises FileNotFoundError naming an input that matches nothing, and
    ValueError when two images share a file name (their outputs would collide)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = [os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS)]
        else:
            found = glob.glob(os.path.expanduser(item))
        if not found:
            raise FileNotFoundError(f"--input {item!r} matches no image file")
        paths.extend(sorted(found))
    stems = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stems.setdefault(stem, path) != path:
            raise ValueError(f"Input images {stems[stem]!r} and {path!r} have the same name; outputs would collide")
    return list(stems.values())

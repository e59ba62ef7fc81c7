"""The command line of the inference tools (tools/demo.py, tools/inspect_pipeline.py,
tools/export_model.py): their shared options, the inference config, the predictor with its
weights, and the list of input images."""
import argparse
import glob
import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger

from ..checkpoint import DetrCheckpointer
from ..checkpoint.checkpointer import read_checkpoint_classes
from ..checkpoint.model_classes import use_model_classes
from ..data.user_datasets import add_register_argument
from ..engine.defaults import load_config

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger(__name__)


def add_inference_arguments(parser, output_help, exported=True, images_required=True):
    """Adds the options both inference tools take, in the manner of Detectron2's demo:
    --config-file, --input, --output, --confidence-threshold, --register, --opts, and with
    ``exported`` --onnx (an exported model run by onnxruntime instead of the PyTorch model).
    ``images_required`` False: --input and --output are optional (the tool has other inputs)."""
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--input", nargs="+", required=images_required, help="image files, glob patterns or folders")
    parser.add_argument("--output", required=images_required, help=output_help)
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="keep queries whose best class probability exceeds this (MODEL.DETR.TEST.OBJECT_SCORE_THRESH; "
        "default: the config's, 0.85 as in the paper)",
    )
    if exported:
        parser.add_argument(
            "--onnx", metavar="FILE", default=None,
            help="run this model.onnx (tools/export_model.py, from the same config) with onnxruntime instead of "
            "the PyTorch model (MODEL.WEIGHTS is then not read)",
        )
    add_register_argument(parser)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config options: KEY VALUE pairs")
    return parser


def setup_inference_cfg(config_file, opts=(), confidence_threshold=None, register=()):
    """A frozen config for panoptic inference: ``config_file`` + ``opts`` (["KEY", "VALUE", ...]).

    confidence_threshold: sets MODEL.DETR.TEST.OBJECT_SCORE_THRESH when given. INSTANCES_ON and
    SEMANTIC_ON are turned off (the tools show the panoptic output only). The config is
    adapted to the machine as for ``train_net.py --eval-only`` (engine.load_config: no
    FROZEN_WEIGHTS, CPU when CUDA is unavailable). The splits of DATASETS.REGISTER (and
    ``register``, the --register values) are registered where their files exist; the classes
    of the others come from the checkpoint (``use_checkpoint_classes``). Raises ValueError
    when the config cannot give a panoptic output or names no dataset for the class names."""
    cfg, adaptations = load_config(config_file, opts, eval_only=True, register=register, data_optional=True)
    if confidence_threshold is not None:
        cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = confidence_threshold
    # The tools show the panoptic output only: instance and semantic outputs are not computed.
    cfg.MODEL.DETR.TEST.INSTANCES_ON = False
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = False
    for message in adaptations:
        logger.info(message)
    if not (cfg.MODEL.MASK_ON and cfg.MODEL.DETR.TEST.PANOPTIC_ON):
        raise ValueError(
            f"{config_file}: panoptic output needs MODEL.MASK_ON True and MODEL.DETR.TEST.PANOPTIC_ON True "
            "(a box-only config cannot be used here)"
        )
    if not cfg.DATASETS.TEST:
        raise ValueError(f"{config_file}: set DATASETS.TEST to a registered dataset; its metadata names the classes")
    cfg.freeze()
    return cfg


def use_checkpoint_classes(cfg):
    """When MODEL.WEIGHTS names its classes (model_classes), DATASETS.TEST[0] carries them:
    its metadata is set from them if the dataset is not registered, else they must agree."""
    if not cfg.MODEL.WEIGHTS:
        return
    classes = read_checkpoint_classes(cfg.MODEL.WEIGHTS)
    if classes:
        use_model_classes(classes, cfg.DATASETS.TEST[0], f"Checkpoint {cfg.MODEL.WEIGHTS!r}")


def build_predictor(cfg, onnx=None):
    """Detectron2's DefaultPredictor (model in eval mode, test-time resize, INPUT.FORMAT handled)
    with MODEL.WEIGHTS loaded by DetrCheckpointer (safe loading; every weight must fit), and the
    metadata of DATASETS.TEST[0]. With ``onnx`` (a model.onnx path), an ExportedPredictor of
    that file instead: the same call and results, from onnxruntime. The classes come from the
    checkpoint or export when it names them (``use_checkpoint_classes``)."""
    if onnx:
        from ..export import ExportedPredictor

        return ExportedPredictor(cfg, onnx), MetadataCatalog.get(cfg.DATASETS.TEST[0])
    use_checkpoint_classes(cfg)
    unloaded = cfg.clone()
    unloaded.defrost()
    unloaded.MODEL.WEIGHTS = ""
    predictor = DefaultPredictor(unloaded)
    if cfg.MODEL.WEIGHTS:
        DetrCheckpointer(predictor.model, datasets=cfg.DATASETS.TEST[:1]).load_complete(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: the model has random weights")
    return predictor, MetadataCatalog.get(cfg.DATASETS.TEST[0])


def list_images(inputs):
    """Expands files, glob patterns and folders (their images, not recursive) into a sorted
    list of image paths. A file name without glob characters is kept even when it does not
    exist (reading it then reports it as missing). Raises FileNotFoundError naming a pattern or
    folder that matches nothing, and ValueError when two images share a file name (their
    outputs would collide)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = [os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif not glob.has_magic(item):
            found = [os.path.expanduser(item)]
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


def start_inference_tool(args):
    """What both tools do first with their parsed arguments (see add_inference_arguments):
    logging, config, input list, model with weights, output folder.
    Returns (image paths, DefaultPredictor, metadata)."""
    setup_logger(name="detr_panoptic_d2")
    cfg = setup_inference_cfg(args.config_file, args.opts, args.confidence_threshold, getattr(args, "register", ()))
    paths = list_images(args.input)
    predictor, metadata = build_predictor(cfg, getattr(args, "onnx", None))
    os.makedirs(args.output, exist_ok=True)
    return paths, predictor, metadata

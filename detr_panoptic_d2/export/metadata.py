"""What inference needs beside an exported graph, and the check that a config fits it.

``export_metadata(cfg, model)`` is written into the model file (ONNX ``metadata_props``
under ``METADATA_KEY``) and beside it (``model.json``): the classes, the input, the
post-processing values, and ``sizes``, the config keys the graph was built from (with a
``fingerprint`` of them), so that a model exported from another config is refused by name.
"""
import hashlib
import json

from detectron2.data import MetadataCatalog

from ..checkpoint.model_classes import dataset_classes, same_classes
from ..data.metadata import class_names

METADATA_KEY = "detr_panoptic_d2"
FORMAT_VERSION = 1

# Config keys whose values are baked into the graph (sizes, normalization, channel order).
GRAPH_KEYS = [
    "INPUT.FORMAT",
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "MODEL.BACKBONE.NAME",
    "MODEL.RESNETS.DEPTH",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "MODEL.RESNETS.RES5_DILATION",
    "MODEL.DETR.TORCHVISION_DILATION",
    "MODEL.DETR.IN_FEATURE",
    "MODEL.DETR.NUM_CLASSES",
    "MODEL.DETR.NUM_OBJECT_QUERIES",
    "MODEL.DETR.HIDDEN_DIM",
    "MODEL.DETR.NHEADS",
    "MODEL.DETR.DIM_FEEDFORWARD",
    "MODEL.DETR.ENC_LAYERS",
    "MODEL.DETR.DEC_LAYERS",
    "MODEL.DETR.PRE_NORM",
    "MODEL.DETR.POSITION_EMBEDDING",
    "MODEL.DETR.MASK_HEAD.NAME",
    "MODEL.DETR.MASK_HEAD.NHEADS",
    "MODEL.DETR.MASK_HEAD.IN_FEATURES",
]


def _get(cfg, key):
    value = cfg
    for part in key.split("."):
        value = value[part]
    return list(value) if isinstance(value, (list, tuple)) else value


def graph_sizes(cfg):
    """{key: value} of GRAPH_KEYS in ``cfg`` (lists for tuples, as JSON gives them back)."""
    return {key: _get(cfg, key) for key in GRAPH_KEYS}


def export_metadata(cfg, model, top_k=None):
    """The JSON-able description of an export of ``model`` (a DetrPanoptic built from ``cfg``)."""
    sizes = graph_sizes(cfg)
    is_thing = model.postprocessor.is_thing.tolist()
    return {
        "format_version": FORMAT_VERSION,
        "class_names": class_names(MetadataCatalog.get(cfg.DATASETS.TEST[0])),
        # The dataset's categories (ids, names, thing or stuff, colours) in contiguous order.
        "classes": dataset_classes(cfg.DATASETS.TEST[0]),
        "thing_ids": [i for i, t in enumerate(is_thing) if t],
        "stuff_ids": [i for i, t in enumerate(is_thing) if not t],
        "input": {"format": cfg.INPUT.FORMAT, "channels": len(cfg.MODEL.PIXEL_MEAN), "dtype": "uint8", "layout": "CHW"},
        "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
        "pixel_std": list(cfg.MODEL.PIXEL_STD),
        "test_resize": {"min_size": cfg.INPUT.MIN_SIZE_TEST, "max_size": cfg.INPUT.MAX_SIZE_TEST},
        **model.postprocessor.settings(),
        "mask_stride": model.mask_head.stride,
        "top_k": top_k,
        "sizes": sizes,
        "fingerprint": fingerprint(sizes),
    }


def fingerprint(sizes):
    """A short hash of the graph's config sizes."""
    return hashlib.sha256(json.dumps(sizes, sort_keys=True).encode()).hexdigest()[:16]


def check_fits(metadata, cfg, path):
    """Raises ValueError naming ``path`` and every mismatch when the graph described by
    ``metadata`` was not exported from a config like ``cfg`` (sizes, classes: names, and ids
    and thing/stuff where the export records them)."""
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: exported by another version of detr_panoptic_d2 (format {metadata.get('format_version')}, "
            f"this one reads {FORMAT_VERSION}); export it again with tools/export_model.py"
        )
    ours = graph_sizes(cfg)
    problems = [
        f"{key}: exported {metadata['sizes'].get(key)!r}, config {value!r}"
        for key, value in ours.items()
        if metadata["sizes"].get(key) != value
    ]
    names = class_names(MetadataCatalog.get(cfg.DATASETS.TEST[0]))
    if metadata["class_names"] != names or not same_classes(metadata.get("classes"), cfg.DATASETS.TEST[0]):
        problems.append(
            f"classes of {cfg.DATASETS.TEST[0]!r}: exported {len(metadata['class_names'])} "
            f"({metadata['class_names'][:5]}...), config {len(names)} ({names[:5]}...)"
        )
    if problems:
        raise ValueError(f"{path} was exported from another config (fingerprint {metadata['fingerprint']}, "
                         f"config {fingerprint(ours)}): " + "; ".join(problems))

"""DETR panoptic segmentation as Detectron2 components.

Importing this package registers, in Detectron2's registries:

- ``META_ARCH_REGISTRY``: ``DetrPanoptic``
- ``DETR_MASK_HEAD_REGISTRY`` (ours): ``DetrMaskHead``
- ``DatasetCatalog``: ``shapes_panoptic_train``, ``shapes_panoptic_val`` (generated on first use)
"""
from . import data, modeling
from .config import add_detr_panoptic_config

__version__ = "0.1.0"
__all__ = ["add_detr_panoptic_config", "data", "modeling", "__version__"]

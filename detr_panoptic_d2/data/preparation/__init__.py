"""Preparing a dataset's files for this project from other label formats (tools/prepare_*.py):

- ``semantic_pngs``: semantic PNGs (for mIoU) from COCO-panoptic annotations;
- ``instances_to_panoptic``: COCO-panoptic annotations from COCO instance annotations and,
  optionally, stuff PNGs.
"""
from .instances_to_panoptic import instances_to_panoptic
from .semantic_pngs import write_semantic_pngs

__all__ = ["instances_to_panoptic", "write_semantic_pngs"]

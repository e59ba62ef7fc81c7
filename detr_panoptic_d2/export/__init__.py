"""Deployment: DetrPanoptic exported to ONNX and run by onnxruntime with identical output.

- ``graph``: the traced module (one image -> kept queries' masks and per-query predictions);
- ``onnx_export``: ``export_onnx`` writes model.onnx and model.json (tools/export_model.py);
- ``metadata``: what the export records and the check that a config fits it;
- ``runtime``: ``OnnxPanopticModel``, Detectron2's model contract over onnxruntime, merging
  with ``modeling.postprocessing.panoptic_merge`` like the PyTorch model;
- ``predictor``: ``ExportedPredictor``, DefaultPredictor's contract (tools/demo.py --onnx).
"""
from .graph import PanopticGraph
from .metadata import check_fits, export_metadata
from .onnx_export import OPSET, export_onnx
from .predictor import ExportedPredictor
from .runtime import OnnxPanopticModel

__all__ = [
    "OPSET",
    "ExportedPredictor",
    "OnnxPanopticModel",
    "PanopticGraph",
    "check_fits",
    "export_metadata",
    "export_onnx",
]

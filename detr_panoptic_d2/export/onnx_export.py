"""``export_onnx``: writes a DetrPanoptic as ``model.onnx`` (+ ``model.json``) for onnxruntime.

The graph is traced by torch.onnx's TorchScript exporter (``dynamo=False``): it records the
kept-query selection as ONNX NonZero, whose output length is data-dependent, and the image's
height and width as dynamic axes. The dynamo exporter (torch.export) stops on that count:
GroupNorm's batch-size check is a guard on it (see docs/EXPORT.md).
"""
import json
import os
import warnings

import torch

from .graph import INPUT_NAMES, OUTPUT_NAMES, PanopticGraph
from .metadata import METADATA_KEY, export_metadata

OPSET = 17
# The outputs' sizes follow from these (and from NonZero's count) by ONNX shape inference.
DYNAMIC_AXES = {"image": {1: "height", 2: "width"}}


def export_onnx(cfg, model, output_dir, top_k=None, example_size=(96, 128)):
    """Exports ``model`` (a DetrPanoptic of ``cfg``, weights loaded) to ``output_dir``/model.onnx
    with its metadata (metadata.export_metadata) inside and in ``output_dir``/model.json.

    top_k: None for the dynamic count of kept queries, k for k mask rows (see PanopticGraph).
    example_size: (H, W) of the image traced; any size works afterwards.
    Returns the path of model.onnx."""
    import onnx

    graph = PanopticGraph(model, top_k)
    metadata = export_metadata(cfg, model, top_k)
    channels = metadata["input"]["channels"]
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (channels, *example_size), dtype=torch.uint8, generator=generator)
    threshold = torch.tensor(float(cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH))
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "model.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values: none reaches the graph
        torch.onnx.export(
            graph, (image, threshold), path, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_axes=DYNAMIC_AXES, opset_version=OPSET, dynamo=False,
        )
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, path)
    with open(os.path.join(output_dir, "model.json"), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
    return path

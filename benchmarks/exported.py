"""onnxruntime next to PyTorch: the model exported to ONNX and timed end to end against the
same weights in PyTorch, alternately in one run, on the same images with the same threads."""
import copy
import tempfile

import torch

from detr_panoptic_d2.export import OnnxPanopticModel, export_onnx
from detr_panoptic_d2.export.compare import panoptic_agreement
from detr_panoptic_d2.testing import separate_query_masks_

from .measure import Contestant, measure


def time_onnxruntime(cfg, model, inputs, *, warmup, runs, device, clock=None, threads=None):
    """Exports a copy of ``model`` (DetrPanoptic, its masks first separated on ``inputs`` with
    ``separate_query_masks_`` so that the comparison is not decided by float rounding between
    near-equal random masks) and times ``model(inputs)`` in PyTorch and in onnxruntime
    (``threads`` intra-op threads; None: torch's thread count) with ``measure``.

    Returns {"pytorch": report, "onnxruntime": report (measure's, "total" only), "speedup":
    PyTorch median / onnxruntime median, "comparison": panoptic_agreement per image (worst
    values), "threads"}."""
    if torch.device(device).type != "cpu":
        raise SystemExit("--onnx compares onnxruntime's CPU provider with PyTorch on the CPU: use --device cpu")
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        separate_query_masks_(model, [x["image"] for x in inputs])
    threads = threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as workdir:
        runtime = OnnxPanopticModel(export_onnx(cfg, model, workdir), cfg, threads=threads)
    contestants = {
        "pytorch": Contestant(model, [], lambda timer: model(inputs), len(inputs)),
        "onnxruntime": Contestant(runtime, [], lambda timer: runtime(inputs), len(inputs)),
    }
    with torch.no_grad():
        results = measure(contestants, warmup=warmup, runs=runs, device=device, clock=clock)
    agreements = [
        panoptic_agreement(a["panoptic_seg"], b["panoptic_seg"])
        for a, b in zip(results["pytorch"][1], results["onnxruntime"][1])
    ]
    return {
        "threads": threads,
        "pytorch": results["pytorch"][0],
        "onnxruntime": results["onnxruntime"][0],
        "speedup": results["pytorch"][0]["total"]["median"] / results["onnxruntime"][0]["total"]["median"],
        "comparison": {
            "same_segments": all(a["same_segments"] for a in agreements),
            "max_score_difference": max(a["max_score_difference"] for a in agreements),
            "min_pixel_agreement": min(a["pixel_agreement"] for a in agreements),
        },
    }


def format_onnxruntime(section):
    """The section of time_onnxruntime as text lines."""
    torch_s, ort_s = section["pytorch"]["total"]["median"], section["onnxruntime"]["total"]["median"]
    c = section["comparison"]
    return [
        f"onnxruntime vs PyTorch, end to end ({section['threads']} threads, median of the timed runs)",
        f"  PyTorch {torch_s:.3f} s, onnxruntime {ort_s:.3f} s: onnxruntime x{section['speedup']:.2f}",
        f"  outputs: {'same segments' if c['same_segments'] else 'DIFFERENT segments'}, scores within "
        f"{c['max_score_difference']:.1e}, {100 * c['min_pixel_agreement']:.3f}% of pixels in the same segment",
    ]

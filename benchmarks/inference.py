"""Inference benchmark: DetrPanoptic in eval mode, end to end and per stage."""
import torch
from detectron2.structures import Boxes, Instances

from detr_panoptic_d2.export.compare import panoptic_agreement
from .measure import Contestant, measure


def inference_points(model):
    """(stage, module or (object, method)) pairs of the steps of DetrPanoptic inference.

    postprocessing is the model's ``postprocessor`` minus the mask head it calls; whatever
    no stage covers (image normalization and padding, input projection, class and box
    heads) is reported as "other"."""
    points = [
        ("backbone", model.backbone),
        ("encoder", model.transformer.encoder),
        ("decoder", model.transformer.decoder),
    ]
    head = model.mask_head
    if head is not None and hasattr(head, "attention_map") and hasattr(head, "fpn"):
        points += [("attention_map", head.attention_map), ("mask_head", head.fpn)]
    elif head is not None:
        points.append(("mask_head", head))
    return points + [("postprocessing", model.postprocessor)]


def run_inference(models, inputs, *, warmup, runs, device, clock=None):
    """Times ``model(inputs)`` for each of ``models`` (key -> DetrPanoptic) in eval mode under
    torch.no_grad, as Detectron2's predictor and evaluator run it, the models taking turns
    (mixed precision: the models' MODEL.DETR.TEST.AMP_DTYPE; clock: see StageTimer).

    Returns {key: (report, outputs of the last call)}: measure.measure's reports plus
    "segments_per_image" (panoptic segments in the last call's outputs)."""
    contestants = {}
    for key, model in models.items():
        model.eval()
        contestants[key] = Contestant(model, inference_points(model), lambda timer, m=model: m(inputs), len(inputs))
    with torch.no_grad():
        results = measure(contestants, warmup=warmup, runs=runs, device=device, clock=clock)
    for report, outputs in results.values():
        segments = [len(o["panoptic_seg"][1]) for o in outputs if "panoptic_seg" in o]
        report["segments_per_image"] = sum(segments) / len(segments) if segments else None
    return results


def _equal(a, b):
    """Exact equality of nested results (tensors, Instances, Boxes, lists, dicts, numbers)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, Instances):
        return isinstance(b, Instances) and a.image_size == b.image_size and _equal(a.get_fields(), b.get_fields())
    if isinstance(a, Boxes):
        return isinstance(b, Boxes) and _equal(a.tensor, b.tensor)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def compare_outputs(outputs_a, outputs_b):
    """Whether two inference results are identical, per output kind ("panoptic_seg": maps pixel
    for pixel and segments_info entry for entry, scores included; "instances"; "sem_seg").
    Returns {kind: bool, ..., "identical": all of them} and, for panoptic outputs,
    "panoptic_pixels_differing" (count), "panoptic_same_segments" (ids, classes and thing flags
    in every image) and "panoptic_pixel_agreement" (the lowest fraction of equal pixels)."""
    kinds = sorted({k for o in outputs_a for k in o} | {k for o in outputs_b for k in o})
    result = {k: all(_equal(a.get(k), b.get(k)) for a, b in zip(outputs_a, outputs_b)) for k in kinds}
    result["identical"] = len(outputs_a) == len(outputs_b) and all(result.values())
    if "panoptic_seg" in kinds:
        pairs = [(a["panoptic_seg"], b["panoptic_seg"]) for a, b in zip(outputs_a, outputs_b)]
        agreements = [panoptic_agreement(a, b) for a, b in pairs]
        result["panoptic_pixels_differing"] = sum(int((a[0] != b[0]).sum()) for a, b in pairs)
        result["panoptic_same_segments"] = all(x["same_segments"] for x in agreements)
        result["panoptic_pixel_agreement"] = min(x["pixel_agreement"] for x in agreements)
    return result

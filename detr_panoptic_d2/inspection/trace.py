"""What each pipeline step produced for one image, recorded by forward hooks on the model's own
modules during one ordinary inference call (no second copy of the forward pass).

Hooks: ``model.transformer`` (its returned memory is the **encoded image**, the encoder's
output on the res5 grid, and its box embeddings), ``model.class_embed`` / ``model.bbox_embed``
(class logits and boxes), ``model.mask_head`` (which box embeddings it segments),
``model.mask_head.attention_map`` (the M attention heat-maps per object) and
``model.mask_head.fpn`` (the mask logits after the FPN-style head).
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert

from ..modeling.postprocessing import resize_ids_nearest, select_queries


@dataclass
class TracedObject:
    """One kept query. box: x0, y0, x1, y1 in original-image pixels; attention: M x h x w over
    the encoded image; mask_logits: H/s x W/s (s = mask stride); mask: H x W bool at the
    original size (logits upsampled as the panoptic merge does, > 0)."""

    query: int
    category_id: int
    score: float
    box: np.ndarray
    attention: torch.Tensor
    mask_logits: torch.Tensor
    mask: torch.Tensor


@dataclass
class PipelineTrace:
    """encoded: d x h x w encoded image (valid cells); objects: the kept queries, in query
    order; panoptic_seg: H x W ids and segments_info, the model's final output;
    input_size: (height, width) the network saw; num_queries: N."""

    encoded: torch.Tensor
    objects: List[TracedObject]
    panoptic_seg: torch.Tensor
    segments_info: list
    input_size: Tuple[int, int]
    num_queries: int


@contextmanager
def _recording(modules):
    """Records, per name, the (args, output) of the given modules' calls while active."""
    calls = {name: [] for name in modules}
    handles = [
        module.register_forward_hook(lambda _m, args, out, name=name: calls[name].append((args, out)))
        for name, module in modules.items()
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _valid_extent(mask):
    """(rows, cols) of the non-padding region of an h x w padding mask (True = padding)."""
    valid = ~mask
    return int(valid.any(1).sum()), int(valid.any(0).sum())


def _segmented_rows(queries, batch_idx, embeddings):
    """query index -> row of the mask head's input, found by value: the head receives copies of
    image 0's box embeddings (embeddings: N x d), for the kept queries or for all of them."""
    rows = {}
    for row in (batch_idx == 0).nonzero()[:, 0].tolist():
        same = (embeddings == queries[row]).all(1).nonzero()[:, 0]
        rows.setdefault(int(same[0]), row)
    return rows


@torch.no_grad()
def trace_pipeline(predictor, image_bgr):
    """Runs ``predictor(image_bgr)`` (a Detectron2 DefaultPredictor of a DetrPanoptic model;
    image_bgr: H x W x 3 uint8) once with hooks, and returns its PipelineTrace."""
    model = predictor.model
    if getattr(model, "mask_head", None) is None or not model.panoptic_on:
        raise ValueError("The pipeline inspector needs a panoptic model (MODEL.MASK_ON and DETR.TEST.PANOPTIC_ON)")
    modules = {
        "transformer": model.transformer,
        "class_embed": model.class_embed,
        "bbox_embed": model.bbox_embed,
        "mask_head": model.mask_head,
        "attention_map": model.mask_head.attention_map,
        "fpn": model.mask_head.fpn,
    }
    with _recording(modules) as calls:
        panoptic_seg, segments_info = predictor(image_bgr)["panoptic_seg"]

    input_size = predictor.aug.get_transform(image_bgr).apply_image(image_bgr).shape[:2]
    (box_embeddings, memory), transformer_args = calls["transformer"][0][1], calls["transformer"][0][0]
    grid = _valid_extent(transformer_args[1][0])
    logits = calls["class_embed"][0][1][-1, 0]
    boxes = calls["bbox_embed"][0][1][-1, 0].sigmoid()
    head_args = calls["mask_head"][0][0]
    rows = _segmented_rows(head_args[0], head_args[1], box_embeddings[-1, 0])
    attention = calls["attention_map"][0][1]
    mask_logits = calls["fpn"][0][1]
    stride = model.mask_head.stride
    mask_size = (-(-input_size[0] // stride), -(-input_size[1] // stride))
    output_size = tuple(panoptic_seg.shape)

    keep, scores, classes = select_queries(logits, model.object_score_thresh)
    objects = []
    for q in keep.nonzero()[:, 0].tolist():
        r = rows[q]
        logit_map = mask_logits[r, : mask_size[0], : mask_size[1]]
        upsampled = F.interpolate(logit_map[None, None], size=input_size, mode="bilinear", align_corners=False)[0, 0]
        box = box_convert(boxes[q], "cxcywh", "xyxy") * boxes.new_tensor(output_size[::-1] * 2)
        objects.append(
            TracedObject(
                query=q,
                category_id=int(classes[q]),
                score=float(scores[q]),
                box=box.cpu().numpy(),
                attention=attention[r, :, : grid[0], : grid[1]].cpu(),
                mask_logits=logit_map.cpu(),
                mask=resize_ids_nearest((upsampled > 0).to(torch.uint8), output_size).bool().cpu(),
            )
        )
    return PipelineTrace(
        encoded=memory[0, :, : grid[0], : grid[1]].cpu(),
        objects=objects,
        panoptic_seg=panoptic_seg.cpu(),
        segments_info=segments_info,
        input_size=input_size,
        num_queries=logits.shape[0],
    )

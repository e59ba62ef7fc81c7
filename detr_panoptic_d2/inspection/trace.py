"""What each pipeline step produced for one image, from ``DetrPanoptic.inference_steps`` (the
model's public view of its intermediate results) in one ordinary inference call."""
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert

from ..data.predictor_input import predictor_input
from ..modeling.postprocessing import resize_ids_nearest


@dataclass
class TracedObject:
    """One kept query. box: x0, y0, x1, y1 in original-image pixels; layer_boxes: L x 4, its box
    after each of the L decoder layers (same format, the last is ``box``); attention: M x h x w
    over the encoded image; mask_logits: H/s x W/s (s = mask stride); mask: H x W bool at the
    original size (logits upsampled as the panoptic merge does, > 0)."""

    query: int
    category_id: int
    score: float
    box: np.ndarray
    layer_boxes: np.ndarray
    attention: torch.Tensor
    mask_logits: torch.Tensor
    mask: torch.Tensor


@dataclass
class PipelineTrace:
    """encoded: d x h x w encoded image (valid cells); objects: the kept queries, in query
    order; panoptic_seg: H x W ids and segments_info, the model's final output;
    input_size: (height, width) the network saw; num_queries: N; stride: of the backbone level
    the transformer reads (the encoded image and attention maps are H/stride x W/stride);
    mask_stride: s of the mask logits; decoder: the transformer's class name; num_layers: L,
    its decoder layers; box_aware: whether the attention maps also read each object's box and
    the pixel positions (MODEL.DETR.MASK_HEAD.BOX_AWARE)."""

    encoded: torch.Tensor
    objects: List[TracedObject]
    panoptic_seg: torch.Tensor
    segments_info: list
    input_size: Tuple[int, int]
    num_queries: int
    stride: int
    mask_stride: int
    decoder: str
    num_layers: int
    box_aware: bool


@torch.no_grad()
def trace_pipeline(predictor, image_bgr):
    """Runs the predictor's DetrPanoptic on ``image_bgr`` (H x W x 3 uint8) as the predictor
    would, through ``inference_steps``, and returns its PipelineTrace."""
    model = predictor.model
    if getattr(model, "mask_head", None) is None or not model.postprocessor.panoptic_on:
        raise ValueError("The pipeline inspector needs a panoptic model (MODEL.MASK_ON and DETR.TEST.PANOPTIC_ON)")
    (steps,) = model.inference_steps([predictor_input(image_bgr, predictor.aug, predictor.input_format)])
    if steps.attention_maps is None:
        raise ValueError(f"The mask head {type(model.mask_head).__name__} returns no attention maps to show")
    panoptic_seg, segments_info = steps.panoptic_seg
    output_size = tuple(panoptic_seg.shape)
    boxes = box_convert(steps.layer_boxes, "cxcywh", "xyxy") * steps.boxes.new_tensor(output_size[::-1] * 2)
    objects = []
    for row, query in enumerate(steps.queries.tolist()):
        logit_map = steps.mask_logits[row]
        upsampled = F.interpolate(logit_map[None, None], size=steps.image_size, mode="bilinear", align_corners=False)
        objects.append(
            TracedObject(
                query=query,
                category_id=int(steps.classes[row]),
                score=float(steps.scores[row]),
                box=boxes[-1, query].cpu().numpy(),
                layer_boxes=boxes[:, query].cpu().numpy(),
                attention=steps.attention_maps[row].cpu(),
                mask_logits=logit_map.cpu(),
                mask=resize_ids_nearest((upsampled[0, 0] > 0).to(torch.uint8), output_size).bool().cpu(),
            )
        )
    return PipelineTrace(
        encoded=steps.encoded.cpu(),
        objects=objects,
        panoptic_seg=panoptic_seg.cpu(),
        segments_info=segments_info,
        input_size=steps.image_size,
        num_queries=steps.box_embeddings.shape[0],
        stride=model.backbone.output_shape()[model.in_feature].stride,
        mask_stride=steps.mask_stride,
        decoder=type(model.transformer).__name__,
        num_layers=steps.layer_boxes.shape[0],
        box_aware=bool(getattr(model.mask_head, "box_aware", False)),
    )

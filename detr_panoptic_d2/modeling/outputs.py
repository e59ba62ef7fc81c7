"""What the steps of DetrPanoptic hand over: ``DetrOutputs`` (steps 1-5, from
``DetrPanoptic.detect``) and ``ImageSteps`` (every step for one image, from the inference core
``DetrPanoptic.image_steps``, which ``inference`` and ``inference_steps`` format)."""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from detectron2.structures import Instances


@dataclass
class DetrOutputs:
    """Steps 1-5 for a batch of B padded images (L decoder layers, N queries, K classes).

    logits: L x B x N x (K+1); boxes: L x B x N x 4 (normalized cx, cy, w, h);
    box_embeddings: L x B x N x d; memory: B x d x h x w encoded images;
    memory_mask: B x h x w (True = padding); pos: B x d x h x w, the positional encoding of
    that grid; projected: B x d x h x w, the transformer's input
    (the projected ``in_feature``); features: the backbone's maps by name;
    denoising_logits, denoising_boxes: L x B x Q x (K+1) and L x B x Q x 4 of the training-only
    denoising queries (modeling/denoising.py), None without them.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    box_embeddings: torch.Tensor
    memory: torch.Tensor
    memory_mask: torch.Tensor
    pos: torch.Tensor
    projected: torch.Tensor
    features: Dict[str, torch.Tensor]
    denoising_logits: Optional[torch.Tensor] = None
    denoising_boxes: Optional[torch.Tensor] = None


@dataclass
class ImageSteps:
    """What every step produced for one image (``DetrPanoptic.image_steps``), for its N
    queries, N' of them kept; K classes, d the transformer width, M attention maps per object,
    h x w the image's valid (non-padding) cells on the grid the transformer reads, s the mask
    stride. Tensors are on the model's device, in float32.

    image_size: (height, width) the network saw, before padding; output_size: (H, W) of the
        results (the input's "height" and "width");
    encoded: d x h x w, the encoded image (step 3);
    box_embeddings: N x d, the last decoder layer's output (step 4);
    class_logits: N x (K+1) and boxes: N x 4, normalized cx, cy, w, h (step 5);
    layer_boxes: L x N x 4, every decoder layer's boxes (L decoder layers, the same format;
        layer_boxes[-1] is boxes): an anchor-box decoder's refined anchors, a vanilla
        decoder's box head read on each layer's output;
    queries: N' long, the kept queries in ascending order; classes, scores: N', their best real
        class and its probability;
    attention_maps: N' x M x h x w (step 6); None for a box-only model or a mask head without;
    mask_logits: N' x ceil(height/s) x ceil(width/s), over the image's valid region (step 7);
        None for a box-only model;
    mask_stride: s (None for a box-only model);
    panoptic_seg: (H x W int32 ids, segments_info) merged from mask_logits (step 8), equal to
        ``forward``'s; None for a box-only model or when the panoptic output is off;
    instances: Detectron2 Instances of the detections (MODEL.DETR.TEST.INSTANCES_ON), else None;
    sem_seg: K x H x W semantic scores (MODEL.DETR.TEST.SEMANTIC_ON), else None.
    """

    image_size: Tuple[int, int]
    output_size: Tuple[int, int]
    encoded: torch.Tensor
    box_embeddings: torch.Tensor
    class_logits: torch.Tensor
    boxes: torch.Tensor
    layer_boxes: torch.Tensor
    queries: torch.Tensor
    classes: torch.Tensor
    scores: torch.Tensor
    attention_maps: Optional[torch.Tensor]
    mask_logits: Optional[torch.Tensor]
    mask_stride: Optional[int]
    panoptic_seg: Optional[tuple]
    instances: Optional[Instances] = None
    sem_seg: Optional[torch.Tensor] = None

"""What the steps of DetrPanoptic hand over: ``DetrOutputs`` (steps 1-5, from
``DetrPanoptic.detect``)."""
from dataclasses import dataclass
from typing import Dict

import torch


@dataclass
class DetrOutputs:
    """Steps 1-5 for a batch of B padded images (L decoder layers, N queries, K classes).

    logits: L x B x N x (K+1); boxes: L x B x N x 4 (normalized cx, cy, w, h);
    box_embeddings: L x B x N x d; memory: B x d x h x w encoded images;
    memory_mask: B x h x w (True = padding); projected: B x d x h x w, the transformer's input
    (the projected ``in_feature``); features: the backbone's maps by name.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    box_embeddings: torch.Tensor
    memory: torch.Tensor
    memory_mask: torch.Tensor
    projected: torch.Tensor
    features: Dict[str, torch.Tensor]

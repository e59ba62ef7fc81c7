"""The layers around the transformer: step 2's input projection (backbone level -> width d)
and step 5's heads on the box embeddings, the class head (K+1 logits, the last "no object")
and the 3-layer box MLP (normalized cx, cy, w, h). DetrPanoptic keeps them as ``input_proj``,
``class_embed`` and ``bbox_embed``, the reference's names (and state-dict keys)."""
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Linear layers with ReLU between them (the 3-layer box head)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def input_projection(in_channels, hidden_dim):
    """Step 2: the 1x1 conv from the backbone level the transformer reads (B x C x h x w) to
    its width (B x d x h x w)."""
    return nn.Conv2d(in_channels, hidden_dim, 1)


def class_head(hidden_dim, num_classes):
    """Step 5: box embedding (d) -> K+1 class logits, the last being "no object"."""
    return nn.Linear(hidden_dim, num_classes + 1)


def box_head(hidden_dim):
    """Step 5: box embedding (d) -> 4 box logits (3 layers), sigmoid in ``classes_and_boxes``."""
    return MLP(hidden_dim, hidden_dim, 4, 3)


def classes_and_boxes(class_embed, bbox_embed, box_embeddings):
    """Step 5 on box embeddings ... x d: (class logits ... x (K+1), boxes ... x 4 normalized
    cx, cy, w, h in [0, 1])."""
    return class_embed(box_embeddings), bbox_embed(box_embeddings).sigmoid()

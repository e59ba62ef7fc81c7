"""The mask-head registry's contract (DETR_MASK_HEAD_REGISTRY's docstring): a minimal head
registered from outside the package trains and infers through MODEL.DETR.MASK_HEAD.NAME."""
import torch
from detectron2.modeling import build_model
from torch import nn

from detr_panoptic_d2.modeling import DETR_MASK_HEAD_REGISTRY, MultiHeadAttentionMap

from .helpers import make_input, register_tiny_panoptic_metadata, tiny_cfg


@DETR_MASK_HEAD_REGISTRY.register()
class AttentionConvTestHead(nn.Module):
    """A 1x1 conv over the M attention maps: mask logits on the grid the transformer reads."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        d, m = cfg.MODEL.DETR.HIDDEN_DIM, cfg.MODEL.DETR.MASK_HEAD.NHEADS
        self.attention_map = MultiHeadAttentionMap(d, d, m)
        self.conv = nn.Conv2d(m, 1, 1)
        self.stride = input_shape[cfg.MODEL.DETR.IN_FEATURE].stride

    def forward(self, queries, batch_idx, memory, memory_mask, projected, features, boxes=None, pos=None):
        maps = self.attention_map(queries, batch_idx, memory, memory_mask)
        return self.conv(maps)[:, 0], maps


def test_registered_head_trains_and_infers():
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.MODEL.DETR.MASK_HEAD.NAME = "AttentionConvTestHead"
    cfg.MODEL.DETR.IN_FEATURE = "res5"
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.mask_head, AttentionConvTestHead)

    losses = model.train()([make_input(64, 96, classes=(1, 2)), make_input(96, 64, classes=(3,), seed=1)])
    assert torch.isfinite(losses["loss_mask"]) and torch.isfinite(losses["loss_dice"])
    sum(losses.values()).backward()
    assert model.mask_head.conv.weight.grad.abs().sum() > 0
    assert model.mask_head.attention_map.q_linear.weight.grad.abs().sum() > 0

    model.eval().postprocessor.object_score_thresh = 0.0
    batch = [make_input(64, 96, seed=2, with_targets=False), make_input(96, 64, seed=3, with_targets=False)]
    calls = []  # (batch_idx, mask logits, attention maps) of each call of the head
    model.mask_head.register_forward_hook(lambda head, args, out: calls.append((args[1], *out)))
    with torch.no_grad():
        model.class_embed.bias[-1] = -10.0  # every query kept
        results = model(batch)
        calls.clear()
        steps = model.inference_steps(batch)
    # Padded to 96 x 96, a 3 x 3 grid: the head's stride (32) crops each image's valid cells.
    (batch_idx, head_logits, head_maps), = calls
    assert head_logits.shape == (20, 3, 3) and head_maps.shape == (20, 8, 3, 3)
    for i, (s, result, (rows, cols)) in enumerate(zip(steps, results, [(2, 3), (3, 2)])):
        panoptic, segments = result["panoptic_seg"]
        assert panoptic.shape == s.image_size and segments
        assert s.mask_stride == 32 and s.mask_logits.shape == (10, rows, cols)
        assert s.attention_maps.shape == (10, 8, rows, cols)
        # Exact by construction: the head's own output over the padded grid, sliced to the image's cells.
        assert torch.equal(s.mask_logits, head_logits[batch_idx == i][:, :rows, :cols])
        assert torch.equal(s.attention_maps, head_maps[batch_idx == i][:, :, :rows, :cols])
        # Tolerance: the 1x1 conv over the cropped maps is another shape, so other kernels may round otherwise.
        torch.testing.assert_close(s.mask_logits, model.mask_head.conv(s.attention_maps)[:, 0], rtol=1e-5, atol=1e-5)
        # Exact by construction: inference_steps and forward merge the same masks on the same shapes.
        assert torch.equal(s.panoptic_seg[0], panoptic)

"""The reference implementation's way of computing, applied to a DetrPanoptic from outside: the
oracle of the tests that our faster computation gives the same results, and the reference
contestant of the benchmark (``benchmarks --compare-all-queries``). The model itself has one
inference path; these wrappers replace two of its methods on one instance.

- ``run_mask_head_on_all_queries``: the mask head on all N queries of every image, the
  requested rows picked from that (DETR runs it on every query, then keeps some);
- ``detr_fpn_formulation``: DETR's FPN-style head, every per-image map gathered to the
  objects' rows and the first convolution over the concatenation of projected res5 and
  attention maps (ours convolves res5 once per image and adds per object);
- ``as_reference``: both, on a model built with REFERENCE_OVERRIDES (no folded BatchNorm,
  no channels-last, no autocast).
"""
import functools

import torch
import torch.nn.functional as F

# Config overrides that turn off what changes how (not what) the model computes.
REFERENCE_OVERRIDES = [
    "MODEL.DETR.TEST.FOLD_BATCHNORM", "False",
    "MODEL.DETR.CHANNELS_LAST", "False",
    "MODEL.DETR.TEST.AMP_DTYPE", "none",
]


def run_mask_head_on_all_queries(model):
    """Makes ``model`` compute masks on all N queries of every image and pick the requested
    rows (see the module docstring). Returns ``model``."""
    head = model.mask_head

    def segment_with_attention(out, batch_idx, query_idx):
        embeddings = out.box_embeddings[-1]
        b, n = embeddings.shape[:2]
        every = torch.arange(b, device=embeddings.device).repeat_interleave(n)
        grids = (out.memory, out.memory_mask, out.projected, out.features)
        masks, maps = head(embeddings.flatten(0, 1), every, *grids, boxes=out.boxes[-1].flatten(0, 1), pos=out.pos)
        rows = batch_idx * n + query_idx
        return masks[rows], None if maps is None else maps[rows]

    model.segment_with_attention = segment_with_attention
    model.all_queries = True  # read by the benchmark's report
    return model


def detr_fpn_formulation(head, maps, batch_idx, projected, skips):
    """FPNMaskHead.forward (``head``) as DETR writes it; the same arguments and result: maps
    T x M x h x w, batch_idx T, projected B x d x h x w, skips 3 maps B x C_k x H_k x W_k ->
    T x H_fine x W_fine mask logits."""
    x = head.narrow_conv(head.fuse_conv(torch.cat([projected[batch_idx], maps], dim=1)))
    for project, refine, skip in zip(head.skip_projections, head.refine_convs, skips):
        skip = project(skip)[batch_idx]
        x = refine(skip + F.interpolate(x, size=skip.shape[-2:], mode="nearest"))
    return head.mask_predictor(x).squeeze(1)


def as_reference(model):
    """``model`` (DetrMaskHead) computing as DETR does: its mask head on all queries, with
    DETR's FPN formulation. Returns ``model``."""
    fpn = model.mask_head.fpn
    fpn.forward = functools.partial(detr_fpn_formulation, fpn)
    return run_mask_head_on_all_queries(model)

"""Random weights made to behave like trained ones where output comparisons need it.

A random DETR decoder gives all queries nearly the same box embedding, so their masks agree
to about 1e-5 and float rounding decides which query wins a pixel: two runtimes (PyTorch and
onnxruntime, or two kernels) then legitimately disagree. ``separate_query_masks_`` makes the
masks differ, as a trained model's do, so that comparisons of panoptic outputs mean something.
"""
import torch


@torch.no_grad()
def recentre_on_queries_(embeddings, linears, spread):
    """Makes each of ``linears`` tell the queries apart: ``embeddings`` (Q x d box embeddings
    of some input) share a large common part in a random decoder. Each linear is re-centred on
    their mean and scaled so that its outputs vary by ``spread`` (standard deviation) over them."""
    mean = embeddings.mean(0)
    for linear in linears:
        gain = spread / ((embeddings - mean) @ linear.weight.T).std()
        linear.bias.sub_(linear.weight @ mean).mul_(gain)
        linear.weight.mul_(gain)


@torch.no_grad()
def separate_query_masks_(model, images, spread=1.0, gain=1e5, class_spread=None):
    """Rewrites the mask head of ``model`` (DetrMaskHead, in place) so that the queries' masks
    differ on ``images`` (C x H x W uint8 tensors, one forward each): the attention map's query
    projection is re-centred on their box embeddings (broad maps, ``spread``) and the first
    mask-head layer's weights on the attention-map channels are multiplied by ``gain``, so the
    maps shape the masks. With ``class_spread`` the class head is re-centred likewise (queries
    then predict various classes); else classes are unchanged, as are box embeddings and boxes."""
    model.eval()
    embeddings = [
        model.detect(((image.float() - model.pixel_mean) / model.pixel_std)[None], None).box_embeddings[-1, 0]
        for image in images
    ]
    embeddings = torch.cat(embeddings)
    recentre_on_queries_(embeddings, [model.mask_head.attention_map.q_linear], spread)
    if class_spread is not None:
        recentre_on_queries_(embeddings, [model.class_embed], class_spread)
    model.mask_head.fpn.fuse_conv.weight[:, model.transformer.d_model :].mul_(gain)

"""A controlled number of kept queries for random weights.

With random weights no query reaches the 0.85 score threshold, so ``calibrate_kept_queries``
rewrites the class head so that exactly K queries pass, M >= K reach
MODEL.DETR.TEST.MASK_SCORE_FLOOR (instance and semantic outputs) and the rest say "no object",
as with a trained model.
"""
import torch


@torch.no_grad()
def fit_class_head(model, batched_inputs, target):
    """Rewrites ``model.class_embed`` (in place) so that it gives the logits ``target``
    (B x N x (K+1)) to the queries of ``batched_inputs``: least squares over the box
    embeddings, exact when B x N is at most the width d + 1 (or the images are the same)."""
    _solve_class_head(model, _detect(model, batched_inputs).box_embeddings[-1], target)


def _detect(model, batched_inputs):
    """DetrOutputs of ``model`` (put in eval mode) on ``batched_inputs``."""
    model.eval()
    images, padding_mask = model.preprocess_image(batched_inputs)
    return model.detect(images.tensor, padding_mask)


def _solve_class_head(model, box_embeddings, target):
    """fit_class_head's least squares: box_embeddings B x N x d, target B x N x (K+1)."""
    emb = box_embeddings.flatten(0, 1).double()
    design = torch.cat([emb, torch.ones(len(emb), 1, dtype=emb.dtype)], 1)
    solution = torch.linalg.lstsq(design, target.flatten(0, 1).double().to(emb.device)).solution.float()
    model.class_embed.weight.copy_(solution[:-1].T)
    model.class_embed.bias.copy_(solution[-1])


# Target logits (real class, "no object") of calibrate_kept_queries' kept, uncertain and empty queries.
_KEPT, _UNCERTAIN, _EMPTY = (10.0, 0.0), (5.0, 6.0), (0.0, 10.0)


@torch.no_grad()
def calibrate_kept_queries(model, batched_inputs, kept, above_floor=None):
    """Rewrites the class head of a random DetrPanoptic (in place, as ``fit_class_head``) so
    that in each image of ``batched_inputs`` (one picture, or as many as ``fit_class_head`` fits
    exactly) the ``kept`` queries the model is most sure of (on the first image) predict their
    most likely real class with logit 10 (probability 0.99 with COCO's 133 classes: kept by the
    0.85 threshold), the next ``above_floor - kept`` (none by default) logit 5 against 6 for
    "no object" (probability 0.22: instance and semantic contributors above any
    MODEL.DETR.TEST.MASK_SCORE_FLOOR up to 0.2, not kept), and the others "no object" with
    logit 10 (every real class below 1e-4), as a trained model scores them.

    The fit holds in float32 and, when the model's inference autocasts
    (MODEL.DETR.TEST.AMP_DTYPE), under that autocast too: the box embeddings of both are
    fitted together (exact while twice the rows fit), since a random model's embeddings are so
    alike that a head fitted to one precision's gives arbitrary logits on the other's. A
    bfloat16 model and its float32 reference thus keep the same queries."""
    n = model.query_embed.weight.shape[0]
    above_floor = kept if above_floor is None else above_floor
    if not 0 <= kept <= above_floor <= n:
        raise ValueError(
            f"need 0 <= --kept-queries ({kept}) <= --queries-above-floor ({above_floor}) <= "
            f"MODEL.DETR.NUM_OBJECT_QUERIES={n}"
        )
    out = _detect(model, batched_inputs)
    scores, classes = out.logits[-1, 0, :, :-1].softmax(-1).max(-1)
    order, classes = scores.argsort(descending=True).cpu(), classes.cpu()  # most confident first
    target = torch.zeros(n, model.num_classes + 1)
    groups = (order[:kept], order[kept:above_floor], order[above_floor:])
    for rows, (real, empty) in zip(groups, (_KEPT, _UNCERTAIN, _EMPTY)):
        target[rows, classes[rows]] = real
        target[rows, -1] = empty
    embeddings = [out.box_embeddings[-1]]
    if model.precision.inference_dtype is not None:
        with model.precision.autocast(model.device, training=False):
            embeddings.append(_detect(model, batched_inputs).box_embeddings[-1])
    _solve_class_head(model, torch.cat(embeddings), target.expand(len(embeddings) * len(batched_inputs), n, -1))

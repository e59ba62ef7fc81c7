"""The exported graph: DetrPanoptic inference on one image, steps 1-7 and query selection,
through the model's own ``normalize``, ``detect``, ``select_queries`` and ``segment``.

``PanopticGraph`` wraps a DetrPanoptic for tracing. It takes one image exactly as the
model's ``forward`` receives it (uint8 C x H x W in INPUT.FORMAT, after the test-time
resize) and the score threshold, and returns what the panoptic merge (step 8,
``modeling.postprocessing.panoptic_merge``) needs; the merge runs outside the graph, in
the same function the PyTorch model calls.

With one image nothing is padded: the padding masks are all False and no attention row is
ever fully masked (the NaN trap of padded batches in onnxruntime does not arise).
"""
import torch
from torch import nn

from ..modeling import postprocessing

INPUT_NAMES = ["image", "score_threshold"]
OUTPUT_NAMES = ["scores", "classes", "boxes", "queries", "valid", "mask_logits"]


class PanopticGraph(nn.Module):
    """One image -> per-query predictions and mask logits of the selected queries.

    ``top_k`` None (dynamic count): masks of the queries that pass the threshold; when none
    does, of query 0 alone, flagged invalid (onnxruntime's GroupNorm cannot reshape an empty
    batch). ``top_k`` = k (static shapes): masks of k queries, those that pass the threshold
    first (flagged valid; the best-scoring ones if more than k pass), then the best-scoring
    others (a "no object" query's score is its no-object probability, so it cannot outrank
    them). Rows are in query order either way, as in the PyTorch model.
    """

    def __init__(self, model, top_k=None):
        super().__init__()
        if model.mask_head is None:
            raise ValueError("Only a panoptic model (MODEL.MASK_ON True) can be exported")
        if model.backbone.size_divisibility > 1:
            raise ValueError(
                f"The backbone pads images to multiples of {model.backbone.size_divisibility}; the exported graph "
                "takes unpadded images, whose mask logits cover the image exactly (backbones without padding only)"
            )
        if model.query_embed.embedding_dim == 4:
            raise NotImplementedError(
                "The anchor-box decoder (MODEL.DETR.DECODER 'anchor') cannot be exported yet: its traced graph "
                "gives onnxruntime wrong slice bounds; export a model of the vanilla decoder"
            )
        num_queries = model.query_embed.num_embeddings
        if top_k is not None and not 1 <= top_k <= num_queries:
            raise ValueError(f"--top-k must be in 1..{num_queries} (MODEL.DETR.NUM_OBJECT_QUERIES), got {top_k}")
        self.model = model
        self.top_k = top_k
        self.eval()  # the wrapper too: exporters restore the wrapper's mode, recursively

    def forward(self, image, score_threshold):
        """image: C x H x W uint8; score_threshold: float32 scalar tensor.

        Returns (scores N, classes N int64 (K = no object), boxes N x 4 normalized cx, cy,
        w, h) of all N queries, then per mask row: queries T int64 (ascending), valid T bool
        (passes the threshold), mask_logits T x ceil(H/s) x ceil(W/s) (s: mask stride)."""
        model = self.model
        out = model.detect(model.normalize(image)[None], None)
        keep, scores, classes = postprocessing.select_queries(out.logits[-1, 0], score_threshold)
        if self.top_k is None:
            first = torch.arange(keep.shape[0], device=keep.device) == 0
            queries = (keep | (first & ~keep.any())).nonzero()[:, 0]
        else:
            # Kept queries first: a "no object" query's score (its no-object probability) may be higher.
            queries = torch.where(keep, scores, scores - 2).topk(self.top_k).indices.sort().values
        masks = model.segment(out, torch.zeros_like(queries), queries)
        return scores, classes, out.boxes[-1, 0], queries, keep[queries], masks

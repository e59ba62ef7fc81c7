"""Training-only queries as one component: ``TrainingQueries``, built from the config and
passed to DetrPanoptic like its criterion.

Two kinds of extra queries help DETR learn and are dropped at inference, so that the deployed
model is a plain DETR (a checkpoint trained with them loads into a model without them:
detector_weights.drop_unused_training_weights):

- query groups (Group DETR, Chen et al., ICCV 2023; MODEL.DETR.TRAIN_QUERY_GROUPS G > 1):
  groups 2..G of N learned queries, decoded beside the model's own N with self-attention
  confined to each group, each group matched and supervised on its own;
- denoising queries (DN-DETR, Li et al., CVPR 2022; MODEL.DETR.DN): noised copies of the
  ground truth, decoded after the matching queries behind an attention mask
  (modeling/denoising.py), each trained to give back its own segment.

``DetrPanoptic.detect`` asks for the decoder's queries (``queries``) and, in a training step,
for the denoising queries of the batch (``denoising_queries``); ``criterion_inputs`` gives what
they add to the criterion's input.
"""
from typing import Optional

import torch
from detectron2.config import configurable
from torch import nn

from .denoising import DenoisingQueries


class TrainingQueries(nn.Module):
    """Query groups 2..G and denoising queries (see the module docstring)."""

    @configurable
    def __init__(self, *, query_dim, num_queries, groups=1, denoising: Optional[DenoisingQueries] = None):
        """
        Args:
            query_dim: the width of an object query: d (MODEL.DETR.HIDDEN_DIM) for the vanilla
                decoder, 4 (an anchor box) for the anchor-box one (``transformer.query_dim``).
            num_queries: N, the model's own queries (MODEL.DETR.NUM_OBJECT_QUERIES).
            groups: G, query groups in training (MODEL.DETR.TRAIN_QUERY_GROUPS); 1: none.
            denoising: the denoising queries (MODEL.DETR.DN), None for none.
        """
        super().__init__()
        if groups < 1:
            raise ValueError(f"train_query_groups (MODEL.DETR.TRAIN_QUERY_GROUPS) must be >= 1, got {groups}")
        self.groups = groups
        with torch.random.fork_rng(devices=[]):  # training-only: the model re-draws it in its layer order
            self.group_query_embed = nn.Embedding((groups - 1) * num_queries, query_dim) if groups > 1 else None
        self.denoising = denoising

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        denoising = None
        anchors = d.DECODER == "anchor"
        if d.DN.GROUPS:
            denoising = DenoisingQueries(
                d.HIDDEN_DIM, d.NUM_CLASSES, d.DN.GROUPS, d.DN.LABEL_NOISE, d.DN.BOX_NOISE, anchors, d.DN.NEGATIVES
            )
        return {
            "query_dim": 4 if anchors else d.HIDDEN_DIM,
            "num_queries": d.NUM_OBJECT_QUERIES,
            "groups": d.TRAIN_QUERY_GROUPS,
            "denoising": denoising,
        }

    @classmethod
    def build(cls, cfg):
        """The component of ``cfg``, or None when it asks for no training-only query."""
        if cfg.MODEL.DETR.TRAIN_QUERY_GROUPS == 1 and not cfg.MODEL.DETR.DN.GROUPS:
            return None
        return cls(cfg)

    def queries(self, query_embed):
        """The decoder's matching queries in training, G*N x d: ``query_embed`` (N x d, the
        model's own) followed by groups 2..G."""
        if self.group_query_embed is None:
            return query_embed
        return torch.cat([query_embed, self.group_query_embed.weight])

    def denoising_queries(self, targets):
        """The batch's denoising queries as the transformer takes them, (position B x Q x d or
        anchors B x Q x 4, content B x Q x d, D), and their targets: (per image (query_idx,
        target_idx) of those with a target, per image the query_idx of contrastive negatives
        or None); (None, None) without denoising or targets. targets: the criterion's."""
        made = None if self.denoising is None else self.denoising(targets)
        if made is None:
            return None, None
        position, content, _, indices, negatives = made
        return (position, content, self.denoising.groups), (indices, negatives)

    def criterion_inputs(self, out, targets):
        """What these queries add to SetCriterion's input: "query_groups" and, with denoising
        queries (``targets`` from ``denoising_queries``, not None), their "assigned" entry.
        out: the DetrOutputs of the step."""
        inputs = {"query_groups": self.groups}
        if targets is not None:
            indices, negatives = targets
            inputs["assigned"] = {
                "dn": {
                    "pred_logits": out.denoising_logits,
                    "pred_boxes": out.denoising_boxes,
                    "indices": indices,
                    "negatives": negatives,
                    "normalizer": self.denoising.groups,
                }
            }
        return inputs

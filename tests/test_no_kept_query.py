"""Inference when no query passes the score threshold: an all-void panoptic map, no exception
(the mask head then runs on zero queries)."""
import torch
from detectron2.modeling import build_model

from tests.helpers import make_input, register_tiny_panoptic_metadata, tiny_cfg


@torch.no_grad()
def test_no_kept_query_gives_all_void_panoptic_map():
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 1.0  # no probability exceeds 1
    model = build_model(cfg).eval()
    panoptic, segments = model([make_input(64, 96, with_targets=False)])[0]["panoptic_seg"]
    assert segments == []
    assert panoptic.shape == (64, 96) and not panoptic.any()

"""Mixed-precision inference (MODEL.DETR.TEST.AMP_DTYPE) and training under autocast, on the
CPU here; the same code paths serve CUDA."""
import pytest
import torch
from detectron2.modeling import build_model

from .helpers import make_input, tiny_cfg


def _cfg(amp_dtype):
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    cfg.MODEL.DETR.TEST.AMP_DTYPE = amp_dtype
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 0.0
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
    return cfg


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_inference_runs_network_in_low_precision_and_post_processing_in_float32(amp_dtype):
    torch.manual_seed(0)
    model = build_model(_cfg(amp_dtype)).eval()
    with torch.no_grad():
        model.class_embed.bias[-1] = -10.0  # every query kept
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen[name] = (out[0] if isinstance(out, tuple) else out).dtype

        return hook

    model.mask_head.register_forward_hook(record("mask_head"))
    model.transformer.encoder.layers[0].ffn.register_forward_hook(record("encoder_ffn"))
    with torch.no_grad():
        (result,) = model([make_input(64, 80, with_targets=False)])
    assert seen == {"mask_head": getattr(torch, amp_dtype), "encoder_ffn": getattr(torch, amp_dtype)}
    seg, info = result["panoptic_seg"]
    assert seg.shape == (64, 80) and info and sorted(seg.unique().tolist()) == [s["id"] for s in info]
    assert result["sem_seg"].dtype == torch.float32 and torch.isfinite(result["sem_seg"]).all()


def test_full_precision_by_default():
    model = build_model(_cfg("")).eval()
    seen = []
    model.mask_head.register_forward_hook(lambda m, args, out: seen.append(out[0].dtype))
    with torch.no_grad():
        model([make_input(48, 48, with_targets=False)])
    assert seen == [torch.float32]


def test_unknown_amp_dtype_is_refused():
    with pytest.raises(ValueError, match="MODEL.DETR.TEST.AMP_DTYPE.*'half'"):
        build_model(_cfg("half"))


def test_training_under_autocast_gives_finite_losses_and_gradients():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(num_classes=133)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model([make_input(64, 80, classes=(1, 100)), make_input(48, 64, classes=(7,), seed=1)])
    sum(losses.values()).backward()
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    grad = model.mask_head.fpn.out_lay.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0

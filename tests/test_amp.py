"""Mixed-precision inference (MODEL.DETR.TEST.AMP_DTYPE) and training under autocast, on the
CPU here; the same code paths serve CUDA."""
import pytest
import torch
from detectron2.modeling import build_model

from .helpers import keep_queries_, make_input, tiny_cfg


def _cfg(amp_dtype=None):
    """tiny_cfg with every query kept and semantic output on; AMP_DTYPE left at its default
    when ``amp_dtype`` is None."""
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    if amp_dtype is not None:
        cfg.MODEL.DETR.TEST.AMP_DTYPE = amp_dtype
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 0.0
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
    return cfg


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_inference_runs_network_in_low_precision_and_post_processing_in_float32(amp_dtype):
    torch.manual_seed(0)
    model = build_model(_cfg(amp_dtype)).eval()
    keep_queries_(model)  # every query kept
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen[name] = (out[0] if isinstance(out, tuple) else out).dtype

        return hook

    model.mask_head.register_forward_hook(record("mask_head"))
    model.transformer.encoder.layers[0].ffn.register_forward_hook(record("encoder_ffn"))
    with torch.no_grad():
        (result,) = model([make_input(64, 80, with_targets=False)])
    # On the CPU the transformer stays in float32 (meta_arch.float32_on_cpu); on GPUs it autocasts.
    assert seen == {"mask_head": getattr(torch, amp_dtype), "encoder_ffn": torch.float32}
    seg, info = result["panoptic_seg"]
    assert seg.shape == (64, 80) and info and sorted(seg.unique().tolist()) == [s["id"] for s in info]
    assert result["sem_seg"].dtype == torch.float32 and torch.isfinite(result["sem_seg"]).all()


def test_full_precision_by_default():
    model = build_model(_cfg()).eval()
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
    grad = model.mask_head.fpn.mask_predictor.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_cpu_training_with_solver_amp_runs_convolutions_in_bfloat16_and_the_transformer_in_float32():
    """SOLVER.AMP.ENABLED on the CPU: the backbone and mask head autocast to bfloat16, the
    transformer and the class and box heads stay in float32, the losses come out in float32 and
    close to the float32 model's (same weights, same batch)."""
    torch.manual_seed(0)
    cfg = tiny_cfg(num_classes=133)
    batch = [make_input(64, 80, classes=(1, 100)), make_input(48, 64, classes=(7,), seed=1)]
    reference = build_model(cfg).train()
    cfg.SOLVER.AMP.ENABLED = True
    model = build_model(cfg).train()
    model.load_state_dict(reference.state_dict())
    seen = {}
    modules = [("input_proj", model.input_proj), ("mask_head", model.mask_head), ("encoder", model.transformer.encoder), ("boxes", model.bbox_embed)]
    for name, module in modules:
        module.register_forward_hook(lambda m, args, out, name=name: seen.update({name: _dtype(out)}))
    losses = model(batch)
    assert seen == {"input_proj": torch.bfloat16, "mask_head": torch.bfloat16, "encoder": torch.float32, "boxes": torch.float32}
    expected = reference(batch)
    assert losses.keys() == expected.keys()
    for key, value in losses.items():
        assert value.dtype == torch.float32
        assert torch.allclose(value, expected[key], rtol=0.05, atol=1e-3), (key, value, expected[key])
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _dtype(out):
    """dtype of a module's output: a tensor, a tuple (first item) or a dict of tensors (first value)."""
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return (out[0] if isinstance(out, tuple) else out).dtype

"""Training benchmark: Detectron2's own training step on DetrPanoptic, split into its stages."""
import contextlib
import itertools

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils.events import EventStorage

from detr_panoptic_d2.engine.optimizer import build_optimizer
from .measure import Contestant, measure


def training_points(model, optimizer):
    """(stage, module or (object, method)) pairs of a DetrPanoptic training step.

    forward: image normalization, steps 1-5 (``detect``) and the mask head (``segment``);
    matching: the Hungarian matcher (every decoder layer's with deep supervision);
    loss: target preparation and the class, box and mask losses; backward: autograd;
    optimizer: its step (gradient clipping included). The rest (zero_grad, metrics) is "other"."""
    return [
        ("forward", (model, "preprocess_image")),
        ("forward", (model, "detect")),
        ("forward", (model, "segment")),
        ("matching", model.criterion.matcher),
        ("loss", (model, "prepare_targets")),
        ("loss", (model.criterion, "layer_losses")),
        ("loss", (model.criterion, "mask_losses")),
        ("backward", (torch.autograd, "backward")),
        ("optimizer", (optimizer, "step")),
    ]


def build_trainer(model, inputs, optimizer, *, amp, device):
    """Detectron2's trainer for ``model`` on ``inputs`` again and again, as DetrTrainer picks
    it: AMPTrainer with ``amp`` on a GPU, else SimpleTrainer (on the CPU, a model built with
    SOLVER.AMP.ENABLED autocasts to bfloat16 itself: modeling/precision.py)."""
    loader = itertools.repeat(inputs)
    if amp != "none" and torch.device(device).type == "cuda":
        return AMPTrainer(model, loader, optimizer, precision=getattr(torch, amp))
    return SimpleTrainer(model, loader, optimizer)


def run_training(models, inputs, cfg, *, warmup, runs, amp, device, clock=None):
    """Times Detectron2 training steps (``build_trainer``) on ``inputs`` for each of ``models``
    (key -> DetrPanoptic, each with the trainer's build_optimizer: AdamW, backbone multiplier,
    full-model clipping), the models taking turns; their weights change. Returns {key:
    measure.measure's report}; its "mask_head_queries_per_image" is the number of matched queries."""
    contestants = {}
    for key, model in models.items():
        model.train()
        optimizer = build_optimizer(cfg, model)
        trainer = build_trainer(model, inputs, optimizer, amp=amp, device=device)
        contestants[key] = Contestant(model, training_points(model, optimizer), lambda _, t=trainer: t.run_step(), len(inputs))
    with EventStorage():
        results = measure(contestants, warmup=warmup, runs=runs, device=device, clock=clock)
    return {key: report for key, (report, _) in results.items()}


def losses_and_grads(model, inputs, *, amp, device, seed=0):
    """One forward and backward (no optimizer step) with the RNG (dropout) seeded.
    Returns ({loss name: value}, {parameter name: gradient}), detached copies."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    cuda_amp = amp != "none" and torch.device(device).type == "cuda"  # the CPU: see build_trainer
    with torch.autocast("cuda", dtype=getattr(torch, amp)) if cuda_amp else contextlib.nullcontext():
        losses = model(inputs)
    sum(losses.values()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return {k: v.detach().float() for k, v in losses.items()}, grads


def _max_abs_diff(a, b):
    """Largest |a - b| over two name -> tensor dicts with the same keys (inf when keys differ)."""
    if a.keys() != b.keys():
        return float("inf")
    return max(((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].numel()), default=0.0)


def compare_training(model_a, model_b, inputs, *, amp, device):
    """Losses and gradients of two models with the same weights on the same batch.

    Returns {"losses_max_abs_diff", "grads_max_abs_diff", "grads_max_abs", "losses_equal",
    "grads_equal"} (equal: bit for bit). Gradients of the mask head's weights sum over the
    objects it ran on, so running it on more (unused, zero-gradient) objects may change the
    summation order and the last bits: compare grads_max_abs_diff with grads_max_abs."""
    losses_a, grads_a = losses_and_grads(model_a, inputs, amp=amp, device=device)
    losses_b, grads_b = losses_and_grads(model_b, inputs, amp=amp, device=device)
    loss_diff = _max_abs_diff(losses_a, losses_b)
    grad_diff = _max_abs_diff(grads_a, grads_b)
    return {
        "losses_max_abs_diff": loss_diff,
        "grads_max_abs_diff": grad_diff,
        "grads_max_abs": max((g.abs().max().item() for g in grads_a.values() if g.numel()), default=0.0),
        "losses_equal": loss_diff == 0.0,
        "grads_equal": grad_diff == 0.0,
    }

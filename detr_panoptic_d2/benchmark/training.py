"""Training benchmark: one DetrPanoptic training iteration, split into its stages."""
import torch

from ..engine.optimizer import build_optimizer
from .amp import autocast, grad_scaler
from .measure import Contestant, measure


def training_points(model):
    """(stage, module or (object, method)) pairs of a DetrPanoptic training forward.

    forward: image normalization, steps 1-5 (``detect``) and the mask head (``segment``);
    matching: the Hungarian matcher (every decoder layer's with deep supervision);
    loss: target preparation and the class, box and mask losses. Backward and the optimizer
    step are timed around them; what is left is "other"."""
    return [
        ("forward", (model, "preprocess_image")),
        ("forward", (model, "detect")),
        ("forward", (model, "segment")),
        ("matching", model.criterion.matcher),
        ("loss", (model, "prepare_targets")),
        ("loss", (model.criterion, "layer_losses")),
        ("loss", (model.criterion, "mask_losses")),
    ]


def _training_step(model, inputs, optimizer, scaler, amp, device):
    """One training iteration as Detectron2's trainers do it: forward and losses under
    autocast, backward (through the GradScaler for fp16), optimizer step."""

    def step(timer):
        with autocast(device, amp):
            losses = model(inputs)
        loss = sum(losses.values())
        with timer.stage("backward"):
            (scaler.scale(loss) if scaler else loss).backward()
        with timer.stage("optimizer"):
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def run_training(models, inputs, cfg, *, warmup, runs, amp, device, clock=None):
    """Times training iterations on ``inputs`` for each of ``models`` (key -> DetrPanoptic,
    each with its own optimizer, the trainer's build_optimizer: AdamW, backbone multiplier, full-model clipping), the models taking turns; their weights
    change. Returns {key: measure.measure's report}; its "mask_head_queries_per_image" is
    the number of matched queries."""
    contestants = {}
    for key, model in models.items():
        model.train()
        step = _training_step(model, inputs, build_optimizer(cfg, model), grad_scaler(device, amp), amp, device)
        contestants[key] = Contestant(model, training_points(model), step, len(inputs))
    results = measure(contestants, warmup=warmup, runs=runs, device=device, clock=clock)
    return {key: report for key, (report, _) in results.items()}


def losses_and_grads(model, inputs, *, amp, device, seed=0):
    """One forward and backward (no optimizer step) with the RNG (dropout) seeded.
    Returns ({loss name: value}, {parameter name: gradient}), detached copies."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with autocast(device, amp):
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

"""The optimizer of DETR's recipe: AdamW, a lower learning rate for the backbone, and
gradient clipping on the norm of the whole model's gradient.

Detectron2's ``SOLVER.CLIP_GRADIENTS`` clips each parameter on its own ("value" or "norm");
DETR clips the norm of all gradients together, which ``CLIP_TYPE: "full_model"`` selects.
"""
import torch
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

OPTIMIZERS = {"ADAMW": torch.optim.AdamW, "SGD": torch.optim.SGD}


def with_full_model_clipping(optimizer_cls, max_norm, norm_type=2.0):
    """A subclass of ``optimizer_cls`` whose ``step()`` first scales all gradients of its
    parameters together so that their joint ``norm_type``-norm is at most ``max_norm``.

    Under AMP, Detectron2's GradScaler unscales the gradients before calling ``step()``, so
    the norm is taken on the true gradients."""

    class FullModelClipping(optimizer_cls):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure)

    FullModelClipping.__name__ = f"{optimizer_cls.__name__}FullModelClipping"
    FullModelClipping.__qualname__ = FullModelClipping.__name__
    return FullModelClipping


def backbone_lr_factor(multiplier):
    """Parameter name -> learning-rate factor: ``multiplier`` under ``backbone.``, else 1."""
    return lambda name: multiplier if name.startswith("backbone.") else 1.0


def _optimizer_class(name, key):
    if name.upper() not in OPTIMIZERS:
        raise ValueError(f"{key}={name!r} is not supported; use one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name.upper()]


def _nonempty(params):
    if not params:
        raise ValueError("The model has no parameter that requires a gradient: nothing to train")
    return params


def _optimizer_kwargs(name, momentum, nesterov):
    # AdamW's fused kernel (one pass over all tensors) does the same update as the default
    # per-tensor loop with fewer small operations, which matters most on a busy CPU.
    return {"momentum": momentum, "nesterov": nesterov} if name.upper() == "SGD" else {"fused": True}


def detr_optimizer(params, *, lr, name="ADAMW", full_model_clip=0.0, norm_type=2.0, momentum=0.9, nesterov=False):
    """The optimizer ``name`` ("ADAMW" or "SGD") over ``params`` (parameter groups, e.g. from
    Detectron2's ``get_default_optimizer_params`` with ``backbone_lr_factor``) at learning rate
    ``lr``; with ``full_model_clip`` > 0, the joint ``norm_type``-norm of all gradients is
    clipped to it before each step (see the module docstring). ``momentum`` and ``nesterov``
    apply to SGD. This is what LazyConfigs name as ``optimizer``."""
    optimizer_cls = _optimizer_class(name, "optimizer.name")
    if full_model_clip > 0:
        optimizer_cls = with_full_model_clipping(optimizer_cls, full_model_clip, norm_type)
    return optimizer_cls(_nonempty(params), lr=lr, **_optimizer_kwargs(name, momentum, nesterov))


def build_optimizer(cfg, model):
    """The optimizer named by SOLVER.OPTIMIZER ("ADAMW" or "SGD") over the parameters of
    ``model`` that require a gradient (a frozen detector is left out).

    Learning rate SOLVER.BASE_LR, times SOLVER.BACKBONE_MULTIPLIER for the backbone; weight
    decay SOLVER.WEIGHT_DECAY (SOLVER.WEIGHT_DECAY_NORM in normalization layers); clipping
    by SOLVER.CLIP_GRADIENTS, where CLIP_TYPE "full_model" is DETR's (see module docstring).
    """
    solver = cfg.SOLVER
    optimizer_cls = _optimizer_class(solver.OPTIMIZER, "SOLVER.OPTIMIZER")
    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        lr_factor_func=backbone_lr_factor(solver.BACKBONE_MULTIPLIER),
    )
    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE != "full_model":  # Detectron2's per-parameter clipping
        kwargs = _optimizer_kwargs(solver.OPTIMIZER, solver.MOMENTUM, solver.NESTEROV)
        return maybe_add_gradient_clipping(cfg, optimizer_cls)(_nonempty(params), lr=solver.BASE_LR, **kwargs)
    return detr_optimizer(
        params, lr=solver.BASE_LR, name=solver.OPTIMIZER, full_model_clip=clip.CLIP_VALUE if clip.ENABLED else 0.0,
        norm_type=clip.NORM_TYPE, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV,
    )

"""Loading weights into DetrPanoptic's detector: a checkpoint with or without the
training-only parts (query groups, the encoder's semantic head), and a stage-1 (box-only)
checkpoint frozen for stage 2 (``freeze_detector``; ``keep_detector_in_eval`` in training).
The detector is everything but the mask head."""
import logging

from ..checkpoint.safe_load import load_model_state

# State-dict prefixes (DetrPanoptic attributes) of the parts used in training only: the
# queries of groups 2..G, the encoder's dense semantic head and the denoising queries' embeddings.
TRAINING_ONLY = ("group_query_embed", "encoder_semantic", "denoising")


def drop_unused_training_weights(model, state_dict, prefix, *args):
    """Load-state-dict pre-hook: a checkpoint trained with training-only parts loads into a
    model without them (e.g. TRAIN_QUERY_GROUPS 1, ENCODER_SEMANTIC_WEIGHT 0, DN.GROUPS 0), whose inference
    does not use them."""
    for name in TRAINING_ONLY:
        if getattr(model, name) is not None:
            continue
        keys = [k for k in state_dict if k.startswith(prefix + name + ".")]
        for key in keys:
            del state_dict[key]
        if keys:
            logging.getLogger(__name__).info("Checkpoint has training-only weights %s; this model does not use them", keys)


def _shorten(items, limit=10):
    return str(items[:limit])[:-1] + (f", ... {len(items) - limit} more]" if len(items) > limit else "]")


def load_detector_state(model, path):
    """Loads everything of ``model`` but its mask head from the checkpoint at ``path``; a
    ValueError lists what does not fit (missing, unexpected and mismatched keys)."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("mask_head.")}
    unused = ("mask_head.",) + tuple(name + "." for name in TRAINING_ONLY)  # a stage 1 trained with them fits
    state = {k: v for k, v in load_model_state(path).items() if not k.startswith(unused)}
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own.keys() & state.keys()
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"frozen_weights={path!r} (MODEL.DETR.FROZEN_WEIGHTS) does not fit this detector (check that it was "
            f"trained with the same MODEL.DETR sizes and backbone): missing keys {_shorten(missing)}, "
            f"unexpected keys {_shorten(unexpected)}, shape mismatches (file vs model) {_shorten(mismatched)}"
        )
    model.load_state_dict(state, strict=False)


def detector_parameters(model):
    """(name, parameter) of everything of ``model`` but its mask head: what stage 2 freezes."""
    return [(n, p) for n, p in model.named_parameters() if not n.startswith("mask_head.")]


def freeze_detector(model, path):
    """Loads the detector of ``model`` from the box-only checkpoint at ``path`` and freezes it
    (no gradients)."""
    load_detector_state(model, path)
    for _, p in detector_parameters(model):
        p.requires_grad_(False)


def keep_detector_in_eval(model):
    """Puts every child of ``model`` but its mask head in eval mode, so that a frozen detector's
    BatchNorm statistics do not drift and the mask head trains on the detector's inference-time
    outputs (the reference keeps its dropout on; with FrozenBN that is the only difference)."""
    for name, module in model.named_children():
        if name != "mask_head":
            module.train(False)

"""Stage 2 of the paper's recipe: a box-only (stage-1) checkpoint loaded into a DetrPanoptic's
detector, which is then frozen (MODEL.DETR.FROZEN_WEIGHTS; ``train.frozen_weights`` of a
LazyConfig's train section). The trainers call ``load_frozen_detector`` after building the
model; the model itself never reads files."""
from ..modeling.detector_weights import FORMER_PREFIXES, TRAINING_ONLY, freeze_detector
from .safe_load import load_model_state


def _shorten(items, limit=10):
    return str(items[:limit])[:-1] + (f", ... {len(items) - limit} more]" if len(items) > limit else "]")


def load_detector_state(model, path, key="MODEL.DETR.FROZEN_WEIGHTS"):
    """Loads everything of ``model`` but its mask head from the checkpoint at ``path``; a
    ValueError names ``key`` and lists what does not fit (missing, unexpected and mismatched
    keys). Training-only weights in the file are ignored (a stage 1 trained with them fits)."""
    unused = ("mask_head.",) + TRAINING_ONLY + tuple(FORMER_PREFIXES)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(unused)}
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
            f"frozen_weights={path!r} ({key}) does not fit this detector (check that it was "
            f"trained with the same MODEL.DETR sizes and backbone): missing keys {_shorten(missing)}, "
            f"unexpected keys {_shorten(unexpected)}, shape mismatches (file vs model) {_shorten(mismatched)}"
        )
    model.load_state_dict(state, strict=False)


def load_frozen_detector(model, path, key="MODEL.DETR.FROZEN_WEIGHTS"):
    """Loads the detector of ``model`` from the box-only checkpoint at ``path`` (``key``: the
    config key that named it, for errors) and freezes it (modeling.detector_weights.freeze_detector).
    Returns ``model``."""
    load_detector_state(model, path, key)
    freeze_detector(model)
    return model

"""Config and models of a benchmark: one set of weights, ours and a reference or baseline."""
import os

import torch
from detectron2.modeling import build_model

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.engine.defaults import load_config
from detr_panoptic_d2.testing import calibrate_kept_queries, separate_query_masks_

def load_cfg(config_file, opts, device, register=()):
    """The config of ``config_file`` with ``opts`` (KEY VALUE ...) merged, on ``device``; the
    splits of DATASETS.REGISTER and ``register`` (--register values) registered."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file!r} does not exist")
    cfg, _ = load_config(config_file, [*opts, "MODEL.DEVICE", device], register=register)
    return cfg


def _detector_state(state):
    return {k: v for k, v in state.items() if not k.startswith("mask_head.")}


def build_models(cfg, variants, *, kept_queries, calibration_inputs, workdir, seed=0, above_floor=None):
    """Builds DetrPanoptic once per entry of ``variants`` (name -> config overrides, KEY VALUE
    ...), all with the same weights. Returns ({name: model}, info dict). A variant of another
    architecture (a narrower backbone, say), which the weights do not fit, gets its own random
    initialization seeded with ``seed``; info["own_weights"] names those variants.

    Weights: MODEL.WEIGHTS when set (DetrCheckpointer's safe loading; every weight must fit),
    else a random initialization seeded with ``seed``; with several variants, random weights
    get masks that differ between queries (mask_separation), so that output comparisons are
    not decided by float rounding between near-equal masks.
    ``kept_queries`` (an int) rewrites the class head so that exactly that many queries of
    ``calibration_inputs`` pass the score threshold, and ``above_floor`` (default: the same
    number) reach MODEL.DETR.TEST.MASK_SCORE_FLOOR (synthetic.calibrate_kept_queries); None
    leaves it alone. When MODEL.DETR.FROZEN_WEIGHTS is set, the detector is frozen as in stage
    2 of training: an existing file is loaded as usual, and a missing one is replaced by a
    checkpoint of the benchmark's own detector weights written to ``workdir`` (None: nothing is
    frozen, which only matters to training).
    """
    frozen = cfg.MODEL.DETR.FROZEN_WEIGHTS
    first = cfg.clone()
    first.MODEL.DETR.FROZEN_WEIGHTS = frozen if frozen and os.path.isfile(frozen) else ""
    torch.manual_seed(seed)
    model = build_model(first)
    if cfg.MODEL.WEIGHTS:
        DetrCheckpointer(model).load_complete(cfg.MODEL.WEIGHTS)
    info = {"weights": cfg.MODEL.WEIGHTS or f"random initialization (seed {seed})", "kept_queries": kept_queries}
    if kept_queries is not None:
        calibrate_kept_queries(model, calibration_inputs, kept_queries, above_floor)
        info["queries_above_floor"] = kept_queries if above_floor is None else above_floor
    if len(variants) > 1 and not cfg.MODEL.WEIGHTS and model.mask_head is not None:
        with torch.no_grad():
            separate_query_masks_(model, [x["image"] for x in calibration_inputs[:1]])
    state = model.state_dict()
    if frozen and workdir is None:
        frozen = ""
    elif frozen:
        frozen = os.path.join(workdir, "frozen_detector.pth")
        torch.save({"model": _detector_state(state)}, frozen)
    info["frozen_detector"] = bool(frozen)
    models, info["own_weights"] = {}, []
    for name, overrides in variants.items():
        variant_cfg = cfg.clone()
        variant_cfg.merge_from_list(list(overrides))
        variant_cfg.MODEL.DETR.FROZEN_WEIGHTS = frozen
        variant_cfg.MODEL.WEIGHTS = ""
        torch.manual_seed(seed)
        models[name] = build_model(variant_cfg)
        ours = models[name].state_dict()
        if ours.keys() == state.keys() and all(ours[k].shape == v.shape for k, v in state.items()):
            models[name].load_state_dict(state)
        else:
            info["own_weights"].append(name)
    info["variants"] = {name: list(overrides) for name, overrides in variants.items()}
    return models, info

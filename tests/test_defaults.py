"""Defaults live once: DetrPanoptic's and SetCriterion's constructor defaults are the values
``from_config`` reads from detr_panoptic_d2/config.py's defaults, so a model built from its
parts behaves as ``build_model(cfg)`` does."""
import inspect

import torch
from detectron2.config import get_cfg

from detr_panoptic_d2 import add_detr_panoptic_config
from detr_panoptic_d2.modeling import DetrPanoptic, SetCriterion


def _defaults(fn):
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


def test_constructor_defaults_are_the_config_defaults():
    cfg = add_detr_panoptic_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # the mask head needs them
    args = DetrPanoptic.from_config(cfg)
    defaults = _defaults(DetrPanoptic.__init__.__wrapped__)
    modules = {"position_encoding", "mask_head", "thing_ids"}  # built objects, None = the default part
    plain = {name: value for name, value in defaults.items() if name not in modules}
    assert plain, "DetrPanoptic has no plain defaults to compare"
    assert {name: args[name] for name in plain} == plain
    criterion = args["criterion"]
    criterion_defaults = _defaults(SetCriterion.__init__)
    assert {name: getattr(criterion, name) for name in criterion_defaults if hasattr(criterion, name)} == {
        name: value for name, value in criterion_defaults.items() if hasattr(criterion, name)
    }
    assert criterion.empty_weight[-1] == torch.tensor(criterion_defaults["no_object_weight"])

"""Defaults live once: the constructor defaults of DetrPanoptic and of the components it is
built from (SetCriterion, DetrPostProcessor and its MergeRule, Precision, TrainingQueries) are
the values their ``from_config`` reads from detr_panoptic_d2/config.py's defaults, so a model
built from its parts behaves as ``build_model(cfg)`` does."""
import inspect

import torch
from detectron2.config import get_cfg

from detr_panoptic_d2 import add_detr_panoptic_config
from detr_panoptic_d2.modeling import DetrPanoptic, DetrPostProcessor, MergeRule, Precision, SetCriterion, TrainingQueries


def _defaults(fn):
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


def _default_cfg():
    cfg = add_detr_panoptic_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # the mask head needs them
    return cfg


def test_constructor_defaults_are_the_config_defaults():
    cfg = _default_cfg()
    args = DetrPanoptic.from_config(cfg)
    defaults = _defaults(DetrPanoptic.__init__.__wrapped__)
    # Built objects whose default None means "the default part".
    assert args["training_queries"] is None and defaults["training_queries"] is None
    assert vars(args["precision"]) == vars(defaults["precision"]) == vars(Precision())
    assert args["in_feature"] == defaults["in_feature"]
    assert set(defaults) == {"in_feature", "position_encoding", "mask_head", "training_queries", "precision"}
    criterion = args["criterion"]
    criterion_defaults = _defaults(SetCriterion.__init__)
    assert {name: getattr(criterion, name) for name in criterion_defaults if hasattr(criterion, name)} == {
        name: value for name, value in criterion_defaults.items() if hasattr(criterion, name)
    }
    assert criterion.empty_weight[-1] == torch.tensor(criterion_defaults["no_object_weight"])


def test_component_defaults_are_the_config_defaults():
    cfg = _default_cfg()
    for component in (DetrPostProcessor, Precision, TrainingQueries):
        from_config = component.from_config(cfg)
        defaults = _defaults(component.__init__.__wrapped__)
        assert defaults and {name: from_config[name] for name in defaults} == defaults, component.__name__
    assert MergeRule.from_config(cfg) == MergeRule()

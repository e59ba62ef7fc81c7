"""Either kind of config for the tools that take "any config" (tools/visualize_data.py,
tools/analyze_model.py): a yaml config of this project or a LazyConfig (``.py``, or the
``config.yaml`` that tools/lazyconfig_train_net.py saves), with its datasets registered.

``load_any_config`` gives an ``AnyConfig``: the datasets, the model, the dataset mapper and
the test loader, from either kind, as the training tools build them.
"""
import argparse
import os

import yaml
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.modeling import build_model

from ..data import DetrPanopticDatasetMapper
from ..data.user_datasets import add_register_argument, register_config_splits, register_lazy_splits, split_entry
from .defaults import load_config
from .lazy import _names, adapt_lazy_config


def is_lazy_config(path):
    """Whether ``path`` is a LazyConfig: a ``.py`` file, or a yaml whose top level has
    LazyConfig's lower-case ``model`` and ``dataloader`` (not yacs' ``MODEL``)."""
    if path.endswith(".py"):
        return True
    with open(path, encoding="utf-8") as f:
        content = yaml.safe_load(f) or {}
    return isinstance(content, dict) and "dataloader" in content and "MODEL" not in content


class AnyConfig:
    """cfg: the loaded config; lazy: whether it is a LazyConfig; train_names, test_names: its
    datasets; device: where models run."""

    def __init__(self, cfg, lazy):
        self.cfg = cfg
        self.lazy = lazy
        if lazy:
            self.train_names = _names(cfg.dataloader.train.dataset.names)
            self.test_names = _names(cfg.dataloader.test.dataset.names)
            self.device = cfg.train.device
        else:
            self.train_names, self.test_names = list(cfg.DATASETS.TRAIN), list(cfg.DATASETS.TEST)
            self.device = cfg.MODEL.DEVICE

    def build_model(self):
        """The model (random weights) on ``device``."""
        model = instantiate(self.cfg.model) if self.lazy else build_model(self.cfg)
        return model.to(self.device)

    def mapper(self, is_train, dataset_name):
        """The dataset mapper training (``is_train``) or evaluation uses, for ``dataset_name``."""
        if not self.lazy:
            return DetrPanopticDatasetMapper(self.cfg, is_train=is_train, dataset_name=dataset_name)
        loader = self.cfg.dataloader.train if is_train else self.cfg.dataloader.test
        loader.dataset.names = dataset_name  # the mapper's dataset_name and class_ids follow it
        return instantiate(loader.mapper)

    def test_loader(self, dataset_name):
        """Detectron2's test loader of ``dataset_name`` (one image per batch) with the test mapper."""
        return build_detection_test_loader(
            DatasetCatalog.get(dataset_name), mapper=self.mapper(False, dataset_name), num_workers=0
        )


def load_any_config(config_file, opts=(), register=()):
    """The config of ``config_file`` (yaml: KEY VALUE ``opts``, as load_config; LazyConfig:
    ``a.b=c`` overrides) with the ``--register`` values ``register`` added to its datasets and
    every listed split registered, adapted to the machine. Returns an AnyConfig."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file!r} does not exist")
    if not is_lazy_config(config_file):
        cfg, _ = load_config(config_file, opts, eval_only=True, register=register)
        return AnyConfig(cfg, lazy=False)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))
    register_lazy_splits(cfg, register)
    adapt_lazy_config(cfg, eval_only=True)
    return AnyConfig(cfg, lazy=True)


def add_tool_dataset_arguments(parser):
    """The arguments with which the data tools register datasets (``register_tool_datasets``):
    --config-file (optional), --register and config overrides."""
    parser.add_argument("--config-file", default=None, help="a config whose DATASETS.REGISTER to register")
    add_register_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (with --config-file)")


def register_tool_datasets(config_file=None, opts=(), register=()):
    """For the data tools whose config is optional (tools/check_dataset.py,
    tools/analyze_panoptic.py): registers the splits of ``config_file``'s DATASETS.REGISTER
    (dataloader.register) and of the ``--register`` values ``register``, as every tool does;
    the built-in shapes splits are registered on import."""
    if config_file:
        load_any_config(config_file, opts, register)
    else:
        register_config_splits([split_entry(*values) for values in register], "--register")

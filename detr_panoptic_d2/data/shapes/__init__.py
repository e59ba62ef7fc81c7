"""The synthetic shapes panoptic dataset: rendering, file generation, registration."""

from .generate import GENERATOR_VERSION, ensure_split, generate_split, split_paths
from .register import register_builtin_shapes, register_shapes_panoptic
from .render import CATEGORIES

__all__ = [
    "CATEGORIES",
    "GENERATOR_VERSION",
    "ensure_split",
    "generate_split",
    "register_builtin_shapes",
    "register_shapes_panoptic",
    "split_paths",
]

"""Checkpoint loading and conversion (official DETR and HuggingFace weights)."""
from .checkpointer import DetrCheckpointer
from .convert import Conversion, convert_checkpoint, convert_state, read_source
from .safe_load import UnsafeCheckpointError, load_checkpoint_file, load_model_state

__all__ = [
    "Conversion",
    "DetrCheckpointer",
    "UnsafeCheckpointError",
    "convert_checkpoint",
    "convert_state",
    "load_checkpoint_file",
    "load_model_state",
    "read_source",
]

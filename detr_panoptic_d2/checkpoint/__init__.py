"""Checkpoint loading and conversion (official DETR and HuggingFace weights)."""
from .safe_load import UnsafeCheckpointError, load_checkpoint_file, load_model_state

__all__ = ["UnsafeCheckpointError", "load_checkpoint_file", "load_model_state"]

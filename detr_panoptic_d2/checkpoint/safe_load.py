"""Safe loading of checkpoint files: tensors and plain containers only.

``torch.load(weights_only=True)`` refuses to unpickle arbitrary objects. The only non-tensor
type the official DETR checkpoints carry is the training script's ``argparse.Namespace``,
which is allowed explicitly; anything else is refused with a message naming the file and the
type, unless the caller opts into a full (unsafe) unpickling.
"""
import argparse
import pickle

import torch
from detectron2.utils.file_io import PathManager

SAFE_GLOBALS = [argparse.Namespace]


class UnsafeCheckpointError(RuntimeError):
    """The file needs pickled objects outside the allow-list to load."""


def load_checkpoint_file(path, allow_unsafe=False):
    """Loads a torch checkpoint file on the CPU. Returns whatever object it holds.

    Raises FileNotFoundError, UnsafeCheckpointError (objects outside SAFE_GLOBALS; pass
    allow_unsafe=True only for files you trust) or ValueError (truncated or not a checkpoint).
    """
    if not PathManager.isfile(path):
        raise FileNotFoundError(f"Checkpoint file {path!r} does not exist")
    with PathManager.open(path, "rb") as f:
        try:
            if allow_unsafe:
                return torch.load(f, map_location="cpu", weights_only=False)
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
                raise UnsafeCheckpointError(
                    f"Refusing to load {path!r}: it holds pickled objects outside the allow-list "
                    f"({', '.join(g.__module__ + '.' + g.__qualname__ for g in SAFE_GLOBALS)}), which could "
                    f"run code when loaded. If you trust the file, pass --unsafe-load. Details: {e}"
                ) from e
            raise ValueError(f"Checkpoint file {path!r} is corrupt or not a torch checkpoint: {e}") from e
        except (RuntimeError, EOFError) as e:
            raise ValueError(f"Checkpoint file {path!r} is truncated or corrupt: {e}") from e


def model_state_of(obj, path):
    """The model state dict (name -> tensor) inside a loaded checkpoint ``obj``: its "model" entry
    when it has one (Detectron2 and DETR checkpoints), else ``obj`` itself (a bare state dict, as
    HuggingFace's pytorch_model.bin). ``path`` names the file in errors."""
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"Checkpoint file {path!r} holds no state dict of tensors (expected a 'model' entry)")
    return state


def load_model_state(path, allow_unsafe=False):
    """The model state dict (name -> tensor) of a torch checkpoint file (see model_state_of)."""
    return model_state_of(load_checkpoint_file(path, allow_unsafe), path)

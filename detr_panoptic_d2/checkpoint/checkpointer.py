"""``DetrCheckpointer``: Detectron2's checkpointer, loading safely and saving atomically.

Loading: ``.pth`` files go through ``safe_load`` (tensors and plain containers only); the
``.pkl`` files of Detectron2's model zoo (pickled numpy arrays) are first read with an
unpickler that accepts only numpy arrays and plain containers. A file needing anything else
is refused with a message naming it, unless ``allow_unsafe`` is set.

Saving: the checkpoint is written to a temporary file in the same folder, flushed to disk
and renamed over the final name, and ``last_checkpoint`` likewise, so a run killed at any
moment never leaves a partial checkpoint under a checkpoint's name, and ``last_checkpoint``
always names a complete file.
"""
import os
import pickle

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from ..atomic_files import atomic_write
from .safe_load import UnsafeCheckpointError, load_checkpoint_file

# (module, name) pairs a Detectron2 model-zoo .pkl may reference: numpy arrays and scalars
# (under numpy 1 and numpy 2 module names), ordered dicts, and Python 2 byte strings.
_PICKLE_ALLOWED = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        return super().find_class(module, name)


def check_plain_pickle(path):
    """Raises UnsafeCheckpointError unless the pickle at ``path`` holds only numpy arrays and
    plain containers."""
    with PathManager.open(path, "rb") as f:
        try:
            _ArraysOnlyUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(
                f"Refusing to load {path!r}: {e}; a pickle can run code when loaded. If you trust "
                "the file, load it with allow_unsafe=True (the tools' --unsafe-load)"
            ) from e
        except EOFError as e:
            raise ValueError(f"Checkpoint file {path!r} is truncated: {e}") from e


class DetrCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer (same arguments) with safe loading and atomic saving."""

    def __init__(self, model, save_dir="", *, allow_unsafe=False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.allow_unsafe = allow_unsafe
        self.incompatible = None

    def _load_model(self, checkpoint):
        """As Detectron2's (which logs what did not fit), and keeps the report in
        ``self.incompatible`` (missing_keys, unexpected_keys, incorrect_shapes)."""
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def load_complete(self, path):
        """Loads ``path`` into the model and raises ValueError, naming the file and the keys,
        unless every parameter and buffer of the model was found with its shape (for
        evaluation, where a partly loaded model would give meaningless numbers)."""
        if not path:
            raise ValueError("No checkpoint to evaluate: set MODEL.WEIGHTS (or pass --resume with a previous run)")
        self.incompatible = None
        self.load(path)
        report = self.incompatible
        missing = list(report.missing_keys) if report else []
        shapes = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in report.incorrect_shapes] if report else []
        if missing or shapes:
            raise ValueError(
                f"Checkpoint {path!r} does not fit the model of this config: missing {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}; shape mismatches (checkpoint vs model) {shapes[:10]}. "
                "Check MODEL.WEIGHTS and the config's sizes (e.g. MODEL.DETR.NUM_CLASSES)"
            )

    def _load_file(self, filename):
        if filename.endswith(".pkl") and not self.allow_unsafe:
            check_plain_pickle(filename)
        return super()._load_file(filename)

    def _torch_load(self, f):
        return load_checkpoint_file(f, self.allow_unsafe)

    def save(self, name, **kwargs):
        if not (self.save_dir and self.save_to_disk and os.path.isdir(self.save_dir)):
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        if not os.path.isdir(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename.encode())
        )

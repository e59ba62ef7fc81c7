"""``DetrCheckpointer``: Detectron2's checkpointer, loading safely and saving atomically.

Loading: ``.pth`` files go through ``safe_load`` (tensors and plain containers only); the
``.pkl`` files of Detectron2's model zoo (pickled numpy arrays) are first read with an
unpickler that accepts only numpy arrays and plain containers. A file needing anything else
is refused with a message naming it, unless ``allow_unsafe`` is set.

Fine-tuning: when a training run loads MODEL.WEIGHTS of a model with another number of classes
(e.g. a converted COCO checkpoint, 133 + 1 rows, for a dataset of 7 classes), the class head
(``class_embed``, NUM_CLASSES + 1 rows) keeps its fresh initialization and a warning names its
keys with the checkpoint's and the model's shapes; every other tensor is loaded. Any other
shape mismatch is an error naming the keys (a checkpoint of another architecture would
otherwise be loaded in part without notice). Keys missing from the checkpoint (e.g. all but
the backbone when starting from ImageNet weights) are logged by Detectron2 as usual.
``load_complete`` (evaluation) accepts no mismatch at all. A URL that cannot be downloaded
(e.g. ``detectron2://ImageNetPretrained/...`` on a machine without network) is an OSError
naming it and the config key, not a bare network traceback.

Official weights as they are: a MODEL.WEIGHTS file (or URL) holding an official DETR
checkpoint (facebookresearch/detr: R50, DC5, R101; detection or panoptic) or a HuggingFace
DetrForSegmentation / DetrForObjectDetection state dict (``pytorch_model.bin``,
``model.safetensors``, or the model folder) is recognised by its key names and converted on
load as tools/convert_detr_checkpoint.py converts it (convert.convert_state, the class head
re-indexed from COCO category ids); the log says so, with the config options it fits.

Classes: with ``datasets`` (dataset names), every saved checkpoint names the classes of the
first (model_classes), and ``load_complete`` refuses a checkpoint naming other classes than
any of them, naming both.

Saving: the checkpoint is written to a temporary file in the same folder, flushed to disk
and renamed over the final name, and ``last_checkpoint`` likewise, so a run killed at any
moment never leaves a partial checkpoint under a checkpoint's name, and ``last_checkpoint``
always names a complete file.
"""
import os
import pickle
import urllib.error

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from ..atomic_files import atomic_write
from .convert import SourceCheckpoint, convert_state, hf_config_beside, layout_of, read_source, weights_file
from .model_classes import CLASSES_KEY, check_classes, dataset_classes
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


# The class head: the only tensors whose shape may differ from the checkpoint's (fine-tuning).
CLASS_HEAD = ("class_embed.weight", "class_embed.bias")


def _mismatches(incorrect_shapes):
    return [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in incorrect_shapes]


def _is_state(obj):
    return isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _conversion_summary(conversion):
    """What a converted checkpoint is, for the log: layout, detection or panoptic, ResNet depth."""
    opts = dict(zip(conversion.opts[::2], conversion.opts[1::2]))
    kind = "panoptic" if opts.get("MODEL.MASK_ON") == "True" else "detection"
    depth = opts.get("MODEL.RESNETS.DEPTH", "?")
    dc5 = "DC5-" if opts.get("MODEL.RESNETS.RES5_DILATION") == "2" else ""
    return f"{'an official' if conversion.source_format == 'official' else 'a HuggingFace'} DETR {dc5}R{depth} {kind} checkpoint"


def convert_on_load(source, log=None):
    """A SourceCheckpoint of the official or HuggingFace layout -> the checkpoint dict
    Detectron2's checkpointer loads: {"model": converted state, "classes": the converter's
    class mapping (model_classes), "conversion": how}. ``log``: called with one message."""
    conversion = convert_state(source)
    classes = None if conversion.classes == "keep" else dataset_classes(conversion.classes)
    if log is not None:
        log(
            f"{source.path}: {_conversion_summary(conversion)} (not a Detectron2 one), converted on load as "
            f"tools/convert_detr_checkpoint.py does: class rows re-indexed from COCO category ids to the contiguous "
            f"ids of {conversion.classes}; config options it fits: {' '.join(conversion.opts)}"
        )
    info = {"source": source.path, "format": conversion.source_format, "classes": conversion.classes}
    return {"model": conversion.state, CLASSES_KEY: classes, "conversion": info}


def read_checkpoint_classes(path, allow_unsafe=False):
    """The classes a checkpoint file or URL names (model_classes): its ``"classes"`` entry, or
    for an official / HuggingFace DETR checkpoint those of its converter's class mapping.
    None when it names none (e.g. saved without a dataset, or a Detectron2 model-zoo .pkl)."""
    local = path if os.path.exists(path) else PathManager.get_local_path(path)
    local = weights_file(local)
    if local.endswith(".pkl"):
        return None
    if local.endswith(".safetensors"):
        return convert_on_load(read_source(local))[CLASSES_KEY]
    obj = load_checkpoint_file(local, allow_unsafe)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if _is_state(state) and layout_of(state) in ("official", "huggingface"):
        args = obj.get("args") if "model" in obj else None
        return convert_on_load(SourceCheckpoint(local, state, args, hf_config_beside(local)))[CLASSES_KEY]
    return obj.get(CLASSES_KEY) if isinstance(obj, dict) else None


class DetrCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer (same arguments) with safe loading, atomic saving, official and
    HuggingFace DETR weights converted on load, the classes of ``datasets`` saved and checked,
    and a re-initialized class head when fine-tuning to other classes (see the module
    docstring)."""

    def __init__(self, model, save_dir="", *, allow_unsafe=False, datasets=(), **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.allow_unsafe = allow_unsafe
        self.datasets = [datasets] if isinstance(datasets, str) else list(datasets)
        self.incompatible = None
        self._require_complete = False
        self._loading = None

    def load(self, path, *args, **kwargs):
        if path and os.path.isdir(path):
            path = weights_file(path)
        try:
            return super().load(path, *args, **kwargs)
        except urllib.error.URLError as e:
            raise OSError(
                f"Checkpoint {path!r} (MODEL.WEIGHTS; LazyConfig: train.init_checkpoint) could not be downloaded: "
                f"{e.reason}. Without network access, download it elsewhere and give its local path, or set "
                "MODEL.WEIGHTS \"\" to start from random weights"
            ) from e

    def _load_model(self, checkpoint):
        """As Detectron2's, and keeps its report in ``self.incompatible`` (missing_keys,
        unexpected_keys, incorrect_shapes). Outside ``load_complete``, a class head of another
        shape is left initialized and logged; any other shape mismatch raises ValueError."""
        self.incompatible = super()._load_model(checkpoint)
        if self._require_complete:
            return self.incompatible
        head = [s for s in self.incompatible.incorrect_shapes if s[0] in CLASS_HEAD]
        others = [s for s in self.incompatible.incorrect_shapes if s[0] not in CLASS_HEAD]
        if others:
            raise ValueError(
                f"Checkpoint {self._loading!r} does not fit the model of this config: shape mismatches "
                f"(checkpoint vs model) {_mismatches(others)[:10]}. Only the class head may differ (fine-tuning "
                "to other classes); check MODEL.WEIGHTS (LazyConfig: train.init_checkpoint) and the config's sizes"
            )
        if not head:
            return self.incompatible
        self.logger.warning(
            f"Fine-tuning: class head re-initialized, not loaded from {self._loading!r} (another number of "
            f"classes): {'; '.join(f'{k} {tuple(a)} in the checkpoint -> {tuple(b)} in the model' for k, a, b in head)}; "
            "every other tensor of the checkpoint is loaded"
        )
        return self.incompatible._replace(
            missing_keys=[k for k in self.incompatible.missing_keys if k not in CLASS_HEAD], incorrect_shapes=[]
        )

    def load_complete(self, path):
        """Loads ``path`` into the model and raises ValueError, naming the file and the keys,
        unless every parameter and buffer of the model was found with its shape (for
        evaluation, where a partly loaded model would give meaningless numbers)."""
        if not path:
            raise ValueError(
                "No checkpoint to evaluate: set MODEL.WEIGHTS (LazyConfig: train.init_checkpoint), or pass --resume "
                "with a previous run"
            )
        self.incompatible = None
        self._require_complete = True
        try:
            extra = self.load(path)
        finally:
            self._require_complete = False
        report = self.incompatible
        missing = list(report.missing_keys) if report else []
        shapes = _mismatches(report.incorrect_shapes) if report else []
        if missing or shapes:
            raise ValueError(
                f"Checkpoint {path!r} does not fit the model of this config: missing {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}; shape mismatches (checkpoint vs model) {shapes[:10]}. "
                "Check MODEL.WEIGHTS and the config's sizes (e.g. MODEL.DETR.NUM_CLASSES) and MODEL.DETR.DECODER "
                "(checkpoints of the vanilla decoder, such as the official ones, do not load into the anchor-box one)"
            )
        if extra.get(CLASSES_KEY):
            for name in self.datasets:
                check_classes(extra[CLASSES_KEY], name, f"Checkpoint {path!r}")
        return extra

    def _load_file(self, filename):
        self._loading = filename
        if filename.endswith(".pkl") and not self.allow_unsafe:
            check_plain_pickle(filename)
        if filename.endswith(".safetensors"):
            return convert_on_load(read_source(filename), self.logger.info)
        loaded = super()._load_file(filename)
        if _is_state(loaded["model"]) and layout_of(loaded["model"]) in ("official", "huggingface"):
            source = SourceCheckpoint(filename, loaded["model"], loaded.get("args"), hf_config_beside(filename))
            return convert_on_load(source, self.logger.info)
        return loaded

    def _torch_load(self, f):
        return load_checkpoint_file(f, self.allow_unsafe)

    def save(self, name, **kwargs):
        if not (self.save_dir and self.save_to_disk and os.path.isdir(self.save_dir)):
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        classes = dataset_classes(self.datasets[0]) if self.datasets else None
        if classes:
            data[CLASSES_KEY] = classes
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

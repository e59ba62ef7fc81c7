"""Reading the demo's images in DataLoader workers: decoded, checked, resized for the model as
Detectron2's DefaultPredictor does; an image that cannot be read becomes a record of its path
and the reason, so that one bad file never stops the loader."""
import os

from detectron2.data import build_detection_test_loader
from PIL import UnidentifiedImageError
from torch.utils.data import SequentialSampler

from ..data.image_io import read_image
from ..data.predictor_input import predictor_input


class UnreadableImage(ValueError):
    """An input image that cannot be used; the message is the reason."""


def read_rgb(path):
    """The image at ``path`` as an H x W x 3 uint8 RGB array. Raises UnreadableImage saying
    why not: missing, empty, not an image, truncated or corrupt, or not 3 channels."""
    if not os.path.isfile(path):
        raise UnreadableImage("missing (no such file)")
    if os.path.getsize(path) == 0:
        raise UnreadableImage("empty file (0 bytes)")
    try:
        image = read_image(path, format="RGB")
    except UnidentifiedImageError as e:
        raise UnreadableImage("not an image (PIL cannot identify its format)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise UnreadableImage(f"truncated or corrupt ({type(e).__name__}: {e})") from e
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise UnreadableImage(f"decoded to an array of shape {image.shape}, not H x W x 3 (wrong channel count)")
    return image


class ImageReader:
    """The DataLoader's mapper: {"index", "path"} -> the record with, on success, "image"
    (3 x H' x W' float32 in ``input_format``, resized by ``resize``, as DefaultPredictor feeds
    the model), "height", "width" (the original size) and "rgb" (H x W x 3 uint8, for the
    pictures); on failure, "error" (the reason)."""

    def __init__(self, resize, input_format):
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR for the demo, got {input_format!r}")
        self.resize = resize
        self.input_format = input_format

    def __call__(self, record):
        record = dict(record)
        try:
            rgb = read_rgb(record["path"])
        except UnreadableImage as e:
            record["error"] = str(e)
            return record
        record.update(predictor_input(rgb, self.resize, self.input_format, image_format="RGB"), rgb=rgb)
        return record


def image_loader(records, reader, num_workers):
    """Detectron2's test loader over ``records`` ({"index", "path"}) in their order, mapped by
    ``reader`` in ``num_workers`` worker processes (0: in this process). Yields one record at
    a time (a list of one, Detectron2's trivial batch)."""
    return build_detection_test_loader(
        records, mapper=reader, sampler=SequentialSampler(records), num_workers=num_workers
    )


class SameSizeBatches:
    """Groups read images into batches of at most ``batch_size`` images that share the network
    input size, so that no image is padded and results do not depend on the batch size.
    ``add(record)`` returns the batches it completed; ``flush()`` the incomplete ones left."""

    def __init__(self, batch_size):
        if batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.pending = {}

    def add(self, record):
        key = tuple(record["image"].shape[-2:])
        group = self.pending.setdefault(key, [])
        group.append(record)
        if len(group) < self.batch_size:
            return []
        del self.pending[key]
        return [group]

    def flush(self):
        groups, self.pending = list(self.pending.values()), {}
        return groups

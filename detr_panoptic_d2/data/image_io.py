"""Reading images of any common kind as 8-bit arrays in the model's input format, and semantic
label PNGs as they are."""
import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager
from PIL import Image, ImageOps

# PIL modes of 16-bit (and 32-bit integer) grayscale files, e.g. 16-bit PNGs.
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_image(path, format="RGB"):
    """Returns an H x W x C uint8 array of the image at ``path`` in ``format`` (Detectron2's
    "RGB", "BGR", "L", ...), with its EXIF orientation applied: Detectron2's ``read_image``
    (palette, grayscale and RGBA files converted, alpha dropped), except that 16-bit
    grayscale keeps its 8 most significant bits. Raises what PIL raises for missing or
    undecodable files.
    """
    with PathManager.open(path, "rb") as f:
        wide = Image.open(f).mode in _WIDE_GRAY_MODES
    if not wide:
        return utils.read_image(path, format)
    # Detectron2's read_image clips 16-bit values at 255 (all but black turns white).
    with PathManager.open(path, "rb") as f:
        wide = np.asarray(ImageOps.exif_transpose(Image.open(f))).astype(np.int64)
    return utils.convert_PIL_to_numpy(Image.fromarray(np.clip(wide >> 8, 0, 255).astype(np.uint8), mode="L"), format)


def load_semantic_png(filename, dtype=None):
    """H x W (writable) array of a semantic PNG. (Detectron2's default loader asks NumPy for a copy-free
    conversion, which NumPy 2 refuses.)"""
    with PathManager.open(filename, "rb") as f:
        return np.array(Image.open(f), dtype=dtype)

"""data/image_io.read_image: Detectron2's read_image (EXIF orientation applied) and 16-bit
grayscale by its high byte, also when rotated."""
import numpy as np
import pytest
from PIL import Image

from detr_panoptic_d2.data.image_io import read_image

ORIENTATION = 0x0112  # EXIF tag; 6: the camera was turned, show the image turned 90 degrees clockwise


@pytest.mark.parametrize("bits", [8, 16])
def test_exif_orientation_is_applied(tmp_path, bits):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    pixels = gray.astype(np.uint16) * 256 + 7 if bits == 16 else np.stack([gray, gray // 2, 255 - gray], -1)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path = str(tmp_path / f"turned{bits}.png")
    Image.fromarray(pixels).save(path, exif=exif)
    expected = np.rot90(pixels if bits == 8 else np.repeat(gray[:, :, None], 3, -1), k=-1)
    # Exact by construction: integer pixels moved, no arithmetic but the 16-bit shift.
    np.testing.assert_array_equal(read_image(path, format="RGB"), expected)
    np.testing.assert_array_equal(read_image(path, format="BGR"), expected[:, :, ::-1])

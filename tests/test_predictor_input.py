"""The one test-time preprocessing (data/predictor_input.py) of the demo's image reader and the
pipeline inspector gives the model exactly what Detectron2's DefaultPredictor gives it."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor

from detr_panoptic_d2.data.predictor_input import predictor_input
from detr_panoptic_d2.predict.images import ImageReader

from .helpers import write_image


class _Capture:
    """A model that records its input."""

    def __call__(self, inputs):
        self.inputs = inputs
        return [{}]


def _default_predictor_input(image_bgr, resize, input_format):
    """What DefaultPredictor.__call__ passes its model (built without a model of its own)."""
    predictor = object.__new__(DefaultPredictor)
    predictor.cfg, predictor.aug, predictor.input_format, predictor.model = get_cfg(), resize, input_format, _Capture()
    predictor.cfg.MODEL.DEVICE = "cpu"
    predictor(image_bgr)
    (inputs,) = predictor.model.inputs
    return inputs


@pytest.mark.parametrize("input_format", ["RGB", "BGR"])
def test_demo_reader_and_inspector_input_is_default_predictors(tmp_path, input_format):
    path = write_image(tmp_path / "photo.png", 50, 70, seed=3)
    resize = T.ResizeShortestEdge([40, 40], 60)  # 50 x 70 -> 40 x 56: the resize runs
    bgr = read_image(path, format="BGR")
    expected = _default_predictor_input(bgr, resize, input_format)
    assert expected["image"].shape == (3, 40, 56) and (expected["height"], expected["width"]) == (50, 70)
    record = ImageReader(resize, input_format)({"index": 0, "path": path})  # reads RGB
    for got in (predictor_input(bgr, resize, input_format), record):
        # Exact by construction: the same resize and conversion of the same integer image.
        assert torch.equal(got["image"], expected["image"])
        assert (got["height"], got["width"]) == (expected["height"], expected["width"])

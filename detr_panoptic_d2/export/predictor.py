"""``ExportedPredictor``: Detectron2's DefaultPredictor with an exported model in place of
the PyTorch one: the same call (one H x W x C BGR image -> {"panoptic_seg": ...}), the same
channel-order conversion and test-time resize (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``,
outside the graph), from DefaultPredictor.__call__ itself."""
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor

from .runtime import OnnxPanopticModel


class ExportedPredictor(DefaultPredictor):
    """DefaultPredictor over ``OnnxPanopticModel(path, cfg, threads)``."""

    def __init__(self, cfg, path, threads=None):  # builds no PyTorch model, unlike DefaultPredictor
        self.cfg = cfg.clone()
        self.model = OnnxPanopticModel(path, cfg, threads)
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    def __call__(self, original_image):
        """original_image: H x W x C uint8 BGR array. ValueError naming the model file when C
        is not the exported input's channel count."""
        channels = self.model.metadata["input"]["channels"]
        if original_image.ndim != 3 or original_image.shape[2] != channels:
            raise ValueError(
                f"{self.model.path} takes H x W x {channels} images, got an array of shape {original_image.shape}"
            )
        return super().__call__(original_image)

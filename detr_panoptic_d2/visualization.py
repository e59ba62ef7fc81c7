"""Pictures of panoptic predictions: ``draw_panoptic`` (Detectron2's
``Visualizer.draw_panoptic_seg`` with reproducible colours), and a dataset's images drawn next
to their input and ground truth (``save_panoptic_visualizations``)."""
import copy
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.visualizer import ColorMode, Visualizer
from panopticapi.utils import rgb2id
from PIL import Image

from .data import DetrPanopticDatasetMapper
from .data.image_io import read_image


def draw_panoptic(image_rgb, panoptic_seg, segments_info, metadata, seed=0):
    """image_rgb: H x W x 3 uint8; panoptic_seg: H x W segment ids; segments_info: the model's
    (contiguous category ids). Returns the H x W x 3 uint8 visualization with class names.

    The colours the Visualizer jitters with NumPy's global random generator come from ``seed``
    (the generator's state is restored after), so a picture depends on its inputs only."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        visualizer = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
        return visualizer.draw_panoptic_seg(panoptic_seg.to("cpu"), segments_info).get_image()
    finally:
        np.random.set_state(state)


def upscale_image_and_ids(image, ids, factor):
    """image: H x W x 3 uint8, ids: H x W segment ids -> both ``factor`` times larger (ids by
    pixel repetition), so that the drawn class names stay legible on small images."""
    size = (image.shape[1] * factor, image.shape[0] * factor)
    big_ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)).repeat_interleave(factor, 0).repeat_interleave(factor, 1)
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)), big_ids


@torch.no_grad()
def save_panoptic_visualizations(cfg, model, dataset_name, output_dir, num_images=4, scale=2):
    """Runs ``model`` (a DetrPanoptic; in eval mode for the call) on the first ``num_images``
    images of ``dataset_name`` and writes ``<output_dir>/<image name>.png``: input, prediction
    and ground truth side by side, each ``scale`` (an integer) times the image size.
    Returns the written paths."""
    metadata = MetadataCatalog.get(dataset_name)
    mapper = DetrPanopticDatasetMapper(cfg, is_train=False, dataset_name=dataset_name)
    os.makedirs(output_dir, exist_ok=True)
    was_training = model.training
    model.eval()
    paths = []
    try:
        for record in DatasetCatalog.get(dataset_name)[:num_images]:
            panoptic_seg, segments_info = model([mapper(record)])[0]["panoptic_seg"]
            image = read_image(record["file_name"], format="RGB")
            truth = rgb2id(read_image(record["pan_seg_file_name"], format="RGB"))
            panels = [upscale_image_and_ids(image, np.zeros(image.shape[:2]), scale)[0]]
            for ids, segments in ((panoptic_seg.cpu(), segments_info), (truth, record["segments_info"])):
                big_image, big_ids = upscale_image_and_ids(image, ids, scale)
                panels.append(draw_panoptic(big_image, big_ids, copy.deepcopy(segments), metadata))
            path = os.path.join(output_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png")
            Image.fromarray(np.concatenate(panels, axis=1)).save(path)
            paths.append(path)
    finally:
        model.train(was_training)
    return paths

"""Pictures of panoptic predictions next to the input and the ground truth, drawn with
Detectron2's ``Visualizer.draw_panoptic_seg`` (needs OpenCV, as Detectron2's visualizer does)."""
import copy
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.utils.visualizer import Visualizer
from panopticapi.utils import rgb2id
from PIL import Image

from .data import DetrPanopticDatasetMapper


def draw_panoptic(image, panoptic_seg, segments_info, metadata, scale=1.0):
    """image: H x W x 3 uint8 RGB; panoptic_seg: H x W segment ids (tensor or array);
    segments_info: dicts with "id", "category_id" (contiguous) and "isthing".
    Returns the drawing, an (H*scale) x (W*scale) x 3 uint8 RGB array."""
    visualizer = Visualizer(image, metadata, scale=scale)
    seg = torch.as_tensor(np.asarray(panoptic_seg, dtype=np.int64))
    return visualizer.draw_panoptic_seg(seg, copy.deepcopy(segments_info)).get_image()


@torch.no_grad()
def save_panoptic_visualizations(cfg, model, dataset_name, output_dir, num_images=4, scale=2.0):
    """Runs ``model`` (a DetrPanoptic, in eval mode for the call) on the first ``num_images``
    images of ``dataset_name`` and writes ``<output_dir>/<image name>.png``: input, prediction
    and ground truth side by side. Returns the written paths."""
    metadata = MetadataCatalog.get(dataset_name)
    mapper = DetrPanopticDatasetMapper(cfg, is_train=False, dataset_name=dataset_name)
    os.makedirs(output_dir, exist_ok=True)
    was_training = model.training
    model.eval()
    paths = []
    try:
        for record in DatasetCatalog.get(dataset_name)[:num_images]:
            panoptic_seg, segments_info = model([mapper(record)])[0]["panoptic_seg"]
            image = utils.read_image(record["file_name"], format="RGB")
            truth = rgb2id(utils.read_image(record["pan_seg_file_name"], format="RGB"))
            panels = [
                Visualizer(image, metadata, scale=scale).output.get_image(),
                draw_panoptic(image, panoptic_seg.cpu(), segments_info, metadata, scale),
                draw_panoptic(image, truth, record["segments_info"], metadata, scale),
            ]
            path = os.path.join(output_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png")
            Image.fromarray(np.concatenate(panels, axis=1)).save(path)
            paths.append(path)
    finally:
        model.train(was_training)
    return paths

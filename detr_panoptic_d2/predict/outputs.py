"""The demo's files for one image, written atomically, and the COCO-panoptic JSON merged from
them.

Per image ``<name>``: ``<output>/<name>.png`` (the picture) and, with COCO-panoptic output,
``<output>/coco_panoptic/<name>.png`` (segment ids in RGB) with its annotation beside it in
``<output>/coco_panoptic/<name>.json``. The picture is written last, so an image whose picture
(and, with COCO output, PNG and annotation) exists is finished: ``--skip-existing`` leaves it,
and the merged ``<output>/coco_panoptic.json`` is rebuilt from the annotations of the
finished images, so it always lists exactly the PNGs written.
"""
import io
import json
import os

import numpy as np
from PIL import Image

from ..atomic_files import atomic_write, remove_stale_temporaries
from ..data.panoptic_files import coco_categories, to_coco_panoptic
from ..visualization import draw_panoptic

COCO_FOLDER = "coco_panoptic"


class DemoOutputs:
    """Where the files of each image go under ``folder``; ``coco``: with COCO-panoptic output."""

    def __init__(self, folder, coco):
        self.folder = folder
        self.coco = coco
        self.coco_folder = os.path.join(folder, COCO_FOLDER)

    def make_folders(self):
        """Creates the folders and removes the temporaries a killed run left there (call it from
        one process, before any writes)."""
        os.makedirs(self.coco_folder if self.coco else self.folder, exist_ok=True)
        return remove_stale_temporaries(self.folder) + remove_stale_temporaries(self.coco_folder)

    def _files(self, name):
        picture = os.path.join(self.folder, f"{name}.png")
        if not self.coco:
            return [picture]
        return [os.path.join(self.coco_folder, f"{name}.png"), self.annotation_path(name), picture]

    def annotation_path(self, name):
        return os.path.join(self.coco_folder, f"{name}.json")

    def finished(self, name):
        """Whether every file of image ``name`` exists."""
        return all(os.path.isfile(path) for path in self._files(name))

    def read_annotation(self, name):
        with open(self.annotation_path(name), encoding="utf-8") as f:
            return json.load(f)

    def write(self, name, rgb, panoptic_seg, segments_info, metadata):
        """Writes the files of image ``name`` (rgb: H x W x 3 uint8; the model's panoptic_seg
        H x W and segments_info), the picture last. Returns the COCO annotation (None without
        COCO output)."""
        annotation = None
        paths = self._files(name)
        if self.coco:
            png, segments = to_coco_panoptic(panoptic_seg, segments_info, metadata)
            annotation = {"image_id": name, "file_name": f"{name}.png", "segments_info": segments}
            atomic_write(paths[0], lambda f: f.write(_png_bytes(png)))
            atomic_write(paths[1], lambda f: f.write(json.dumps(annotation).encode("utf-8")))
        picture = draw_panoptic(rgb, panoptic_seg, segments_info, metadata)
        atomic_write(paths[-1], lambda f: f.write(_png_bytes(picture)))
        return annotation

    def write_coco_json(self, annotations, metadata):
        """Writes <folder>/coco_panoptic.json: ``annotations`` (in the given order) and the
        categories of ``metadata`` (dataset ids)."""
        content = {"annotations": annotations, "categories": coco_categories(metadata)}
        path = os.path.join(self.folder, f"{COCO_FOLDER}.json")
        atomic_write(path, lambda f: f.write(json.dumps(content).encode("utf-8")))
        return path


def _png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()

"""DetrPanopticDatasetMapper: one Detectron2 panoptic dataset dict -> the model's input."""

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances
from panopticapi.utils import rgb2id

from .augmentation import build_detr_augmentation
from .errors import PanopticDataError
from .image_io import read_image
from .metadata import dataset_to_contiguous

logger = logging.getLogger(__name__)


def dataset_class_ids(names):
    """The contiguous class ids (a set) in the metadata of the datasets ``names`` (one name or
    a list), things and stuff; None when the metadata has none (any id is then accepted)."""
    class_ids = set()
    for name in [names] if isinstance(names, str) else names:
        class_ids.update(dataset_to_contiguous(MetadataCatalog.get(name)).values())
    return class_ids or None


class DetrPanopticDatasetMapper:
    """Reads, checks and augments one sample of a COCO-panoptic-format dataset.

    Input: a dict with ``file_name`` (image), ``pan_seg_file_name`` (panoptic PNG, segment id
    = R + 256 G + 256^2 B, 0 = unlabeled) and ``segments_info`` (``id``, contiguous
    ``category_id``, optional ``iscrowd``), as Detectron2's COCO panoptic loader gives.

    Output: the dict with ``height``/``width`` (original size; set from the image when
    absent) and ``image`` (uint8 tensor C x H x W in ``image_format``, augmented). In training
    also ``instances``: ``Instances(image_size=(H, W))`` with one entry per non-crowd segment
    visible after augmentation: ``gt_classes`` (int64 N), ``gt_masks`` (BitMasks N x H x W,
    disjoint) and ``gt_boxes`` (Boxes N x 4, absolute XYXY, the masks' tight boxes). N may be 0.

    Grayscale, palette and RGBA files are converted to ``image_format``. Missing or unreadable
    files, size mismatches, PNG segment ids absent from ``segments_info`` and category ids
    that the dataset's metadata does not know raise PanopticDataError naming the file.

    With ``cache_decoded``, each file's decoded and checked arrays (image, panoptic PNG) are
    kept in memory, read-only, after its first use: later epochs skip decoding and checking,
    while every augmentation (flip, random resize, crop) still runs on each sample, so the
    samples are those of the uncached mapper. Memory: about 6 bytes per pixel of every image
    in training (3 at test time), per data-loader worker.
    """

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        augmentations,
        image_format,
        dataset_name="",
        class_ids=None,
        skip_bad_samples=False,
        cache_decoded=False,
    ):
        """
        Args:
            is_train: whether to produce ``instances`` (the PNG is not read otherwise).
            augmentations: list of ``T.Augmentation``/``T.Transform`` applied in order.
            image_format: ``cfg.INPUT.FORMAT``, e.g. "RGB" or "BGR".
            dataset_name: named in error messages.
            class_ids: the valid contiguous category ids; None accepts any.
            skip_bad_samples: in training, log a bad sample (with the running count of skipped
                ones) and return None, which makes Detectron2's loader draw another sample,
                instead of raising. Ignored at test time, where every sample must be scored.
            cache_decoded: keep decoded, checked arrays in memory (see the class docstring;
                DATALOADER.CACHE_DECODED).
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.dataset_name = dataset_name
        self.class_ids = None if class_ids is None else frozenset(class_ids)
        self.skip_bad_samples = skip_bad_samples and is_train
        self.num_skipped = 0
        self.cache = {} if cache_decoded else None

    @classmethod
    def from_config(cls, cfg, is_train=True, dataset_name=None):
        """``dataset_name`` defaults to cfg.DATASETS.TRAIN (training) or cfg.DATASETS.TEST;
        the class ids are those of these datasets' metadata."""
        names = (
            [dataset_name]
            if dataset_name
            else list(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST)
        )
        return {
            "is_train": is_train,
            "augmentations": build_detr_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "dataset_name": "+".join(names),
            "class_ids": dataset_class_ids(names),
            "skip_bad_samples": cfg.DATALOADER.SKIP_BAD_SAMPLES,
            "cache_decoded": cfg.DATALOADER.CACHE_DECODED,
        }

    def __call__(self, dataset_dict):
        if not self.skip_bad_samples:
            return self._map(dataset_dict)
        try:
            return self._map(dataset_dict)
        except PanopticDataError as e:
            self.num_skipped += 1
            logger.warning(f"Skipping bad training sample ({self.num_skipped} skipped by this worker so far): {e}")
            return None

    def _map(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image, pan_rgb = self._decoded(dataset_dict)
        # The panoptic map travels as its RGB encoding: uint8 keeps Detectron2's resize on
        # its nearest-neighbour PIL path (integer ids would not).
        aug_input = T.AugInput(image, sem_seg=pan_rgb)
        self.augmentations(aug_input)
        dataset_dict["image"] = _to_chw_tensor(aug_input.image)
        if self.is_train:
            dataset_dict["instances"] = _segments_to_instances(
                rgb2id(aug_input.sem_seg), dataset_dict["segments_info"]
            )
        return dataset_dict

    def _decoded(self, dataset_dict):
        """(image H x W x C, panoptic PNG H x W x 3 or None at test time) of ``dataset_dict``,
        read and checked, or from the cache; sets its height/width when absent."""
        key = dataset_dict["file_name"]
        if self.cache is not None and key in self.cache:
            image, pan_rgb = self.cache[key]
            self._check_size(dataset_dict, image)
            return image, pan_rgb
        image = self._read(dataset_dict["file_name"], self.image_format)
        self._check_size(dataset_dict, image)
        pan_rgb = self._read_panoptic(dataset_dict, image) if self.is_train else None
        if self.cache is not None:
            for array in (image, pan_rgb):
                if array is not None:
                    array.setflags(write=False)  # shared by every later sample of this file
            self.cache[key] = image, pan_rgb
        return image, pan_rgb

    def _read_panoptic(self, dataset_dict, image):
        """The checked panoptic PNG of ``dataset_dict`` as an H x W x 3 uint8 array."""
        pan_file = dataset_dict["pan_seg_file_name"]
        pan_rgb = self._read(pan_file, "RGB")
        if pan_rgb.shape[:2] != image.shape[:2]:
            raise PanopticDataError(
                self.dataset_name,
                pan_file,
                f"PNG size {pan_rgb.shape[1]}x{pan_rgb.shape[0]} differs from image "
                f"{dataset_dict['file_name']} size {image.shape[1]}x{image.shape[0]}",
            )
        self._check_segments(pan_file, rgb2id(pan_rgb), dataset_dict["segments_info"])
        return pan_rgb

    def _read(self, path, image_format):
        """HWC uint8 array of the file in ``image_format`` (3 channels for RGB/BGR)."""
        try:
            return read_image(path, format=image_format)
        except Exception as e:  # missing, truncated, not an image: all reported alike
            raise PanopticDataError(self.dataset_name, path, f"cannot read it ({e})") from e

    def _check_size(self, dataset_dict, image):
        try:
            utils.check_image_size(dataset_dict, image)
        except utils.SizeMismatchError as e:
            raise PanopticDataError(self.dataset_name, dataset_dict["file_name"], str(e)) from e

    def _check_segments(self, pan_file, ids, segments):
        listed = {s["id"] for s in segments}
        present = set(np.unique(ids).tolist())
        unlisted = sorted(present - listed - {0})
        if unlisted:
            raise PanopticDataError(
                self.dataset_name, pan_file, f"segment ids {unlisted[:10]} are not in segments_info"
            )
        absent = sorted(listed - present)
        if absent:
            raise PanopticDataError(
                self.dataset_name,
                pan_file,
                f"segments_info lists segment ids {absent[:10]} that cover no pixel of the PNG",
            )
        if self.class_ids is not None:
            for s in segments:
                if s["category_id"] not in self.class_ids:
                    raise PanopticDataError(
                        self.dataset_name,
                        pan_file,
                        f"segment {s['id']} has category id {s['category_id']}, unknown to the "
                        f"dataset's metadata (valid: {sorted(self.class_ids)})",
                    )


def _to_chw_tensor(image):
    """HWC uint8 array -> C x H x W uint8 tensor."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _segments_to_instances(ids, segments):
    """Instances of the non-crowd ``segments`` that cover at least one pixel of ``ids`` (H x W)."""
    kept = [s for s in segments if not s.get("iscrowd", 0)]
    seg_ids = np.array([s["id"] for s in kept], dtype=ids.dtype)
    masks = ids[None] == seg_ids[:, None, None]
    visible = masks.any(axis=(1, 2))
    instances = Instances(ids.shape)
    instances.gt_classes = torch.tensor(
        [s["category_id"] for s, v in zip(kept, visible) if v], dtype=torch.int64
    )
    gt_masks = BitMasks(torch.from_numpy(masks[visible]))
    instances.gt_masks = gt_masks
    instances.gt_boxes = gt_masks.get_bounding_boxes()
    return instances

"""DETR's data augmentation, built from Detectron2 transforms and the cfg.INPUT keys.

Training (Carion et al. 2020, section 4, and their reference code): horizontal flip; then,
with probability INPUT.CROP.PROB, resize the shortest edge to one of INPUT.DETR.CROP_PRE_RESIZE
and take an INPUT.CROP random crop; then resize the shortest edge to one of
INPUT.MIN_SIZE_TRAIN with the longest edge at most INPUT.MAX_SIZE_TRAIN. Test: shortest edge
INPUT.MIN_SIZE_TEST, longest edge at most INPUT.MAX_SIZE_TEST.
"""

from detectron2.data import transforms as T


def build_detr_augmentation(cfg, is_train):
    """Returns the list of ``T.Augmentation`` to put into a ``T.AugmentationList``."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augs = []
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    if cfg.INPUT.CROP.ENABLED:
        crop = [T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)]
        if cfg.INPUT.DETR.CROP_PRE_RESIZE:
            # No cap on the longest edge here, as in the reference.
            crop.insert(
                0, T.ResizeShortestEdge(cfg.INPUT.DETR.CROP_PRE_RESIZE, sample_style="choice")
            )
        augs.append(T.RandomApply(T.AugmentationList(crop), prob=cfg.INPUT.CROP.PROB))
    augs.append(
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    )
    return augs

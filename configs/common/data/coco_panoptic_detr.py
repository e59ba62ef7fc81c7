# COCO panoptic (Detectron2's standard splits) through DetrPanopticDatasetMapper with DETR's
# augmentation, and the evaluators of one inference pass; as Base-DETR-Panoptic.yaml's
# DATASETS, INPUT and DATALOADER. Another COCO-panoptic-format split: list it in
# `dataloader.register` and set the two `dataset.names` to its name.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from omegaconf import OmegaConf

from detr_panoptic_d2.data import DetrPanopticDatasetMapper, dataset_class_ids
from detr_panoptic_d2.engine import panoptic_evaluators

dataloader = OmegaConf.create()

# COCO-panoptic splits on disk, registered by every tool on start-up (as yaml's
# DATASETS.REGISTER): [dict(name=..., json=..., image_dir=..., png_dir=..., sem_seg_dir=...)],
# sem_seg_dir optional. --register NAME JSON IMAGE_DIR PNG_DIR appends one.
dataloader.register = []

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train_panoptic", filter_empty=False),
    mapper=L(DetrPanopticDatasetMapper)(
        is_train=True,
        # DETR's: flip; with probability 0.5 resize the shortest edge to 400/500/600 and crop
        # 384..600 px; then resize the shortest edge to 480..800 (longest at most 1333).
        augmentations=[
            L(T.RandomFlip)(horizontal=True, vertical=False),
            L(T.RandomApply)(
                tfm_or_aug=L(T.AugmentationList)(
                    augs=[
                        L(T.ResizeShortestEdge)(short_edge_length=[400, 500, 600], sample_style="choice"),
                        L(T.RandomCrop)(crop_type="absolute_range", crop_size=[384, 600]),
                    ]
                ),
                prob=0.5,
            ),
            L(T.ResizeShortestEdge)(
                short_edge_length=[480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800],
                max_size=1333,
                sample_style="choice",
            ),
        ],
        image_format="RGB",
        dataset_name="${..dataset.names}",
        class_ids=L(dataset_class_ids)(names="${...dataset.names}"),
        skip_bad_samples=False,  # True: log a bad training sample and draw another
        cache_decoded=False,  # True: keep decoded samples in memory (small datasets; DATALOADER.CACHE_DECODED)
    ),
    total_batch_size=64,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val_panoptic", filter_empty=False),
    mapper=L(DetrPanopticDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333, sample_style="choice")],
        image_format="RGB",
        dataset_name="${..dataset.names}",
        class_ids=L(dataset_class_ids)(names="${...dataset.names}"),
    ),
    num_workers=4,
)

# PQ, box/mask AP (things) and mIoU, each as the model's outputs turn them on.
dataloader.evaluator = L(panoptic_evaluators)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}/inference/${..test.dataset.names}",
    panoptic_on="${model.postprocessor.panoptic_on}",
    instances_on="${model.postprocessor.instances_on}",
    semantic_on="${model.postprocessor.semantic_on}",
    mask_on=True,  # False for a box-only model (no mask AP)
    detections_per_image="${model.postprocessor.detections_per_image}",
)

"""Synthetic benchmark inputs: random images, and for training targets tiling each image.

Training needs targets, so ``synthetic_batch`` partitions every image into segments (COCO
panoptic averages about 11 segments per image). With random weights no query reaches the 0.85
score threshold: ``detr_panoptic_d2.testing.calibrate_kept_queries`` gives the models a
controlled number of kept queries.
"""
import torch
from detectron2.structures import BitMasks, Boxes, Instances


def _voronoi_segments(height, width, n, generator):
    """n disjoint non-empty masks covering an H x W image: each pixel goes to its nearest of n
    random seeds. Returns n x H x W bool."""
    seeds = torch.rand(n, 2, generator=generator) * torch.tensor([height, width])
    ys = torch.arange(height, dtype=torch.float32)[:, None, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :, None]
    nearest = ((ys - seeds[:, 0]) ** 2 + (xs - seeds[:, 1]) ** 2).argmin(-1)
    return nearest[None] == torch.arange(n)[:, None, None]


def _instances(masks, classes):
    inst = Instances(tuple(masks.shape[-2:]))
    inst.gt_classes = classes
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = Boxes(inst.gt_masks.get_bounding_boxes().tensor)
    return inst


def synthetic_batch(batch_size, height, width, num_classes, targets_per_image=0, seed=0):
    """batch_size Detectron2 input dicts for H x W images, with random uint8 RGB images.

    targets_per_image > 0 adds "instances": that many disjoint segments tiling the image,
    with random classes in [0, num_classes). Without targets (inference) every image of the
    batch is the same picture, so a calibrated model keeps the same queries in each.
    """
    g = torch.Generator().manual_seed(seed)
    batch = []
    for i in range(batch_size):
        if targets_per_image or i == 0:
            image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
        x = {"image": image, "height": height, "width": width, "file_name": f"synthetic_{seed}_{i}.png"}
        if targets_per_image:
            masks = _voronoi_segments(height, width, targets_per_image, g)
            classes = torch.randint(0, num_classes, (targets_per_image,), generator=g)
            x["instances"] = _instances(masks, classes)
        batch.append(x)
    return batch

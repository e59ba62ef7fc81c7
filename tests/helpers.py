"""Small configs, models and inputs shared by the tests (CPU, seconds per forward)."""
import importlib.util
import os

import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances

from detr_panoptic_d2 import add_detr_panoptic_config
from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.export.compare import panoptic_agreement
from detr_panoptic_d2.testing import calibrate_kept_queries


def model_from_config_file(path):
    """(cfg, model) of a shipped config on the CPU, with random weights and no frozen detector."""

    cfg = add_detr_panoptic_config(get_cfg())
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DETR.FROZEN_WEIGHTS = ""
    return cfg, build_model(cfg)


def tiny_cfg(num_classes=5, mask_on=True, dataset=None):
    """An R18-like DETR panoptic config: d=64, 2+2 layers, 10 queries, CPU.

    dataset: registered panoptic dataset whose metadata says which classes are things
    (DATASETS.TEST); None leaves datasets unset (panoptic/instance inference then refuses).
    """
    cfg = get_cfg()
    add_detr_panoptic_config(cfg)
    cfg.merge_from_file("configs/Base-DETR-Panoptic.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.DETR.NUM_CLASSES = num_classes
    cfg.MODEL.DETR.HIDDEN_DIM = 64
    cfg.MODEL.DETR.NHEADS = 8
    cfg.MODEL.DETR.DIM_FEEDFORWARD = 128
    cfg.MODEL.DETR.ENC_LAYERS = 2
    cfg.MODEL.DETR.DEC_LAYERS = 2
    cfg.MODEL.DETR.NUM_OBJECT_QUERIES = 10
    cfg.MODEL.DETR.DROPOUT = 0.0
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = (dataset,) if dataset else ()
    if not mask_on:
        cfg.MODEL.DETR.TEST.PANOPTIC_ON = False
        cfg.MODEL.DETR.TEST.INSTANCES_ON = True
    return cfg


@torch.no_grad()
def keep_queries_(model, inputs=None, k=None):
    """Rewrites the class head of a random DetrPanoptic (in place) so that it keeps queries.

    With ``inputs`` and ``k``: exactly k queries of each input pass
    MODEL.DETR.TEST.OBJECT_SCORE_THRESH and the others say "no object" (the benchmark's
    ``calibrate_kept_queries``). Without:
    on any image every query predicts a real class, "no object" getting the logit -10 (weights
    0, bias -10; a random head's logits are of order 1), so all queries are kept at threshold
    0; the real classes' logits are unchanged."""
    if k is not None:
        calibrate_kept_queries(model, inputs, k)
        return
    model.class_embed.weight[-1] = 0.0
    model.class_embed.bias[-1] = -10.0


def make_input(height, width, classes=(), seed=0, with_targets=True):
    """A Detectron2 input dict with a random uint8 image and, optionally, targets: one
    rectangular segment per entry of ``classes`` (disjoint boxes, stacked left to right)."""
    g = torch.Generator().manual_seed(seed)
    x = {
        "image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g),
        "height": height,
        "width": width,
        "file_name": f"synthetic_{seed}.png",
    }
    if with_targets:
        n = len(classes)
        masks = torch.zeros(n, height, width, dtype=torch.bool)
        boxes = []
        for i in range(n):
            x0, x1 = i * width // n, (i + 1) * width // n
            y0, y1 = height // 4, 3 * height // 4
            masks[i, y0:y1, x0:x1] = True
            boxes.append([x0, y0, x1, y1])
        inst = Instances((height, width))
        inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.gt_masks = BitMasks(masks)
        x["instances"] = inst
    return x


TINY_PANOPTIC = "detr_test_tiny_panoptic"


def register_tiny_panoptic_metadata(name=TINY_PANOPTIC):
    """Metadata of a 5-class panoptic dataset (no images): contiguous things 0, 1, 4 and stuff
    2, 3, with non-contiguous dataset ids. Returns the dataset name (for tiny_cfg(dataset=...))."""
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
        meta.set(
            thing_dataset_id_to_contiguous_id={1: 0, 2: 1, 7: 4},
            stuff_dataset_id_to_contiguous_id={5: 2, 6: 3},
            thing_classes=["cat", "dog", "grass", "sky", "bird"],
            stuff_classes=["cat", "dog", "grass", "sky", "bird"],
        )
    return name


def tiny_model_with_every_output(opts=(), seed=0):
    """A tiny DetrPanoptic on the tiny panoptic metadata with panoptic, instance and semantic
    outputs on, ``opts`` (["KEY", value, ...]) applied, initialized from ``seed``."""
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.merge_from_list(["MODEL.DETR.TEST.INSTANCES_ON", True, "MODEL.DETR.TEST.SEMANTIC_ON", True, *opts])
    torch.manual_seed(seed)
    return build_model(cfg)


def two_labelled_images():
    """Two labelled inputs of different sizes (64 x 96 with classes 0, 2, 4; 80 x 64 with 1, 3)."""
    return [make_input(64, 96, (0, 2, 4), seed=1), make_input(80, 64, (1, 3), seed=2)]


def load_tool(name):
    """Imports ``tools/<name>.py`` (the tools are scripts, not a package) as a module; ``name``
    may name a subfolder, as "dev/plot_convergence"."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location("tools_" + name.replace("/", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_panoptic_model(folder, dataset="coco_2017_val_panoptic", seed=0, opts=()):
    """Writes ``config.yaml`` (tiny_cfg for ``dataset``, test-time resize to 96..160 px,
    ``opts`` ["KEY", value, ...] applied) and ``model.pth`` (random weights drawn from ``seed``)
    into ``folder`` for the command-line tools. The no-object logit is biased down so every
    query predicts a real class: with --confidence-threshold 0 all queries are kept.
    Returns (config path, weights path)."""

    from detr_panoptic_d2.data.metadata import dataset_category_ids

    cfg = tiny_cfg(num_classes=len(dataset_category_ids(dataset)), dataset=dataset)
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.MAX_SIZE_TEST = 160
    cfg.merge_from_list(list(opts))
    config, weights = os.path.join(folder, "config.yaml"), os.path.join(folder, "model.pth")
    with open(config, "w", encoding="utf-8") as f:
        f.write(cfg.dump())
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(cfg)
    keep_queries_(model)
    torch.save({"model": model.state_dict()}, weights)
    return config, weights


def write_image(path, height, width, seed=0):
    """Saves a random RGB image (smooth colour blobs plus noise) as PNG; returns the path."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(3, 4, 4, generator=g)
    smooth = torch.nn.functional.interpolate(coarse[None], size=(height, width), mode="bilinear")[0]
    noise = torch.rand(3, height, width, generator=g) * 0.2
    pixels = ((smooth * 0.8 + noise) * 255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(path)
    return str(path)


def register_tiny_shapes(root, prefix, num_train=16, num_val=4, size=(64, 96)):
    """Registers (once per process) ``<prefix>_train`` and ``<prefix>_val``: tiny shapes
    splits under ``root``, images of ``size`` = (min, max) pixels a side; the files are
    written on first load. Returns the two names."""
    from detectron2.data import DatasetCatalog

    from detr_panoptic_d2.data import register_shapes_panoptic

    names = (f"{prefix}_train", f"{prefix}_val")
    for name, num, seed in zip(names, (num_train, num_val), (0, 1)):
        if name not in DatasetCatalog.list():
            register_shapes_panoptic(name, f"{root}/{name}", num, seed, *size)
    return names


def write_panoptic_split(root, num_images, seed, size=(64, 80)):
    """Writes a COCO-panoptic split (the shapes generator: 6 classes, images of ``size`` =
    (min, max) px a side) into the folder ``root``, unregistered. Returns the arguments of
    ``--register NAME JSON IMAGE_DIR PNG_DIR`` after NAME: [JSON, IMAGE_DIR, PNG_DIR]."""
    from detr_panoptic_d2.data.shapes import generate_split, split_paths

    generate_split(str(root), num_images, seed, *size)
    paths = split_paths(str(root))
    return [paths["panoptic_json"], paths["image_root"], paths["panoptic_root"]]


def tiny_training_cfg(train, val, output_dir, mask_on=True, max_iter=3):
    """``tiny_cfg`` set up to train on the registered panoptic split ``train`` (64 px
    images, batch 2, no crop, CPU, seeded) and evaluate every output on ``val`` (None: no
    evaluation), writing into ``output_dir``."""
    cfg = tiny_cfg(num_classes=6, mask_on=mask_on, dataset=val)
    cfg.DATASETS.TRAIN = (train,)
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 96
    cfg.INPUT.CROP.ENABLED = False
    cfg.MODEL.DETR.TEST.INSTANCES_ON = True
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = mask_on
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 0
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def write_cfg(cfg, path):
    """Dumps ``cfg`` to the yaml file ``path``; returns the path as a string."""
    with open(path, "w") as f:
        f.write(cfg.dump())
    return str(path)


def load_trained_into_plain(trained, plain, directory):
    """Saves ``trained`` (a DetrPanoptic with training-only parts) under ``directory`` and
    loads the file into ``plain`` (the same model without them) with ``load_complete``, as
    ``--eval-only`` does; asserts that the training-only weights were dropped on loading, not
    left over as unexpected keys."""
    DetrCheckpointer(trained, save_dir=str(directory)).save("trained")
    checkpointer = DetrCheckpointer(plain)
    checkpointer.load_complete(str(directory / "trained.pth"))
    assert not checkpointer.incompatible.unexpected_keys


def assert_same_inference(a, b):
    """Runs two DetrPanoptic models in eval mode, every query kept (threshold 0), on two
    unlabeled images of different sizes, and asserts bit-identical outputs: the panoptic
    segments (at least one per image) and whatever semantic and instance outputs the models
    give. Returns the outputs of ``a``."""
    a.postprocessor.object_score_thresh = b.postprocessor.object_score_thresh = 0.0
    images = [make_input(64, 96, seed=3, with_targets=False), make_input(96, 80, seed=4, with_targets=False)]
    with torch.no_grad():
        outputs_a, outputs_b = a.eval()(images), b.eval()(images)
    for ra, rb in zip(outputs_a, outputs_b):
        assert ra.keys() == rb.keys()
        # Exact by construction (here and below): training-only parts removed, the same operations on the same shapes.
        assert torch.equal(ra["panoptic_seg"][0], rb["panoptic_seg"][0])
        assert ra["panoptic_seg"][1] == rb["panoptic_seg"][1] and len(ra["panoptic_seg"][1]) > 0
        if "sem_seg" in ra:
            assert torch.equal(ra["sem_seg"], rb["sem_seg"])
        if "instances" in ra:
            assert torch.equal(ra["instances"].scores, rb["instances"].scores)
            assert torch.equal(ra["instances"].pred_masks, rb["instances"].pred_masks)
    return outputs_a


def assert_same_panoptic(expected, actual, min_pixels=0.999):
    """For outputs of other shapes, kernels or runtimes (not bit-identical by construction):
    same segments (ids, classes, thing flags), scores within 1e-4, int32 ids, and at least
    ``min_pixels`` of the pixels in the same segment."""
    assert actual[0].dtype == torch.int32
    agreement = panoptic_agreement(expected, actual)
    assert agreement["same_segments"], (expected[1], actual[1])
    assert agreement["max_score_difference"] <= 1e-4, agreement
    assert agreement["pixel_agreement"] >= min_pixels, agreement


def assert_masks_agree(expected, actual, min_pixels=0.999):
    """Binary masks (N x H x W) of other shapes or kernels: the same count and at least
    ``min_pixels`` of each mask's pixels equal (rounding moves pixels only at near-ties)."""
    assert expected.shape == actual.shape and expected.dtype == actual.dtype == torch.bool
    agreement = (expected == actual).flatten(1).double().mean(1)
    assert (agreement >= min_pixels).all(), agreement.tolist()


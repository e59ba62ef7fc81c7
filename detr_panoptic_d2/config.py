"""Config keys of the DETR panoptic plugin: ``add_detr_panoptic_config(cfg)``.

Call it on a fresh ``get_cfg()`` before ``merge_from_file``. Defaults reproduce the paper's
R50 panoptic model (Carion et al., ECCV 2020, section 4.4) on COCO panoptic.
"""
from detectron2.config import CfgNode as CN


def add_detr_panoptic_config(cfg):
    """Adds the MODEL.DETR, INPUT.DETR and SOLVER keys this project reads, in place."""
    cfg.MODEL.DETR = CN()
    # Number of classes, things and stuff together, in the dataset's contiguous ids
    # (COCO panoptic: 80 things + 53 stuff). The class head has NUM_CLASSES + 1 outputs,
    # the last one being "no object".
    cfg.MODEL.DETR.NUM_CLASSES = 133
    # N, the number of object queries (box embeddings) the decoder produces.
    cfg.MODEL.DETR.NUM_OBJECT_QUERIES = 100
    # d, the transformer width; also the channels of the encoded image.
    cfg.MODEL.DETR.HIDDEN_DIM = 256
    # Attention heads of every encoder and decoder attention layer.
    cfg.MODEL.DETR.NHEADS = 8
    # Hidden width of the transformer's feed-forward blocks.
    cfg.MODEL.DETR.DIM_FEEDFORWARD = 2048
    cfg.MODEL.DETR.ENC_LAYERS = 6
    cfg.MODEL.DETR.DEC_LAYERS = 6
    # Dropout inside the transformer (attention weights, feed-forward, residuals).
    cfg.MODEL.DETR.DROPOUT = 0.1
    # False: post-norm layers as in the paper; True: LayerNorm before each sub-layer.
    cfg.MODEL.DETR.PRE_NORM = False
    # Positional encoding of the res5 grid: "sine" (paper, padding-aware) or "learned".
    cfg.MODEL.DETR.POSITION_EMBEDDING = "sine"
    # Auxiliary losses on every decoder layer's output (paper: True).
    cfg.MODEL.DETR.DEEP_SUPERVISION = True
    # Group DETR (Chen et al., ICCV 2023), training only: G > 1 runs G groups of
    # NUM_OBJECT_QUERIES queries through the decoder, self-attention confined to each group,
    # each group matched one-to-one to the targets and given every class and box loss
    # (averaged over groups). Inference runs the first group alone: the deployed model, its
    # speed and outputs are a plain DETR's, and a checkpoint trained with G loads into a
    # config with 1 (the extra groups' queries, group_query_embed, are then ignored).
    # 1: off (the paper's DETR). Not with FROZEN_WEIGHTS (the decoder does not train there).
    cfg.MODEL.DETR.TRAIN_QUERY_GROUPS = 1
    # With TRAIN_QUERY_GROUPS > 1: False computes the mask losses on the first group's
    # matched queries only (the group that is deployed); True on every group's, G times the
    # mask head's training cost.
    cfg.MODEL.DETR.MASK_LOSS_ALL_GROUPS = False
    # The registered Detectron2 backbone that DetrBackbone wraps (MODEL.BACKBONE.NAME must be
    # "DetrBackbone"); it is built from the same cfg, so MODEL.RESNETS.* configure the default.
    cfg.MODEL.DETR.BACKBONE = "build_resnet_backbone"
    # The backbone output the transformer reads (projected to HIDDEN_DIM by a 1x1 conv).
    cfg.MODEL.DETR.IN_FEATURE = "res5"
    # With MODEL.RESNETS.RES5_DILATION 2 (DC5), keep the first res5 block undilated as
    # torchvision (and so DETR's DC5 checkpoints) does; Detectron2 dilates every block.
    cfg.MODEL.DETR.TORCHVISION_DILATION = True
    # Run the wrapped backbone in channels-last (NHWC) memory format: the same values up to
    # float rounding; oneDNN's NHWC convolutions made one shapes training step 11% faster in a
    # direct A/B, not measurably in tools/benchmark.py (README, "The training step, profiled").
    # In R50 800x1066 inference (1 thread) the backbone takes 11% less time but the mask head,
    # fed channels-last features, 27% more: no gain in float32. With TEST.AMP_DTYPE bfloat16 it
    # is what makes oneDNN's bfloat16 convolutions fast (README, "Mixed precision on the CPU").
    # Checkpoints are the same either way.
    cfg.MODEL.DETR.CHANNELS_LAST = False
    # Path of a box-only checkpoint whose detector (backbone, transformer, class and box
    # heads) is loaded and frozen; only the mask head then trains (the paper's second stage).
    # Empty: nothing is frozen.
    cfg.MODEL.DETR.FROZEN_WEIGHTS = ""

    # Loss weights of the set criterion (paper values).
    cfg.MODEL.DETR.CLASS_WEIGHT = 1.0
    # Weight of the "no object" class in the classification cross-entropy.
    cfg.MODEL.DETR.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.DETR.L1_WEIGHT = 5.0
    cfg.MODEL.DETR.GIOU_WEIGHT = 2.0
    # Sigmoid focal loss on matched masks.
    cfg.MODEL.DETR.MASK_WEIGHT = 1.0
    cfg.MODEL.DETR.DICE_WEIGHT = 1.0
    cfg.MODEL.DETR.FOCAL_ALPHA = 0.25
    cfg.MODEL.DETR.FOCAL_GAMMA = 2.0
    # Costs of the Hungarian matcher (paper: class 1, L1 5, GIoU 2).
    cfg.MODEL.DETR.COST_CLASS = 1.0
    cfg.MODEL.DETR.COST_L1 = 5.0
    cfg.MODEL.DETR.COST_GIOU = 2.0

    cfg.MODEL.DETR.MASK_HEAD = CN()
    # Registered name in DETR_MASK_HEAD_REGISTRY of the head that turns box embeddings and
    # backbone features into per-query mask logits.
    cfg.MODEL.DETR.MASK_HEAD.NAME = "DetrMaskHead"
    # M, heads of the attention map of box embeddings over the encoded image.
    cfg.MODEL.DETR.MASK_HEAD.NHEADS = 8
    # Backbone outputs the FPN-style head adds back, coarse to fine; the output stride of
    # the mask logits is the stride of the last one.
    cfg.MODEL.DETR.MASK_HEAD.IN_FEATURES = ["res4", "res3", "res2"]
    # False: the head runs only on queries whose masks are used (matched queries in training,
    # queries kept for the requested outputs in inference); outputs are identical, except
    # that MODEL.DETR.TEST.MASK_SCORE_FLOOR limits the instance and semantic outputs.
    # True: it runs on all N queries, as the reference implementation does (exact mode).
    cfg.MODEL.DETR.MASK_HEAD.ALL_QUERIES = False

    cfg.MODEL.DETR.TEST = CN()
    # A query enters the panoptic output when its best class probability, "no object"
    # excluded, is above this (reference: 0.85).
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 0.85
    # Segments covering at most this many pixels are dropped, repeatedly, until none is
    # left (reference: 4).
    cfg.MODEL.DETR.TEST.SMALL_SEGMENT_AREA = 4
    # Which inference outputs to produce; each needs MODEL.MASK_ON except INSTANCES_ON,
    # which then gives boxes only.
    cfg.MODEL.DETR.TEST.PANOPTIC_ON = True
    # Things as Instances (pred_boxes, scores, pred_classes, pred_masks) for COCOEvaluator:
    # the queries predicting a thing class (at most TEST.DETECTIONS_PER_IMAGE, see
    # MASK_SCORE_FLOOR).
    cfg.MODEL.DETR.TEST.INSTANCES_ON = False
    # Per-class scores (C x H x W) for SemSegEvaluator: per class, the sum over queries of
    # p(class) x sigmoid(mask).
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = False
    # Which queries get a mask for INSTANCES_ON and SEMANTIC_ON, so that evaluation with
    # every output on stays fast: those whose score (best real-class probability) is at least
    # this. Detections (thing queries among the best TEST.DETECTIONS_PER_IMAGE) below it are
    # dropped, as with Detectron2's R-CNNs' SCORE_THRESH_TEST; semantic scores sum over the
    # queries at or above it, each query left out adding less than this to any class score
    # (it can only move the argmax where the two best classes are closer). 0: every query
    # (the exact mode, as MASK_HEAD.ALL_QUERIES True, which ignores this). Not applied to a
    # box-only model. On shapes_panoptic_val, 0.05 changes box AP, mask AP and mIoU by at
    # most 0.1 (README, "Evaluation with every output on").
    cfg.MODEL.DETR.TEST.MASK_SCORE_FLOOR = 0.05
    # Mixed precision for inference: "bfloat16" or "float16" run the backbone, transformer and
    # mask head under torch.autocast (mainly for GPUs); post-processing stays in float32.
    # "": full precision. (For training, SOLVER.AMP.ENABLED picks Detectron2's AMPTrainer.)
    cfg.MODEL.DETR.TEST.AMP_DTYPE = ""
    # Inference (eval mode, no autograd) folds the backbone's frozen BatchNorm into the
    # convolutions before it (modeling/batchnorm_folding.py): the same values up to float
    # rounding, 11% less backbone time in R50 800x1066 inference (README, "Performance").
    # Parameters, training and checkpoints keep the unfolded form.
    cfg.MODEL.DETR.TEST.FOLD_BATCHNORM = True

    # DETR's training augmentation: with probability CROP.PROB (ours), resize the shortest
    # edge to one of INPUT.DETR.CROP_PRE_RESIZE, crop with INPUT.CROP, then the usual
    # multi-scale resize (INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN).
    cfg.INPUT.DETR = CN()
    cfg.INPUT.DETR.CROP_PRE_RESIZE = [400, 500, 600]
    cfg.INPUT.CROP.PROB = 0.5

    # Training only: a sample whose files are unreadable or inconsistent is logged (with a
    # running count) and replaced by another instead of stopping the run. Evaluation never
    # skips samples.
    cfg.DATALOADER.SKIP_BAD_SAMPLES = False

    # Seeded runs (SEED >= 0) also ask PyTorch for deterministic algorithms; on the CPU two
    # runs then give identical losses. On CUDA some kernels have no deterministic version
    # (PyTorch warns, naming them); see README, "Determinism".
    cfg.DETERMINISTIC = False

    # AdamW with a lower learning rate for the backbone (paper: 1e-4 and 1e-5).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Backbone learning rate = BASE_LR * BACKBONE_MULTIPLIER.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    return cfg

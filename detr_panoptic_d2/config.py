"""Config keys of the DETR panoptic plugin: ``add_detr_panoptic_config(cfg)``.

Call it on a ``get_cfg()`` before ``merge_from_file``. Defaults reproduce the paper's R50
panoptic model (Carion et al., ECCV 2020, section 4.4) on COCO panoptic.
"""
import torch
from detectron2.config import CfgNode as CN

# Values of MODEL.DETR.TEST.AMP_DTYPE: the autocast dtype, None for full precision.
AMP_DTYPES = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_detr_panoptic_config(cfg):
    """Adds the MODEL.DETR, MODEL.RESNETS.BASIC_BLOCKS_PER_STAGE, INPUT.DETR, INPUT.CROP.PROB,
    DATALOADER.SKIP_BAD_SAMPLES, DATALOADER.CACHE_DECODED, DATASETS.REGISTER and SOLVER (SOLVER.EMA)
    keys this project reads to ``cfg``, in place, and returns it.

    Keys already there (another plugin's under MODEL.DETR, say) are kept; one that this
    project also defines must already hold the same default, else ValueError names it."""
    keys = CN()
    keys.MODEL = CN()
    keys.MODEL.DETR = CN()
    keys.INPUT = CN()
    keys.INPUT.CROP = CN()
    keys.DATALOADER = CN()
    keys.SOLVER = CN()
    keys.DATASETS = CN()
    # Number of classes, things and stuff together, in the dataset's contiguous ids
    # (COCO panoptic: 80 things + 53 stuff). The class head has NUM_CLASSES + 1 outputs,
    # the last one being "no object".
    keys.MODEL.DETR.NUM_CLASSES = 133
    # N, the number of object queries (box embeddings) the decoder produces.
    keys.MODEL.DETR.NUM_OBJECT_QUERIES = 100
    # d, the transformer width; also the channels of the encoded image.
    keys.MODEL.DETR.HIDDEN_DIM = 256
    # Attention heads of every encoder and decoder attention layer.
    keys.MODEL.DETR.NHEADS = 8
    # Hidden width of the transformer's feed-forward blocks.
    keys.MODEL.DETR.DIM_FEEDFORWARD = 2048
    keys.MODEL.DETR.ENC_LAYERS = 6
    keys.MODEL.DETR.DEC_LAYERS = 6
    # Dropout inside the transformer (attention weights, feed-forward, residuals).
    keys.MODEL.DETR.DROPOUT = 0.1
    # False: post-norm layers as in the paper; True: LayerNorm before each sub-layer.
    keys.MODEL.DETR.PRE_NORM = False
    # The decoder (step 4): "vanilla", DETR's (N learned queries of width d; the official and
    # HuggingFace checkpoints are of this kind), or "anchor", anchor-box queries refined at
    # every layer (DAB-DETR; modeling/anchor_transformer.py), which learns in fewer epochs, for
    # own data and short schedules; use it with MASK_HEAD.BOX_AWARE True. Checkpoints of one
    # kind do not load into the other.
    keys.MODEL.DETR.DECODER = "vanilla"
    # --- the anchor-box decoder (MODEL.DETR.DECODER "anchor") ---
    keys.MODEL.DETR.ANCHOR = CN()
    # DINO's look-forward-twice: a layer's output box keeps its gradient into the previous
    # layer's refinement (forward values unchanged); False: DAB-DETR's detached anchors.
    keys.MODEL.DETR.ANCHOR.LOOK_FORWARD_TWICE = False
    # Cross-attention modulated by the anchor's width and height (DAB-DETR); False: Conditional
    # DETR's unmodulated spatial query.
    keys.MODEL.DETR.ANCHOR.MODULATE_HW = True
    # DAB-DETR's variant with the anchors' centres drawn uniformly and frozen (widths and
    # heights learn): fewer parameters to learn on small data.
    keys.MODEL.DETR.ANCHOR.RANDOM_XY = False
    # --- end of the anchor-box decoder ---
    # Positional encoding of the grid the transformer reads: "sine" (paper, padding-aware) or
    # "learned" (module position_encoding, trained at BASE_LR; DETR's official code trains it
    # at the backbone's rate, its name being under backbone).
    keys.MODEL.DETR.POSITION_EMBEDDING = "sine"
    # Auxiliary losses on every decoder layer's output (paper: True).
    keys.MODEL.DETR.DEEP_SUPERVISION = True
    # Group DETR (Chen et al., ICCV 2023), training only: G > 1 runs G groups of
    # NUM_OBJECT_QUERIES queries through the decoder, self-attention confined to each group,
    # each group matched one-to-one to the targets and given every class and box loss
    # (averaged over groups). Inference runs the first group alone: the deployed model, its
    # speed and outputs are a plain DETR's, and a checkpoint trained with G loads into a
    # config with 1 (the extra groups' queries, group_query_embed, are then ignored).
    # 1: off (the paper's DETR). Not with FROZEN_WEIGHTS (the decoder does not train there).
    keys.MODEL.DETR.TRAIN_QUERY_GROUPS = 1
    # With TRAIN_QUERY_GROUPS > 1: False computes the mask losses on the first group's
    # matched queries only (the group that is deployed); True on every group's, G times the
    # mask head's training cost.
    keys.MODEL.DETR.MASK_LOSS_ALL_GROUPS = False
    # Training only: weight of a dense semantic loss on the encoded image (a 1x1 conv to
    # NUM_CLASSES logits per cell, cross-entropy against each cell's share of every class;
    # modeling/encoder_supervision.py), a denser signal than the matched queries' for the
    # backbone and encoder; 0: off (the paper's DETR). Inference never runs it, and a
    # checkpoint trained with it loads into a config with 0. Not with FROZEN_WEIGHTS.
    keys.MODEL.DETR.ENCODER_SEMANTIC_WEIGHT = 0.0
    # The backbone output the transformer reads (projected to HIDDEN_DIM by a 1x1 conv); the
    # backbone itself is MODEL.BACKBONE.NAME, any Detectron2 backbone. "": its coarsest output
    # (largest stride; of equal strides, the last in its output_shape(), so res5 of a DC5 ResNet).
    keys.MODEL.DETR.IN_FEATURE = ""
    # With MODEL.RESNETS.RES5_DILATION 2 (DC5), keep the first res5 block undilated as
    # torchvision (and so DETR's DC5 checkpoints) does; Detectron2 dilates every block. Applies
    # to every Detectron2 ResNet in the backbone (e.g. an FPN's bottom-up).
    keys.MODEL.DETR.TORCHVISION_DILATION = True
    # Run the backbone in channels-last (NHWC) memory format: the same values up to float
    # rounding. In float32 the mask head, fed channels-last features, loses what the backbone
    # gains; turn it on with TEST.AMP_DTYPE bfloat16 (fast bfloat16 convolutions need it) and
    # for small CPU trainings (docs/PERFORMANCE.md). Checkpoints are the same either way.
    keys.MODEL.DETR.CHANNELS_LAST = False
    # Path of a box-only checkpoint whose detector (backbone, transformer, class and box
    # heads) is loaded and frozen; only the mask head then trains (the paper's second stage).
    # Empty: nothing is frozen.
    keys.MODEL.DETR.FROZEN_WEIGHTS = ""
    # Seeded runs (SEED >= 0) also ask PyTorch for deterministic algorithms; on the CPU two
    # runs then give identical losses. On CUDA some kernels have no deterministic version
    # (PyTorch warns, naming them); see docs/RELIABILITY.md, "Determinism".
    keys.MODEL.DETR.DETERMINISTIC = False

    # Loss weights of the set criterion (paper values).
    keys.MODEL.DETR.CLASS_WEIGHT = 1.0
    # Weight of the "no object" class in the classification cross-entropy.
    keys.MODEL.DETR.NO_OBJECT_WEIGHT = 0.1
    keys.MODEL.DETR.L1_WEIGHT = 5.0
    keys.MODEL.DETR.GIOU_WEIGHT = 2.0
    # Sigmoid focal loss on matched masks.
    keys.MODEL.DETR.MASK_WEIGHT = 1.0
    keys.MODEL.DETR.DICE_WEIGHT = 1.0
    keys.MODEL.DETR.FOCAL_ALPHA = 0.25
    keys.MODEL.DETR.FOCAL_GAMMA = 2.0
    # Costs of the Hungarian matcher (paper: class 1, L1 5, GIoU 2).
    keys.MODEL.DETR.COST_CLASS = 1.0
    keys.MODEL.DETR.COST_L1 = 5.0
    keys.MODEL.DETR.COST_GIOU = 2.0

    keys.MODEL.DETR.MASK_HEAD = CN()
    # Registered name in DETR_MASK_HEAD_REGISTRY of the head that turns box embeddings and
    # backbone features into per-query mask logits.
    keys.MODEL.DETR.MASK_HEAD.NAME = "DetrMaskHead"
    # M, heads of the attention map of box embeddings over the encoded image.
    keys.MODEL.DETR.MASK_HEAD.NHEADS = 8
    # Backbone outputs DetrMaskHead's FPN-style head adds back, 3 of them, coarse to fine; the
    # output stride of the mask logits is the stride of the last one. []: the backbone's 3
    # finest outputs (res4, res3, res2 of a ResNet; p4, p3, p2 of an FPN or SimpleFeaturePyramid).
    keys.MODEL.DETR.MASK_HEAD.IN_FEATURES = []

    keys.MODEL.DETR.TEST = CN()
    # A query enters the panoptic output when its best class probability, "no object"
    # excluded, is above this (reference: 0.85).
    keys.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 0.85
    # Segments covering at most this many pixels are dropped, repeatedly, until none is
    # left (reference: 4).
    keys.MODEL.DETR.TEST.SMALL_SEGMENT_AREA = 4
    # Which inference outputs to produce; each needs MODEL.MASK_ON except INSTANCES_ON,
    # which then gives boxes only.
    keys.MODEL.DETR.TEST.PANOPTIC_ON = True
    # Things as Instances (pred_boxes, scores, pred_classes, pred_masks) for COCOEvaluator:
    # the queries predicting a thing class (at most TEST.DETECTIONS_PER_IMAGE, see
    # MASK_SCORE_FLOOR).
    keys.MODEL.DETR.TEST.INSTANCES_ON = False
    # Per-class scores (C x H x W) for SemSegEvaluator: per class, the sum over queries of
    # p(class) x sigmoid(mask).
    keys.MODEL.DETR.TEST.SEMANTIC_ON = False
    # Which queries get a mask for INSTANCES_ON and SEMANTIC_ON, so that evaluation with
    # every output on stays fast: those whose score (best real-class probability) is at least
    # this. Detections (thing queries among the best TEST.DETECTIONS_PER_IMAGE) below it are
    # dropped, as with Detectron2's R-CNNs' SCORE_THRESH_TEST; semantic scores sum over the
    # queries at or above it, each query left out adding less than this to any class score
    # (it can only move the argmax where the two best classes are closer). 0: every query
    # gets a mask (exact semantic scores and every detection, at a higher cost). Not applied
    # to a box-only model. Its effect on the metrics: docs/PERFORMANCE.md, "Evaluation with every
    # output on".
    keys.MODEL.DETR.TEST.MASK_SCORE_FLOOR = 0.05
    # Mixed precision for inference: "bfloat16" or "float16" run the backbone, transformer and
    # mask head under torch.autocast (mainly for GPUs); post-processing stays in float32.
    # "none": full precision. (For training, SOLVER.AMP.ENABLED picks Detectron2's AMPTrainer.)
    keys.MODEL.DETR.TEST.AMP_DTYPE = "none"
    # Inference (eval mode, no autograd) folds the backbone's frozen BatchNorm into the
    # convolutions before it (modeling/batchnorm_folding.py): the same values up to float
    # rounding, one pass less over every feature map. Parameters, training and checkpoints
    # keep the unfolded form. Turn it off to run the backbone's layers exactly as trained (a
    # backbone whose frozen statistics you edit between forwards, or a debugging comparison).
    keys.MODEL.DETR.TEST.FOLD_BATCHNORM = True

    # --- the BasicBlock ResNet of any width (MODEL.BACKBONE.NAME "build_basic_resnet_backbone",
    # modeling/narrow_resnet.py; a cheaper backbone for small data such as the shapes demo) ---
    # It reads MODEL.RESNETS.STEM_OUT_CHANNELS and RES2_OUT_CHANNELS (any width, doubled per
    # stage: 32 is half R18's), NORM and OUT_FEATURES, and these blocks per stage from res2 on
    # (R18: [2, 2, 2, 2]; stages after the last of OUT_FEATURES are not built).
    keys.MODEL.RESNETS = CN()
    keys.MODEL.RESNETS.BASIC_BLOCKS_PER_STAGE = [2, 2, 2, 2]
    # --- end of the BasicBlock ResNet ---

    # --- denoising queries (DN-DETR, Li et al., CVPR 2022), training only (modeling/denoising.py) ---
    # GROUPS D > 0: each ground-truth segment also enters the decoder D times as a query built
    # from its noised box and label, trained to give back its class and box without matching,
    # masked from the matching queries (which never see them) and from the other groups.
    # Inference never builds them (the deployed model is a plain DETR) and a checkpoint trained
    # with them loads into a config with 0. 0: off (DN-DETR: 5). Not with FROZEN_WEIGHTS.
    keys.MODEL.DETR.DN = CN()
    keys.MODEL.DETR.DN.GROUPS = 0
    # Probability that a denoising query's label is replaced by a random class (DN-DETR: 0.2).
    keys.MODEL.DETR.DN.LABEL_NOISE = 0.2
    # Box noise scale: the centre moves by up to this x half the box, width and height are
    # scaled by 1 +- this (DN-DETR: 0.4).
    keys.MODEL.DETR.DN.BOX_NOISE = 0.4
    # True adds DINO's contrastive negatives: per group a second copy of each segment noised
    # between BOX_NOISE and 2 BOX_NOISE, trained to say "no object" at full weight, against
    # duplicate detections (modeling/denoising.py).
    keys.MODEL.DETR.DN.NEGATIVES = False
    # --- end of denoising queries ---

    # --- the in-memory sample cache (data/dataset_mapper.py) ---
    # True: the dataset mapper keeps each file's decoded and checked image and panoptic PNG in
    # memory after its first use, so later epochs skip decoding; augmentations still run per
    # sample (the same samples as without it). About 6 bytes per training pixel per worker:
    # for small datasets seen many times (the shapes demo).
    keys.DATALOADER.CACHE_DECODED = False
    # --- end of the in-memory sample cache ---

    # --- the exponential moving average of the weights (engine/weight_averaging.py) ---
    # True: keep an EMA of every parameter and buffer during training; each evaluation also
    # runs on it (its metrics logged under "ema/", e.g. ema/panoptic_seg/PQ), checkpoints save
    # it (--resume restores it). Training itself is unchanged. Learning-rate schedules: warm-up
    # then cosine decay is Detectron2's SOLVER.LR_SCHEDULER_NAME "WarmupCosineLR".
    keys.SOLVER.EMA = CN()
    keys.SOLVER.EMA.ENABLED = False
    # Per step: average = DECAY x average + (1 - DECAY) x weights (about the last
    # 1 / (1 - DECAY) steps).
    keys.SOLVER.EMA.DECAY = 0.999
    # With ENABLED: model_final.pth holds the averaged weights as its "model" (what evaluation,
    # the demo and the exporter load) and the raw ones as "raw_model"; False: the raw weights.
    keys.SOLVER.EMA.DEPLOY = True
    # --- end of the exponential moving average ---

    # --- the panoptic merge rule (step 8) ---
    # "reference": DETR's rule, per pixel the argmax of the kept queries' mask logits, stuff of
    # one class merged, small segments dropped and their pixels given to the next best query
    # (what converted official checkpoints were trained for; the COCO configs' rule).
    # "score_weighted": Mask2Former's rule, per pixel the argmax of score x sigmoid(mask), a
    # pixel kept only where its winner's sigmoid reaches MERGE_MASK_THRESHOLD, a query dropped
    # when it wins less than MERGE_OVERLAP_THRESHOLD of its own mask; fewer duplicate and weak
    # segments (modeling/score_weighted_merge.py). The exported model merges by the same rule.
    keys.MODEL.DETR.TEST.MERGE = "reference"
    # "score_weighted" only: the sigmoid a pixel's winner needs for the pixel to be its.
    keys.MODEL.DETR.TEST.MERGE_MASK_THRESHOLD = 0.5
    # "score_weighted" only: the fraction of a query's own mask (sigmoid >= MERGE_MASK_THRESHOLD)
    # it must win in the argmax (Mask2Former's ratio), else it is dropped and its pixels are void.
    keys.MODEL.DETR.TEST.MERGE_OVERLAP_THRESHOLD = 0.8
    # "score_weighted" only: True gives a stuff segment the pixels it wins below
    # MERGE_MASK_THRESHOLD (stuff regions do not lose pixels to void); False leaves them void.
    keys.MODEL.DETR.TEST.MERGE_STUFF_FILLS_VOID = True
    # --- end of the panoptic merge rule ---

    # --- the box-aware attention map (modeling/box_attention_map.py) ---
    # True: DetrMaskHead's attention map also reads each object's final box and the grid's
    # positional encoding (per head [content, sine code of the box centre] against [memory,
    # pixel position]), for anchor-box decoders, whose box embeddings encode offsets from
    # their anchors rather than absolute positions. False: DETR's map (content only).
    keys.MODEL.DETR.MASK_HEAD.BOX_AWARE = False
    # --- end of the box-aware attention map ---

    # DETR's training augmentation: with probability CROP.PROB (ours), resize the shortest
    # edge to one of INPUT.DETR.CROP_PRE_RESIZE, crop with INPUT.CROP, then the usual
    # multi-scale resize (INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN).
    keys.INPUT.DETR = CN()
    keys.INPUT.DETR.CROP_PRE_RESIZE = [400, 500, 600]
    keys.INPUT.CROP.PROB = 0.5

    # Training only: a sample whose files are unreadable or inconsistent is logged (with a
    # running count) and replaced by another instead of stopping the run. Evaluation never
    # skips samples.
    keys.DATALOADER.SKIP_BAD_SAMPLES = False

    # AdamW with a lower learning rate for the backbone (paper: 1e-4 and 1e-5).
    keys.SOLVER.OPTIMIZER = "ADAMW"
    # Backbone learning rate = BASE_LR * BACKBONE_MULTIPLIER.
    keys.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Datasets on disk, registered by every tool on start-up (data/user_datasets.py): a list of
    # COCO-panoptic splits, each {"name": ..., "json": panoptic JSON, "image_dir": ..., "png_dir":
    # panoptic PNGs, "sem_seg_dir": semantic PNGs for mIoU, optional}; name them in DATASETS.TRAIN
    # and TEST. --register NAME JSON IMAGE_DIR PNG_DIR appends one, so the config.yaml a run saves
    # in OUTPUT_DIR is all later tools need.
    keys.DATASETS.REGISTER = []

    _add_keys(cfg, keys, "")
    return cfg


def _add_keys(cfg, keys, prefix):
    """Copies the keys of the CfgNode ``keys`` missing from ``cfg`` into it, recursively;
    raises ValueError for a key of both with different values (or a node in one and a value
    in the other)."""
    for name, value in keys.items():
        full = prefix + name
        if name not in cfg:
            cfg[name] = value
        elif isinstance(value, CN) and isinstance(cfg[name], CN):
            _add_keys(cfg[name], value, full + ".")
        elif cfg[name] != value:
            raise ValueError(
                f"add_detr_panoptic_config: {full} is already in the config as {cfg[name]!r} (added by "
                f"another plugin?); DETR panoptic defines it as {value!r}. Add DETR panoptic's keys to a "
                "config without that plugin's."
            )

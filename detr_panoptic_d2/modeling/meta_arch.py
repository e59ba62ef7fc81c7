"""``DetrPanoptic``: DETR's panoptic segmentation (Carion et al., ECCV 2020) as a Detectron2
meta-architecture. A batch of images goes, in ``forward``, through:

1. ``backbone``: any Detectron2 ``Backbone``, a dict of feature maps (res2..res5 for a ResNet);
   the transformer reads one level, ``in_feature`` (by default the coarsest: res5, stride 32),
   and the batch's padding mask is downsampled to it;
2. ``input_proj``: 1x1 conv of that level to the transformer width d (``prediction_heads``), and
   ``position_encoding``, one d-dimensional code per cell of its grid;
3. ``transformer.encoder``: the **encoded image** (memory), d x h x w (in training, optionally
   also supervised densely: ``encoder_supervision``);
4. ``transformer.decoder``: N **box embeddings** (one per object query), at every layer (in
   training with query groups, G x N: Group DETR, each group matched and supervised alone);
5. ``class_embed`` (K+1 logits) and ``bbox_embed`` (normalized cx, cy, w, h), from
   ``prediction_heads``; inference keeps the queries whose best class is a real one with
   probability above a threshold;
6. ``mask_head``, first part: M **attention maps** per kept box embedding over the encoded image;
7. ``mask_head``, second part: an FPN-style head adding back finer backbone levels -> **mask
   logits** (stride 4 for a ResNet), only for the queries whose masks are used;
8. ``postprocessing``: per pixel, argmax over the kept queries' masks -> the panoptic map.

``detect`` runs steps 1-5, ``segment`` steps 6-7, ``inference`` step 8 (and the instance and
semantic outputs); ``inference_steps`` returns what every step produced, per image.
"""
import functools
from typing import List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import ImageList
from torch import nn
from torchvision.ops import box_convert

from ..data.validation import config_thing_ids
from . import postprocessing, precision
from .backbone import downsample_mask, levels_fine_to_coarse, torchvision_dilation
from .batchnorm_folding import folded_batchnorm
from .criterion import SetCriterion
from .denoising import DenoisingQueries
from .detector_weights import drop_unused_training_weights, freeze_detector, keep_detector_in_eval
from .encoder_supervision import EncoderSemanticLoss
from .mask_head import build_mask_head
from .matcher import HungarianMatcher
from .outputs import DetrOutputs, ImageSteps
from .position_encoding import PositionEmbeddingSine, build_position_encoding
from .prediction_heads import box_head, class_head, classes_and_boxes, input_projection
from .transformer import Transformer


@META_ARCH_REGISTRY.register()
class DetrPanoptic(nn.Module):
    """DETR panoptic segmentation; see the module docstring for the steps. Built from a yacs
    config (``build_model(cfg)``) or directly from its parts (arguments below)."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        transformer: Transformer,
        num_classes: int,
        num_queries: int,
        criterion: SetCriterion,
        pixel_mean,
        pixel_std,
        in_feature="",
        position_encoding: Optional[nn.Module] = None,
        mask_head=None,
        channels_last=False,
        train_query_groups=1,
        encoder_semantic_weight=0.0,
        denoising_groups=0,
        denoising_label_noise=0.2,
        denoising_box_noise=0.4,
        frozen_weights="",
        all_queries=False,
        thing_ids=None,
        object_score_thresh=0.85,
        small_segment_area=4,
        merge="reference",
        merge_mask_threshold=0.5,
        merge_overlap_threshold=0.8,
        merge_stuff_fills_void=True,
        panoptic_on=True,
        instances_on=False,
        semantic_on=False,
        detections_per_image=100,
        mask_score_floor=0.05,
        amp_dtype="none",
        cpu_training_amp=False,
        fold_batchnorm=True,
    ):
        """
        Args:
            backbone: any Detectron2 Backbone (``forward(x)`` -> dict of B x C x H/s x W/s maps,
                ``output_shape()``), built from MODEL.BACKBONE.NAME.
            transformer: the encoder-decoder; its ``d_model`` is the width d everywhere.
            num_classes: K, things and stuff (MODEL.DETR.NUM_CLASSES); the class head has K+1
                outputs, the last being "no object".
            num_queries: N, object queries (MODEL.DETR.NUM_OBJECT_QUERIES).
            criterion: the SetCriterion giving every training loss (matching, deep supervision,
                query groups, mask losses of the matched queries).
            pixel_mean, pixel_std: per-channel normalization of the input images
                (MODEL.PIXEL_MEAN, MODEL.PIXEL_STD).
            in_feature: the backbone output the transformer reads (MODEL.DETR.IN_FEATURE); "":
                the coarsest (largest stride; of equal strides the last in ``output_shape()``).
            position_encoding: module turning a B x h x w padding mask into B x d x h x w codes
                (MODEL.DETR.POSITION_EMBEDDING); None: DETR's sine encoding.
            mask_head: a head as described in DETR_MASK_HEAD_REGISTRY, or a function building
                one from the backbone's ``output_shape()`` (``DetrMaskHead.builder(...)``, what
                the LazyConfigs give, so that a swapped backbone needs no other change), or None
                for a box-only model (MODEL.MASK_ON).
            channels_last: run the backbone in channels-last memory format
                (MODEL.DETR.CHANNELS_LAST); the same values up to float rounding.
            train_query_groups: G, query groups in training (MODEL.DETR.TRAIN_QUERY_GROUPS);
                the criterion matches and supervises each group on its own.
            encoder_semantic_weight: weight of the training-only dense semantic loss on the
                encoded image, 0 = none (MODEL.DETR.ENCODER_SEMANTIC_WEIGHT;
                encoder_supervision.py).
            denoising_groups, denoising_label_noise, denoising_box_noise: training-only
                denoising queries (DN-DETR; MODEL.DETR.DN.GROUPS, LABEL_NOISE, BOX_NOISE;
                modeling/denoising.py); 0 groups: none.
            frozen_weights: a box-only checkpoint whose detector is loaded and frozen, so that
                only the mask head trains (MODEL.DETR.FROZEN_WEIGHTS); "": none.
            all_queries: run the mask head on every query (MODEL.DETR.MASK_HEAD.ALL_QUERIES).
            thing_ids: contiguous ids of the thing classes, None when unknown (then panoptic
                and instance inference refuse to run); from the dataset metadata in yaml.
            object_score_thresh, small_segment_area, panoptic_on, instances_on, semantic_on,
                mask_score_floor, amp_dtype: inference settings, MODEL.DETR.TEST.* of the same
                names (see detr_panoptic_d2/config.py).
            merge, merge_mask_threshold, merge_overlap_threshold, merge_stuff_fills_void: the
                panoptic merge rule and its settings (MODEL.DETR.TEST.MERGE*;
                postprocessing.panoptic_merge).
            detections_per_image: most instances per image (TEST.DETECTIONS_PER_IMAGE).
            cpu_training_amp: on the CPU, train under bfloat16 autocast (SOLVER.AMP.ENABLED;
                see ``training_autocast``).
            fold_batchnorm: at inference, run the backbone with its frozen BatchNorm folded into
                the convolutions (MODEL.DETR.TEST.FOLD_BATCHNORM; modeling/batchnorm_folding.py).
        """
        super().__init__()
        if criterion.num_classes != num_classes:
            raise ValueError(
                f"criterion.num_classes={criterion.num_classes} differs from num_classes={num_classes} "
                "(MODEL.DETR.NUM_CLASSES)"
            )
        hidden_dim = transformer.d_model
        self.backbone = backbone
        shapes = backbone.output_shape()
        self.in_feature = in_feature or levels_fine_to_coarse(shapes)[-1]
        if self.in_feature not in shapes:
            raise ValueError(
                f"in_feature={in_feature!r} (MODEL.DETR.IN_FEATURE) is not an output of the backbone; its "
                f"outputs and strides: { {name: shape.stride for name, shape in shapes.items()} }"
            )
        self.channels_last = channels_last
        if channels_last:
            precision.channels_last(backbone)
        self.position_encoding = position_encoding or PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.input_proj = input_projection(shapes[self.in_feature].channels, hidden_dim)
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if train_query_groups < 1:
            raise ValueError(f"train_query_groups (MODEL.DETR.TRAIN_QUERY_GROUPS) must be >= 1, got {train_query_groups}")
        if train_query_groups > 1 and frozen_weights:
            raise ValueError(
                "train_query_groups > 1 with frozen_weights (MODEL.DETR.TRAIN_QUERY_GROUPS, FROZEN_WEIGHTS): "
                "query groups train the decoder, which a frozen detector does not; use 1 group for the mask stage"
            )
        # Object queries of groups 2..G, used in training only (Group DETR): inference, the
        # converters and the exporter see query_embed alone, DETR's layout.
        self.group_query_embed = (
            nn.Embedding((train_query_groups - 1) * num_queries, hidden_dim) if train_query_groups > 1 else None
        )
        if encoder_semantic_weight and frozen_weights:
            raise ValueError(
                "encoder_semantic_weight > 0 with frozen_weights (MODEL.DETR.ENCODER_SEMANTIC_WEIGHT, FROZEN_WEIGHTS): "
                "the loss trains the encoder, which a frozen detector does not; set it to 0 for the mask stage"
            )
        # Training only, as the query groups: inference never runs it.
        self.encoder_semantic = (
            EncoderSemanticLoss(hidden_dim, num_classes, encoder_semantic_weight) if encoder_semantic_weight else None
        )
        if denoising_groups and frozen_weights:
            raise ValueError(
                "denoising_groups > 0 with frozen_weights (MODEL.DETR.DN.GROUPS, FROZEN_WEIGHTS): denoising queries "
                "train the decoder, which a frozen detector does not; set MODEL.DETR.DN.GROUPS 0 for the mask stage"
            )
        # Training only, as the query groups: inference never builds denoising queries.
        self.denoising = (
            DenoisingQueries(hidden_dim, num_classes, denoising_groups, denoising_label_noise, denoising_box_noise)
            if denoising_groups
            else None
        )
        self.register_load_state_dict_pre_hook(drop_unused_training_weights)
        self.class_embed = class_head(hidden_dim, num_classes)
        self.bbox_embed = box_head(hidden_dim)
        if mask_head is not None and not isinstance(mask_head, nn.Module):
            mask_head = mask_head(shapes)
        self.mask_head = mask_head
        self.criterion = criterion
        self.num_classes = num_classes
        self.all_queries = all_queries
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        is_thing = torch.zeros(num_classes, dtype=torch.bool)
        if thing_ids is not None:
            is_thing[list(thing_ids)] = True
        self.register_buffer("is_thing", is_thing, False)
        self.has_class_metadata = thing_ids is not None
        if small_segment_area < 0:
            raise ValueError(
                f"small_segment_area (MODEL.DETR.TEST.SMALL_SEGMENT_AREA) must be >= 0, got {small_segment_area}"
            )
        if mask_head is None and (panoptic_on or semantic_on):
            raise ValueError(
                "panoptic_on and semantic_on (MODEL.DETR.TEST.PANOPTIC_ON, SEMANTIC_ON) need masks: give a "
                "mask_head (MODEL.MASK_ON True), or turn them off for a box-only model"
            )
        postprocessing.check_merge_rule(merge, merge_mask_threshold, merge_overlap_threshold)
        self.merge = {
            "rule": merge,
            "mask_threshold": merge_mask_threshold,
            "overlap_threshold": merge_overlap_threshold,
            "stuff_fills_void": merge_stuff_fills_void,
        }
        self.object_score_thresh = object_score_thresh
        self.small_segment_area = small_segment_area
        self.panoptic_on = panoptic_on
        self.instances_on = instances_on
        self.semantic_on = semantic_on
        self.detections_per_image = detections_per_image
        if not 0.0 <= mask_score_floor <= 1.0:
            raise ValueError(
                f"mask_score_floor (MODEL.DETR.TEST.MASK_SCORE_FLOOR) must be in [0, 1], got {mask_score_floor}"
            )
        self.mask_score_floor = mask_score_floor
        self.amp_dtype = precision.amp_dtype(amp_dtype)
        self.cpu_training_amp = cpu_training_amp
        self.fold_batchnorm = fold_batchnorm
        self.frozen_detector = bool(frozen_weights)
        if self.frozen_detector:
            freeze_detector(self, frozen_weights)

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        backbone = build_backbone(cfg)
        if d.TORCHVISION_DILATION:
            torchvision_dilation(backbone)
        matcher = HungarianMatcher(d.COST_CLASS, d.COST_L1, d.COST_GIOU)
        criterion = SetCriterion(
            d.NUM_CLASSES,
            matcher,
            class_weight=d.CLASS_WEIGHT,
            no_object_weight=d.NO_OBJECT_WEIGHT,
            l1_weight=d.L1_WEIGHT,
            giou_weight=d.GIOU_WEIGHT,
            mask_weight=d.MASK_WEIGHT,
            dice_weight=d.DICE_WEIGHT,
            focal_alpha=d.FOCAL_ALPHA,
            focal_gamma=d.FOCAL_GAMMA,
            deep_supervision=d.DEEP_SUPERVISION,
            mask_loss_all_groups=d.MASK_LOSS_ALL_GROUPS,
        )
        transformer = Transformer(
            d_model=d.HIDDEN_DIM,
            nhead=d.NHEADS,
            num_encoder_layers=d.ENC_LAYERS,
            num_decoder_layers=d.DEC_LAYERS,
            dim_feedforward=d.DIM_FEEDFORWARD,
            dropout=d.DROPOUT,
            pre_norm=d.PRE_NORM,
        )
        return {
            "backbone": backbone,
            "transformer": transformer,
            "num_classes": d.NUM_CLASSES,
            "num_queries": d.NUM_OBJECT_QUERIES,
            "criterion": criterion,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "in_feature": d.IN_FEATURE,
            "position_encoding": build_position_encoding(d.POSITION_EMBEDDING, d.HIDDEN_DIM),
            "mask_head": build_mask_head(cfg, backbone.output_shape()) if cfg.MODEL.MASK_ON else None,
            "channels_last": d.CHANNELS_LAST,
            "train_query_groups": d.TRAIN_QUERY_GROUPS,
            "encoder_semantic_weight": d.ENCODER_SEMANTIC_WEIGHT,
            "denoising_groups": d.DN.GROUPS,
            "denoising_label_noise": d.DN.LABEL_NOISE,
            "denoising_box_noise": d.DN.BOX_NOISE,
            "frozen_weights": d.FROZEN_WEIGHTS,
            "all_queries": d.MASK_HEAD.ALL_QUERIES,
            "thing_ids": config_thing_ids(cfg),
            "object_score_thresh": d.TEST.OBJECT_SCORE_THRESH,
            "small_segment_area": d.TEST.SMALL_SEGMENT_AREA,
            "merge": d.TEST.MERGE,
            "merge_mask_threshold": d.TEST.MERGE_MASK_THRESHOLD,
            "merge_overlap_threshold": d.TEST.MERGE_OVERLAP_THRESHOLD,
            "merge_stuff_fills_void": d.TEST.MERGE_STUFF_FILLS_VOID,
            "panoptic_on": d.TEST.PANOPTIC_ON,
            "instances_on": d.TEST.INSTANCES_ON,
            "semantic_on": d.TEST.SEMANTIC_ON,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "mask_score_floor": d.TEST.MASK_SCORE_FLOOR,
            "amp_dtype": d.TEST.AMP_DTYPE,
            "cpu_training_amp": cfg.SOLVER.AMP.ENABLED,
            "fold_batchnorm": d.TEST.FOLD_BATCHNORM,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def train(self, mode=True):
        """As nn.Module.train; a frozen detector stays in eval mode (detector_weights.keep_detector_in_eval)."""
        super().train(mode)
        if self.frozen_detector:
            keep_detector_in_eval(self)
        return self

    def normalize(self, image):
        """C x H x W image (INPUT.FORMAT, any dtype) -> float32 on the model's device, normalized
        by MODEL.PIXEL_MEAN and PIXEL_STD."""
        return (image.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std

    def preprocess_image(self, batched_inputs):
        """Normalizes and pads the images. Returns (ImageList, padding mask B x H x W bool)."""
        images = [self.normalize(x["image"]) for x in batched_inputs]
        images = ImageList.from_tensors(
            images, self.backbone.size_divisibility, padding_constraints=self.backbone.padding_constraints
        )
        mask = torch.ones(images.tensor.shape[0], *images.tensor.shape[-2:], dtype=torch.bool, device=self.device)
        for m, (h, w) in zip(mask, images.image_sizes):
            m[:h, :w] = False
        return images, mask

    def object_queries(self):
        """The decoder's object queries, G*N x d: query_embed (N x d), followed in training with
        TRAIN_QUERY_GROUPS G > 1 by the queries of groups 2..G."""
        if self.training and self.group_query_embed is not None:
            return torch.cat([self.query_embed.weight, self.group_query_embed.weight])
        return self.query_embed.weight

    def detect(self, images, padding_mask, denoising=None):
        """Steps 1-5. images: B x 3 x H x W normalized; padding_mask: B x H x W bool (True =
        padding), None when nothing is padded; denoising: in training, (position, content, D)
        of denoising queries decoded beside the others (``DenoisingQueries``), or None.
        Returns DetrOutputs with G*N queries (G = 1 in inference), the denoising queries' class
        logits and boxes apart."""
        if self.channels_last:
            images = precision.channels_last(images)
        with folded_batchnorm(self.backbone, self.fold_batchnorm):  # inference only, see its module
            features = self.backbone(images)
        x = features[self.in_feature]
        if padding_mask is None:
            memory_mask = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.bool, device=x.device)
        else:
            memory_mask = downsample_mask(padding_mask, x.shape[-2:])
        pos = self.position_encoding(memory_mask)  # float32; under autocast, ops cast it as they need
        projected = self.input_proj(x)
        queries = self.object_queries()
        groups = len(queries) // self.query_embed.num_embeddings
        with precision.float32_on_cpu(projected):
            box_embeddings, memory = self.transformer(projected.float(), memory_mask, queries, pos, groups, denoising)
            logits, boxes = classes_and_boxes(self.class_embed, self.bbox_embed, box_embeddings)
        dn_logits = dn_boxes = None
        if denoising is not None:
            n = len(queries)
            box_embeddings, dn_logits, dn_boxes = box_embeddings[:, :, :n], logits[:, :, n:], boxes[:, :, n:]
            logits, boxes = logits[:, :, :n], boxes[:, :, :n]
        return DetrOutputs(
            logits=logits,
            boxes=boxes,
            box_embeddings=box_embeddings,
            memory=memory,
            memory_mask=memory_mask,
            projected=projected,
            features=features,
            denoising_logits=dn_logits,
            denoising_boxes=dn_boxes,
        )

    def segment(self, out: DetrOutputs, batch_idx, query_idx):
        """Steps 6-7 for the given (image, query) pairs (T long each): T x H/s x W/s mask
        logits, s = ``mask_head.stride``."""
        return self.segment_with_attention(out, batch_idx, query_idx)[0]

    def segment_with_attention(self, out: DetrOutputs, batch_idx, query_idx):
        """As ``segment``, returning the mask head's (mask logits, attention maps T x M x h x w or
        None), see DETR_MASK_HEAD_REGISTRY.

        With MODEL.DETR.MASK_HEAD.ALL_QUERIES the head runs on every query, as the reference
        does, and the requested rows are picked from that (same values)."""
        embeddings = out.box_embeddings[-1]
        grids = (out.memory, out.memory_mask, out.projected, out.features)
        if self.all_queries:
            b, n = embeddings.shape[:2]
            every = torch.arange(b, device=embeddings.device).repeat_interleave(n)
            masks, maps = self.mask_head(embeddings.flatten(0, 1), every, *grids)
            rows = batch_idx * n + query_idx
            return masks[rows], None if maps is None else maps[rows]
        return self.mask_head(embeddings[batch_idx, query_idx], batch_idx, *grids)

    def forward(self, batched_inputs: List[dict]):
        """batched_inputs: Detectron2 dicts with "image" (C x H x W, INPUT.FORMAT), "height",
        "width", and in training "instances" (gt_classes, gt_boxes, gt_masks).

        Training: returns the weighted loss dict. Inference: a list with, per image, the outputs
        turned on by MODEL.DETR.TEST.*_ON: "panoptic_seg" (H x W int32, segments_info),
        "instances" and "sem_seg" (K x H x W), all in the original "height" x "width".
        """
        images, padding_mask = self.preprocess_image(batched_inputs)
        if self.training:
            return self.losses(batched_inputs, images, padding_mask)
        with self.inference_autocast():
            out = self.detect(images.tensor, padding_mask)
        return self.inference(batched_inputs, images, out)

    def inference_autocast(self):
        """Inference's autocast (MODEL.DETR.TEST.AMP_DTYPE), see modeling/precision.py."""
        return precision.inference_autocast(self.device, self.amp_dtype)

    def training_autocast(self):
        """A training step's autocast (CPU bfloat16 with SOLVER.AMP.ENABLED), see modeling/precision.py."""
        return precision.training_autocast(self.device, self.cpu_training_amp)

    def losses(self, batched_inputs, images, padding_mask):
        """The weighted loss dict of a batch (``criterion``, see SetCriterion.forward): steps
        1-5 on every query, the mask head (steps 6-7) on the matched ones."""
        targets = self.prepare_targets(batched_inputs, images)
        denoising = None if self.denoising is None else self.denoising(targets)
        with torch.set_grad_enabled(not self.frozen_detector), self.training_autocast():
            out = self.detect(images.tensor, padding_mask, None if denoising is None else (*denoising[:2], self.denoising.groups))
        outputs = {
            "pred_logits": out.logits,
            "pred_boxes": out.boxes,
            "query_groups": out.logits.shape[2] // self.query_embed.num_embeddings,
            "pred_masks": None if self.mask_head is None else functools.partial(self._training_masks, out),
            "encoder_semantic": None
            if self.encoder_semantic is None
            else functools.partial(self.encoder_semantic, out.memory, out.memory_mask),
        }
        if denoising is not None:
            outputs["assigned"] = {
                "dn": {
                    "pred_logits": out.denoising_logits,
                    "pred_boxes": out.denoising_boxes,
                    "indices": denoising[3],
                    "normalizer": self.denoising.groups,
                }
            }
        return self.criterion(outputs, targets, detector_losses=not self.frozen_detector)

    def _training_masks(self, out, batch_idx, query_idx):
        """Mask logits (float32) of the (image, query) pairs the criterion supervises."""
        with self.training_autocast():
            return self.segment(out, batch_idx.to(self.device), query_idx.to(self.device)).float()

    def prepare_targets(self, batched_inputs, images):
        """Per image: "labels" (n), "boxes" (n x 4 cxcywh normalized by the image size) and
        "masks" (n x H x W bool, padded to the batch size)."""
        targets = []
        padded = images.tensor.shape[-2:]
        for x, (h, w) in zip(batched_inputs, images.image_sizes):
            inst = x["instances"].to(self.device)
            boxes = box_convert(inst.gt_boxes.tensor, "xyxy", "cxcywh") / inst.gt_boxes.tensor.new_tensor([w, h, w, h])
            masks = inst.gt_masks.tensor if hasattr(inst.gt_masks, "tensor") else inst.gt_masks
            masks = F.pad(masks.to(torch.bool), (0, padded[1] - masks.shape[-1], 0, padded[0] - masks.shape[-2]))
            targets.append({"labels": inst.gt_classes, "boxes": boxes, "masks": masks})
        return targets

    @torch.no_grad()
    def inference(self, batched_inputs, images, out: DetrOutputs):
        """Detectron2's outputs per image, from ``image_steps``: the "panoptic_seg",
        "instances" and "sem_seg" that MODEL.DETR.TEST.*_ON turn on."""
        outputs = ("panoptic_seg", self.panoptic_on), ("instances", self.instances_on), ("sem_seg", self.semantic_on)
        steps = self.image_steps(batched_inputs, images, out, self.panoptic_on)
        return [{name: getattr(s, name) for name, on in outputs if on} for s in steps]

    @torch.no_grad()
    def inference_steps(self, batched_inputs: List[dict]) -> List[ImageSteps]:
        """The public view of every step: inference on ``batched_inputs`` (as ``forward`` takes
        them, model in eval mode), returning per image an ImageSteps (``image_steps``), with
        the panoptic output whenever the model has a mask head; equal to ``forward``'s."""
        if self.training:
            raise RuntimeError("DetrPanoptic.inference_steps runs inference: call model.eval() first")
        images, padding_mask = self.preprocess_image(batched_inputs)
        with self.inference_autocast():
            out = self.detect(images.tensor, padding_mask)
        return self.image_steps(batched_inputs, images, out, panoptic=self.mask_head is not None)

    def image_steps(self, batched_inputs, images, out: DetrOutputs, panoptic) -> List[ImageSteps]:
        """The inference core: from steps 1-5 (``out``) to every result, per image.

        Selects the queries of each output on the last decoder layer (``panoptic``: the kept
        ones, for the panoptic output; with MODEL.DETR.TEST.INSTANCES_ON / SEMANTIC_ON the
        detections and the queries summed into semantic scores, the last two limited by
        MODEL.DETR.TEST.MASK_SCORE_FLOOR, not applied with ALL_QUERIES, the exact mode, nor to
        a box-only model), runs the mask head once on the queries some output uses (steps 6-7)
        and merges them (step 8). Returns an ImageSteps per image."""
        if (panoptic and self.mask_head is not None) or self.instances_on:
            self._require_thing_ids()
        logits, boxes = self._last_layer(batched_inputs, out)
        floor = 0.0 if self.all_queries or self.mask_head is None else self.mask_score_floor
        kept = [postprocessing.select_queries(lg, self.object_score_thresh) for lg in logits]
        detections = semantic = None
        if self.instances_on:
            detections = [
                postprocessing.instance_queries(lg, self.is_thing, self.detections_per_image, floor) for lg in logits
            ]
        if self.semantic_on:
            semantic = [postprocessing.semantic_queries(lg, floor) for lg in logits]
        needed = self._queries_needing_masks(kept, detections, semantic, panoptic)
        mask_logits = attention_maps = [None] * len(kept)
        if self.mask_head is not None:
            mask_logits, attention_maps = self._masks_for_inference(out, needed)
        stride = self.mask_head.stride if self.mask_head is not None else None
        steps = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            output_size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            h, w = out.memory.shape[-2:]
            if out.memory_mask is not None:
                valid = ~out.memory_mask[i]
                h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
            keep, scores, classes = kept[i]
            queries = keep.nonzero()[:, 0]
            rows = needed[i].cumsum(0) - 1  # query -> its row in mask_logits[i]
            masks = maps = valid_masks = panoptic_seg = instances = sem_seg = None
            if mask_logits[i] is not None and panoptic:
                masks = mask_logits[i][rows[queries]]
                maps = None if attention_maps[i] is None else attention_maps[i][rows[queries]][:, :, :h, :w]
                cells = postprocessing.image_cells(image_size, stride)
                valid_masks = masks[:, : cells[0], : cells[1]]
                panoptic_seg = postprocessing.panoptic_merge(
                    masks, scores[queries], classes[queries], self.is_thing, image_size, output_size,
                    self.small_segment_area, stride, **self.merge,
                )
            if self.instances_on:
                det_masks = None if mask_logits[i] is None else mask_logits[i][rows[detections[i][0]]]
                instances = postprocessing.instance_results(
                    detections[i], boxes[i], det_masks, image_size, output_size, stride
                )
            if self.semantic_on:
                sem = semantic[i]
                sem_seg = postprocessing.semantic_results(
                    logits[i][sem], mask_logits[i][rows[sem]], image_size, output_size, stride
                )
            steps.append(
                ImageSteps(
                    image_size=tuple(image_size),
                    output_size=output_size,
                    encoded=out.memory[i, :, :h, :w].float(),
                    box_embeddings=out.box_embeddings[-1, i].float(),
                    class_logits=logits[i],
                    boxes=boxes[i],
                    queries=queries,
                    classes=classes[queries],
                    scores=scores[queries],
                    attention_maps=maps,
                    mask_logits=valid_masks,
                    mask_stride=stride,
                    panoptic_seg=panoptic_seg,
                    instances=instances,
                    sem_seg=sem_seg,
                )
            )
        return steps

    def _queries_needing_masks(self, kept, detections, semantic, panoptic):
        """Per image, N bool: the queries whose masks an output uses (``kept``: select_queries'
        results, used by the panoptic output when ``panoptic``; ``detections``:
        instance_queries' results, or None; ``semantic``: semantic_queries' results, or None)."""
        needed = []
        for i, (keep, _, _) in enumerate(kept):
            use = keep.clone() if panoptic else torch.zeros_like(keep)  # no Tensor & bool: fvcore traces this
            if detections is not None:
                use[detections[i][0]] = True
            if semantic is not None:
                use |= semantic[i]
            needed.append(use)
        return needed

    def _masks_for_inference(self, out, needed):
        """Mask logits (T_i x H/4 x W/4) and attention maps (T_i x M x h x w, or None) per
        image, float32, of the queries marked in ``needed`` (B bool tensors of N), in query
        order."""
        needed = torch.stack(needed)
        counts = needed.sum(1).tolist()
        with self.inference_autocast():
            masks, maps = self.segment_with_attention(out, *needed.nonzero(as_tuple=True))
        maps = [None] * len(counts) if maps is None else maps.float().split(counts)
        return masks.float().split(counts), maps

    def _require_thing_ids(self):
        if not self.has_class_metadata:
            raise ValueError(
                "Panoptic and instance outputs need to know which classes are things: set DATASETS.TEST "
                "(or DATASETS.TRAIN) to a registered panoptic dataset, or pass thing_ids to DetrPanoptic"
            )

    def _last_layer(self, batched_inputs, out):
        """The last decoder layer's class logits B x N x (K+1) and boxes B x N x 4, in float32;
        FloatingPointError naming the images when any is not finite."""
        logits, boxes = out.logits[-1].float(), out.boxes[-1].float()
        bad = ~(torch.isfinite(logits).flatten(1).all(1) & torch.isfinite(boxes).flatten(1).all(1))
        if bad.any():
            names = [batched_inputs[i].get("file_name", f"batch item {i}") for i in bad.nonzero()[:, 0].tolist()]
            raise FloatingPointError(
                f"DetrPanoptic produced NaN/Inf predictions for {names}: the weights (MODEL.WEIGHTS) or "
                "the input images contain non-finite values"
            )
        return logits, boxes


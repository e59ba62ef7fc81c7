"""``DetrPanoptic``: DETR's panoptic segmentation (Carion et al., ECCV 2020) as a Detectron2
meta-architecture. An image goes, top to bottom:

- ``forward``: normalizes and pads the batch, then trains (``losses``) or infers;
- ``detect``, steps 1-5: the ``backbone`` (any Detectron2 Backbone; the transformer reads one
  level, ``in_feature``), the 1x1 ``input_proj`` and ``position_encoding``, the
  ``transformer``'s encoder (the **encoded image**) and decoder (the **box embeddings**), the
  ``class_embed`` and ``bbox_embed`` heads;
- ``segment``, steps 6-7: the ``mask_head`` (attention maps over the encoded image, then an
  FPN-style head) on chosen queries only;
- the ``postprocessor`` (DetrPostProcessor), step 8: picks the queries to keep, asks
  ``segment`` for their masks once and merges them into the panoptic map (and the instance
  and semantic outputs).

In training the ``criterion`` (SetCriterion) supervises the predictions, asking ``segment`` for
the matched queries' masks; ``training_queries`` adds training-only queries; ``precision``
sets how the network steps run (autocast, memory format).
"""
import functools
from typing import List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import ImageList
from torch import nn

from .backbone import downsample_mask, torchvision_dilation, transformer_level
from .criterion import SetCriterion, build_criterion, targets_of
from .detector_weights import drop_unused_training_weights, keep_detector_in_eval, reinitialize
from .mask_head import build_mask_head
from .outputs import DetrOutputs, ImageSteps
from .position_encoding import PositionEmbeddingSine, build_position_encoding
from .postprocessor import DetrPostProcessor
from .precision import Precision, float32_on_cpu
from .prediction_heads import box_head, class_head, input_projection
from .training_queries import TrainingQueries
from .transformer import Transformer, build_transformer


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
        postprocessor: DetrPostProcessor,
        pixel_mean,
        pixel_std,
        in_feature="",
        position_encoding: Optional[nn.Module] = None,
        mask_head=None,
        training_queries: Optional[TrainingQueries] = None,
        precision: Precision = Precision(),
    ):
        """
        Args:
            backbone: any Detectron2 Backbone (``forward(x)`` -> dict of B x C x H/s x W/s maps,
                ``output_shape()``), built from MODEL.BACKBONE.NAME.
            transformer: the encoder-decoder; its ``d_model`` is the width d everywhere.
            num_classes: K, things and stuff (MODEL.DETR.NUM_CLASSES); the class head has K+1
                outputs, the last being "no object".
            num_queries: N, object queries (MODEL.DETR.NUM_OBJECT_QUERIES).
            criterion: the SetCriterion giving every training loss.
            postprocessor: the inference policy, step 8 (DetrPostProcessor, MODEL.DETR.TEST.*).
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
            training_queries: query groups and denoising queries used in training only
                (TrainingQueries), or None.
            precision: how the network steps run (Precision: autocast, channels-last, folded
                BatchNorm).
        """
        super().__init__()
        if criterion.num_classes != num_classes:
            raise ValueError(
                f"criterion.num_classes={criterion.num_classes} differs from num_classes={num_classes} "
                "(MODEL.DETR.NUM_CLASSES)"
            )
        hidden_dim = transformer.d_model
        shapes = backbone.output_shape()
        self.in_feature = transformer_level(shapes, in_feature)
        postprocessor.check_outputs(has_masks=mask_head is not None)
        self.precision = precision
        self.backbone = precision.prepare(backbone)
        self.position_encoding = position_encoding or PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.input_proj = input_projection(shapes[self.in_feature].channels, hidden_dim)
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_queries, transformer.query_dim)
        self.training_queries = training_queries
        self.criterion = criterion
        # Training-only parts come built (from a copy of the random state); their initial
        # weights are drawn here, in the model's layer order, so that one seed gives the same
        # weights however and whenever the parts were built.
        reinitialize(
            training_queries and training_queries.group_query_embed,
            criterion.encoder_semantic,
            training_queries and training_queries.denoising,
        )
        self.class_embed = class_head(hidden_dim, num_classes)
        self.bbox_embed = box_head(hidden_dim)
        groups = training_queries and training_queries.group_query_embed
        transformer.init_queries(self.bbox_embed, self.query_embed, *([groups] if groups else []))
        if mask_head is not None and not isinstance(mask_head, nn.Module):
            mask_head = mask_head(shapes)
        self.mask_head = mask_head
        self.postprocessor = postprocessor
        self.num_classes = num_classes
        self.frozen_detector = False  # detector_weights.freeze_detector sets it
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.register_load_state_dict_pre_hook(drop_unused_training_weights)

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        backbone = build_backbone(cfg)
        if d.TORCHVISION_DILATION:
            torchvision_dilation(backbone)
        return {
            "backbone": backbone,
            "transformer": build_transformer(cfg),
            "num_classes": d.NUM_CLASSES,
            "num_queries": d.NUM_OBJECT_QUERIES,
            "criterion": build_criterion(cfg),
            "postprocessor": DetrPostProcessor(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "in_feature": d.IN_FEATURE,
            "position_encoding": build_position_encoding(d.POSITION_EMBEDDING, d.HIDDEN_DIM),
            "mask_head": build_mask_head(cfg, backbone.output_shape()) if cfg.MODEL.MASK_ON else None,
            "training_queries": TrainingQueries.build(cfg),
            "precision": Precision(cfg),
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

    def forward(self, batched_inputs: List[dict]):
        """batched_inputs: Detectron2 dicts with "image" (C x H x W, INPUT.FORMAT), "height",
        "width", and in training "instances" (gt_classes, gt_boxes, gt_masks).

        Training: returns the weighted loss dict. Inference: a list with, per image, the outputs
        turned on by MODEL.DETR.TEST.*_ON: "panoptic_seg" (H x W int32, segments_info),
        "instances" and "sem_seg" (K x H x W), all in the original "height" x "width".
        """
        if self.training:
            return self.losses(batched_inputs, *self.preprocess_image(batched_inputs))
        image_sizes, out = self._detect_batch(batched_inputs)
        return self.postprocessor(out, batched_inputs, image_sizes, *self._segmenter(out))

    @torch.no_grad()
    def inference_steps(self, batched_inputs: List[dict]) -> List[ImageSteps]:
        """The public view of every step: inference on ``batched_inputs`` (as ``forward`` takes
        them, model in eval mode), returning per image an ImageSteps (DetrPostProcessor.inspect),
        with the panoptic output whenever the model has a mask head; equal to ``forward``'s."""
        if self.training:
            raise RuntimeError("DetrPanoptic.inference_steps runs inference: call model.eval() first")
        image_sizes, out = self._detect_batch(batched_inputs)
        return self.postprocessor.inspect(out, batched_inputs, image_sizes, *self._segmenter(out))

    def _detect_batch(self, batched_inputs):
        """Inference's steps 1-5 on a batch: (image sizes before padding, DetrOutputs)."""
        images, padding_mask = self.preprocess_image(batched_inputs)
        with self.precision.autocast(self.device, training=False):
            return images.image_sizes, self.detect(images.tensor, padding_mask)

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

    def detect(self, images, padding_mask, denoising=None):
        """Steps 1-5. images: B x 3 x H x W normalized; padding_mask: B x H x W bool (True =
        padding), None when nothing is padded; denoising: in training, the denoising queries
        (TrainingQueries.denoising_queries), decoded beside the others, or None.
        Returns DetrOutputs with G*N queries (G query groups in training, 1 in inference), the
        denoising queries' class logits and boxes apart."""
        features = self.precision.run_backbone(self.backbone, images)
        x = features[self.in_feature]
        if padding_mask is None:
            memory_mask = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.bool, device=x.device)
        else:
            memory_mask = downsample_mask(padding_mask, x.shape[-2:])
        pos = self.position_encoding(memory_mask)  # float32; under autocast, ops cast it as they need
        projected = self.input_proj(x)
        queries, groups = self.query_embed.weight, 1
        if self.training and self.training_queries is not None:
            queries, groups = self.training_queries.queries(queries), self.training_queries.groups
        with float32_on_cpu(projected):
            box_embeddings, boxes, memory = self.transformer(
                projected.float(), memory_mask, queries, pos, self.bbox_embed, groups, denoising
            )
            logits = self.class_embed(box_embeddings)
            if boxes is None:  # a decoder without boxes of its own: the box head reads its outputs
                boxes = self.bbox_embed(box_embeddings).sigmoid()
        n = len(queries)
        return DetrOutputs(
            logits=logits[:, :, :n],
            boxes=boxes[:, :, :n],
            box_embeddings=box_embeddings[:, :, :n],
            memory=memory,
            memory_mask=memory_mask,
            pos=pos,
            projected=projected,
            features=features,
            denoising_logits=None if denoising is None else logits[:, :, n:],
            denoising_boxes=None if denoising is None else boxes[:, :, n:],
        )

    def segment(self, out: DetrOutputs, batch_idx, query_idx):
        """Steps 6-7 for the given (image, query) pairs (T long each, grouped by image):
        T x H/s x W/s mask logits, s = ``mask_head.stride``."""
        return self.segment_with_attention(out, batch_idx, query_idx)[0]

    def segment_with_attention(self, out: DetrOutputs, batch_idx, query_idx):
        """As ``segment``, returning the mask head's (mask logits, attention maps T x M x h x w
        or None), see DETR_MASK_HEAD_REGISTRY."""
        queries, boxes = out.box_embeddings[-1][batch_idx, query_idx], out.boxes[-1][batch_idx, query_idx]
        return self.mask_head(
            queries, batch_idx, out.memory, out.memory_mask, out.projected, out.features, boxes=boxes, pos=out.pos
        )

    def _segmenter(self, out):
        """(segment, mask stride) for the post-processor: ``segment(batch_idx, query_idx)``, steps
        6-7 under the inference autocast, in float32; (None, None) without a mask head."""
        if self.mask_head is None:
            return None, None

        def segment(batch_idx, query_idx):
            with self.precision.autocast(self.device, training=False):
                masks, maps = self.segment_with_attention(out, batch_idx, query_idx)
            return masks.float(), None if maps is None else maps.float()

        return segment, self.mask_head.stride

    def losses(self, batched_inputs, images, padding_mask):
        """The weighted loss dict of a batch (``criterion``, see SetCriterion.forward): steps
        1-5 on every query (and the training-only ones), the mask head (steps 6-7) on the
        matched ones."""
        targets = self.prepare_targets(batched_inputs, images)
        denoising = dn_targets = None
        if self.training_queries is not None:
            denoising, dn_targets = self.training_queries.denoising_queries(targets)
        with torch.set_grad_enabled(not self.frozen_detector), self.precision.autocast(self.device, training=True):
            out = self.detect(images.tensor, padding_mask, denoising)
        outputs = {
            "pred_logits": out.logits,
            "pred_boxes": out.boxes,
            "pred_masks": None if self.mask_head is None else functools.partial(self._training_masks, out),
            "memory": out.memory,
            "memory_mask": out.memory_mask,
        }
        if self.training_queries is not None:
            outputs.update(self.training_queries.criterion_inputs(out, dn_targets))
        return self.criterion(outputs, targets, detector_losses=not self.frozen_detector)

    def _training_masks(self, out, batch_idx, query_idx):
        """Mask logits (float32) of the (image, query) pairs the criterion supervises."""
        with self.precision.autocast(self.device, training=True):
            return self.segment(out, batch_idx.to(self.device), query_idx.to(self.device)).float()

    def prepare_targets(self, batched_inputs, images):
        """The criterion's targets of a batch (criterion.targets_of) on the model's device."""
        return targets_of(batched_inputs, images, self.device)


"""``DetrPanoptic``: DETR's panoptic segmentation as a Detectron2 meta-architecture.

An image goes through (see DESIGN.md, "The pipeline, step by step"):

1. ``backbone`` (DetrBackbone): res2..res5, padding masks, positional encoding of res5;
2. ``input_proj``: 1x1 conv of res5 to the transformer width d;
3. ``transformer.encoder``: the **encoded image** (memory), d x H/32 x W/32;
4. ``transformer.decoder``: N **box embeddings** (one per object query), at every layer (in
   training with query groups, G x N: Group DETR, each group matched and supervised alone);
5. ``class_embed`` (K+1 logits) and ``bbox_embed`` (normalized cx, cy, w, h);
6-7. ``mask_head``: attention maps of the box embeddings over the encoded image, then the
   FPN-style head -> mask logits at stride 4, only for the queries whose masks are used;
8. ``postprocessing``: argmax over the kept queries' masks -> the panoptic map.
"""
import logging
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import ImageList
from torch import nn
from torchvision.ops import box_convert

from ..checkpoint.safe_load import load_model_state
from . import postprocessing
from .batchnorm_folding import folded_batchnorm
from .criterion import SetCriterion
from .mask_head import build_mask_head
from .matcher import HungarianMatcher
from .transformer import Transformer

# Values of MODEL.DETR.TEST.AMP_DTYPE.
AMP_DTYPES = {"": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class MLP(nn.Module):
    """Linear layers with ReLU between them (the 3-layer box head)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


@dataclass
class DetrOutputs:
    """Steps 1-5 for a batch of B padded images (L decoder layers, N queries, K classes).

    logits: L x B x N x (K+1); boxes: L x B x N x 4 (normalized cx, cy, w, h);
    box_embeddings: L x B x N x d; memory: B x d x h x w encoded images;
    memory_mask: B x h x w (True = padding); projected: B x d x h x w projected res5;
    features: the backbone's maps by name.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    box_embeddings: torch.Tensor
    memory: torch.Tensor
    memory_mask: torch.Tensor
    projected: torch.Tensor
    features: Dict[str, torch.Tensor]


def _thing_ids(cfg):
    """Contiguous ids of thing classes, from the metadata of the first test (else train) dataset,
    or None when no dataset is configured. The dataset must be registered in the DatasetCatalog or,
    for inference-only use, have its panoptic metadata set in the MetadataCatalog."""
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    if not names:
        return None
    meta = MetadataCatalog.get(names[0])
    if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
        if names[0] not in DatasetCatalog.list():
            raise KeyError(
                f"Dataset {names[0]!r} (DATASETS.TEST / DATASETS.TRAIN) is not registered; registered "
                f"panoptic datasets: {sorted(n for n in DatasetCatalog.list() if 'panoptic' in n)}"
            )
        raise ValueError(
            f"Dataset {names[0]!r} has no thing_dataset_id_to_contiguous_id metadata; DetrPanoptic needs "
            "it to tell things from stuff (register the dataset with register_coco_panoptic)"
        )
    ids = sorted(meta.thing_dataset_id_to_contiguous_id.values())
    ids += sorted(getattr(meta, "stuff_dataset_id_to_contiguous_id", {}).values())
    if ids and max(ids) >= cfg.MODEL.DETR.NUM_CLASSES:
        raise ValueError(
            f"Dataset {names[0]!r} has contiguous class ids up to {max(ids)}, but "
            f"MODEL.DETR.NUM_CLASSES={cfg.MODEL.DETR.NUM_CLASSES}; set it to {max(ids) + 1}"
        )
    return sorted(meta.thing_dataset_id_to_contiguous_id.values())


# State-dict prefix of the training-only queries of groups 2..G.
GROUP_QUERIES = "group_query_embed"


def _drop_unused_group_queries(model, state_dict, prefix, *args):
    """Load-state-dict pre-hook: a checkpoint trained with query groups loads into a model
    without them (TRAIN_QUERY_GROUPS 1), which needs only the first group (query_embed)."""
    key = prefix + GROUP_QUERIES + ".weight"
    if model.group_query_embed is None and key in state_dict:
        del state_dict[key]
        logging.getLogger(__name__).info(
            "Checkpoint has training-only query groups (%s); this model uses the first group only", key
        )


def _shorten(items, limit=10):
    return str(items[:limit])[:-1] + (f", ... {len(items) - limit} more]" if len(items) > limit else "]")


@META_ARCH_REGISTRY.register()
class DetrPanoptic(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone,
        transformer: Transformer,
        num_classes: int,
        num_queries: int,
        in_feature: str,
        criterion: SetCriterion,
        mask_head=None,
        pixel_mean,
        pixel_std,
        deep_supervision=True,
        train_query_groups=1,
        mask_loss_all_groups=False,
        frozen_weights="",
        all_queries=False,
        thing_ids=None,
        object_score_thresh=0.85,
        small_segment_area=4,
        panoptic_on=True,
        instances_on=False,
        semantic_on=False,
        detections_per_image=100,
        mask_score_floor=0.0,
        amp_dtype="",
        fold_batchnorm=False,
    ):
        super().__init__()
        hidden_dim = transformer.d_model
        self.backbone = backbone
        self.in_feature = in_feature
        self.input_proj = nn.Conv2d(backbone.output_shape()[in_feature].channels, hidden_dim, 1)
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if train_query_groups < 1:
            raise ValueError(f"MODEL.DETR.TRAIN_QUERY_GROUPS must be >= 1, got {train_query_groups}")
        if train_query_groups > 1 and frozen_weights:
            raise ValueError(
                "MODEL.DETR.TRAIN_QUERY_GROUPS > 1 with MODEL.DETR.FROZEN_WEIGHTS: query groups train the "
                "decoder, which a frozen detector does not; set TRAIN_QUERY_GROUPS 1 for the mask stage"
            )
        # Object queries of groups 2..G, used in training only (Group DETR): inference, the
        # converters and the exporter see query_embed alone, DETR's layout.
        self.group_query_embed = (
            nn.Embedding((train_query_groups - 1) * num_queries, hidden_dim) if train_query_groups > 1 else None
        )
        self.register_load_state_dict_pre_hook(_drop_unused_group_queries)
        self.mask_loss_all_groups = mask_loss_all_groups
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.mask_head = mask_head
        self.criterion = criterion
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.all_queries = all_queries
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        is_thing = torch.zeros(num_classes, dtype=torch.bool)
        if thing_ids is not None:
            is_thing[list(thing_ids)] = True
        self.register_buffer("is_thing", is_thing, False)
        self.has_class_metadata = thing_ids is not None
        if small_segment_area < 0:
            raise ValueError(f"MODEL.DETR.TEST.SMALL_SEGMENT_AREA must be >= 0, got {small_segment_area}")
        if mask_head is None and (panoptic_on or semantic_on):
            raise ValueError(
                "MODEL.DETR.TEST.PANOPTIC_ON and SEMANTIC_ON need masks: set MODEL.MASK_ON True, "
                "or turn them off for a box-only model"
            )
        self.object_score_thresh = object_score_thresh
        self.small_segment_area = small_segment_area
        self.panoptic_on = panoptic_on
        self.instances_on = instances_on
        self.semantic_on = semantic_on
        self.detections_per_image = detections_per_image
        if not 0.0 <= mask_score_floor <= 1.0:
            raise ValueError(f"MODEL.DETR.TEST.MASK_SCORE_FLOOR must be in [0, 1], got {mask_score_floor}")
        self.mask_score_floor = mask_score_floor
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(
                f"MODEL.DETR.TEST.AMP_DTYPE must be one of {sorted(AMP_DTYPES)} ('' = full precision), got {amp_dtype!r}"
            )
        self.amp_dtype = AMP_DTYPES[amp_dtype]
        self.fold_batchnorm = fold_batchnorm
        self.frozen_detector = bool(frozen_weights)
        if self.frozen_detector:
            self.freeze_detector(frozen_weights)

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        backbone = build_backbone(cfg)
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
            "in_feature": d.IN_FEATURE,
            "criterion": criterion,
            "mask_head": build_mask_head(cfg, backbone.output_shape()) if cfg.MODEL.MASK_ON else None,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "deep_supervision": d.DEEP_SUPERVISION,
            "train_query_groups": d.TRAIN_QUERY_GROUPS,
            "mask_loss_all_groups": d.MASK_LOSS_ALL_GROUPS,
            "frozen_weights": d.FROZEN_WEIGHTS,
            "all_queries": d.MASK_HEAD.ALL_QUERIES,
            "thing_ids": _thing_ids(cfg),
            "object_score_thresh": d.TEST.OBJECT_SCORE_THRESH,
            "small_segment_area": d.TEST.SMALL_SEGMENT_AREA,
            "panoptic_on": d.TEST.PANOPTIC_ON,
            "instances_on": d.TEST.INSTANCES_ON,
            "semantic_on": d.TEST.SEMANTIC_ON,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "mask_score_floor": d.TEST.MASK_SCORE_FLOOR,
            "amp_dtype": d.TEST.AMP_DTYPE,
            "fold_batchnorm": d.TEST.FOLD_BATCHNORM,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def detector_parameters(self):
        """(name, parameter) of everything but the mask head: what stage 2 freezes."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("mask_head.")]

    def train(self, mode=True):
        """As nn.Module.train; a frozen detector stays in eval mode, so that its BatchNorm
        statistics do not drift and the mask head trains on the detector's inference-time
        outputs (the reference keeps its dropout on; with FrozenBN that is the only difference)."""
        super().train(mode)
        if self.frozen_detector:
            for name, module in self.named_children():
                if name != "mask_head":
                    module.train(False)
        return self

    def freeze_detector(self, path):
        """Loads the detector (all but the mask head) from a box-only checkpoint and freezes it."""
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("mask_head.")}
        unused = ("mask_head.", GROUP_QUERIES + ".")  # a stage 1 trained with query groups fits
        state = {k: v for k, v in load_model_state(path).items() if not k.startswith(unused)}
        missing = sorted(own.keys() - state.keys())
        unexpected = sorted(state.keys() - own.keys())
        mismatched = sorted(
            f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
            for k in own.keys() & state.keys()
            if state[k].shape != own[k].shape
        )
        if missing or unexpected or mismatched:
            raise ValueError(
                f"MODEL.DETR.FROZEN_WEIGHTS={path!r} does not fit this detector (check that it was trained "
                f"with the same MODEL.DETR sizes and backbone): missing keys {_shorten(missing)}, "
                f"unexpected keys {_shorten(unexpected)}, shape mismatches (file vs model) {_shorten(mismatched)}"
            )
        self.load_state_dict(state, strict=False)
        for _, p in self.detector_parameters():
            p.requires_grad_(False)

    def preprocess_image(self, batched_inputs):
        """Normalizes and pads the images. Returns (ImageList, padding mask B x H x W bool)."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility)
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

    def detect(self, images, padding_mask):
        """Steps 1-5. images: B x 3 x H x W normalized; padding_mask: B x H x W. Returns DetrOutputs
        with G*N queries (G = 1 in inference)."""
        with folded_batchnorm(self.backbone, self.fold_batchnorm):  # inference only, see its module
            feats = self.backbone(images, padding_mask)
        projected = self.input_proj(feats.features[self.in_feature])
        memory_mask = feats.masks[self.in_feature]
        queries = self.object_queries()
        groups = len(queries) // self.query_embed.num_embeddings
        box_embeddings, memory = self.transformer(projected, memory_mask, queries, feats.pos, groups)
        return DetrOutputs(
            logits=self.class_embed(box_embeddings),
            boxes=self.bbox_embed(box_embeddings).sigmoid(),
            box_embeddings=box_embeddings,
            memory=memory,
            memory_mask=memory_mask,
            projected=projected,
            features=feats.features,
        )

    def segment(self, out: DetrOutputs, batch_idx, query_idx):
        """Steps 6-7 for the given (image, query) pairs: T x H/4 x W/4 mask logits.

        With MODEL.DETR.MASK_HEAD.ALL_QUERIES the head runs on every query, as the reference
        does, and the requested rows are picked from that (same values)."""
        embeddings = out.box_embeddings[-1]
        if self.all_queries:
            b, n = embeddings.shape[:2]
            every = torch.arange(b, device=embeddings.device).repeat_interleave(n)
            masks = self.mask_head(embeddings.flatten(0, 1), every, out.memory, out.memory_mask, out.projected, out.features)
            return masks[batch_idx * n + query_idx]
        return self.mask_head(
            embeddings[batch_idx, query_idx], batch_idx, out.memory, out.memory_mask, out.projected, out.features
        )

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
        """torch.autocast with MODEL.DETR.TEST.AMP_DTYPE for inference's network steps (1-7);
        a no-op when it is empty. Post-processing always runs in float32."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def losses(self, batched_inputs, images, padding_mask):
        """The weighted loss dict of a batch. With G query groups, each group is matched to the
        targets on its own and gets every class and box loss; the losses are averaged over the
        groups. Mask losses cover the first group's matches (all groups' with
        MASK_LOSS_ALL_GROUPS)."""
        targets = self.prepare_targets(batched_inputs, images)
        with torch.set_grad_enabled(not self.frozen_detector):
            out = self.detect(images.tensor, padding_mask)
        num_boxes = self.criterion.num_boxes(targets, self.device)
        groups = out.logits.shape[2] // self.query_embed.num_embeddings
        losses = {}
        if self.frozen_detector:
            indices = self.criterion.matcher(out.logits[-1], out.boxes[-1], targets)
        else:
            indices, losses = self.criterion.layer_losses(
                out.logits[-1], out.boxes[-1], targets, num_boxes, groups=groups
            )
            if self.deep_supervision:
                for i in range(len(out.logits) - 1):
                    _, aux = self.criterion.layer_losses(
                        out.logits[i], out.boxes[i], targets, num_boxes, f"_{i}", groups
                    )
                    losses.update(aux)
        if self.mask_head is not None:
            # indices[k]: group k % G of image k // G, query numbers within the group.
            supervised = range(len(indices)) if self.mask_loss_all_groups else range(0, len(indices), groups)
            n = self.query_embed.num_embeddings
            batch_idx = torch.cat([torch.full_like(indices[k][0], k // groups) for k in supervised])
            query_idx = torch.cat([indices[k][0] + (k % groups) * n for k in supervised])
            mask_logits = self.segment(out, batch_idx.to(self.device), query_idx.to(self.device))
            target_masks = torch.cat([targets[k // groups]["masks"][indices[k][1]] for k in supervised])
            norm = num_boxes * (groups if self.mask_loss_all_groups else 1)
            losses.update(self.criterion.mask_losses(mask_logits, target_masks, norm))
        return losses

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
        """Turns the last decoder layer's predictions into per-image Detectron2 results.

        The mask head runs on the queries some output uses: the kept ones (panoptic), the
        detections (instances) and the queries summed into semantic scores, the last two
        limited by MODEL.DETR.TEST.MASK_SCORE_FLOOR (not applied with ALL_QUERIES, the exact
        mode, nor to a box-only model)."""
        if (self.panoptic_on or self.instances_on) and not self.has_class_metadata:
            raise ValueError(
                "Panoptic and instance outputs need to know which classes are things: set DATASETS.TEST "
                "(or DATASETS.TRAIN) to a registered panoptic dataset"
            )
        logits, boxes = out.logits[-1].float(), out.boxes[-1].float()
        self._check_finite(batched_inputs, logits, boxes)
        floor = 0.0 if self.all_queries or self.mask_head is None else self.mask_score_floor
        kept = [postprocessing.select_queries(lg, self.object_score_thresh) for lg in logits]
        detections = semantic = None
        if self.instances_on:
            detections = [
                postprocessing.instance_queries(lg, self.is_thing, self.detections_per_image, floor) for lg in logits
            ]
        if self.semantic_on:
            semantic = [postprocessing.semantic_queries(lg, floor) for lg in logits]
        needed = self._queries_needing_masks(kept, detections, semantic)
        mask_logits = None
        if self.mask_head is not None:
            with self.inference_autocast():
                mask_logits = [m.float() for m in self._masks_for_inference(out, needed)]
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            output_size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            result = {}
            rows = needed[i].cumsum(0) - 1  # query -> its row in mask_logits[i]
            if mask_logits is not None:
                stride = self.mask_head.stride
                valid_masks = mask_logits[i][:, : -(-image_size[0] // stride), : -(-image_size[1] // stride)]
            if self.panoptic_on:
                keep, scores, classes = kept[i]
                result["panoptic_seg"] = postprocessing.panoptic_merge(
                    valid_masks[rows[keep]], scores[keep], classes[keep], self.is_thing, image_size, output_size,
                    self.small_segment_area,
                )
            if self.instances_on:
                det_masks = mask_logits[i][rows[detections[i][0]]] if mask_logits is not None else None
                result["instances"] = postprocessing.instance_results(
                    detections[i], boxes[i], det_masks, images.tensor.shape[-2:], image_size, output_size
                )
            if self.semantic_on:
                sem = semantic[i]
                result["sem_seg"] = postprocessing.semantic_results(logits[i][sem], valid_masks[rows[sem]], output_size)
            results.append(result)
        return results

    def _queries_needing_masks(self, kept, detections, semantic):
        """Per image, N bool: the queries whose masks an output uses (``kept``: select_queries'
        results, used by the panoptic output; ``detections``: instance_queries' results, or
        None; ``semantic``: semantic_queries' results, or None)."""
        needed = []
        for i, (keep, _, _) in enumerate(kept):
            use = keep & self.panoptic_on
            if detections is not None:
                use[detections[i][0]] = True
            if semantic is not None:
                use |= semantic[i]
            needed.append(use)
        return needed

    def _masks_for_inference(self, out, needed):
        """Mask logits per image (a list of B tensors, T_i x H/4 x W/4) of the queries marked
        in ``needed`` (B bool tensors of N), in query order."""
        needed = torch.stack(needed)
        batch_idx, query_idx = needed.nonzero(as_tuple=True)
        return list(self.segment(out, batch_idx, query_idx).split(needed.sum(1).tolist()))

    @staticmethod
    def _check_finite(batched_inputs, logits, boxes):
        bad = ~(torch.isfinite(logits).flatten(1).all(1) & torch.isfinite(boxes).flatten(1).all(1))
        if bad.any():
            names = [batched_inputs[i].get("file_name", f"batch item {i}") for i in bad.nonzero()[:, 0].tolist()]
            raise FloatingPointError(
                f"DetrPanoptic produced NaN/Inf predictions for {names}: the weights (MODEL.WEIGHTS) or "
                "the input images contain non-finite values"
            )

"""Step 8 as a component: ``DetrPostProcessor``, the inference policy of DetrPanoptic.

It owns every inference setting (MODEL.DETR.TEST.* and the dataset's thing classes): which
queries are kept, which need masks, the merge rule, the instance and semantic outputs,
detections per image and the score floor. The model hands it the decoder's outputs and a
function computing the masks of chosen queries (steps 6-7); it calls that function once per
batch, on the queries some output uses, and turns the result into Detectron2's outputs
(``forward``) or into the record of every step (``inspect``, for ``inference_steps``). The
functions it applies live in postprocessing.py; the exported model merges with the same object
(export/runtime.py).
"""
from dataclasses import asdict
from typing import Callable, List, Optional

import torch
from detectron2.config import configurable
from torch import nn

from ..data.validation import config_thing_ids
from . import postprocessing
from .outputs import DetrOutputs, ImageSteps
from .postprocessing import MergeRule

# ``segment(batch_idx T, query_idx T) -> (mask_logits T x H/s x W/s, attention_maps
# T x M x h x w or None)``, float32, for T (image, query) pairs grouped by image.
SegmentFn = Callable[[torch.Tensor, torch.Tensor], tuple]


class DetrPostProcessor(nn.Module):
    """From steps 1-5 (and masks on request) to Detectron2's outputs per image."""

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        thing_ids=None,
        object_score_thresh=0.85,
        small_segment_area=4,
        merge: MergeRule = MergeRule(),
        panoptic_on=True,
        instances_on=False,
        semantic_on=False,
        detections_per_image=100,
        mask_score_floor=0.05,
    ):
        """
        Args:
            num_classes: K, things and stuff (MODEL.DETR.NUM_CLASSES).
            thing_ids: contiguous ids of the thing classes, None when unknown (then panoptic
                and instance inference refuse to run); from the dataset metadata in yaml.
            object_score_thresh: a query enters the panoptic output when its best real-class
                probability is above this (MODEL.DETR.TEST.OBJECT_SCORE_THRESH).
            small_segment_area: segments of at most this many pixels are dropped
                (MODEL.DETR.TEST.SMALL_SEGMENT_AREA).
            merge: the panoptic merge rule (MODEL.DETR.TEST.MERGE*; postprocessing.MergeRule).
            panoptic_on, instances_on, semantic_on: the outputs produced
                (MODEL.DETR.TEST.PANOPTIC_ON, INSTANCES_ON, SEMANTIC_ON).
            detections_per_image: most instances per image (TEST.DETECTIONS_PER_IMAGE).
            mask_score_floor: the score a query needs for a mask in the instance and semantic
                outputs (MODEL.DETR.TEST.MASK_SCORE_FLOOR; 0: every query).
        """
        super().__init__()
        if small_segment_area < 0:
            raise ValueError(
                f"small_segment_area (MODEL.DETR.TEST.SMALL_SEGMENT_AREA) must be >= 0, got {small_segment_area}"
            )
        if not 0.0 <= mask_score_floor <= 1.0:
            raise ValueError(
                f"mask_score_floor (MODEL.DETR.TEST.MASK_SCORE_FLOOR) must be in [0, 1], got {mask_score_floor}"
            )
        is_thing = torch.zeros(num_classes, dtype=torch.bool)
        if thing_ids is not None:
            is_thing[list(thing_ids)] = True
        self.register_buffer("is_thing", is_thing, False)
        self.has_class_metadata = thing_ids is not None
        self.object_score_thresh = object_score_thresh
        self.small_segment_area = small_segment_area
        self.merge = merge
        self.panoptic_on = panoptic_on
        self.instances_on = instances_on
        self.semantic_on = semantic_on
        self.detections_per_image = detections_per_image
        self.mask_score_floor = mask_score_floor

    @classmethod
    def from_config(cls, cfg):
        test = cfg.MODEL.DETR.TEST
        return {
            "num_classes": cfg.MODEL.DETR.NUM_CLASSES,
            "thing_ids": config_thing_ids(cfg),
            "object_score_thresh": test.OBJECT_SCORE_THRESH,
            "small_segment_area": test.SMALL_SEGMENT_AREA,
            "merge": MergeRule.from_config(cfg),
            "panoptic_on": test.PANOPTIC_ON,
            "instances_on": test.INSTANCES_ON,
            "semantic_on": test.SEMANTIC_ON,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "mask_score_floor": test.MASK_SCORE_FLOOR,
        }

    def check_outputs(self, has_masks):
        """ValueError when the panoptic or semantic output is on for a model without masks
        (``has_masks`` False: no mask head)."""
        if not has_masks and (self.panoptic_on or self.semantic_on):
            raise ValueError(
                "panoptic_on and semantic_on (MODEL.DETR.TEST.PANOPTIC_ON, SEMANTIC_ON) need masks: give a "
                "mask_head (MODEL.MASK_ON True), or turn them off for a box-only model"
            )

    def settings(self):
        """The panoptic settings an export records (JSON-able): score threshold, small-segment
        area and merge rule."""
        return {
            "score_threshold": self.object_score_thresh,
            "small_segment_area": self.small_segment_area,
            "merge": asdict(self.merge),
        }

    def merge_panoptic(self, mask_logits, scores, classes, image_size, output_size, stride):
        """Step 8 for one image's kept queries with this policy's rule (postprocessing.panoptic_merge)."""
        return postprocessing.panoptic_merge(
            mask_logits, scores, classes, self.is_thing, image_size, output_size, self.small_segment_area, stride, self.merge
        )

    @torch.no_grad()
    def forward(self, out: DetrOutputs, batched_inputs, image_sizes, segment: Optional[SegmentFn], mask_stride):
        """Detectron2's outputs per image: the "panoptic_seg", "instances" and "sem_seg" that
        panoptic_on, instances_on and semantic_on turn on, in the original "height" x "width".

        out: steps 1-5 of the batch; batched_inputs: the model's inputs; image_sizes: (h, w)
        of each image before padding; segment: the masks of chosen queries (``SegmentFn``),
        None for a box-only model; mask_stride: s of the mask logits (None without masks)."""
        wanted = ("panoptic_seg", self.panoptic_on), ("instances", self.instances_on), ("sem_seg", self.semantic_on)
        images = self._images(out, batched_inputs, image_sizes, segment, mask_stride, self.panoptic_on)
        return [{name: image[name] for name, on in wanted if on} for image in images]

    @torch.no_grad()
    def inspect(self, out: DetrOutputs, batched_inputs, image_sizes, segment: Optional[SegmentFn], mask_stride) -> List[ImageSteps]:
        """As ``forward``, returning what every step produced per image (ImageSteps), with the
        panoptic output whenever there are masks."""
        images = self._images(out, batched_inputs, image_sizes, segment, mask_stride, segment is not None)
        steps = []
        for i, image in enumerate(images):
            h, w = out.memory.shape[-2:]
            if out.memory_mask is not None:
                valid = ~out.memory_mask[i]
                h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
            queries, masks, maps = image["queries"], image["masks"], image["maps"]
            if masks is not None:
                rows, cols = postprocessing.image_cells(image["image_size"], mask_stride)
                masks = masks[:, :rows, :cols]
            steps.append(
                ImageSteps(
                    image_size=tuple(image["image_size"]),
                    output_size=image["output_size"],
                    encoded=out.memory[i, :, :h, :w].float(),
                    box_embeddings=out.box_embeddings[-1, i].float(),
                    class_logits=image["logits"],
                    boxes=image["boxes"],
                    layer_boxes=out.boxes[:, i].float(),
                    queries=queries,
                    classes=image["classes"][queries],
                    scores=image["scores"][queries],
                    attention_maps=None if maps is None else maps[:, :, :h, :w],
                    mask_logits=masks,
                    mask_stride=mask_stride,
                    panoptic_seg=image["panoptic_seg"],
                    instances=image["instances"],
                    sem_seg=image["sem_seg"],
                )
            )
        return steps

    def _images(self, out, batched_inputs, image_sizes, segment, stride, panoptic):
        """The inference core: per image a dict with its sizes, last-layer "logits" and
        "boxes", the kept "queries" (ascending) with every query's "scores" and "classes", the
        kept queries' "masks" and attention "maps" (when ``panoptic`` and there are masks) and
        the outputs "panoptic_seg", "instances", "sem_seg" (None when not computed)."""
        if (panoptic and segment is not None) or self.instances_on:
            self._require_thing_ids()
        logits, boxes = finite_last_layer(batched_inputs, out)
        floor = self.mask_score_floor if segment is not None else 0.0
        kept = [postprocessing.select_queries(lg, self.object_score_thresh) for lg in logits]
        detections = semantic = None
        if self.instances_on:
            detections = [
                postprocessing.instance_queries(lg, self.is_thing, self.detections_per_image, floor) for lg in logits
            ]
        if self.semantic_on:
            semantic = [postprocessing.semantic_queries(lg, floor) for lg in logits]
        needed = _queries_needing_masks(kept, detections, semantic, panoptic)
        mask_logits = attention_maps = [None] * len(kept)
        if segment is not None:
            mask_logits, attention_maps = _masks_of(segment, needed)
        images = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, image_sizes)):
            output_size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            keep, scores, classes = kept[i]
            queries = keep.nonzero()[:, 0]
            rows = needed[i].cumsum(0) - 1  # query -> its row in mask_logits[i]
            image = dict(
                image_size=image_size, output_size=output_size, logits=logits[i], boxes=boxes[i], queries=queries,
                scores=scores, classes=classes, masks=None, maps=None, panoptic_seg=None, instances=None, sem_seg=None,
            )
            if mask_logits[i] is not None and panoptic:
                image["masks"] = mask_logits[i][rows[queries]]
                image["maps"] = None if attention_maps[i] is None else attention_maps[i][rows[queries]]
                image["panoptic_seg"] = self.merge_panoptic(
                    image["masks"], scores[queries], classes[queries], image_size, output_size, stride
                )
            if self.instances_on:
                det_masks = None if mask_logits[i] is None else mask_logits[i][rows[detections[i][0]]]
                image["instances"] = postprocessing.instance_results(
                    detections[i], boxes[i], det_masks, image_size, output_size, stride
                )
            if self.semantic_on:
                image["sem_seg"] = postprocessing.semantic_results(
                    logits[i][semantic[i]], mask_logits[i][rows[semantic[i]]], image_size, output_size, stride
                )
            images.append(image)
        return images

    def _require_thing_ids(self):
        if not self.has_class_metadata:
            raise ValueError(
                "Panoptic and instance outputs need to know which classes are things: set DATASETS.TEST "
                "(or DATASETS.TRAIN) to a registered panoptic dataset, or pass thing_ids to DetrPostProcessor"
            )


def _queries_needing_masks(kept, detections, semantic, panoptic):
    """Per image, N bool: the queries whose masks an output uses (``kept``: select_queries'
    results, used by the panoptic output when ``panoptic``; ``detections``: instance_queries'
    results, or None; ``semantic``: semantic_queries' results, or None)."""
    needed = []
    for i, (keep, _, _) in enumerate(kept):
        use = keep.clone() if panoptic else torch.zeros_like(keep)  # no Tensor & bool: fvcore traces this
        if detections is not None:
            use[detections[i][0]] = True
        if semantic is not None:
            use |= semantic[i]
        needed.append(use)
    return needed


def _masks_of(segment, needed):
    """Mask logits (T_i x H/s x W/s) and attention maps (T_i x M x h x w, or None) per image,
    of the queries marked in ``needed`` (B bool tensors of N), in query order: one call of
    ``segment`` for the batch."""
    needed = torch.stack(needed)
    counts = needed.sum(1).tolist()
    masks, maps = segment(*needed.nonzero(as_tuple=True))
    maps = [None] * len(counts) if maps is None else maps.split(counts)
    return masks.split(counts), maps


def finite_last_layer(batched_inputs, out):
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

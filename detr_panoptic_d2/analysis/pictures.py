"""The analysis's pictures: one image's input, prediction, ground truth and errors side by side
(``draw_errors_picture``), and the bar plot of PQ lost per error type (``plot_pq_lost``)."""
import copy

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

from ..data.metadata import THING_MAP, class_names, dataset_to_contiguous  # noqa: E402
from ..visualization import draw_panoptic, upscale_image_and_ids  # noqa: E402
from .errors import ERROR_TYPES  # noqa: E402

# RGB in [0, 1] for each error type, in the errors panel and the plot.
ERROR_COLORS = dict(zip(ERROR_TYPES, ([0.9, 0.1, 0.1], [1.0, 0.6, 0.0], [1.0, 0.9, 0.1], [0.6, 0.2, 0.9],
                                      [0.2, 0.5, 1.0], [0.0, 0.8, 0.8], [0.9, 0.3, 0.7])))


def _contiguous_segments(segments, metadata):
    """COCO segments_info (dataset category ids) -> the model's form (contiguous ids, isthing)."""
    contiguous, things = dataset_to_contiguous(metadata), metadata.get(THING_MAP, {})
    return [{"id": s["id"], "category_id": contiguous[s["category_id"]], "isthing": s["category_id"] in things}
            for s in copy.deepcopy(segments)]


def draw_errors_picture(image, match, events, gt_ids, pred_ids, metadata, scale=2):
    """image: H x W x 3 uint8 RGB (None: a grey canvas); match: its ImageMatch; events: its
    ErrorEvents; gt_ids / pred_ids: H x W segment ids; metadata: the dataset's (Detectron2
    panoptic metadata). Returns the (H*scale) x (4*W*scale) x 3 uint8 picture: input |
    prediction | ground truth | each error's segment coloured by type and labelled."""
    if image is None:
        image = np.full((*gt_ids.shape, 3), 128, np.uint8)
    big_image, _ = upscale_image_and_ids(image, gt_ids, scale)
    panels = [big_image]
    for ids, segments in ((pred_ids, list(match.pred.values())), (gt_ids, list(match.gt.values()))):
        _, big_ids = upscale_image_and_ids(image, ids.astype(np.int64), scale)
        panels.append(draw_panoptic(big_image, big_ids, _contiguous_segments(segments, metadata), metadata))
    classes = class_names(metadata)
    names = {d: classes[c] for d, c in dataset_to_contiguous(metadata).items()}
    masks, labels, colors = [], [], []
    for event in events:
        for kind, ids, segment_ids in (("gt", gt_ids, event.fn), ("pred", pred_ids, event.fp)):
            for i in segment_ids:
                segments = match.gt if kind == "gt" else match.pred
                masks.append(np.kron(ids == i, np.ones((scale, scale), bool)))
                labels.append(f"{event.type} {names.get(segments[i]['category_id'], '')}")
                colors.append(ERROR_COLORS[event.type])
    visualizer = Visualizer(big_image, metadata)
    panels.append(visualizer.overlay_instances(masks=masks or None, labels=labels or None,
                                               assigned_colors=colors or None).get_image())
    return np.concatenate(panels, axis=1)


def plot_pq_lost(pq_lost, path):
    """Writes a horizontal bar plot of ``pq_lost`` ({error type: PQ points}) to the PNG ``path``."""
    types = list(pq_lost)
    figure, axes = plt.subplots(figsize=(6, 3))
    axes.barh(types, [pq_lost[t] for t in types], color=[ERROR_COLORS[t] for t in types])
    axes.invert_yaxis()
    axes.set_xlabel("PQ points gained if the errors of the type were not counted")
    axes.set_title("PQ lost by error type")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

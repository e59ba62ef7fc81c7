"""Re-indexing the class head from dataset category ids to Detectron2's contiguous ids.

DETR's released models index the rows of their class head by the COCO category id (panoptic:
250 + 1 rows, detection: 91 + 1), the last row being "no object". Detectron2 numbers classes
0..K-1 (its metadata's ``thing/stuff_dataset_id_to_contiguous_id``). The new head keeps, in
contiguous order, the rows of the dataset's categories, then the no-object row.
"""
import torch

from ..data.metadata import dataset_category_ids

# The datasets whose ids the released models' rows follow, by their row count.
RELEASED_LAYOUTS = {251: "coco_2017_val_panoptic", 92: "coco_2017_val"}


def reindex_class_rows(state, dataset_name):
    """Reorders ``class_embed.{weight,bias}`` of a DetrPanoptic state dict in place.

    Row i of the result is the source row of the dataset id of contiguous class i; the last
    row is the source's last (no object). Returns the new number of classes K."""
    ids = dataset_category_ids(dataset_name)
    rows = state["class_embed.weight"].shape[0]
    if max(ids) >= rows - 1:
        raise ValueError(
            f"The class head has {rows} rows (last = no object), too few for category id {max(ids)} of "
            f"{dataset_name!r}: its rows are not indexed by this dataset's ids (use --classes keep if "
            "they are already in contiguous order)"
        )
    index = torch.tensor(ids + [rows - 1])
    for name in ("class_embed.weight", "class_embed.bias"):
        state[name] = state[name][index].clone()
    return len(ids)

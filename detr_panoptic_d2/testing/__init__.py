"""Random weights made to behave like trained ones, for tests and benchmarks (as
``detectron2.utils.testing``): a controlled number of kept queries (kept_queries.py) and query
masks that differ (mask_separation.py); the reference implementation's way of computing
(reference_behaviour.py)."""
from .kept_queries import calibrate_kept_queries, fit_class_head
from .mask_separation import recentre_on_queries_, separate_query_masks_
from .reference_behaviour import REFERENCE_OVERRIDES, as_reference, detr_fpn_formulation, run_mask_head_on_all_queries

__all__ = [
    "REFERENCE_OVERRIDES",
    "as_reference",
    "calibrate_kept_queries",
    "detr_fpn_formulation",
    "fit_class_head",
    "recentre_on_queries_",
    "run_mask_head_on_all_queries",
    "separate_query_masks_",
]

"""Random weights made to behave like trained ones, for tests and benchmarks (as
``detectron2.utils.testing``): a controlled number of kept queries (kept_queries.py) and query
masks that differ (mask_separation.py)."""
from .kept_queries import calibrate_kept_queries, fit_class_head
from .mask_separation import recentre_on_queries_, separate_query_masks_

__all__ = ["calibrate_kept_queries", "fit_class_head", "recentre_on_queries_", "separate_query_masks_"]

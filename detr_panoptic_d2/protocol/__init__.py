"""The measurement protocol of recipe changes (tools/compare_recipes.py): paired statistics over
seeds (``statistics``), the runs' metrics (``metrics``) and a diagnostic pass over a checkpoint's
queries (``diagnosis``, tools/dev/diagnose_queries.py)."""
from .metrics import PANOPTIC_METRICS, evaluations
from .statistics import compare_arms, mean_and_standard_error

__all__ = ["PANOPTIC_METRICS", "compare_arms", "evaluations", "mean_and_standard_error"]

"""Panoptic quality beyond the three numbers: per-class PQ (``per_class``, used by the
evaluator and by tools/analyze_panoptic.py) and the analysis of where PQ is lost
(``matching``, ``errors``, ``report``, ``pictures``; tools/analyze_panoptic.py)."""

"""Panoptic quality beyond the three numbers: per-class PQ (``per_class``, used by the
evaluator and by tools/analyze_panoptic.py) and the analysis of where PQ is lost
(tools/analyze_panoptic.py): ``inputs`` (the files), ``matching`` (one image, as panopticapi),
``errors`` (the error types), ``report`` (totals, PQ lost), ``pictures``, ``run``."""

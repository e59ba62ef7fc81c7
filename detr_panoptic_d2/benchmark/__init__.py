"""Speed benchmark of DetrPanoptic: ``python -m detr_panoptic_d2.benchmark --help``.

- ``cli``: the command line (also ``tools/benchmark.py``) and the report;
- ``inference`` / ``training``: what is timed, stage by stage;
- ``measure``, ``stage_timer``, ``memory``, ``stats``: the timing machinery;
- ``synthetic``: inputs, targets and a controlled number of kept queries;
- ``models``: the config and the models (same weights, one per mask-head mode).
"""

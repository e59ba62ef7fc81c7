"""Speed benchmark of DetrPanoptic: ``python -m benchmarks --help`` from the repository root
(or ``tools/benchmark.py``). Not part of the installed package.

- ``cli``: the command line (also ``tools/benchmark.py``) and the report;
- ``inference`` / ``training``: what is timed, stage by stage;
- ``measure``, ``stage_timer``, ``memory``, ``stats``: the timing machinery;
- ``synthetic``: inputs and targets (kept queries: ``detr_panoptic_d2.testing``);
- ``models``: the config and the models (same weights, one per mask-head mode).
"""

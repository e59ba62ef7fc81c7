#!/usr/bin/env python
"""Speed of DetrPanoptic inference and training; see ``--help`` and benchmarks/ (the
benchmark package at the repository root, not installed with the library).

    python tools/benchmark.py --config-file configs/coco/detr_R50_panoptic.yaml \\
        --size 800 1066 --compare-all-queries --json benchmark.json
"""
import os
import sys

# benchmarks/ sits beside tools/ in the source tree; this makes it importable from any directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Speed of DetrPanoptic inference and training; see ``--help`` and detr_panoptic_d2/benchmark.

    python tools/benchmark.py --config-file configs/coco/detr_R50_panoptic.yaml \\
        --size 800 1066 --compare-all-queries --json benchmark.json
"""
from detr_panoptic_d2.benchmark.cli import main

if __name__ == "__main__":
    main()

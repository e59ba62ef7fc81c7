#!/usr/bin/env python
"""PQ against training time for several runs: a PNG plot and a Markdown table.

    tools/dev/plot_convergence.py --output docs/convergence.png \
        output/a:"G = 1":0.21 output/b:"G = 6"

Each run is RUN_DIR[:LABEL[:SECONDS_PER_ITERATION]]. PQ comes from the evaluations that
Detectron2 wrote into RUN_DIR/metrics.json (TEST.EVAL_PERIOD); training time is the iteration
times SECONDS_PER_ITERATION, by default the median "time" the run itself logged. Give the
seconds per iteration of a quiet benchmark when runs were trained side by side on a shared
machine, so that every curve is timed under the same conditions.
"""
import argparse
import json
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(spec):
    """RUN_DIR[:LABEL[:SECONDS_PER_ITERATION]] -> (label, s/it, [(iteration, PQ, PQ_th, PQ_st)])."""
    folder, label, seconds = (spec.split(":") + [None, None])[:3]
    path = os.path.join(folder, "metrics.json")
    with open(path, encoding="utf-8") as f:
        entries = [json.loads(line) for line in f if line.strip()]
    times = [e["time"] for e in entries if "time" in e]
    # Iterations done: a periodic evaluation is logged at the 0-based iteration it follows, the
    # final one at MAX_ITER, past the last training iteration.
    last = max((e["iteration"] for e in entries if "time" in e), default=-1)
    points = [
        (min(e["iteration"], last) + 1, e["panoptic_seg/PQ"], e["panoptic_seg/PQ_th"], e["panoptic_seg/PQ_st"])
        for e in entries
        if "panoptic_seg/PQ" in e
    ]
    if not points:
        raise ValueError(f"{path}: no panoptic evaluation (set TEST.EVAL_PERIOD when training)")
    if seconds is None and not times:
        raise ValueError(f"{path}: no iteration times logged; give SECONDS_PER_ITERATION")
    return label or os.path.basename(folder.rstrip("/")), float(seconds or statistics.median(times)), points


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR[:LABEL[:S_PER_IT]]")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--title", default="DETR panoptic on shapes_panoptic_val, 2-core CPU")
    args = parser.parse_args(argv)
    runs = [read_run(spec) for spec in args.runs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    print("| run | s/iteration | iterations: PQ (things / stuff) |\n| --- | --- | --- |")
    for label, seconds, points in runs:
        ax.plot([i * seconds / 60 for i, *_ in points], [p[1] for p in points], marker="o", label=label)
        cells = ", ".join(f"{i}: {pq:.1f} ({th:.1f} / {st:.1f})" for i, pq, th, st in points)
        print(f"| {label} | {seconds:.3f} | {cells} |")
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("PQ")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

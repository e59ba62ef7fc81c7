#!/usr/bin/env python
"""The built-in demo (`make demo`): trains DETR panoptic on the synthetic shapes dataset on
the CPU, evaluates it on shapes_panoptic_val, draws a few validation images and prints the
metrics.

    tools/run_demo.py [--config-file configs/shapes/detr_R18_shapes.yaml] [--num-vis 4] [KEY VALUE ...]

The dataset is generated on first use under $DETECTRON2_DATASETS/shapes_panoptic
(default ./datasets); checkpoints, logs and pictures go to OUTPUT_DIR (see the config).
"""
import argparse
import os
import time

from detectron2.utils import comm

from detr_panoptic_d2.engine import DetrTrainer, setup
from detr_panoptic_d2.visualization import save_panoptic_visualizations

DEFAULT_CONFIG = "configs/shapes/detr_R18_shapes.yaml"


def format_results(results):
    """Text table of PQ/SQ/RQ (all, things, stuff), box and mask AP and mIoU, from the
    results of DetrTrainer.test for one dataset; missing metrics show as n/a."""

    def get(task, key):
        value = results.get(task, {}).get(key)
        return "n/a" if value is None else f"{value:.1f}"

    rows = ["           PQ     SQ     RQ"]
    for label, suffix in (("all", ""), ("things", "_th"), ("stuff", "_st")):
        rows.append(f"{label:<7}" + "".join(f"{get('panoptic_seg', m + suffix):>7}" for m in ("PQ", "SQ", "RQ")))
    rows.append(f"box AP {get('bbox', 'AP')}   mask AP {get('segm', 'AP')}   mIoU {get('sem_seg', 'mIoU')}")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    parser.add_argument("--num-vis", type=int, default=4, help="validation images to draw")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    start = time.time()
    cfg = setup(args)
    trainer = DetrTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    dataset = cfg.DATASETS.TEST[0]
    pictures = save_panoptic_visualizations(
        cfg, trainer.model, dataset, os.path.join(cfg.OUTPUT_DIR, "visualizations"), args.num_vis
    )
    if comm.is_main_process():
        print(f"\nDETR panoptic on {dataset}, trained {cfg.SOLVER.MAX_ITER} iterations from scratch:")
        print(format_results(results))
        print("Pictures (input | prediction | ground truth):\n  " + "\n  ".join(pictures))
        print(f"Checkpoint: {os.path.join(cfg.OUTPUT_DIR, 'model_final.pth')}")
        print(f"Wall time: {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()

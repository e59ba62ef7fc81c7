#!/usr/bin/env python
"""The built-in demo (`make demo`): trains DETR panoptic on the synthetic shapes dataset on
the CPU, evaluates it on shapes_panoptic_val, draws a few validation images, writes the
pipeline inspector's page of the first one and prints the metrics.

    tools/run_demo.py [--config-file FILE [--config-file FILE ...]] [--num-vis 4] [KEY VALUE ...]

Several --config-file run as consecutive stages (e.g. boxes, then masks on the frozen
detector): a stage whose MODEL.DETR.FROZEN_WEIGHTS is set loads the previous stage's final
checkpoint, and only the last stage is evaluated. KEY VALUE pairs apply to every stage.
The dataset is generated on first use under $DETECTRON2_DATASETS/shapes_panoptic (default
./datasets); checkpoints, logs and pictures go to each stage's OUTPUT_DIR.
"""
import argparse
import os
import time

from detectron2.data import DatasetCatalog
from detectron2.utils import comm

from detr_panoptic_d2.engine import DetrTrainer, load_config, setup
from detr_panoptic_d2.engine.defaults import cpu_has_bfloat16
from detr_panoptic_d2.inspection import inspect_images
from detr_panoptic_d2.predict.cli import build_predictor, setup_inference_cfg
from detr_panoptic_d2.visualization import save_panoptic_visualizations

DEFAULT_CONFIGS = ["configs/shapes/detr_R18_shapes.yaml"]


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


def summary(dataset, iterations, results, pictures, page, checkpoint, minutes):
    """The block the demo prints: metrics on ``dataset`` after ``iterations`` (one string per
    stage), the pictures' paths, the inspector's ``page``, the checkpoint and the wall time."""
    return "\n".join(
        [
            f"DETR panoptic on {dataset}, trained from scratch ({' + '.join(iterations)} iterations):",
            format_results(results),
            "Pictures (input | prediction | ground truth):\n  " + "\n  ".join(pictures),
            f"Pipeline, step by step: {page}",
            f"Checkpoint: {checkpoint}",
            f"Wall time: {minutes:.1f} min",
        ]
    )


def inspect_first_image(config_file, opts, dataset, output_dir):
    """Writes the pipeline inspector's page of the first image of ``dataset`` under
    ``output_dir`` (``<output_dir>/<image name>/index.html``) for the model of ``config_file``
    with ``opts`` (MODEL.WEIGHTS among them), as tools/inspect_pipeline.py does; returns its path."""
    predictor, metadata = build_predictor(setup_inference_cfg(config_file, opts))
    (page,) = inspect_images(predictor, metadata, [DatasetCatalog.get(dataset)[0]["file_name"]], output_dir)
    return page


def freezes_detector(config_file):
    """Whether the config sets MODEL.DETR.FROZEN_WEIGHTS."""
    return bool(load_config(config_file)[0].MODEL.DETR.FROZEN_WEIGHTS)


def stage_args(args, config_file, previous_output, is_last):
    """``args`` (this tool's) for one stage, as ``setup`` reads them: its config file, the
    shared overrides, the previous stage's final checkpoint as frozen detector (when the stage
    freezes one) and, for all but the last stage, no evaluation."""
    extra = [] if is_last else ["DATASETS.TEST", "()"]
    if previous_output and freezes_detector(config_file):
        extra += ["MODEL.DETR.FROZEN_WEIGHTS", os.path.join(previous_output, "model_final.pth")]
    return argparse.Namespace(**{**vars(args), "config_file": config_file, "opts": list(args.opts) + extra})


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", action="append", metavar="FILE", help="a stage's config (repeatable)")
    parser.add_argument("--num-vis", type=int, default=4, help="validation images to draw")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def without_slow_bfloat16(opts):
    """``opts`` with SOLVER.AMP.ENABLED False appended on a CPU that computes bfloat16 in
    software (no amx_bf16, avx512_bf16 or bf16 flag), where the recipe's bfloat16 training is
    several times slower than float32; else ``opts`` unchanged."""
    if cpu_has_bfloat16() is not False or "SOLVER.AMP.ENABLED" in opts[::2]:
        return list(opts)
    print("This CPU has no native bfloat16: the demo trains in float32 (SOLVER.AMP.ENABLED False)")
    return list(opts) + ["SOLVER.AMP.ENABLED", "False"]


def main():
    args = get_parser().parse_args()
    args.opts = without_slow_bfloat16(args.opts)
    configs = args.config_file or DEFAULT_CONFIGS
    start = time.time()
    previous_output, iterations = None, []
    for i, config_file in enumerate(configs):
        stage = stage_args(args, config_file, previous_output, i == len(configs) - 1)
        cfg = setup(stage)
        trainer = DetrTrainer(cfg)
        trainer.resume_or_load(resume=False)
        results = trainer.train()
        iterations.append(str(cfg.SOLVER.MAX_ITER))
        previous_output = cfg.OUTPUT_DIR if i + 1 < len(configs) else None
    dataset = cfg.DATASETS.TEST[0]
    pictures = save_panoptic_visualizations(
        cfg, trainer.model, dataset, os.path.join(cfg.OUTPUT_DIR, "visualizations"), args.num_vis
    )
    if comm.is_main_process():
        checkpoint = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        page = inspect_first_image(
            stage.config_file, stage.opts + ["MODEL.WEIGHTS", checkpoint], dataset, os.path.join(cfg.OUTPUT_DIR, "inspection")
        )
        print("\n" + summary(dataset, iterations, results, pictures, page, checkpoint, (time.time() - start) / 60))


if __name__ == "__main__":
    main()

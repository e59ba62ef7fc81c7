"""``python -m benchmarks`` (or ``tools/benchmark.py``): DetrPanoptic's speed.

Runs synthetic images of a given size through a config's model on the current device and
reports end-to-end and per-stage times, images/s and peak memory, for inference and for a
training iteration; with ``--compare-all-queries`` the same weights also run as the reference
implementation does (mask head on all queries in DETR's formulation, every optimization off:
detr_panoptic_d2.testing.reference_behaviour), or
with ``--baseline`` as ours with some config keys changed (an A/B of one optimization), and
the report gives the ratio and how far outputs, losses and gradients differ.
"""
import argparse
import json
import tempfile
import time

import torch

from detr_panoptic_d2.config import AMP_DTYPES
from detr_panoptic_d2.data.user_datasets import add_register_argument
from detr_panoptic_d2.testing import REFERENCE_OVERRIDES, as_reference

from .exported import format_onnxruntime, time_onnxruntime
from .inference import compare_outputs, run_inference
from .models import build_models, load_cfg
from .report import environment, format_report
from .synthetic import synthetic_batch
from .training import compare_training, run_training

AMP_CHOICES = tuple(AMP_DTYPES)
DEFAULT_KEPT_QUERIES = 15
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
# --outputs: (INSTANCES_ON, SEMANTIC_ON) to set, None: the config's.
OUTPUTS = {"config": None, "panoptic": (False, False), "all": (True, True)}


def argument_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].replace("``", ""))
    p.add_argument("--config-file", required=True, help="a DetrPanoptic yaml config")
    p.add_argument("--size", type=int, nargs=2, default=(800, 1066), metavar=("H", "W"), help="image size (800 1066)")
    p.add_argument("--task", choices=["inference", "training", "both"], default="both", help="what to time (both)")
    p.add_argument(
        "--compare-all-queries", action="store_true",
        help="also run the same weights as the reference implementation does (the mask head on all queries in "
        f"DETR's formulation, and every optimization off: {' '.join(REFERENCE_OVERRIDES)}) and compare",
    )
    p.add_argument(
        "--baseline", nargs=2, action="append", metavar=("KEY", "VALUE"),
        help="instead, compare with the same weights and config but KEY VALUE (repeatable): an A/B of one switch, "
        "e.g. --baseline MODEL.DETR.TEST.FOLD_BATCHNORM False",
    )
    p.add_argument("--batch-size", type=int, default=1, help="images per inference call (%(default)s)")
    p.add_argument("--train-batch-size", type=int, default=2, help="images per training iteration (%(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before the timed ones (%(default)s)")
    p.add_argument("--runs", type=int, default=3, help="timed calls (%(default)s)")
    p.add_argument(
        "--kept-queries", type=int, default=None,
        help="inference: rewrite the class head so that exactly this many queries per image pass "
        f"MODEL.DETR.TEST.OBJECT_SCORE_THRESH and the others say 'no object', as with trained weights "
        f"({DEFAULT_KEPT_QUERIES} for random weights; with MODEL.WEIGHTS the model's own scores unless given; "
        "-1: never rewrite)",
    )
    p.add_argument(
        "--queries-above-floor", type=int, default=None, metavar="M",
        help="with --kept-queries: M of the queries (kept ones included; default: the kept ones) reach "
        "MODEL.DETR.TEST.MASK_SCORE_FLOOR, the mask score of the instance and semantic outputs",
    )
    p.add_argument(
        "--outputs", choices=sorted(OUTPUTS), default="config",
        help="inference outputs: config (as the config file and overrides say; the shipped COCO configs turn "
        "all three on), panoptic (panoptic only), all (panoptic, instances, semantic) (%(default)s)",
    )
    p.add_argument(
        "--targets-per-image", type=int, default=15,
        help="synthetic ground-truth segments per training image (%(default)s; COCO panoptic averages ~11)",
    )
    p.add_argument(
        "--amp", choices=AMP_CHOICES, default="none",
        help="mixed precision: inference with MODEL.DETR.TEST.AMP_DTYPE, training with SOLVER.AMP.ENABLED "
        "(Detectron2's AMPTrainer on a GPU; on the CPU, bfloat16 only, the model's own autocast) (none)",
    )
    p.add_argument(
        "--onnx", action="store_true",
        help="also export the model to ONNX and time onnxruntime against PyTorch end to end, alternately, on the "
        "same images with the same threads (inference, CPU)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch's default)")
    p.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall",
        help="wall (default): elapsed time; cpu: the process's CPU time (CPU device only), steadier than wall "
        "time on a machine shared with other jobs, especially with --threads 1",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and images (%(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    add_register_argument(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return p


def _kept_queries(args, cfg):
    """The number of kept queries to calibrate the class head for; None: leave it alone."""
    if args.task == "training":  # the matcher, not the scores, chooses the queries trained
        return None
    if args.kept_queries is None:
        return None if cfg.MODEL.WEIGHTS and args.queries_above_floor is None else DEFAULT_KEPT_QUERIES
    return None if args.kept_queries < 0 else args.kept_queries


def _check_args(args):
    for name in ("batch_size", "train_batch_size", "runs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise SystemExit(f"--warmup must be >= 0, got {args.warmup}")
    if min(args.size) < 32:
        raise SystemExit(f"--size must be at least 32 32 (H W), got {' '.join(map(str, args.size))}")
    if args.targets_per_image < 1:
        raise SystemExit(f"--targets-per-image must be at least 1, got {args.targets_per_image}")
    if args.queries_above_floor is not None and args.kept_queries is not None and args.kept_queries < 0:
        raise SystemExit("--queries-above-floor rewrites the class head; it cannot go with --kept-queries -1")
    if args.baseline and args.compare_all_queries:
        raise SystemExit("--baseline replaces the reference of --compare-all-queries: give one of them")


def enabled_outputs(cfg):
    """Names of the inference outputs ``cfg`` turns on."""
    test = cfg.MODEL.DETR.TEST
    flags = (("panoptic", test.PANOPTIC_ON), ("instances", test.INSTANCES_ON), ("semantic", test.SEMANTIC_ON))
    return [name for name, on in flags if on]


def run_benchmark(args):
    """Runs what ``args`` (from argument_parser) asks for. Returns the JSON-able report."""
    _check_args(args)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.clock == "cpu" and torch.device(device).type != "cpu":
        raise SystemExit(f"--clock cpu measures CPU time and cannot time {device}; use --clock wall")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_cfg(args.config_file, args.opts, device, args.register)
    cfg.MODEL.DETR.TEST.AMP_DTYPE = args.amp
    if OUTPUTS[args.outputs] is not None:
        cfg.MODEL.DETR.TEST.INSTANCES_ON, cfg.MODEL.DETR.TEST.SEMANTIC_ON = OUTPUTS[args.outputs]
    if args.amp == "float16" and args.task != "inference" and torch.device(device).type == "cpu":
        raise SystemExit("--amp float16 training needs CUDA (AMPTrainer's GradScaler); use --amp bfloat16 on the CPU")
    cfg.SOLVER.AMP.ENABLED = args.amp != "none"
    kept_queries = _kept_queries(args, cfg)
    inference = args.task in ("inference", "both")
    training = args.task in ("training", "both")
    variants = {"ours": []}
    if args.compare_all_queries:
        variants["reference"] = REFERENCE_OVERRIDES
    elif args.baseline:
        variants["baseline"] = [x for pair in args.baseline for x in pair]
    height, width = args.size
    num_classes = cfg.MODEL.DETR.NUM_CLASSES
    infer_inputs = synthetic_batch(args.batch_size, height, width, num_classes, seed=args.seed)
    with tempfile.TemporaryDirectory() as workdir:
        models, info = build_models(
            cfg, variants, kept_queries=kept_queries, calibration_inputs=infer_inputs,
            workdir=workdir if training else None, seed=args.seed, above_floor=args.queries_above_floor,
        )
    if "reference" in models:
        as_reference(models["reference"])
    common = {"warmup": args.warmup, "runs": args.runs, "device": device, "clock": CLOCKS[args.clock]}
    report = {
        "config_file": args.config_file,
        "opts": list(args.opts),
        "image_size": [height, width],
        "amp": args.amp,
        "clock": args.clock,
        "warmup": args.warmup,
        "runs": args.runs,
        "seed": args.seed,
        "environment": environment(device),
        "model": info,
        "outputs": {"chosen_by": args.outputs, "enabled": enabled_outputs(cfg)},
        "mask_score_floor": cfg.MODEL.DETR.TEST.MASK_SCORE_FLOOR,
    }
    report["notes"] = _notes(cfg, inference, report["environment"], args.clock)
    if info["own_weights"]:
        report["notes"].append(
            f"{', '.join(info['own_weights'])}: another architecture, with its own random weights (seed {args.seed}); "
            "outputs, losses and gradients are not compared"
        )
    if inference:
        results = run_inference(models, infer_inputs, **common)
        section = {"batch_size": args.batch_size, "modes": {k: r for k, (r, _) in results.items()}}
        if len(models) == 2 and not info["own_weights"]:
            section["comparison"] = compare_outputs(*(outputs for _, outputs in results.values()))
        report["inference"] = _with_speedup(section)
    if inference and args.onnx:
        report["onnxruntime"] = time_onnxruntime(cfg, models["ours"], infer_inputs, threads=args.threads, **common)
    if training:
        train_inputs = synthetic_batch(
            args.train_batch_size, height, width, num_classes, args.targets_per_image, seed=args.seed + 1
        )
        section = {"batch_size": args.train_batch_size, "targets_per_image": args.targets_per_image, "modes": {}}
        if len(models) == 2 and not info["own_weights"]:
            section["comparison"] = compare_training(*models.values(), train_inputs, amp=args.amp, device=device)
        section["modes"] = run_training(models, train_inputs, cfg, amp=args.amp, **common)
        report["training"] = _with_speedup(section)
    return report


def _notes(cfg, inference, env, clock):
    """Caveats about what was timed."""
    notes = []
    test = cfg.MODEL.DETR.TEST
    if inference and (test.INSTANCES_ON or test.SEMANTIC_ON):
        notes.append(
            "MODEL.DETR.TEST.INSTANCES_ON / SEMANTIC_ON run the mask head on every query reaching "
            f"MASK_SCORE_FLOOR ({test.MASK_SCORE_FLOOR:g}); how many do depends on the class scores (see "
            "--queries-above-floor); --outputs panoptic times panoptic output alone"
        )
    load = env.get("load_average_1min")
    if clock == "wall" and load is not None and load > 0.5 * env["cpu_count"]:
        notes.append(
            f"load average {load:.1f} on {env['cpu_count']} CPUs: other jobs are running, and wall-clock times of "
            "multi-threaded CPU runs suffer most in small operations; prefer --threads 1 --clock cpu on a busy machine"
        )
    return notes


def _with_speedup(section):
    """Adds "speedup" (the other model's median total / ours) when two models ran."""
    ours, *others = section["modes"].values()
    if others:
        section["speedup"] = others[0]["total"]["median"] / ours["total"]["median"]
    return section


def main(argv=None):
    args = argument_parser().parse_args(argv)
    report = run_benchmark(args)
    print(format_report(report))
    if "onnxruntime" in report:
        print("\n" + "\n".join(format_onnxruntime(report["onnxruntime"])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.json}")
    return report

#!/usr/bin/env python
"""Compare training recipes under a multi-seed protocol: arms x seeds, paired by seed.

    tools/compare_recipes.py --config-file configs/shapes/detr_R18_shapes.yaml \\
        --output-dir output/compare/ema --jobs 2 --seeds 0 1 2 \\
        --common TEST.EVAL_PERIOD 1000 --arm baseline --arm ema SOLVER.EMA.ENABLED True

Each arm is a name and KEY VALUE overrides of the config; the first arm is the baseline. Every
arm is trained once per seed (SEED 0, 1, 2 by default: the same seeds for every arm, so that
runs are paired) by tools/train_net.py with one thread (OMP_NUM_THREADS=1), --jobs runs side
by side. --common overrides apply to every arm (e.g. TEST.EVAL_PERIOD). A shorter
proxy arm must run a complete schedule of its own (its SOLVER.MAX_ITER and SOLVER.STEPS, or
a cosine decay), never an early checkpoint of a longer run.

The report gives, at each evaluation (iteration) and for PQ, PQ of things (PQ_th) and of
stuff (PQ_st) (and of the weight average, ema/..., when SOLVER.EMA is on): each arm's mean
+- standard error over seeds, and each later arm's mean paired gain over the baseline (per
seed) +- its standard error, "adopt" only when the gain exceeds two standard errors. It is
printed and written to OUTPUT_DIR/summary.json.

Resuming: run the same command again. A run that finished (OUTPUT_DIR/ARM/seedS/protocol_done.json)
is not run again; an unfinished one (killed) is started again from scratch, so a killed
comparison loses no finished run. --report-only reports on what is there.
"""
import argparse
import concurrent.futures
import json
import math
import os
import shutil
import subprocess
import sys

from detr_panoptic_d2.engine import load_config
from detr_panoptic_d2.protocol import PANOPTIC_METRICS, compare_arms, evaluations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DONE = "protocol_done.json"


def argument_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the yaml config every arm starts from")
    p.add_argument("--output-dir", required=True, help="runs go to OUTPUT_DIR/ARM/seedS, the report to OUTPUT_DIR")
    p.add_argument(
        "--arm", nargs="+", action="append", required=True, metavar="NAME [KEY VALUE ...]",
        help="an arm: a name and its config overrides (repeat for each arm; the first is the baseline)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SEED values, paired across arms (%(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side, one thread each (%(default)s)")
    p.add_argument("--report-only", action="store_true", help="run nothing; report on the finished and running runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands of the runs still to do, run nothing")
    p.add_argument("--common", nargs="+", default=[], metavar="KEY VALUE", help="overrides for every arm")
    return p


def parse_arms(arm_args):
    """[[NAME, KEY, VALUE, ...], ...] -> {NAME: [KEY, VALUE, ...]}; ValueError naming a bad arm."""
    arms = {}
    for name, *overrides in arm_args:
        if len(overrides) % 2:
            raise ValueError(f"--arm {name}: overrides come in KEY VALUE pairs, got {overrides}")
        if name in arms:
            raise ValueError(f"--arm {name} is given twice")
        if "/" in name or name.startswith("."):
            raise ValueError(f"--arm {name!r}: the name is a folder name, without '/'")
        arms[name] = overrides
    return arms


def check_arms(config_file, arms, opts):
    """Each arm's config loads (ValueError naming the arm and the error otherwise), and no arm
    sets SEED or OUTPUT_DIR, which the protocol sets."""
    for name, overrides in arms.items():
        if {"SEED", "OUTPUT_DIR"} & set(overrides[::2]) or {"SEED", "OUTPUT_DIR"} & set(opts[::2]):
            raise ValueError(f"--arm {name}: SEED and OUTPUT_DIR are set by the protocol (--seeds, --output-dir)")
        try:
            load_config(config_file, [*opts, *overrides])
        except Exception as e:  # yacs raises AssertionError/KeyError/ValueError for bad keys and values
            raise ValueError(f"--arm {name}: the config {config_file} with {overrides + list(opts)} does not load: {e}") from e


def run_dir(output_dir, arm, seed):
    return os.path.join(output_dir, arm, f"seed{seed}")


def command(config_file, overrides, opts, seed, directory):
    """The tools/train_net.py command of one run."""
    return [
        sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", config_file,
        *opts, *overrides, "SEED", str(seed), "OUTPUT_DIR", directory,
    ]


def run_one(cmd, directory):
    """Runs ``cmd`` with one thread from scratch in ``directory``; marks it done when it exits 0.
    Returns (directory, return code)."""
    if os.path.isdir(directory):
        shutil.rmtree(directory)  # an unfinished run starts again
    os.makedirs(directory)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": REPO}
    with open(os.path.join(directory, "protocol_log.txt"), "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    if code == 0:
        with open(os.path.join(directory, DONE), "w") as f:
            json.dump({"command": cmd}, f)
    return directory, code


def pending_runs(args, arms):
    """[(command, directory)] of the runs not finished yet."""
    todo = []
    for arm, overrides in arms.items():
        for seed in args.seeds:
            directory = run_dir(args.output_dir, arm, seed)
            if not os.path.isfile(os.path.join(directory, DONE)):
                todo.append((command(args.config_file, overrides, args.common, seed, directory), directory))
    return todo


def collect(output_dir, arms, seeds):
    """{iteration: {metric: {arm: {seed: value}}}} over the runs' metrics.json files."""
    table = {}
    for arm in arms:
        for seed in seeds:
            for iteration, values in evaluations(run_dir(output_dir, arm, seed)).items():
                for metric, value in values.items():
                    table.setdefault(iteration, {}).setdefault(metric, {a: {} for a in arms})[arm][seed] = value
    return table


def summarize(table):
    """{iteration: {metric: compare_arms(...)}} of ``collect``'s table, metrics in PANOPTIC_METRICS' order."""
    order = list(PANOPTIC_METRICS.values())
    return {
        iteration: {m: compare_arms(table[iteration][m]) for m in sorted(table[iteration], key=order.index)}
        for iteration in sorted(table)
    }


def _pm(mean, se):
    return f"{mean:.2f} +- {se:.2f}" if not math.isnan(se) else f"{mean:.2f}"


def format_summary(summary):
    lines = []
    for iteration, metrics in summary.items():
        lines += ["", f"evaluation at iteration {iteration}", "| metric | arm | seeds | mean +- se | paired gain +- se | verdict |",
                  "|---|---|---|---|---|---|"]
        for metric, arms in metrics.items():
            for arm, e in arms.items():
                gain = verdict = ""
                if "gain" in e:
                    gain = f"{_pm(e['gain'], e['gain_se'])} ({e['paired']} paired)"
                    verdict = "adopt" if e["adopt"] else "not shown"
                lines.append(f"| {metric} | {arm} | {e['n']} | {_pm(e['mean'], e['se'])} | {gain} | {verdict} |")
    return "\n".join(lines) if lines else "no evaluation logged yet"


def main(argv=None):
    args = argument_parser().parse_args(argv)
    if not os.path.isfile(args.config_file):
        raise SystemExit(f"--config-file {args.config_file!r} does not exist")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    # The runs start in the repository: paths given relative to here are made absolute.
    args.config_file, args.output_dir = os.path.abspath(args.config_file), os.path.abspath(args.output_dir)
    try:
        if len(args.common) % 2:
            raise ValueError(f"--common: overrides come in KEY VALUE pairs, got {args.common}")
        arms = parse_arms(args.arm)
        check_arms(args.config_file, arms, args.common)
    except ValueError as e:
        raise SystemExit(str(e))
    todo = [] if args.report_only else pending_runs(args, arms)
    if args.dry_run:
        for cmd, _ in todo:
            print(" ".join(cmd))
        return {}
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for directory, code in pool.map(lambda t: run_one(*t), todo):
            print(f"{'finished' if code == 0 else f'FAILED (exit {code})'}: {directory}", flush=True)
            if code:
                failed.append(directory)
    summary = summarize(collect(args.output_dir, arms, args.seeds))
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump({"arms": arms, "seeds": args.seeds, "opts": args.common, "evaluations": summary}, f, indent=2)
    print(format_summary(summary))
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed; see protocol_log.txt in {failed}")
    return summary


if __name__ == "__main__":
    main()

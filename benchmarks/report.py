"""The benchmark's outputs: the environment it ran in, and the report as text (a table per task)."""
import os
import platform

import torch
from tabulate import tabulate

from detr_panoptic_d2.env import environment_report

LABELS = {"ours": "ours", "reference": "reference behaviour", "baseline": "baseline (--baseline)"}


def environment(device):
    """Where the benchmark ran: the package's environment report (``detr_panoptic_d2.env``, on
    Detectron2's ``collect_env_info``), device, CPU name and threads, and the load average at
    the start (other jobs on the CPU)."""
    env = {
        "report": environment_report(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if hasattr(os, "getloadavg"):
        env["load_average_1min"] = os.getloadavg()[0]
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ms(summary):
    return f"{1000 * summary['median']:.1f} [{1000 * summary['q1']:.1f}, {1000 * summary['q3']:.1f}]"


def _ratio(a, b):
    return f"x{b / a:.2f}" if a > 0 and b > 0 else ""


def task_table(task):
    """Text table of one task's section of the JSON report (see cli.run_benchmark)."""
    modes = task["modes"]
    keys = list(modes)
    compare = len(keys) == 2
    stage_names = list(dict.fromkeys(s for k in keys for s in modes[k]["stages"]))
    headers = ["stage (ms: median [q1, q3])"] + [LABELS[k] for k in keys]
    if compare:
        headers.append(f"{keys[1]} / ours")
    zero = {"median": 0.0, "q1": 0.0, "q3": 0.0}
    rows = []
    for name in stage_names + ["total"]:
        cells = [modes[k]["total"] if name == "total" else modes[k]["stages"].get(name, zero) for k in keys]
        row = [name] + [_ms(c) for c in cells]
        if compare:
            row.append(_ratio(cells[0]["median"], cells[1]["median"]))
        rows.append(row)
    extra = [
        ("images/s", "images_per_s", "{:.3f}"),
        ("peak memory (MiB)", "peak_memory_mib", "{:.0f}"),
        ("memory before a call (MiB)", "memory_at_start_mib", "{:.0f}"),
        ("mask-head queries / image", "mask_head_queries_per_image", "{:g}"),
        ("panoptic segments / image", "segments_per_image", "{:g}"),
    ]
    for label, field, fmt in extra:
        if any(modes[k].get(field) is not None for k in keys):
            rows.append([label] + [fmt.format(modes[k][field]) if modes[k].get(field) is not None else "" for k in keys])
    return tabulate(rows, headers=headers, tablefmt="github")


def format_report(report):
    """The report as text: a header, then a table and a verdict line per task."""
    env = report["environment"]
    model = report["model"]
    lines = [
        f"config {report['config_file']} {' '.join(report['opts'])}".rstrip(),
        f"device {env.get('gpu', env['cpu'])} ({env['device']}, {env['torch_threads']} CPU threads), "
        f"torch {env['torch']}, amp {report['amp']}, {report['clock']} clock",
        f"images {report['image_size'][0]}x{report['image_size'][1]}, weights: {model['weights']}, "
        f"kept queries: {model['kept_queries'] if model['kept_queries'] is not None else 'from the weights'}, "
        f"{report['warmup']} warm-up + {report['runs']} timed runs",
        f"outputs: {', '.join(report['outputs']['enabled'])} (--outputs {report['outputs']['chosen_by']}), "
        f"MODEL.DETR.TEST.MASK_SCORE_FLOOR {report['mask_score_floor']:g}"
        + (f", {model['queries_above_floor']} queries above it" if model.get("queries_above_floor") is not None else ""),
    ]
    lines += [f"{LABELS[k]}: ours with {' '.join(v) or '(nothing)'}" for k, v in model["variants"].items() if k != "ours"]
    lines += [f"NOTE: {note}" for note in report["notes"]]
    for task in ("inference", "training"):
        if task not in report:
            continue
        section = report[task]
        title = f"{task}, batch {section['batch_size']}"
        if task == "training":
            frozen = "frozen detector (mask stage)" if model["frozen_detector"] else "whole model"
            title += f", {section['targets_per_image']} targets/image, {frozen}"
        lines += ["", title, task_table(section)]
        kept = model["kept_queries"]
        ours = section["modes"]["ours"]
        if task == "inference" and kept is not None and ours["mask_head_queries_per_image"] != kept:
            lines.append(
                f"WARNING: {ours['mask_head_queries_per_image']:g} queries per image were kept, not {kept} "
                "(mixed precision moves the class scores of the calibrated head)"
            )
        if "speedup" in section:
            lines.append(f"{LABELS[list(section['modes'])[1]]} / ours: x{section['speedup']:.2f} end to end")
        comparison = section.get("comparison")
        if comparison and task == "inference":
            kinds = [k for k in comparison if k in ("panoptic_seg", "instances", "sem_seg")]
            verdicts = [f"{k} {'identical' if comparison[k] else 'DIFFERENT'}" for k in kinds]
            if comparison.get("panoptic_pixels_differing"):
                verdicts.append(
                    f"{comparison['panoptic_pixels_differing']} panoptic pixels differ (agreement "
                    f"{100 * comparison['panoptic_pixel_agreement']:.3f}%, "
                    f"{'same' if comparison['panoptic_same_segments'] else 'DIFFERENT'} segments)"
                )
            floored = " (instances and semantic: by MASK_SCORE_FLOOR)" if {"instances", "sem_seg"} & set(kinds) else ""
            lines.append(f"outputs: {', '.join(verdicts)}{floored}")
        elif comparison:
            losses = "identical" if comparison["losses_equal"] else f"max abs diff {comparison['losses_max_abs_diff']:.3g}"
            grads = "identical" if comparison["grads_equal"] else (
                f"max abs diff {comparison['grads_max_abs_diff']:.3g} (largest gradient {comparison['grads_max_abs']:.3g})"
            )
            lines.append(f"losses: {losses}; gradients: {grads}")
    return "\n".join(lines)

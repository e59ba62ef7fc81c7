"""The timing loop both benchmarks share: warm-up, timed runs, stage times, peak memory."""
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, List

from torch import nn

from .memory import PeakMemory
from .stage_timer import StageTimer
from .stats import summarize, summarize_runs


class MaskHeadRows:
    """Counts the objects (rows) the mask head of ``model`` computes masks for."""

    def __init__(self, model):
        self.rows = 0
        head = getattr(model, "mask_head", None)  # None: not a DetrPanoptic (an exported model)
        self._handle = head.register_forward_pre_hook(self._count) if head is not None else None

    def _count(self, module, args):
        self.rows += args[0].shape[0]

    def remove(self):
        if self._handle is not None:
            self._handle.remove()


@dataclass
class Contestant:
    """One thing to time. ``step(timer)`` does one call (it may time extra stages with
    ``timer.stage(name)``); ``points`` are the stages recorded on ``model`` (see
    StageTimer.attach); ``num_images`` is the batch size of a call."""

    model: nn.Module
    points: List
    step: Callable
    num_images: int


def measure(contestants, *, warmup, runs, device, clock=None):
    """Times several contestants (a dict key -> Contestant) alternately: ``warmup`` untimed
    rounds, then ``runs`` timed rounds, each round calling every contestant once, so that a
    busy machine slows all of them alike. Time no stage covers is reported as "other".

    Returns {key: (report, what its last step returned)}. A report has "all_queries" (whether
    the model runs its mask head on all queries, testing.reference_behaviour), "total" and "stages" (summaries in seconds of ``clock``, see
    StageTimer, and stats.summarize), "images_per_s" (num_images / median total),
    "peak_memory_mib" (highest over the timed runs), "memory_at_start_mib" (held before the
    last run) and "memory_kind" (see memory.PeakMemory), and "mask_head_queries_per_image"
    (of the last call).
    """
    if runs < 1:
        raise ValueError(f"--runs must be at least 1, got {runs}")
    timers = {key: StageTimer(device, clock) for key in contestants}
    rows = {key: MaskHeadRows(c.model) for key, c in contestants.items()}
    per_run = {key: [] for key in contestants}
    results = {}
    with ExitStack() as stack:
        for key, c in contestants.items():
            stack.enter_context(timers[key].attach(c.points))
            stack.callback(rows[key].remove)
        for i in range(warmup + runs):
            for key, c in contestants.items():
                timer = timers[key]
                timer.reset()
                rows[key].rows = 0
                with PeakMemory(device) as peak, timer.stage("other"):
                    results[key] = c.step(timer)
                if i >= warmup:
                    per_run[key].append((dict(timer.seconds), peak))
    return {key: (_report(c, per_run[key], rows[key]), results[key]) for key, c in contestants.items()}


def _report(contestant, per_run, rows):
    total = summarize([sum(seconds.values()) for seconds, _ in per_run])
    return {
        "all_queries": bool(getattr(contestant.model, "all_queries", False)),
        "total": total,
        "stages": summarize_runs([seconds for seconds, _ in per_run]),
        "images_per_s": contestant.num_images / total["median"],
        "peak_memory_mib": max(peak.mib for _, peak in per_run),
        "memory_at_start_mib": per_run[-1][1].start_mib,
        "memory_kind": per_run[-1][1].kind,
        "mask_head_queries_per_image": rows.rows / contestant.num_images,
    }

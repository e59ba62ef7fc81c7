"""Per-stage times, recorded at the model's own modules and methods.

A ``StageTimer`` attaches to named points of a model (forward hooks on ``nn.Module``s, or a
wrapper on a bound method) and accumulates, per stage name, the *exclusive* time spent in
it: time spent in another recorded stage nested inside (e.g. the mask head inside
``inference``) is counted for the inner stage only, so stage times add up to at most the
end-to-end time. On CUDA the device is synchronized at every stage boundary, so kernel time
lands in the stage that launched it.
"""
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import nn


class StageTimer:
    """Accumulates exclusive seconds per stage while attached (see ``attach``)."""

    def __init__(self, device, clock=None):
        """clock: seconds-returning function; default time.perf_counter (wall clock). The
        process's CPU time (time.process_time) is steadier on a shared CPU machine with one
        torch thread."""
        self.sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        self.clock = clock or time.perf_counter
        self.seconds = defaultdict(float)
        self._stack = []  # [stage name, start time, seconds spent in nested stages]

    def reset(self):
        self.seconds.clear()

    def enter(self, name):
        self.sync()
        self._stack.append([name, self.clock(), 0.0])

    def exit(self):
        self.sync()
        name, start, nested = self._stack.pop()
        inclusive = self.clock() - start
        self.seconds[name] += inclusive - nested
        if self._stack:
            self._stack[-1][2] += inclusive

    @contextmanager
    def stage(self, name):
        """Times the enclosed block as ``name``."""
        self.enter(name)
        try:
            yield
        finally:
            self.exit()

    @contextmanager
    def attach(self, points):
        """points: (stage name, target) pairs, target an nn.Module (timed through forward
        hooks) or (object, method name) (the bound method is wrapped on that instance).
        Several points may share a stage name. Everything is restored on exit."""
        undo = []
        for name, target in points:
            if isinstance(target, nn.Module):
                undo.append(target.register_forward_pre_hook(lambda *_, n=name: self.enter(n)).remove)
                undo.append(target.register_forward_hook(lambda *_: self.exit()).remove)
            else:
                obj, attr = target
                undo.append(self._wrap_method(obj, attr, name))
        try:
            yield self
        finally:
            for remove in reversed(undo):
                remove()

    def _wrap_method(self, obj, attr, name):
        method = getattr(obj, attr)
        own = vars(obj).get(attr)  # an attribute of the instance itself, restored as it was

        def timed(*args, **kwargs):
            with self.stage(name):
                return method(*args, **kwargs)

        setattr(obj, attr, timed)
        return (lambda: setattr(obj, attr, own)) if own is not None else (lambda: delattr(obj, attr))

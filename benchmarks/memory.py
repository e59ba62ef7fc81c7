"""Peak memory of a block of work, without psutil.

CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, the caching allocator's view).
CPU on Linux: the process's resident-set high-water mark (``VmHWM`` in /proc/self/status),
reset before the block by writing 5 to /proc/self/clear_refs. Elsewhere on the CPU:
``resource.getrusage``'s ``ru_maxrss``, which cannot be reset (a peak over the process's
whole life so far).
"""
import sys

import torch

_STATUS = "/proc/self/status"


def _status_kib(field):
    with open(_STATUS) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_rss_high_water():
    """True when the kernel reset the high-water mark (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mib`` (the peak), ``peak.start_mib``
    (the same measure on entry: what the process or CUDA held before the block; None where
    unknown) and ``peak.kind``."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.mib = None
        self.start_mib = None
        self.kind = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_mib = torch.cuda.memory_allocated() / 2**20
            self.kind = "cuda_max_allocated"
        elif _reset_rss_high_water():
            self.start_mib = _status_kib("VmRSS") / 1024
            self.kind = "cpu_peak_rss"
        else:
            self.kind = "cpu_peak_rss_process_lifetime"
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        elif self.kind == "cpu_peak_rss":
            self.mib = _status_kib("VmHWM") / 1024
        else:
            import resource  # POSIX only; Windows has neither /proc nor this

            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.mib = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS
        return False

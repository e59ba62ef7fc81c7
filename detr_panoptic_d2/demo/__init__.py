"""The demo tool's machinery (tools/demo.py): fault-tolerant image reading, same-size batches,
atomic per-image outputs, one process per GPU or CPU share."""
from .runner import run_demo_process

__all__ = ["run_demo_process"]

"""The inference tools' machinery (tools/demo.py, tools/inspect_pipeline.py, tools/export_model.py):
the shared command line and predictor (cli.py); for tools/demo.py fault-tolerant image reading and
same-size batches (images.py), atomic per-image outputs (outputs.py) and one process per GPU or
CPU share (runner.py)."""
from .runner import run_demo_process

__all__ = ["run_demo_process"]

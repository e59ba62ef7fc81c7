"""The pipeline inspector: records what each step of DetrPanoptic produces for an image
(trace.py) and shows it as an HTML page with PNGs (page.py), for image files (pages.py)."""
from .page import write_index_page, write_pipeline_page
from .pages import inspect_images
from .trace import PipelineTrace, TracedObject, trace_pipeline

__all__ = [
    "PipelineTrace",
    "TracedObject",
    "inspect_images",
    "trace_pipeline",
    "write_index_page",
    "write_pipeline_page",
]

"""The inspector on image files: a page per image and the index linking them (the work of
tools/inspect_pipeline.py, also run by tools/run_demo.py)."""
import os

from ..data.image_io import read_image
from .page import write_index_page, write_pipeline_page
from .trace import trace_pipeline


def inspect_images(predictor, metadata, paths, out_dir):
    """Traces each image file of ``paths`` (an iterable, e.g. under a progress bar) with the
    predictor's DetrPanoptic and writes its page ``out_dir/<image name>/index.html``, then
    ``out_dir/index.html`` linking them. Returns the pages' paths, in order."""
    pages, links = [], []
    for path in paths:
        image = read_image(path, format="BGR")
        title = os.path.basename(path)
        name = os.path.splitext(title)[0]
        trace = trace_pipeline(predictor, image)
        pages.append(write_pipeline_page(trace, image[:, :, ::-1], metadata, os.path.join(out_dir, name), title))
        links.append((name, title))
    write_index_page(links, out_dir)
    return pages

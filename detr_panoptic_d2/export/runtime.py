"""``OnnxPanopticModel``: an exported model run by onnxruntime, with Detectron2's model contract.

It is called like DetrPanoptic in eval mode (a list of dicts with "image", C x H x W in
INPUT.FORMAT after the test-time resize, and the original "height"/"width") and returns
``[{"panoptic_seg": (H x W int32 segment ids, segments_info)}]``: the graph gives the kept
queries' mask logits, and a ``DetrPostProcessor``, the object the PyTorch model merges with,
merges them. Detectron2's ``inference_on_dataset`` and the evaluators
take it as they take the model.

onnxruntime runs with denormal floats flushed to zero (``session.set_denormal_as_zero``): the
attention of random or badly scaled weights underflows to denormals, which x86 CPUs compute
tens of times slower. The caller's thread is switched for the session's
creation and each run only (``denormals_flushed``), so PyTorch in the same thread computes
as before.
"""
import contextlib
import json
import os

import numpy as np
import torch

from ..checkpoint.model_classes import use_model_classes
from ..modeling import DetrPostProcessor, MergeRule
from .metadata import METADATA_KEY, check_fits


def _flushing_denormals():
    """Whether this thread flushes denormal float results to zero (x86 FTZ)."""
    tiny = np.float32(np.finfo(np.float32).tiny)
    return bool(tiny / np.float32(2) == 0)


@contextlib.contextmanager
def denormals_flushed():
    """Runs the block with this thread's denormal floats flushed to zero (FTZ and DAZ, as
    ``session.set_denormal_as_zero`` sets onnxruntime's own threads) and restores the thread's
    mode on exit. A no-op where the CPU has no such mode."""
    before = _flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def _session(path, threads):
    """An onnxruntime CPU session of ``path``; ValueError naming the file when it is not ONNX."""
    import onnxruntime as ort

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Exported model {path!r} does not exist")
    options = ort.SessionOptions()
    options.add_session_config_entry("session.set_denormal_as_zero", "1")  # also sets the creating thread
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    with denormals_flushed():
        try:
            return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types, one per failure kind
            raise ValueError(f"{path} is not an ONNX model onnxruntime can load: {e}") from e


class OnnxPanopticModel:
    """An ONNX file written by tools/export_model.py, as a Detectron2 model (see the module).

    cfg: when given, the model must have been exported from a config of the same sizes and
    classes (metadata.check_fits; an unregistered DATASETS.TEST[0] gets the export's classes,
    model_classes.use_model_classes), and the score threshold, small-segment area and merge rule
    (MODEL.DETR.TEST.MERGE*) are taken from it (run-time values); else from the export's
    metadata (the reference rule for an export that records none). threads: onnxruntime's
    intra-op threads (None: onnxruntime's default)."""

    def __init__(self, path, cfg=None, threads=None):
        self.path = path
        self.session = _session(path, threads)
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if stored is None:
            raise ValueError(f"{path} has no {METADATA_KEY!r} metadata: it was not written by tools/export_model.py")
        self.metadata = json.loads(stored)
        if cfg is not None:
            if self.metadata.get("classes"):
                use_model_classes(self.metadata["classes"], cfg.DATASETS.TEST[0], path, check=False)
            check_fits(self.metadata, cfg, path)
            test = cfg.MODEL.DETR.TEST
            settings = (test.OBJECT_SCORE_THRESH, test.SMALL_SEGMENT_AREA, MergeRule.from_config(cfg))
        else:
            merge = MergeRule(**self.metadata.get("merge", {}))
            settings = (self.metadata["score_threshold"], self.metadata["small_segment_area"], merge)
        self.postprocessor = DetrPostProcessor(
            num_classes=len(self.metadata["class_names"]),
            thing_ids=self.metadata["thing_ids"],
            object_score_thresh=settings[0],
            small_segment_area=settings[1],
            merge=settings[2],
        )

    def run_graph(self, image):
        """image: C x H x W uint8 (numpy or tensor). Returns the graph's outputs by name
        (graph.OUTPUT_NAMES) as torch tensors. ValueError names the file when the channel
        count differs from the export's."""
        image = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        channels = self.metadata["input"]["channels"]
        if image.ndim != 3 or image.shape[0] != channels:
            raise ValueError(
                f"{self.path} takes {channels} x H x W images ({self.metadata['input']['format']}), "
                f"got an array of shape {tuple(image.shape)}"
            )
        feeds = {"image": image, "score_threshold": np.array(self.postprocessor.object_score_thresh, dtype=np.float32)}
        names = [o.name for o in self.session.get_outputs()]
        with denormals_flushed():
            values = self.session.run(names, feeds)
        return {n: torch.from_numpy(v) for n, v in zip(names, values)}

    def panoptic(self, image, output_size):
        """One image (C x H x W, after the test-time resize) -> (panoptic_seg of
        ``output_size``, segments_info), as DetrPanoptic gives it."""
        out = self.run_graph(image)
        valid = out["valid"]
        queries = out["queries"][valid]
        return self.postprocessor.merge_panoptic(
            out["mask_logits"][valid],
            out["scores"][queries],
            out["classes"][queries],
            tuple(image.shape[-2:]),
            output_size,
            self.metadata["mask_stride"],
        )

    def __call__(self, batched_inputs):
        """Detectron2's inference contract (see the module docstring)."""
        results = []
        for x in batched_inputs:
            image = x["image"]
            size = (x.get("height", image.shape[-2]), x.get("width", image.shape[-1]))
            results.append({"panoptic_seg": self.panoptic(image, size)})
        return results

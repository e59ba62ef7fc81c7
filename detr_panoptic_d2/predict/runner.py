"""One process of ``tools/demo.py``, as started by Detectron2's ``launch``: its share of the
images (every world-size-th, from its rank), read by DataLoader workers, run in same-size
batches, written atomically; then the first process merges the COCO-panoptic annotations of
all processes and reports every image that could not be read."""
import logging
import os

import torch
from detectron2.utils import comm
from tqdm import tqdm

from .cli import start_inference_tool
from .images import ImageReader, SameSizeBatches, image_loader
from .outputs import DemoOutputs

logger = logging.getLogger(__name__)


def _image_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def _predict(model, batch):
    """Runs ``model`` on a list of ImageReader records of one size, one image per call, and
    returns their outputs: with several threads even the transformer's batched matrix products
    round differently by batch size (scores moved by 1e-8 with 2 threads), so images go through
    the model alone and a batch groups only their reading."""
    inputs = [{"image": r["image"], "height": r["height"], "width": r["width"], "file_name": r["path"]} for r in batch]
    with torch.no_grad():
        return [model([x])[0] for x in inputs]


def run_demo_process(args, failed_count):
    """The work of one process. args: tools/demo.py's parsed arguments; failed_count: a shared
    integer (multiprocessing Value) set to the number of images that failed in all processes."""
    paths, predictor, metadata = start_inference_tool(args)
    outputs = DemoOutputs(args.output, args.save_coco_panoptic)
    if comm.is_main_process():
        for path in outputs.make_folders():
            logger.info(f"Removed {path}, a partial file left by a killed run")
    comm.synchronize()
    mine = range(comm.get_rank(), len(paths), comm.get_world_size())
    annotations, failures, todo = {}, {}, []
    for i in mine:
        if args.skip_existing and outputs.finished(_image_name(paths[i])):
            if outputs.coco:
                annotations[i] = outputs.read_annotation(_image_name(paths[i]))
        else:
            todo.append({"index": i, "path": paths[i]})
    batches = SameSizeBatches(args.batch_size)
    reader = ImageReader(predictor.aug, predictor.input_format)

    def write(batch):
        for record, result in zip(batch, _predict(predictor.model, batch)):
            annotation = outputs.write(_image_name(record["path"]), record["rgb"], *result["panoptic_seg"], metadata)
            if outputs.coco:
                annotations[record["index"]] = annotation

    loader = image_loader(todo, reader, args.num_workers)
    for (record,) in tqdm(loader, total=len(todo), desc="images", unit="img", disable=not comm.is_main_process()):
        if "error" in record:
            failures[record["index"]] = record["error"]
            logger.error(f"Cannot read {record['path']}: {record['error']}; skipping it")
            continue
        for batch in batches.add(record):
            write(batch)
    for batch in batches.flush():
        write(batch)
    counts = {"written": len(todo) - len(failures), "skipped": len(mine) - len(todo)}
    _finish(paths, outputs, metadata, comm.gather((annotations, failures, counts), dst=0))
    failed_count.value = sum(comm.all_gather(len(failures)))


def _finish(paths, outputs, metadata, gathered):
    """On the first process (``gathered``: every process's (annotations, failures, counts);
    empty elsewhere): writes the merged COCO-panoptic JSON in input order and logs the summary."""
    if not gathered:
        return
    annotations, failures = {}, {}
    written = skipped = 0
    for ann, fail, counts in gathered:
        annotations.update(ann)
        failures.update(fail)
        written += counts["written"]
        skipped += counts["skipped"]
    if outputs.coco:
        path = outputs.write_coco_json([annotations[i] for i in sorted(annotations)], metadata)
        logger.info(f"Wrote {path} ({len(annotations)} images)")
    lines = [
        f"{len(paths)} images: {written} written, {skipped} skipped (finished by an earlier run), "
        f"{len(failures)} failed" + (":" if failures else "")
    ]
    lines += [f"  {paths[i]}: {failures[i]}" for i in sorted(failures)]
    (logger.error if failures else logger.info)("\n".join(lines))

"""The panoptic metrics of a training run, read from its Detectron2 ``metrics.json``."""
import json
import os

# metrics.json key -> short name: PQ of all classes, of things, of stuff (Detectron2's
# COCOPanopticEvaluator); the weight average's (SOLVER.EMA) under "ema/".
PANOPTIC_METRICS = {
    "panoptic_seg/PQ": "PQ",
    "panoptic_seg/PQ_th": "PQ_th",
    "panoptic_seg/PQ_st": "PQ_st",
    "ema/panoptic_seg/PQ": "ema/PQ",
    "ema/panoptic_seg/PQ_th": "ema/PQ_th",
    "ema/panoptic_seg/PQ_st": "ema/PQ_st",
}


def evaluations(run_dir):
    """{iteration: {short name: value}} of every evaluation logged in ``run_dir``/metrics.json
    ({} when there is none yet). A line cut short by a killed run is ignored."""
    path = os.path.join(run_dir, "metrics.json")
    found = {}
    if not os.path.isfile(path):
        return found
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            values = {short: record[key] for key, short in PANOPTIC_METRICS.items() if key in record}
            if values:
                found.setdefault(int(record["iteration"]), {}).update(values)
    return found

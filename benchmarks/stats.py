"""Summary statistics of repeated timings."""
import statistics


def summarize(values):
    """values: a non-empty list of numbers -> {"median", "q1", "q3", "min", "max", "n"}.

    Quartiles use statistics.quantiles' inclusive method (they equal min/max for 2 values)."""
    values = sorted(values)
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "min": values[0],
        "max": values[-1],
        "n": len(values),
    }


def summarize_runs(runs):
    """runs: list of {stage: seconds} (one dict per timed run; a stage missing from a run took
    0 s there) -> {stage: summary}, in the order stages first appear."""
    stages = list(dict.fromkeys(name for run in runs for name in run))
    return {name: summarize([run.get(name, 0.0) for run in runs]) for name in stages}

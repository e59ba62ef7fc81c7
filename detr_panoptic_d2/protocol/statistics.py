"""Statistics of a recipe comparison: arms x seeds, the seeds paired across arms.

A change (an arm) is adopted only when its mean paired gain over the first arm (the baseline),
per seed, exceeds two standard errors of that mean: the run-to-run spread of one recipe is
large next to most changes, and pairing by seed removes the part of it that the seed shares.
"""
import math


def mean_and_standard_error(values):
    """(mean, standard error of the mean) of a list of numbers: the sample standard deviation
    (n - 1 in the denominator) over sqrt(n); the error is nan for fewer than 2 values."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_and_standard_error of no values")
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def compare_arms(values):
    """values: {arm: {seed: number}}, the first arm the baseline. Returns {arm: {"n", "mean",
    "se", and for the other arms "gain", "gain_se" (the mean paired gain over the seeds both
    arms have, and its standard error), "paired" (that seed count), "adopt" (gain > 2 x gain_se)}}.
    Arms without any value are left out."""
    arms = [a for a, by_seed in values.items() if by_seed]
    if not arms:
        return {}
    base = values[arms[0]]
    report = {}
    for arm in arms:
        mean, se = mean_and_standard_error(list(values[arm].values()))
        entry = {"n": len(values[arm]), "mean": mean, "se": se}
        if arm != arms[0]:
            seeds = sorted(set(values[arm]) & set(base))
            diffs = [values[arm][s] - base[s] for s in seeds]
            gain, gain_se = mean_and_standard_error(diffs) if diffs else (math.nan, math.nan)
            entry.update(gain=gain, gain_se=gain_se, paired=len(seeds), adopt=bool(gain > 2 * gain_se))
        report[arm] = entry
    return report

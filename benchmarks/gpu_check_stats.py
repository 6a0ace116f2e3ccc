"""Paired differences with Student-t intervals for the GPU check, in numpy and the standard library.

The GPU machine has no scipy (and the project's ngrpo_sim needs it), so the t quantile is computed
here from the closed form of Student's t distribution for integer degrees of freedom
(Abramowitz and Stegun 1964, 26.7.3 and 26.7.4) and checked against scipy.stats.t.ppf by
tests/test_gpu_check.py.
"""
import math

import numpy as np


def t_central_mass(t: float, df: int) -> float:
    """P(|T| < t) for T ~ Student's t with `df` (an integer >= 1) degrees of freedom, t >= 0.

    With theta = atan(t / sqrt(df)) (A&S 26.7.3-4): for odd df, (2 / pi) (theta + sin(theta)
    (c + 2/3 c^3 + 2*4/(3*5) c^5 + ... up to c^(df-2))), c = cos(theta), the sum empty for df = 1;
    for even df, sin(theta) (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2)).
    """
    if df < 1 or df != int(df):
        raise ValueError(f"df must be an integer >= 1, got {df}")
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2:
        term, total = c, 0.0
        for k in range(1, (df - 1) // 2 + 1):  # terms c, 2/3 c^3, ... : df - 1 over 2 of them
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + s * total)
    term, total = 1.0, 0.0
    for k in range(df // 2):  # terms 1, 1/2 c^2, ... : df over 2 of them
        total += term
        term *= c * c * (2 * k + 1) / (2 * k + 2)
    return s * total


def t_quantile(probability: float, df: int) -> float:
    """The `probability` quantile (in (0.5, 1)) of Student's t with `df` degrees of freedom, by
    bisection on t_central_mass to about 1e-12 relative."""
    if not 0.5 < probability < 1:
        raise ValueError(f"probability must lie in (0.5, 1), got {probability}")
    mass, low, high = 2 * probability - 1, 0.0, 1.0
    while t_central_mass(high, df) < mass:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if t_central_mass(middle, df) < mass:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return (low + high) / 2


def paired_difference(first, second, level: float = 0.95) -> dict:
    """Mean of first - second, paired by position (one pair per seed), with its two-sided
    `level` t-interval: {"pairs", "mean", "sd", "half_width", "low", "high", "level"}. With
    fewer than two pairs the interval is None. NaN pairs (a run that did not finish) are left out.
    """
    differences = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    differences = differences[~np.isnan(differences)]
    pairs = len(differences)
    result = {"pairs": pairs, "mean": float(differences.mean()) if pairs else None,
              "sd": None, "half_width": None, "low": None, "high": None, "level": level}
    if pairs >= 2:
        sd = float(differences.std(ddof=1))
        half = t_quantile(0.5 + level / 2, pairs - 1) * sd / math.sqrt(pairs)
        result.update(sd=sd, half_width=half, low=result["mean"] - half,
                      high=result["mean"] + half)
    return result

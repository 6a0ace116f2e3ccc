"""Evaluation metrics: pass@k (exact and the unbiased estimator), the pass@k AUC, softmax entropy,
and the log-softmax and probability clip that the simulators compute their policies with."""

from __future__ import annotations

import numpy as np

from ngrpo_sim.base import checks


def pass_at_k_exact(success_rate, k) -> np.ndarray:
    """Probability that at least one of k independent samples is correct: 1 - (1 - p)^k.

    Broadcasts over ``success_rate`` and ``k``. Exact at the ends: 0.0 at p = 0 and 1.0 at p = 1.
    Raises ValueError for a success rate outside [0, 1] (what the library computes is kept inside
    by ``as_probability``).
    """
    p = checks.finite_array("success_rate", success_rate)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"success_rate must lie in [0, 1], got {p[(p < 0) | (p > 1)].ravel()[0]}")
    k = _positive_integers("k", k)
    # -expm1(k log1p(-p)) keeps full relative precision for tiny p, where 1 - (1 - p)^k cancels;
    # 0.0 - x rather than -x, so that p = 0 gives 0.0, not -0.0.
    with np.errstate(divide="ignore"):
        return 0.0 - np.expm1(k * np.log1p(-p))


def pass_at_k_unbiased(num_samples, num_correct, k) -> np.ndarray:
    """Chen et al.'s (2021) unbiased estimate of pass@k from n samples of which c are correct.

    1 - C(n - c, k) / C(n, k), written as 1 - prod_{j<k} (1 - c / (n - j)) and summed in log space
    so that it is exact to rounding for n = 256 and beyond (the binomials themselves overflow
    float64 at n ~ 1030). Broadcasts over its arguments.
    """
    n = _positive_integers("num_samples", num_samples)
    c = checks.finite_array("num_correct", num_correct)
    if np.any((c < 0) | (c != np.round(c))):
        raise ValueError("num_correct must hold integers >= 0, got "
                         f"{c[(c < 0) | (c != np.round(c))].ravel()[0]}")
    k = _positive_integers("k", k)
    n, c, k = np.broadcast_arrays(n, c, k)
    if np.any(c > n):
        raise ValueError(f"num_correct must be <= num_samples, got {c[c > n].ravel()[0]} > "
                         f"{n[c > n].ravel()[0]}")
    if np.any(k > n):
        raise ValueError(f"k must be <= num_samples, got k={k[k > n].ravel()[0]} with "
                         f"n={n[k > n].ravel()[0]}")
    certain = (n - c) < k  # every draw of k contains a correct answer
    j = np.arange(int(k.max()))
    active = j < k[..., None]
    denominators = np.where(active, n[..., None] - j, 1.0)
    fractions = np.where(active & ~certain[..., None], c[..., None] / denominators, 0.0)
    log_miss = np.sum(np.log1p(-fractions), axis=-1)
    return np.where(certain, 1.0, 0.0 - np.expm1(log_miss))


def pass_at_k_auc(pass_values) -> np.ndarray:
    """The authors' pass@k AUC on a 0-100 scale.

    ``pass_values[..., i]`` is pass@k at k = 2^i for i = 0..m (k = 1, 2, 4, ..., 2^m; the paper uses
    m = 8, so k = 256 and nine points). The curve is integrated with the trapezoid rule at unit
    spacing in i (a log2 axis in k) and divided by m, so a model that always succeeds scores 100.
    """
    values = checks.finite_array("pass_values", pass_values)
    if values.ndim == 0 or values.shape[-1] < 2:
        raise ValueError("pass_values needs at least two points (k = 1, 2) on its last axis, got "
                         f"shape {values.shape}")
    if np.any((values < 0) | (values > 1)):
        raise ValueError("pass_values must lie in [0, 1], got "
                         f"{values[(values < 0) | (values > 1)].ravel()[0]}")
    intervals = values.shape[-1] - 1
    area = 0.5 * (values[..., :-1] + values[..., 1:]).sum(axis=-1)
    return 100.0 * area / intervals


def powers_of_two_up_to(max_k: int) -> np.ndarray:
    """k = 1, 2, 4, ..., max_k, the evaluation grid of the pass@k AUC (max_k a power of two)."""
    max_k = checks.integer("max_k", max_k, low=1)
    if max_k & (max_k - 1):
        raise ValueError(f"max_k must be a power of two, got {max_k}")
    return 2 ** np.arange(max_k.bit_length())


def as_probability(values) -> np.ndarray:
    """``values`` clipped into [0, 1]: for probabilities that the library computes as float sums of
    probabilities (a success rate, the chance to keep a group), which can round an ulp past 1
    (1.0000000000000002) when the policy is near-deterministic. A value already inside is returned
    unchanged, bit for bit."""
    return np.clip(values, 0.0, 1.0)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, exact to rounding for saturated logits (numpy only: the
    simulator calls it in its inner loop, where scipy's general version is several times slower).

    With m the largest logit, log pi_i = (z_i - m) - log1p(R), where 1 + R is the sum of exp(z_j -
    m): one maximal logit contributes exactly 1, R is the rest, summed without that 1. log(1 + R)
    would round R away once it falls below 1e-16 (logits 37 apart), and with it the
    log-probability of the likeliest answer and the entropy of a near-deterministic policy; log1p
    keeps them. A logit further than the float range (1.8e308) below the largest gets
    log-probability -inf.
    """
    shifted = logits - _last_axis_max(logits)[..., None]
    top = (shifted == 0.0).astype(np.float64)
    others = np.exp(shifted)
    others -= top
    # Ties of the maximum beyond the first add 1 each, exactly.
    return shifted - np.log1p(_last_axis_sum(others) + (_last_axis_sum(top) - 1.0))[..., None]


def _last_axis_sum(values: np.ndarray) -> np.ndarray:
    """The sum over the last axis. Below 8 columns numpy adds them one by one from the first, so
    adding the columns in that order gives the same numbers, several times faster for a short
    contiguous axis; from 8 columns on numpy sums pairwise and is left to do so."""
    if values.shape[-1] >= 8:
        return values.sum(axis=-1)
    total = values[..., 0].copy()
    for column in range(1, values.shape[-1]):
        total += values[..., column]
    return total


def _last_axis_max(values: np.ndarray) -> np.ndarray:
    """The maximum over the last axis. For the simulators' few choices an elementwise maximum over
    the columns is several times faster than numpy's reduction over a short contiguous axis, and
    the same numbers (a maximum is exact)."""
    if values.shape[-1] > 64:
        return values.max(axis=-1)
    top = values[..., 0].copy()
    for column in range(1, values.shape[-1]):
        np.maximum(top, values[..., column], out=top)
    return top


def softmax_entropy(logits) -> np.ndarray:
    """Entropy (nats) of softmax(logits) over the last axis, shaped ``logits.shape[:-1]``.

    Exact to rounding also for a near-deterministic policy (see ``log_softmax``), and 0.0 (not NaN)
    for a deterministic one, even where a logit lies so far below the largest that its
    log-probability is -inf (its term p log p is 0). Raises ValueError for NaN or infinite logits.
    """
    logits = checks.finite_array("logits", logits)
    if logits.ndim == 0:
        raise ValueError("logits need an axis of choices, got a scalar")
    with np.errstate(over="ignore", invalid="ignore"):  # the -inf log-probabilities above
        log_probs = log_softmax(logits)
        probs = np.exp(log_probs)
        terms = np.where(probs > 0.0, probs * log_probs, 0.0)
    # 0.0 - sum: a deterministic policy's entropy is 0.0, not -0.0.
    return 0.0 - np.sum(terms, axis=-1)


def _positive_integers(name: str, values) -> np.ndarray:
    array = checks.finite_array(name, values)
    if np.any((array < 1) | (array != np.round(array))):
        raise ValueError(f"{name} must hold integers >= 1, got "
                         f"{array[(array < 1) | (array != np.round(array))].ravel()[0]}")
    return array

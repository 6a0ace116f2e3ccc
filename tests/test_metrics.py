"""pass@k, its AUC and entropy against exact combinatorics and closed forms."""

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binom

from ngrpo_sim import pass_at_k_auc, pass_at_k_exact, pass_at_k_unbiased, softmax_entropy
from ngrpo_sim.methods.metrics import log_softmax, powers_of_two_up_to


@pytest.mark.parametrize("n", [1, 2, 7, 16, 64, 256])
def test_unbiased_estimator_equals_exact_combinatorics(n):
    ks = [k for k in (1, 2, 3, 4, 8, 16, 64, 128, 256) if k <= n]
    counts = np.arange(n + 1)
    for k in ks:
        estimate = pass_at_k_unbiased(n, counts, k)
        exact = [float(1 - Fraction(math.comb(n - c, k), math.comb(n, k))) for c in range(n + 1)]
        np.testing.assert_allclose(estimate, exact, rtol=1e-12, atol=1e-15)


def test_unbiased_estimator_is_unbiased():
    n, p = 256, 0.013
    counts = np.arange(n + 1)
    weights = binom.pmf(counts, n, p)
    for k in powers_of_two_up_to(256):
        expected = np.sum(weights * pass_at_k_unbiased(n, counts, k))
        assert expected == pytest.approx(1 - (1 - p) ** k, rel=1e-12)


def test_exact_pass_at_k():
    p = np.array([0.0, 1e-12, 0.3, 1.0])
    # For tiny p, 1 - (1 - p)^4 = 4p - 6p^2 + ...: the naive formula would lose every digit of the
    # 6p^2 term.
    np.testing.assert_allclose(pass_at_k_exact(p, 4), [0.0, 4e-12 - 6e-24, 1 - 0.7 ** 4, 1.0],
                               rtol=1e-14)
    np.testing.assert_allclose(pass_at_k_exact(0.5, np.array([1, 2, 3])), [0.5, 0.75, 0.875])


def test_auc_by_hand():
    assert pass_at_k_auc(np.ones(9)) == pytest.approx(100.0)
    assert pass_at_k_auc(np.zeros(9)) == 0.0
    assert pass_at_k_auc([0.0, 1.0]) == pytest.approx(50.0)
    # Nine points rising linearly from 0 to 1 in the log2 index: area 4 over 8 intervals.
    assert pass_at_k_auc(np.linspace(0, 1, 9)) == pytest.approx(50.0)
    values = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.55, 0.6, 0.6])
    by_hand = 100 * sum((a + b) / 2 for a, b in zip(values[:-1], values[1:])) / 8
    assert pass_at_k_auc(values) == pytest.approx(by_hand, rel=1e-14)
    np.testing.assert_array_equal(powers_of_two_up_to(256), [1, 2, 4, 8, 16, 32, 64, 128, 256])


def test_entropy():
    assert softmax_entropy(np.zeros(5)) == pytest.approx(math.log(5), rel=1e-15)
    logits = np.array([[0.3, -1.2, 2.0], [1000.0, 1000.0, -1000.0]])
    probs = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(softmax_entropy(logits),
                               [-(probs * np.log(probs)).sum(), math.log(2)], rtol=1e-13)


def test_pass_at_k_is_exact_at_p_0_and_1():
    ks = np.array([1, 2, 3, 8, 256, 10 ** 9])
    values = pass_at_k_exact(np.array([[0.0], [1.0]]), ks)
    np.testing.assert_array_equal(values, [[0.0] * 6, [1.0] * 6])
    assert not np.signbit(values).any(), "pass@k at p = 0 is 0.0, not -0.0"
    for k in (1, 2, 128, 256):
        never = pass_at_k_unbiased(256, 0, k)
        assert never == 0.0 and not np.signbit(never)
        assert pass_at_k_unbiased(256, 256, k) == 1.0
    # One ulp inside the ends is still exact: p = 1 - 2^-53 at k = 1, 2^-1074 (the smallest float).
    assert pass_at_k_exact(1.0 - 2 ** -53, 1) == 1.0 - 2 ** -53
    assert pass_at_k_exact(5e-324, 1) == 5e-324


def decimal_log_softmax(logits, digits: int = 700) -> list[Decimal]:
    """log softmax of float logits (1-d) in decimal arithmetic with ``digits`` digits: enough that 1
    + exp(-1500) is not rounded to 1."""
    with localcontext() as context:
        context.prec = digits
        values = [Decimal(float(x)) for x in logits]
        top = max(values)
        normaliser = sum((x - top).exp() for x in values).ln()
        return [x - top - normaliser for x in values]


def decimal_entropy(logits) -> float:
    with localcontext() as context:
        context.prec = 700
        return float(-sum(lp.exp() * lp for lp in decimal_log_softmax(logits)))


SATURATED = [[300.0, 0.0], [0.0, -700.0], [37.5, 0.0, 0.0, -5.0], [500.0, 500.0, 463.0],
             [-1000.0, -1000.0, -1036.0, -1740.0], [1e3, -1e3]]


@pytest.mark.parametrize("logits", SATURATED)
def test_log_softmax_of_saturated_logits_is_exact(logits):
    # The likeliest answer's log-probability is -log(1 + e^-300) = -5.1e-131 for the first case:
    # log(1 + R) rounds it to 0 once R < 1e-16.
    expected = [float(value) for value in decimal_log_softmax(logits)]
    np.testing.assert_allclose(log_softmax(np.array(logits)), expected, rtol=4e-16, atol=0)
    probs = np.exp(log_softmax(np.array(logits)))
    assert np.all(probs <= 1.0) and abs(probs.sum() - 1.0) <= 2 ** -52


def test_log_softmax_beyond_the_float_range():
    # 2e300 apart: the lower answer's probability is exp(-2e300) = 0.0, its log-probability
    # -2e300; 2e308 apart the log-probability itself overflows to -inf.
    np.testing.assert_array_equal(log_softmax(np.array([1e300, -1e300])), [0.0, -2e300])
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(log_softmax(np.array([1e308, -1e308])), [0.0, -np.inf])


@pytest.mark.parametrize("logits", SATURATED + [[0.0, -30.0, -30.0, -30.0], [20.0, 0.0]])
def test_entropy_of_a_near_deterministic_policy_is_exact(logits):
    # [37.5, 0, 0, -5]: H = 1.3e-15, of which the likeliest answer's -p log p = 1.0e-16 was lost.
    assert softmax_entropy(logits) == pytest.approx(decimal_entropy(logits), rel=1e-14, abs=0)


def test_entropy_of_a_deterministic_policy_is_zero():
    for logits in ([1e300, -1e300], [1e308, -1e308], [0.0, -800.0], [-1e300, 1e300, -1e300]):
        entropy = softmax_entropy(logits)
        assert entropy == 0.0 and not np.signbit(entropy), logits


@pytest.mark.parametrize("call, message", [
    (lambda: pass_at_k_unbiased(10, 11, 1), "num_correct must be <= num_samples, got 11"),
    (lambda: pass_at_k_unbiased(10, 3, 11), "k must be <= num_samples, got k=11"),
    (lambda: pass_at_k_unbiased(10, 1.5, 2), "num_correct must hold integers >= 0, got 1.5"),
    (lambda: pass_at_k_unbiased(0, 0, 1), "num_samples must hold integers >= 1, got 0"),
    (lambda: pass_at_k_exact(1.2, 1), r"success_rate must lie in \[0, 1\], got 1.2"),
    (lambda: pass_at_k_exact(0.5, 0), "k must hold integers >= 1, got 0"),
    (lambda: pass_at_k_auc([0.5]), "needs at least two points"),
    (lambda: pass_at_k_auc([0.5, 1.5]), r"pass_values must lie in \[0, 1\], got 1.5"),
    (lambda: powers_of_two_up_to(100), "max_k must be a power of two, got 100"),
    (lambda: softmax_entropy([np.nan, 1.0]), "logits must be finite"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()

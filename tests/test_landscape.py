"""The advantage landscape and the gain identity E[g] = c(p) pi (r - p), against enumeration and
Monte Carlo."""

import itertools
import math

import numpy as np
import pytest
from scipy.special import softmax

from ngrpo_sim import METHODS, QAEAdvantage, ShiftedBaselineAdvantage, get_method
from ngrpo_sim.analysis.landscape import (DEFAULT_METHODS, binomial_pmf, count_advantages,
                                          expected_gain, expected_logit_update, format_tables,
                                          memory_bytes, write_csv, write_figures,
                                          zero_gradient_probability)

COUNT_BASED = [name for name, m in METHODS.items() if m.advantage.count_based]


def group_gradient(method, answers, rewards, probs, values=None):
    """(1/G) sum_i A_i (e_{a_i} - pi) for one group of answer indices."""
    group_rewards = rewards[answers]
    advantages = method.advantages(group_rewards, values)
    one_hot = np.eye(len(probs))[answers]
    return (advantages[:, None] * (one_hot - probs)).mean(axis=0)


def enumerated_expectation(method, logits, rewards, group_size, values=None):
    """Exact E[g] by summing over all K^G ordered groups."""
    probs = softmax(logits)
    total = np.zeros_like(probs)
    for answers in itertools.product(range(len(probs)), repeat=group_size):
        answers = np.array(answers)
        total += np.prod(probs[answers]) * group_gradient(method, answers, rewards, probs, values)
    return total


# The registry's count-based presets, and QAE with the paper's two-regime gate (inverted_cdf).
QAE_GATE = get_method("qae").replace(name="qae_paper_gate",
                                     advantage=QAEAdvantage(interpolation="inverted_cdf"))


@pytest.mark.parametrize("method", [get_method(name) for name in COUNT_BASED] + [QAE_GATE],
                         ids=lambda method: method.name)
@pytest.mark.parametrize("group_size", [2, 3, 5])
def test_gain_identity_against_exhaustive_enumeration(method, group_size):
    rng = np.random.default_rng(group_size)
    for rewards in (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 1.0])):
        logits = rng.normal(scale=1.5, size=3)
        exact = enumerated_expectation(method, logits, rewards, group_size)
        np.testing.assert_allclose(expected_logit_update(method, group_size, logits, rewards),
                                   exact, rtol=0, atol=1e-12)


def test_a_fixed_critic_baseline_has_gain_one():
    # PPO is outside the landscape, but the docstring's claim about it is checked here the same way.
    ppo, rewards, logits = (get_method("ppo"), np.array([1.0, 0.0, 0.0, 1.0]),
                            np.array([0.2, -0.4, 1.0, 0.1]))
    probs = softmax(logits)
    exact = enumerated_expectation(ppo, logits, rewards, 3, values=np.full(3, 0.37))
    np.testing.assert_allclose(exact, probs * (rewards - probs @ rewards), atol=1e-12)
    with pytest.raises(ValueError, match="'ppo' is not count-based"):
        expected_gain(ppo, 8, 0.5)


@pytest.mark.parametrize("name", ["grpo", "ngrpo", "dapo", "psr_nsr"])
def test_gain_identity_against_monte_carlo(name):
    method, group_size, groups = get_method(name), 8, 200_000
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=1.0, size=6)
    rewards = np.array([1.0, 0, 0, 0, 1, 0])
    probs = softmax(logits)
    answers = rng.choice(6, size=(groups, group_size), p=probs)
    advantages = method.advantages(rewards[answers])
    one_hot = np.eye(6)[answers]
    samples = (advantages[..., None] * (one_hot - probs)).mean(axis=1)
    mean, sem = samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(groups)
    predicted = expected_logit_update(method, group_size, logits, rewards)
    assert np.all(np.abs(mean - predicted) < 5 * sem + 1e-12)


@pytest.mark.parametrize("group_size", [2, 4, 8, 16])
def test_zero_gradient_probability_closed_forms(group_size):
    p = np.linspace(0, 1, 11)
    homogeneous = p ** group_size + (1 - p) ** group_size
    for name in ("grpo", "dapo", "dr_grpo", "rloo"):
        np.testing.assert_allclose(zero_gradient_probability(get_method(name), group_size, p),
                                   homogeneous, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(zero_gradient_probability(get_method("ngrpo"), group_size, p),
                               p ** group_size, rtol=1e-12, atol=1e-300)
    assert np.all(zero_gradient_probability(get_method("psr_nsr"), group_size, p) == 0)
    np.testing.assert_allclose(zero_gradient_probability(get_method("psr"), group_size, p),
                               (1 - p) ** group_size, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("group_size", [2, 8, 32])
def test_gain_closed_forms(group_size):
    p = np.linspace(0, 1, 7)
    g = group_size
    np.testing.assert_allclose(expected_gain(get_method("dr_grpo"), g, p), (g - 1) / g, rtol=1e-12)
    np.testing.assert_allclose(expected_gain(get_method("rloo"), g, p), 1.0, rtol=1e-12)
    np.testing.assert_allclose(expected_gain(get_method("psr_nsr"), g, p), 1.1, rtol=1e-12)
    # At p -> 0 only groups with the answer itself right can be mixed: c(0) = f(1, 1) - f(0, 0).
    # GRPO: one right answer in G has std sqrt(1/G) (Bessel), deviation 1 - 1/G; an all-wrong group
    # gives 0.
    grpo_right_1 = (1 - 1 / g) / (np.sqrt(1 / g) + 1e-6)
    assert expected_gain(get_method("grpo"), g, 0.0) == pytest.approx(grpo_right_1, rel=1e-12)
    ngrpo_right_1 = (1 - 2 / (g + 1)) / (np.sqrt(2 * (g - 1) / ((g + 1) * g)) + 1e-6)
    ngrpo_wrong_0 = -(1 / (g + 1)) / (np.sqrt(g / ((g + 1) * g)) + 1e-6)
    assert expected_gain(get_method("ngrpo"), g, 0.0) == pytest.approx(ngrpo_right_1
                                                                       - ngrpo_wrong_0, rel=1e-12)


def test_count_advantages_table_for_g8():
    right, wrong = count_advantages(get_method("ngrpo"), 8)
    assert np.isnan(right[0]) and np.isnan(wrong[8])
    assert (round(right[1], 2) == 1.76 and round(wrong[1], 2) == -0.50
            and wrong[0] == pytest.approx(-1 / 3, 1e-5))
    assert right[8] == 0.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"success_rate must lie in \[0, 1\], got 1.5"):
        expected_gain(get_method("grpo"), 8, 1.5)
    with pytest.raises(ValueError, match="group_size must be >= 2, got 1"):
        count_advantages(get_method("grpo"), 1)
    with pytest.raises(ValueError, match="rewards must be binary"):
        expected_logit_update(get_method("grpo"), 8, np.zeros(3), np.array([0.5, 0, 1]))


def test_the_binomial_stays_exact_beyond_the_float_range_of_its_coefficient():
    # comb(1100, k) overflows a float for k from 388 to 712; the exact probabilities come from
    # integers and fractions.
    from fractions import Fraction

    trials = 1100
    with pytest.raises(OverflowError):
        float(math.comb(trials, 550))
    for p in (Fraction(1, 2), Fraction(3, 100)):
        exact = [math.comb(trials, k) * p ** k * (1 - p) ** (trials - k) for k in range(trials + 1)]
        pmf = binomial_pmf(trials, np.array(float(p)))
        assert np.all(np.isfinite(pmf))
        big = np.array([float(value) for value in exact]) > 1e-300
        expected = [float(value) for value, keep in zip(exact, big) if keep]
        np.testing.assert_allclose(pmf[big], expected, rtol=1e-9)
        assert np.all(pmf[~big] < 1e-290)


def test_a_large_group_has_a_finite_landscape():
    grid = np.linspace(0.0, 1.0, 11)
    grpo = get_method("grpo")
    silent = zero_gradient_probability(grpo, 1100, grid)
    # Only all-wrong and all-right groups are silent under GRPO: (1 - p)^G + p^G, about 0 inside
    # (0, 1).
    np.testing.assert_allclose(silent, (1 - grid) ** 1100 + grid ** 1100, atol=1e-15)


def test_r_max_below_a_right_answer_is_refused_in_the_landscape_terms():
    refusal = "r_max must be at least 1, got 0.5: the landscape's groups hold binary"
    with pytest.raises(ValueError, match=refusal):
        count_advantages(get_method("ngrpo").retuned(r_max=0.5), 8)
    with pytest.raises(ValueError, match=r"r_max must be > 0.0, got 0.0"):
        get_method("ngrpo").retuned(r_max=0.0)


def traced_peak(work) -> int:
    """Bytes that ``work()`` allocated at its peak, as tracemalloc sees numpy and Python."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_the_memory_estimate_bounds_the_measured_peak(tmp_path):
    methods = [get_method(name) for name in DEFAULT_METHODS]
    # The figures of a small group: matplotlib's share, which the estimate's constant covers (the
    # first drawing loads fonts and caches, kept out of the peak).
    write_figures(methods[:3], 8, tmp_path / "warm")
    figures = traced_peak(lambda: write_figures(methods[:3], 8, tmp_path))
    assert figures <= memory_bytes(8)
    # Tables and CSV of a large group: five (G + 1) x G float64 arrays are alive at once inside an
    # estimator (measured), the estimate counts six.
    group_size = 1500
    tables = traced_peak(lambda: (format_tables(methods, group_size),
                                  write_csv(methods, group_size, tmp_path)))
    assert tables <= memory_bytes(group_size) <= 2.5 * tables


# -- NGRPO's rivals --------------------------------------------------------------------------------


@pytest.mark.parametrize("group_size", [2, 4, 8, 16])
def test_maxrl_gain_is_the_truncated_likelihood_weight(group_size):
    # The claim of the issue, [1 - (1 - p)^(G - 1)] / p, by enumeration over the G - 1 siblings'
    # count, written out with the plain formula A = r / mean - 1 (the estimator is not called).
    p = np.linspace(0.005, 1.0, 40)
    by_count = np.zeros_like(p)
    for others in range(group_size):
        chance = (math.comb(group_size - 1, others) * p ** others
                  * (1 - p) ** (group_size - 1 - others))
        right = group_size / (others + 1) - 1
        wrong = -1.0 if others > 0 else 0.0
        by_count += chance * (right - wrong)
    claim = (1 - (1 - p) ** (group_size - 1)) / p
    np.testing.assert_allclose(by_count, claim, rtol=1e-12)
    np.testing.assert_allclose(expected_gain(get_method("maxrl"), group_size, p), claim, rtol=1e-12)
    hardest = expected_gain(get_method("maxrl"), group_size, 0.0)
    assert hardest == pytest.approx(group_size - 1, rel=1e-12)


def test_maxrl_pushes_hard_prompts_almost_three_times_harder_than_grpo():
    maxrl, grpo, ngrpo = (expected_gain(get_method(name), 8, 0.01)
                          for name in ("maxrl", "grpo", "ngrpo"))
    assert maxrl == pytest.approx((1 - 0.99 ** 7) / 0.01, rel=1e-12)
    assert 2.7 < maxrl / grpo < 2.9 and ngrpo < grpo


@pytest.mark.parametrize("group_size", [2, 8, 32])
@pytest.mark.parametrize("fraction, shift", [(0.0, -0.1), (1 / 9, 0.0), (0.5, 0.3)])
def test_a_shifted_baselines_gain_is_flat(group_size, fraction, shift):
    estimator = ShiftedBaselineAdvantage(fraction=fraction, shift=shift)
    method = get_method("asymre").replace(advantage=estimator)
    np.testing.assert_allclose(expected_gain(method, group_size, np.linspace(0, 1, 9)),
                               1 - (1 - fraction) / group_size, rtol=1e-12)


@pytest.mark.parametrize("group_size", [3, 8, 16])
def test_qae_gain_on_the_hardest_prompts(group_size):
    # p -> 0: only groups whose own answer is the one right answer count; its baseline is 0 (a hard
    # group), so it gets 1 / std with std = sqrt(1/G) (Bessel), and an all-wrong group gives 0.
    assert expected_gain(get_method("qae"), group_size, 0.0) == pytest.approx(
        1 / (math.sqrt(1 / group_size) + 1e-6), rel=1e-12)


@pytest.mark.parametrize("group_size", [2, 4, 8, 16])
def test_zero_gradient_probability_of_the_rivals(group_size):
    p = np.linspace(0, 1, 11)
    homogeneous = p ** group_size + (1 - p) ** group_size
    for name in ("maxrl", "qae"):
        np.testing.assert_allclose(zero_gradient_probability(get_method(name), group_size, p),
                                   homogeneous, rtol=1e-12, atol=1e-300)
    assert np.all(zero_gradient_probability(get_method("asymre"), group_size, p) == 0)
    silent = zero_gradient_probability(get_method("shifted_baseline"), group_size, p)
    np.testing.assert_allclose(silent, p ** group_size, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name, needs", [("lens", "log_prob"), ("rl_zvp", "entropy")])
def test_methods_that_read_the_policy_have_no_landscape(name, needs):
    refusal = f"'{name}' is not count-based: .* depends on the policy \\({needs}"
    with pytest.raises(ValueError, match=refusal):
        expected_gain(get_method(name), 8, 0.5)
    with pytest.raises(ValueError, match=f"'{name}' is not count-based"):
        count_advantages(get_method(name), 8)


@pytest.mark.parametrize("rewards", [np.array([1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 0.0])])
@pytest.mark.parametrize("group_size", [2, 3])
def test_rl_zvps_expected_update_in_the_one_token_bandit(rewards, group_size):
    # All-right groups add alpha H (1/G) sum_i (e_{a_i} - pi); over them E = p^G alpha H (pi r / p
    # - pi), so the gain is GRPO's plus alpha H p^(G - 1). All-wrong groups add nothing (one-token
    # answers).
    rl_zvp = get_method("rl_zvp")
    probs = softmax(np.random.default_rng(group_size).normal(size=len(rewards)))
    entropy = -np.sum(probs * np.log(probs))
    exact = np.zeros_like(probs)
    for answers in itertools.product(range(len(probs)), repeat=group_size):
        answers = np.array(answers)
        advantages = rl_zvp.advantages(rewards[answers], entropy=np.full(group_size, entropy))
        step = (advantages[:, None] * (np.eye(len(probs))[answers] - probs)).mean(axis=0)
        exact += np.prod(probs[answers]) * step
    p = probs @ rewards
    gain = expected_gain(get_method("grpo"), group_size, p) + 0.1 * entropy * p ** (group_size - 1)
    np.testing.assert_allclose(exact, gain * probs * (rewards - p), rtol=0, atol=1e-14)

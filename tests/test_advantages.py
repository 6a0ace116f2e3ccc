"""Advantage estimators against closed forms, a plain-Python second implementation, and properties."""

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngrpo_sim import (CriticAdvantage, DrGRPOAdvantage, GRPOAdvantage, NGRPOAdvantage, NSRAdvantage,
                       PSRAdvantage, RLOOAdvantage, WeightedReinforceAdvantage)


def binary_group(group_size, right):
    return np.array([1.0] * right + [0.0] * (group_size - right))


# -- closed forms as functions of G and k (binary rewards) ----------------------------------------------------------

def zscore_closed_form(group_size, right, ddof, eps):
    """(right answer, wrong answer) z-scores in a binary sample of n values with m ones."""
    n, m = group_size, right
    variance = m * (n - m) / (n * (n - ddof))
    std = math.sqrt(variance)
    if std + eps == 0:
        return 0.0, 0.0
    return (1 - m / n) / (std + eps), -(m / n) / (std + eps)


@pytest.mark.parametrize("group_size", [2, 3, 5, 8, 16])
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_grpo_closed_form(group_size, ddof, eps):
    estimator = GRPOAdvantage(ddof=ddof, eps=eps)
    for right in range(group_size + 1):
        advantages = estimator(binary_group(group_size, right))
        a_right, a_wrong = zscore_closed_form(group_size, right, ddof, eps)
        if 0 < right < group_size:
            np.testing.assert_allclose(advantages[:right], a_right, rtol=1e-13)
            np.testing.assert_allclose(advantages[right:], a_wrong, rtol=1e-13)
        else:
            assert np.all(advantages == 0.0)


@pytest.mark.parametrize("group_size", [2, 3, 5, 8, 16])
@pytest.mark.parametrize("virtual", [1, 2, 3])
@pytest.mark.parametrize("ddof", [0, 1])
def test_ngrpo_closed_form(group_size, virtual, ddof):
    estimator = NGRPOAdvantage(virtual_samples=virtual, ddof=ddof, eps=1e-6)
    for right in range(group_size + 1):
        advantages = estimator(binary_group(group_size, right))
        # The virtual samples are right answers in a sample of G + m values.
        a_right, a_wrong = zscore_closed_form(group_size + virtual, right + virtual, ddof, 1e-6)
        np.testing.assert_allclose(advantages[:right], a_right, rtol=1e-13)
        np.testing.assert_allclose(advantages[right:], a_wrong, rtol=1e-13, atol=0)


@pytest.mark.parametrize("group_size", [2, 4, 8, 13])
def test_dr_grpo_and_rloo_closed_forms(group_size):
    for right in range(group_size + 1):
        group = binary_group(group_size, right)
        dr, rloo = DrGRPOAdvantage()(group), RLOOAdvantage()(group)
        np.testing.assert_allclose(dr[:right], 1 - right / group_size, rtol=1e-14)
        np.testing.assert_allclose(dr[right:], -right / group_size, rtol=1e-14)
        np.testing.assert_allclose(rloo[:right], 1 - (right - 1) / (group_size - 1), rtol=1e-14)
        np.testing.assert_allclose(rloo[right:], -right / (group_size - 1), rtol=1e-14)


def test_fixed_weight_estimators_on_binary_rewards():
    group = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(PSRAdvantage()(group), [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(NSRAdvantage()(group), [0, -1, 0, -1, -1])
    np.testing.assert_allclose(WeightedReinforceAdvantage()(group), [0.1, -1, 0.1, -1, -1], rtol=1e-15)
    np.testing.assert_allclose(WeightedReinforceAdvantage(positive_weight=0.5)(group), [0.5, -1, 0.5, -1, -1])


def test_the_papers_worked_numbers():
    one_right = binary_group(8, 1)
    grpo, ngrpo = GRPOAdvantage()(one_right), NGRPOAdvantage()(one_right)
    assert round(grpo[0], 2) == 2.47 and round(grpo[1], 2) == -0.35
    assert round(ngrpo[0], 2) == 1.76 and round(ngrpo[1], 2) == -0.50
    all_wrong = np.zeros(8)
    assert np.all(GRPOAdvantage()(all_wrong) == 0.0)
    # mean' = 1/9 and std' = 1/3 (Bessel) for eight zeros and one virtual one.
    np.testing.assert_allclose(NGRPOAdvantage()(all_wrong), -(1 / 9) / (1 / 3 + 1e-6), rtol=1e-14)
    np.testing.assert_allclose(NGRPOAdvantage(eps=0.0)(all_wrong), -1 / 3, rtol=1e-14)


# -- a second, plain-Python implementation on graded rewards --------------------------------------------------------

def loop_zscores(values, reference, ddof, eps):
    mean = statistics.fmean(reference)
    std = statistics.stdev(reference) if ddof == 1 else statistics.pstdev(reference)
    return [(v - mean) / (std + eps) if v != mean else 0.0 for v in values]


@pytest.mark.parametrize("seed", range(5))
def test_graded_rewards_against_a_loop_implementation(seed):
    rng = np.random.default_rng(seed)
    rewards = rng.random((4, 3, 7)) * 0.9
    r_max, virtual = 0.95, 2
    grpo0, grpo1 = GRPOAdvantage(ddof=0)(rewards), GRPOAdvantage(ddof=1)(rewards)
    ngrpo = NGRPOAdvantage(r_max=r_max, virtual_samples=virtual)(rewards)
    dr, rloo = DrGRPOAdvantage()(rewards), RLOOAdvantage()(rewards)
    psr, nsr = PSRAdvantage(r_max=r_max)(rewards), NSRAdvantage(r_max=r_max)(rewards)
    w = WeightedReinforceAdvantage(r_max=r_max, positive_weight=0.3)(rewards)
    for index in np.ndindex(rewards.shape[:-1]):
        group = list(rewards[index])
        np.testing.assert_allclose(grpo0[index], loop_zscores(group, group, 0, 1e-6), rtol=1e-12)
        np.testing.assert_allclose(grpo1[index], loop_zscores(group, group, 1, 1e-6), rtol=1e-12)
        np.testing.assert_allclose(ngrpo[index], loop_zscores(group, group + [r_max] * virtual, 1, 1e-6),
                                   rtol=1e-12)
        mean = statistics.fmean(group)
        np.testing.assert_allclose(dr[index], [r - mean for r in group], rtol=1e-12)
        others = [statistics.fmean(group[:i] + group[i + 1:]) for i in range(len(group))]
        np.testing.assert_allclose(rloo[index], [r - o for r, o in zip(group, others)], rtol=1e-12)
        np.testing.assert_allclose(psr[index], [r / r_max for r in group], rtol=1e-14)
        np.testing.assert_allclose(nsr[index], [r / r_max - 1 for r in group], rtol=1e-14)
    np.testing.assert_allclose(w, 0.3 * psr + nsr, rtol=1e-14, atol=1e-16)


def known_loop(estimator_name, group, r_max=1.0, virtual=1, ddof=1, eps=1e-6):
    """The plain-Python oracle on the known rewards of one group (NaN = unknown): unknown answers get 0."""
    known = [r for r in group if not math.isnan(r)]
    if estimator_name == "grpo":
        values = loop_zscores(known, known, ddof, eps) if len(known) > ddof else [0.0] * len(known)
    elif estimator_name == "ngrpo":
        values = loop_zscores(known, known + [r_max] * virtual, ddof, eps) if known else []
    elif estimator_name == "dr_grpo":
        values = [r - statistics.fmean(known) for r in known] if known else []
    elif estimator_name == "rloo":
        values = [r - statistics.fmean(known[:i] + known[i + 1:]) for i, r in enumerate(known)] \
            if len(known) > 1 else [0.0] * len(known)
    else:  # w_reinforce, lambda = 0.3
        values = [0.3 * r / r_max + (r / r_max - 1) for r in known]
    answers = iter(values)
    return [0.0 if math.isnan(r) else next(answers) for r in group]


@pytest.mark.parametrize("seed", range(6))
def test_unknown_rewards_leave_the_statistics_and_get_zero(seed):
    rng = np.random.default_rng(100 + seed)
    rewards = rng.integers(0, 2, (40, 6)).astype(float) if seed % 2 else rng.random((40, 6))
    rewards[rng.random(rewards.shape) < 0.3] = np.nan
    rewards[0] = np.nan  # no known answer
    rewards[1, 1:] = np.nan  # one known answer
    rewards[2] = [1.0, np.nan, 1.0, 1.0, np.nan, 1.0]  # all known answers right
    estimators = {"grpo": GRPOAdvantage(), "ngrpo": NGRPOAdvantage(), "dr_grpo": DrGRPOAdvantage(),
                  "rloo": RLOOAdvantage(), "w_reinforce": WeightedReinforceAdvantage(positive_weight=0.3)}
    for name, estimator in estimators.items():
        advantages = estimator(rewards, mask_unknown=True)
        for group, mine in zip(rewards, advantages):
            np.testing.assert_allclose(mine, known_loop(name, list(group)), rtol=1e-12, atol=1e-15)
        assert np.all(advantages[0] == 0.0)
        assert np.all(advantages[2] == 0.0) or name == "w_reinforce"  # homogeneous known answers: exactly 0
    # NGRPO's virtual sample still counts: one known wrong answer against r_max = 1 gets (0 - 1/2) / std(0, 1).
    lone = NGRPOAdvantage()(np.array([0.0, np.nan, np.nan]), mask_unknown=True)
    np.testing.assert_allclose(lone, [-0.5 / (math.sqrt(0.5) + 1e-6), 0.0, 0.0], rtol=1e-14)


def test_rewards_without_unknowns_give_the_same_bits_with_and_without_the_option():
    rewards = np.random.default_rng(7).random((30, 8))
    for estimator in (GRPOAdvantage(), NGRPOAdvantage(), DrGRPOAdvantage(), RLOOAdvantage()):
        assert np.array_equal(estimator(rewards, mask_unknown=True), estimator(rewards))


def test_unknown_rewards_need_the_option_and_infinities_stay_errors():
    with pytest.raises(ValueError, match="rewards must be finite, got a value of nan"):
        NGRPOAdvantage()(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="rewards must be finite, got a value of inf"):
        NGRPOAdvantage()(np.array([1.0, np.nan, np.inf]), mask_unknown=True)
    with pytest.raises(ValueError, match=r"1.5, above r_max=1.0"):
        NGRPOAdvantage()(np.array([1.5, np.nan]), mask_unknown=True)


def test_critic_advantage_is_reward_minus_value():
    rewards = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    per_prompt = np.array([[0.25], [0.5]])
    np.testing.assert_array_equal(CriticAdvantage()(rewards, per_prompt), [[0.75, -0.25, 0.75], [-0.5] * 3])
    per_answer = np.array([[0.1, 0.2, 0.3], [0.0, 0.1, 0.2]])
    np.testing.assert_allclose(CriticAdvantage()(rewards, per_answer), rewards - per_answer)
    # PPO samples one answer per prompt: G = 1 is fine for the critic.
    np.testing.assert_array_equal(CriticAdvantage()(np.array([[1.0]]), np.array([[0.4]])), [[0.6]])


# -- properties ------------------------------------------------------------------------------------------------------

# Rewards on a 1/64 grid: either equal or at least 1/64 apart, so that a shift by up to 10 cannot erase a spread
# that float64 could not have resolved in the first place.
reward_groups = st.lists(st.integers(-320, 320).map(lambda n: n / 64), min_size=2, max_size=12)


@settings(max_examples=300, deadline=None)
@given(reward_groups, st.floats(-10, 10), st.floats(0.01, 100))
def test_grpo_is_unchanged_by_shifting_or_scaling_rewards(group, shift, scale):
    rewards = np.array(group)
    base = GRPOAdvantage(eps=0.0)(rewards)
    np.testing.assert_allclose(GRPOAdvantage(eps=0.0)(rewards + shift), base, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(GRPOAdvantage(eps=0.0)(rewards * scale), base, rtol=1e-6, atol=1e-6)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 64), st.floats(0.001, 1000), st.integers(1, 4), st.integers(0, 1))
def test_ngrpo_gives_exactly_zero_to_an_all_correct_group(group_size, r_max, virtual, ddof):
    rewards = np.full(group_size, r_max)
    advantages = NGRPOAdvantage(r_max=r_max, virtual_samples=virtual, ddof=ddof)(rewards)
    assert np.all(advantages == 0.0)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 64).flatmap(lambda g: st.tuples(st.just(g), st.integers(1, g - 1), st.randoms())))
def test_ngrpo_is_below_grpo_for_every_answer_of_a_mixed_binary_group(case):
    group_size, right, rng = case
    group = binary_group(group_size, right)
    rng.shuffle(group)
    assert np.all(NGRPOAdvantage()(group) < GRPOAdvantage()(group))


def test_ngrpo_below_grpo_does_not_extend_to_graded_rewards():
    # One zero among 0.25s: adding r_max = 1 widens the spread, so the outlier is penalised less under NGRPO.
    group = np.array([0.25] * 8 + [0.0])
    assert NGRPOAdvantage()(group)[-1] > GRPOAdvantage()(group)[-1]


@settings(max_examples=200, deadline=None)
@given(reward_groups)
def test_group_relative_advantages_sum_to_zero(group):
    rewards = np.array(group)
    for estimator in (GRPOAdvantage(), DrGRPOAdvantage(), RLOOAdvantage()):
        assert abs(estimator(rewards).sum()) < 1e-9 * max(1.0, np.abs(estimator(rewards)).max())


def test_leading_axes_are_independent_groups():
    rng = np.random.default_rng(3)
    rewards = rng.integers(0, 2, size=(5, 4, 8)).astype(float)
    batched = NGRPOAdvantage()(rewards)
    for index in np.ndindex(rewards.shape[:-1]):
        np.testing.assert_array_equal(batched[index], NGRPOAdvantage()(rewards[index]))


# -- bad input --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("estimator", [GRPOAdvantage(), NGRPOAdvantage(), DrGRPOAdvantage(), RLOOAdvantage()])
def test_group_size_one_is_refused(estimator):
    with pytest.raises(ValueError, match=r"group size G=1"):
        estimator(np.array([[1.0], [0.0]]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rewards_are_refused(bad):
    with pytest.raises(ValueError, match="rewards must be finite"):
        GRPOAdvantage()(np.array([1.0, bad, 0.0]))


def test_reward_above_r_max_is_refused():
    with pytest.raises(ValueError, match=r"1.5, above r_max=1.0"):
        NGRPOAdvantage()(np.array([1.5, 0.0]))
    with pytest.raises(ValueError, match=r"below the lowest reward 0.0"):
        PSRAdvantage()(np.array([-0.5, 0.0]))


@pytest.mark.parametrize("make, message", [
    (lambda: GRPOAdvantage(eps=-1e-6), "eps must be >= 0.0, got -1e-06"),
    (lambda: NGRPOAdvantage(eps=-1.0), "eps must be >= 0.0, got -1.0"),
    (lambda: GRPOAdvantage(ddof=2), "ddof must be <= 1, got 2"),
    (lambda: NGRPOAdvantage(virtual_samples=0), "virtual_samples must be >= 1, got 0"),
    (lambda: NGRPOAdvantage(r_max=float("nan")), "r_max must be finite"),
    (lambda: WeightedReinforceAdvantage(positive_weight=-0.1), "positive_weight must be >= 0.0"),
    (lambda: PSRAdvantage(r_max=0.0), "r_max must be > 0.0, got 0.0"),
])
def test_bad_hyperparameters_name_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_values_mismatch_is_refused():
    with pytest.raises(ValueError, match="needs values"):
        CriticAdvantage()(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="takes no values"):
        GRPOAdvantage()(np.zeros((2, 3)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"do not broadcast"):
        CriticAdvantage()(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="must have a group axis"):
        GRPOAdvantage()(1.0)

"""Advantage estimators against closed forms, a plain-Python second implementation, and
properties."""

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngrpo_sim import (CriticAdvantage, DrGRPOAdvantage, DropAllCorrectGroups, GRPOAdvantage,
                       LENSAdvantage, MaxRLAdvantage, Method, NGRPOAdvantage, NSRAdvantage,
                       PSRAdvantage, QAEAdvantage, RLOOAdvantage, RLZVPAdvantage,
                       ShiftedBaselineAdvantage, WeightedReinforceAdvantage)


def binary_group(group_size, right):
    return np.array([1.0] * right + [0.0] * (group_size - right))


# -- closed forms as functions of G and k (binary rewards) -----------------------------------------

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
    np.testing.assert_allclose(WeightedReinforceAdvantage()(group), [0.1, -1, 0.1, -1, -1],
                               rtol=1e-15)
    np.testing.assert_allclose(WeightedReinforceAdvantage(positive_weight=0.5)(group),
                               [0.5, -1, 0.5, -1, -1])


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


# -- a second, plain-Python implementation on graded rewards ---------------------------------------

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
        np.testing.assert_allclose(ngrpo[index],
                                   loop_zscores(group, group + [r_max] * virtual, 1, 1e-6),
                                   rtol=1e-12)
        mean = statistics.fmean(group)
        np.testing.assert_allclose(dr[index], [r - mean for r in group], rtol=1e-12)
        others = [statistics.fmean(group[:i] + group[i + 1:]) for i in range(len(group))]
        np.testing.assert_allclose(rloo[index], [r - o for r, o in zip(group, others)], rtol=1e-12)
        np.testing.assert_allclose(psr[index], [r / r_max for r in group], rtol=1e-14)
        np.testing.assert_allclose(nsr[index], [r / r_max - 1 for r in group], rtol=1e-14)
    np.testing.assert_allclose(w, 0.3 * psr + nsr, rtol=1e-14, atol=1e-16)


def known_loop(estimator_name, group, r_max=1.0, virtual=1, ddof=1, eps=1e-6):
    """The plain-Python oracle on the known rewards of one group (NaN = unknown): unknown answers
    get 0."""
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
    elif estimator_name == "maxrl":
        mean = statistics.fmean(known) if known else 0.0
        values = [(r - mean) / mean if r != mean else 0.0 for r in known]
    elif estimator_name == "qae":  # numpy's linear quantile of the known rewards, Bessel's std
        baseline = float(np.quantile(known, 0.4)) if known else 0.0
        std = statistics.stdev(known) if len(known) > 1 else 0.0
        values = [(r - baseline) / (std + eps) if r != baseline else 0.0 for r in known]
    elif estimator_name == "shifted_baseline":  # fraction 1/9, shift -0.1
        mean = statistics.fmean(known) if known else 0.0
        values = [(1 - 1 / 9) * (r - mean) + (r - r_max) / 9 + 0.1 for r in known]
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
                  "rloo": RLOOAdvantage(),
                  "w_reinforce": WeightedReinforceAdvantage(positive_weight=0.3),
                  "maxrl": MaxRLAdvantage(), "qae": QAEAdvantage(),
                  "shifted_baseline": ShiftedBaselineAdvantage(fraction=1 / 9, shift=-0.1)}
    for name, estimator in estimators.items():
        advantages = estimator(rewards, mask_unknown=True)
        for group, mine in zip(rewards, advantages):
            np.testing.assert_allclose(mine, known_loop(name, list(group)), rtol=1e-12, atol=1e-15)
        assert np.all(advantages[0] == 0.0)
        if name not in ("w_reinforce", "shifted_baseline"):  # homogeneous known answers: exactly 0
            assert np.all(advantages[2] == 0.0)
    # NGRPO's virtual sample still counts: one known wrong answer against r_max = 1 gets (0 - 1/2) /
    # std(0, 1).
    lone = NGRPOAdvantage()(np.array([0.0, np.nan, np.nan]), mask_unknown=True)
    np.testing.assert_allclose(lone, [-0.5 / (math.sqrt(0.5) + 1e-6), 0.0, 0.0], rtol=1e-14)


def test_rewards_without_unknowns_give_the_same_bits_with_and_without_the_option():
    rewards = np.random.default_rng(7).random((30, 8))
    for estimator in (GRPOAdvantage(), NGRPOAdvantage(), DrGRPOAdvantage(), RLOOAdvantage(),
                      MaxRLAdvantage(), QAEAdvantage(),
                      ShiftedBaselineAdvantage(fraction=0.2, shift=0.1)):
        assert np.array_equal(estimator(rewards, mask_unknown=True), estimator(rewards))


def test_unknown_rewards_need_the_option_and_infinities_stay_errors():
    with pytest.raises(ValueError, match="rewards must be finite, got a value of nan"):
        NGRPOAdvantage()(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="rewards must be finite, got a value of inf"):
        NGRPOAdvantage()(np.array([1.0, np.nan, np.inf]), mask_unknown=True)
    with pytest.raises(ValueError, match=r"1.5, above r_max=1.0"):
        NGRPOAdvantage()(np.array([1.5, np.nan]), mask_unknown=True)
    with pytest.raises(ValueError, match=r"the lens estimator reads the policy and takes no "
                                         r"unknown rewards"):
        LENSAdvantage()(np.array([1.0, np.nan]), log_prob=np.array([-1.0, -2.0]), mask_unknown=True)


def test_critic_advantage_is_reward_minus_value():
    rewards = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    per_prompt = np.array([[0.25], [0.5]])
    np.testing.assert_array_equal(CriticAdvantage()(rewards, per_prompt),
                                  [[0.75, -0.25, 0.75], [-0.5] * 3])
    per_answer = np.array([[0.1, 0.2, 0.3], [0.0, 0.1, 0.2]])
    np.testing.assert_allclose(CriticAdvantage()(rewards, per_answer), rewards - per_answer)
    # PPO samples one answer per prompt: G = 1 is fine for the critic.
    np.testing.assert_array_equal(CriticAdvantage()(np.array([[1.0]]), np.array([[0.4]])), [[0.6]])


# -- properties ------------------------------------------------------------------------------------

# Rewards on a 1/64 grid: either equal or at least 1/64 apart, so that a shift by up to 10 cannot
# erase a spread that float64 could not have resolved in the first place.
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
@given(st.integers(2, 64).flatmap(lambda g: st.tuples(st.just(g), st.integers(1, g - 1),
                                                      st.randoms())))
def test_ngrpo_is_below_grpo_for_every_answer_of_a_mixed_binary_group(case):
    group_size, right, rng = case
    group = binary_group(group_size, right)
    rng.shuffle(group)
    assert np.all(NGRPOAdvantage()(group) < GRPOAdvantage()(group))


def test_ngrpo_below_grpo_does_not_extend_to_graded_rewards():
    # One zero among 0.25s: adding r_max = 1 widens the spread, so the outlier is penalised less
    # under NGRPO.
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


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("estimator",
                         [GRPOAdvantage(), NGRPOAdvantage(), DrGRPOAdvantage(), RLOOAdvantage()])
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


# -- NGRPO's rivals: closed forms by (G, k), plain-Python oracles, the policy inputs ---------------

@pytest.mark.parametrize("group_size", [2, 3, 5, 8, 16])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_maxrl_closed_form(group_size, eps):
    # A right answer of a group with k right: (1 - k/G) / (k/G); a wrong one: -1; an all-wrong
    # group: 0.
    for right in range(group_size + 1):
        advantages = MaxRLAdvantage(eps=eps)(binary_group(group_size, right))
        if right == 0:
            assert np.all(advantages == 0.0)
            continue
        share = right / group_size
        np.testing.assert_allclose(advantages[:right], (1 - share) / (share + eps), rtol=1e-13,
                                   atol=1e-15)
        np.testing.assert_allclose(advantages[right:], -share / (share + eps), rtol=1e-13)


def test_maxrl_worked_numbers_and_graded_rewards():
    np.testing.assert_array_equal(MaxRLAdvantage()(binary_group(8, 1)), [7.0] + [-1.0] * 7)
    rng = np.random.default_rng(4)
    rewards = rng.random((6, 5)) * 2.0
    rewards[0] = 0.0
    advantages = MaxRLAdvantage()(rewards)
    for group, result in zip(rewards, advantages):
        mean = statistics.fmean(group)
        expected = [r / mean - 1 if mean else 0.0 for r in group]
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="below the lowest reward 0.0"):
        MaxRLAdvantage()(np.array([1.0, -0.5]))


def hand_linear_quantile(sorted_values, level):
    """The quantile by linear interpolation between order statistics at position level * (n - 1)."""
    position = level * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (position - low) * (sorted_values[high] - sorted_values[low])


@pytest.mark.parametrize("group_size", [3, 5, 8, 16])
@pytest.mark.parametrize("interpolation", ["linear", "inverted_cdf"])
def test_qae_closed_form(group_size, interpolation):
    level = 0.4
    for right in range(group_size + 1):
        advantages = QAEAdvantage(interpolation=interpolation)(binary_group(group_size, right))
        if right in (0, group_size):
            assert np.all(advantages == 0.0)
            continue
        if interpolation == "inverted_cdf":  # the paper's gate: 0 on a hard group, 1 on an easy one
            baseline = 0.0 if right / group_size <= 1 - level else 1.0
        else:
            baseline = hand_linear_quantile([0.0] * (group_size - right) + [1.0] * right, level)
        std = math.sqrt(right * (group_size - right) / (group_size * (group_size - 1)))
        np.testing.assert_allclose(advantages[:right], (1 - baseline) / (std + 1e-6), rtol=1e-13,
                                   atol=1e-15)
        np.testing.assert_allclose(advantages[right:], -baseline / (std + 1e-6), rtol=1e-13,
                                   atol=1e-15)


def test_qae_gate_by_hand_for_g8():
    # K = 0.4, G = 8: torch.quantile's position 0.4 * 7 = 2.8 lies between the third and fourth
    # smallest reward.
    baselines = {1: 0.0, 4: 0.0, 5: 0.8, 6: 1.0, 7: 1.0}
    for right, baseline in baselines.items():
        advantages = QAEAdvantage(eps=0.0)(binary_group(8, right))
        std = math.sqrt(right * (8 - right) / 56)
        assert advantages[0] == pytest.approx((1 - baseline) / std, rel=1e-13)
        assert advantages[-1] == pytest.approx(-baseline / std, rel=1e-13, abs=1e-15)
    # The paper's gate puts k = 5 (share 0.625 > 1 - K) on the easy side: baseline 1.
    assert QAEAdvantage(interpolation="inverted_cdf")(binary_group(8, 5))[0] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_qae_graded_rewards_against_the_statistics_module(seed):
    rng = np.random.default_rng(seed)
    rewards = rng.random((4, 7))
    linear = QAEAdvantage()(rewards)
    inverted = QAEAdvantage(interpolation="inverted_cdf")(rewards)
    for group, a_linear, a_inverted in zip(rewards, linear, inverted):
        group = list(group)
        std = statistics.stdev(group)
        quantile = statistics.quantiles(group, n=5, method="inclusive")[1]  # the 2/5 cut point
        np.testing.assert_allclose(a_linear, [(r - quantile) / (std + 1e-6) for r in group],
                                   rtol=1e-12)
        empirical = sorted(group)[math.ceil(0.4 * len(group)) - 1]  # min{r : F(r) >= 0.4}
        np.testing.assert_allclose(a_inverted, [(r - empirical) / (std + 1e-6) for r in group],
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("group_size", [2, 5, 8])
@pytest.mark.parametrize("fraction, shift",
                         [(0.0, 0.0), (0.0, -0.1), (1 / 9, 0.0), (0.5, 0.2), (1.0, 0.0)])
def test_shifted_baseline_closed_form(group_size, fraction, shift):
    for right in range(group_size + 1):
        estimator = ShiftedBaselineAdvantage(fraction=fraction, shift=shift)
        advantages = estimator(binary_group(group_size, right))
        baseline = right / group_size + fraction * (1 - right / group_size) + shift
        np.testing.assert_allclose(advantages[:right], 1 - baseline, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(advantages[right:], -baseline, rtol=1e-13, atol=1e-15)


def test_shifted_baseline_family_members():
    rng = np.random.default_rng(5)
    binary = rng.integers(0, 2, (20, 8)).astype(float)
    graded = rng.random((20, 8))
    for rewards in (binary, graded):
        np.testing.assert_allclose(ShiftedBaselineAdvantage()(rewards), DrGRPOAdvantage()(rewards),
                                   atol=1e-15)
    nsr = NSRAdvantage()(binary)
    np.testing.assert_allclose(ShiftedBaselineAdvantage(fraction=1.0)(binary), nsr, atol=1e-15)
    # NGRPO's mean with one virtual right answer, (k + 1) / (G + 1), is the point fraction = 1 / (G
    # + 1).
    right = binary.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ShiftedBaselineAdvantage(fraction=1 / 9)(binary),
                               binary - (right + 1) / 9, atol=1e-15)
    # An all-right group stays silent.
    assert np.all(ShiftedBaselineAdvantage(fraction=0.3)(np.ones(8)) == 0.0)
    for group, result in zip(graded, ShiftedBaselineAdvantage(fraction=0.25, shift=-0.1)(graded)):
        mean = statistics.fmean(group)
        baseline = mean + 0.25 * (1 - mean) - 0.1
        np.testing.assert_allclose(result, [r - baseline for r in group], rtol=1e-12)


def test_rl_zvp_one_token_answers():
    rewards = np.array([[1.0, 1, 1], [0.0, 0, 0], [1.0, 0, 0]])
    entropy = np.array([[0.5, 0.5, 0.5], [0.8, 0.8, 0.8], [0.3, 0.3, 0.3]])
    advantages = RLZVPAdvantage(scale=0.1)(rewards, entropy=entropy)
    np.testing.assert_allclose(advantages[0], 0.05, rtol=1e-15)  # alpha * H
    assert np.all(advantages[1] == 0.0)  # a one-token answer's entropy is its own maximum
    np.testing.assert_array_equal(advantages[2], GRPOAdvantage()(rewards[2]))


def test_rl_zvp_per_token_by_hand():
    # Answers of three token slots; the last slot of the second answer is padding (entropy 0).
    entropy = np.array([[[0.2, 0.7, 0.0], [0.4, 0.1, 0.0]]])
    right = RLZVPAdvantage(scale=0.5)(np.array([[1.0, 1.0]]), entropy=entropy)
    np.testing.assert_allclose(right, 0.5 * entropy, rtol=1e-15)
    wrong = RLZVPAdvantage(scale=0.5)(np.array([[0.0, 0.0]]), entropy=entropy)
    np.testing.assert_allclose(wrong, [[[-0.25, 0.0, -0.35], [0.0, -0.15, -0.2]]], rtol=1e-15,
                               atol=1e-17)
    mixed = RLZVPAdvantage()(np.array([[1.0, 0.0]]), entropy=entropy)
    z_scores = GRPOAdvantage()(np.array([[1.0, 0.0]]))
    np.testing.assert_array_equal(mixed, np.repeat(z_scores[..., None], 3, axis=-1))


def test_a_per_token_estimator_inside_a_method_keeps_the_group_filter():
    method = Method("zvp_filtered", RLZVPAdvantage(), group_filter=DropAllCorrectGroups())
    rewards = np.array([[1.0, 1.0], [0.0, 1.0]])
    entropy = np.full((2, 2, 4), 0.3)
    advantages = method.advantages(rewards, entropy=entropy)
    assert advantages.shape == (2, 2, 4)
    assert np.all(advantages[0] == 0.0)
    assert np.all(advantages[1] == GRPOAdvantage()(rewards[1])[:, None])


def test_lens_by_hand():
    lens = LENSAdvantage()
    # All wrong, confidences 1/2, 1/4, 1/4: D = 2 max c = 1, calibrated -1/3, -1/9, -1/9 (mean
    # -5/27), times 0.25.
    wrong = lens(np.zeros(3), log_prob=np.log([0.5, 0.25, 0.25]))
    np.testing.assert_allclose(wrong, [-1 / 27, 1 / 54, 1 / 54], rtol=1e-13)
    # One right of three, c = 1/4, 1/2, 1/8: D_imp = [(1/3)(4)]^-1 = 3/4 < 2 max c = 1, so D = 1.
    mixed = lens(np.array([1.0, 0.0, 0.0]), log_prob=np.log([0.25, 0.5, 0.125]))
    calibrated = [1.0, -1 / 3, -(1 / 3) * (1 / 8) / (7 / 8)]
    np.testing.assert_allclose(mixed, loop_zscores(calibrated, calibrated, 1, 1e-6), rtol=1e-12)
    # One right of four with c = 0.05 against wrong ones at 0.01: D_imp = [(1/4)(20)]^-1 = 0.2 > 2
    # max c = 0.1.
    rare = lens(np.array([1.0, 0.0, 0.0, 0.0]), log_prob=np.log([0.05, 0.01, 0.01, 0.01]))
    calibrated = [1.0] + [-(1 / 4) * 0.01 / 0.19] * 3
    np.testing.assert_allclose(rare, loop_zscores(calibrated, calibrated, 1, 1e-6), rtol=1e-12)
    assert np.all(lens(np.ones(4), log_prob=np.log([0.1, 0.2, 0.3, 0.4])) == 0.0)
    # One answer sampled G times: equal confidences, nothing to rank.
    assert np.all(lens(np.zeros(4), log_prob=np.full(4, np.log(0.3))) == 0.0)


def test_lens_is_scale_free_and_survives_long_answers():
    # Multiplying every confidence by one factor changes neither D / c nor the advantages;
    # exp(-2000) underflows.
    rng = np.random.default_rng(6)
    rewards = rng.integers(0, 2, (50, 6)).astype(float)
    log_prob = rng.normal(-3.0, 1.0, (50, 6)).clip(max=0.0)
    np.testing.assert_allclose(LENSAdvantage()(rewards, log_prob=log_prob - 2000.0),
                               LENSAdvantage()(rewards, log_prob=log_prob), rtol=1e-9, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 16).flatmap(lambda g: st.tuples(
    st.lists(st.sampled_from([0.0, 1.0]), min_size=g, max_size=g),
    st.lists(st.floats(-30.0, 0.0), min_size=g, max_size=g))))
def test_lens_keeps_grpos_signs_in_mixed_groups(case):
    rewards, log_prob = np.array(case[0]), np.array(case[1])
    advantages = LENSAdvantage()(rewards, log_prob=log_prob)
    if 0 < rewards.sum() < len(rewards):
        assert np.all(advantages[rewards == 1] > 0) and np.all(advantages[rewards == 0] < 0)
    elif rewards.sum() == 0:
        assert abs(advantages.sum()) < 1e-12


@pytest.mark.parametrize("estimator, name",
                         [(LENSAdvantage(), "log_prob"), (RLZVPAdvantage(), "entropy")])
def test_a_policy_input_is_required_and_checked(estimator, name):
    rewards = np.array([[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=f"the {estimator.name} estimator needs {name}="):
        estimator(rewards)
    misshapen = f"{name} has shape \\(3,\\) but rewards have shape \\(1, 3\\)"
    with pytest.raises(ValueError, match=misshapen):
        estimator(rewards, **{name: np.zeros(3)})
    with pytest.raises(ValueError, match=f"{name} must be finite"):
        estimator(rewards, **{name: np.array([[np.nan, 0.0, 0.0]])})
    with pytest.raises(ValueError, match="takes binary rewards only .* got 0.5"):
        estimator(np.array([[0.5, 0.0, 0.0]]), **{name: np.zeros((1, 3))})


def test_policy_inputs_a_method_does_not_declare_are_refused():
    with pytest.raises(ValueError, match="the grpo estimator takes no entropy"):
        GRPOAdvantage()(np.zeros((2, 3)), entropy=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="the rl_zvp estimator takes no log_prob"):
        RLZVPAdvantage()(np.zeros((2, 3)), entropy=np.zeros((2, 3)), log_prob=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="log_prob holds 0.5, above 0"):
        LENSAdvantage()(np.zeros(3), log_prob=np.array([0.5, -1.0, -1.0]))
    with pytest.raises(ValueError, match="entropy holds -0.1, below 0"):
        RLZVPAdvantage()(np.zeros(3), entropy=np.array([-0.1, 0.0, 0.0]))


@pytest.mark.parametrize("make, message", [
    (lambda: QAEAdvantage(quantile=1.0), "quantile must be < 1.0, got 1.0"),
    (lambda: QAEAdvantage(quantile=0.0), "quantile must be > 0.0, got 0.0"),
    (lambda: QAEAdvantage(interpolation="nearest"),
     "interpolation must be one of 'linear', 'inverted_cdf'"),
    (lambda: MaxRLAdvantage(eps=-1.0), "eps must be >= 0.0, got -1.0"),
    (lambda: ShiftedBaselineAdvantage(fraction=1.5), "fraction must be <= 1.0, got 1.5"),
    (lambda: RLZVPAdvantage(scale=0.0), "scale must be > 0.0, got 0.0"),
    (lambda: LENSAdvantage(negative_weight=-0.25), "negative_weight must be >= 0.0, got -0.25"),
])
def test_bad_hyperparameters_of_the_rivals_name_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("ddof", [0, 1])
def test_group_statistics_are_the_mean_and_std_the_z_score_uses(ddof):
    rng = np.random.default_rng(ddof)
    rewards = rng.random((5, 6))
    spread = statistics.pstdev if ddof == 0 else statistics.stdev
    mean, std = GRPOAdvantage(ddof=ddof).group_statistics(rewards)
    np.testing.assert_allclose(mean, [statistics.fmean(row) for row in rewards], rtol=1e-12)
    np.testing.assert_allclose(std, [spread(row) for row in rewards], rtol=1e-12)
    mean, std = NGRPOAdvantage(r_max=1.5, virtual_samples=2, ddof=ddof).group_statistics(rewards)
    with_virtual = [list(row) + [1.5, 1.5] for row in rewards]
    np.testing.assert_allclose(mean, [statistics.fmean(row) for row in with_virtual], rtol=1e-12)
    np.testing.assert_allclose(std, [spread(row) for row in with_virtual], rtol=1e-12)
    with pytest.raises(ValueError, match="above r_max=1.5"):
        NGRPOAdvantage(r_max=1.5).group_statistics([[2.0, 0.0]])


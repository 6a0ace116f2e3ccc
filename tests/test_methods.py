"""Presets, group filters and loss aggregation."""

import math
import statistics

import numpy as np
import pytest

from ngrpo_sim import (LOSS_AGGREGATIONS, METHODS, DropAllCorrectGroups, DropHomogeneousGroups,
                       GRPOAdvantage, KeepAllGroups, LENSAdvantage, MaxRLAdvantage, Method,
                       NGRPOAdvantage, QAEAdvantage, RLZVPAdvantage, ShiftedBaselineAdvantage,
                       WeightedReinforceAdvantage, aggregate_loss, get_method, token_weights)
from ngrpo_sim.methods.presets import parse_methods

REQUIRED = ["ppo", "grpo", "dapo", "psr_nsr", "ngrpo", "dr_grpo", "rloo",
            "grpo_asym_clip", "grpo_calibrated", "ngrpo_no_filter"]


def test_registry_holds_every_required_preset():
    assert set(REQUIRED) <= set(METHODS)
    assert all(METHODS[name].name == name for name in METHODS)


def test_presets_follow_the_release():
    ngrpo, dapo, grpo, psr_nsr = (get_method(n) for n in ("ngrpo", "dapo", "grpo", "psr_nsr"))
    assert (ngrpo.clip_low, ngrpo.clip_high) == (0.16, 0.24)
    assert ngrpo.advantage == NGRPOAdvantage(r_max=1.0, virtual_samples=1, ddof=1, eps=1e-6)
    assert isinstance(ngrpo.group_filter, DropAllCorrectGroups)
    assert ngrpo.loss_aggregation == "token-mean" and ngrpo.kl_coef == 0.0
    assert (dapo.clip_low, dapo.clip_high) == (0.2, 0.28) and isinstance(dapo.group_filter,
                                                                         DropHomogeneousGroups)
    assert (grpo.clip_low, grpo.clip_high) == (0.2, 0.2) and grpo.kl_coef == 0.001
    assert psr_nsr.advantage.positive_weight == 0.1
    assert get_method("dr_grpo").loss_aggregation == "seq-mean-token-sum-norm"
    # Ablations change one component of the NGRPO recipe at a time.
    assert isinstance(get_method("grpo_asym_clip").advantage, GRPOAdvantage)
    assert get_method("grpo_calibrated").clip_high == 0.2
    assert isinstance(get_method("ngrpo_no_filter").group_filter, KeepAllGroups)


def test_group_filters_on_hand_built_groups():
    groups = np.array([[1.0, 1, 1, 1], [0.0, 0, 0, 0], [1.0, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(KeepAllGroups().keep(groups), [True, True, True, True])
    np.testing.assert_array_equal(DropHomogeneousGroups().keep(groups), [False, False, True, False])
    np.testing.assert_array_equal(DropAllCorrectGroups().keep(groups), [False, True, True, True])
    np.testing.assert_array_equal(DropAllCorrectGroups(r_max=0.5).keep(groups),
                                  [True, True, True, False])


def test_group_filters_judge_the_known_answers_only():
    nan = np.nan
    groups = np.array([[1.0, nan, 1.0], [0.0, nan, 0.0], [1.0, 0.0, nan], [nan, nan, nan]])
    np.testing.assert_array_equal(DropAllCorrectGroups().keep(groups, mask_unknown=True),
                                  [False, True, True, False])
    np.testing.assert_array_equal(DropHomogeneousGroups().keep(groups, mask_unknown=True),
                                  [False, False, True, False])
    np.testing.assert_array_equal(KeepAllGroups().keep(groups, mask_unknown=True), [True] * 4)
    # Without the option NaN is an ordinary value that equals nothing: the groups with one stay.
    np.testing.assert_array_equal(DropAllCorrectGroups().keep(groups), [True, True, True, True])
    ngrpo = get_method("ngrpo").advantages(groups, mask_unknown=True)
    np.testing.assert_array_equal(ngrpo[[0, 3]], 0.0)
    # Two known zeros and the virtual 1: mean 1/3, std (Bessel) sqrt(1/3).
    wrong = -(1 / 3) / (math.sqrt(1 / 3) + 1e-6)
    np.testing.assert_allclose(ngrpo[1], [wrong, 0.0, wrong], rtol=1e-12)
    with pytest.raises(ValueError, match="rewards must be finite"):
        get_method("ngrpo").advantages(groups)


def test_method_advantages_zero_dropped_groups():
    groups = np.array([[1.0, 1, 1, 1], [0.0, 0, 0, 0], [1.0, 0, 0, 0]])
    dapo = get_method("dapo").advantages(groups)
    assert np.all(dapo[:2] == 0) and np.all(dapo[2] == GRPOAdvantage()(groups[2]))
    ngrpo = get_method("ngrpo").advantages(groups)
    assert np.all(ngrpo[0] == 0) and np.all(ngrpo[1] < 0)


def test_retuned_changes_only_matching_estimators():
    ngrpo = get_method("ngrpo").retuned(virtual_samples=3, ddof=0)
    assert ngrpo.advantage.virtual_samples == 3 and ngrpo.advantage.ddof == 0
    assert get_method("grpo").retuned(virtual_samples=3, ddof=0).advantage == GRPOAdvantage(ddof=0)
    assert get_method("rloo").retuned(ddof=0) is get_method("rloo")
    assert get_method("ngrpo").retuned() is get_method("ngrpo")
    # PSR-NSR's r_max is the scale of graded rewards, not a virtual answer: a correct answer (reward
    # 1) stays correct.
    psr_nsr = get_method("psr_nsr").retuned(r_max=2.0, virtual_samples=3)
    assert (psr_nsr is get_method("psr_nsr")
            and psr_nsr.advantage(np.array([1.0, 0.0])).tolist() == [0.1, -1.0])


def z_scores(group, reference, ddof):
    """(r - mean) / std of the reference sample, with the statistics module's std."""
    spread = statistics.stdev(reference) if ddof else statistics.pstdev(reference)
    centre = statistics.fmean(reference)
    return [(r - centre) / (spread + 1e-6) for r in group]


@pytest.mark.parametrize("virtual_samples", [1, 2, 3])
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("r_max", [1.0, 1.5])
def test_retuned_ngrpo_matches_the_closed_form(r_max, virtual_samples, ddof):
    ngrpo, grpo = (get_method(name).retuned(r_max=r_max, virtual_samples=virtual_samples, ddof=ddof)
                   for name in ("ngrpo", "grpo"))
    group = [1.0] + [0.0] * 7
    expected = z_scores(group, group + [r_max] * virtual_samples, ddof)
    np.testing.assert_allclose(ngrpo.advantages(np.array(group)), expected, rtol=1e-12)
    np.testing.assert_allclose(grpo.advantages(np.array(group)), z_scores(group, group, ddof),
                               rtol=1e-12)


def test_the_paper_numbers_come_out_of_the_default_presets():
    grpo, ngrpo = get_method("grpo").retuned(), get_method("ngrpo").retuned()
    group = np.array([1.0] + [0.0] * 7)
    assert np.round(grpo.advantages(group)[[0, 1]], 2).tolist() == [2.47, -0.35]
    assert np.round(ngrpo.advantages(group)[[0, 1]], 2).tolist() == [1.76, -0.50]


def test_a_retuned_r_max_moves_the_all_correct_filter_with_it():
    ngrpo = get_method("ngrpo").retuned(r_max=2.0)
    assert ngrpo.group_filter == DropAllCorrectGroups(r_max=2.0)
    # A group of reward-1 answers is no longer all-correct: it is kept, and the virtual r_max = 2
    # answer above it pushes it down as it does without the filter.
    ones = np.ones(8)
    expected = z_scores(list(ones), list(ones) + [2.0], 1)
    np.testing.assert_allclose(ngrpo.advantages(ones), expected, rtol=1e-12)
    np.testing.assert_array_equal(ngrpo.advantages(ones),
                                  get_method("ngrpo_no_filter").retuned(r_max=2.0).advantages(ones))
    assert np.all(ngrpo.advantages(np.full(8, 2.0)) == 0.0)  # all at the new best reward: dropped
    assert get_method("shifted_baseline").retuned(r_max=2.0).group_filter.r_max == 2.0
    assert get_method("psr_nsr").retuned(r_max=2.0).group_filter == KeepAllGroups()


def test_retuned_sets_the_clip_bounds():
    dapo = get_method("dapo").retuned(clip_low=0.1, clip_high=0.3)
    assert (dapo.clip_low, dapo.clip_high) == (0.1, 0.3)
    assert dapo.replace(clip_low=0.2, clip_high=0.28) == get_method("dapo")
    assert get_method("ngrpo").retuned(clip_high=0.3).clip_low == 0.16


@pytest.mark.parametrize("options, message", [
    (dict(r_max=0.0), "r_max must be > 0.0, got 0.0"),
    (dict(virtual_samples=0), "virtual_samples must be >= 1, got 0"),
    (dict(ddof=2), "ddof must be <= 1, got 2"),
    (dict(clip_low=1.0), "clip_low must be < 1.0, got 1.0"),
    (dict(clip_high=-0.1), "clip_high must be >= 0.0, got -0.1"),
])
@pytest.mark.parametrize("name", ["grpo", "ngrpo", "rloo"])
def test_retuned_names_bad_input_whatever_the_method(name, options, message):
    with pytest.raises(ValueError, match=message):
        get_method(name).retuned(**options)


def test_calibration_options_are_keyword_only():
    # The natural parameter comes first: W-REINFORCE's lambda, not the reward scale r_max.
    weighted = WeightedReinforceAdvantage(0.3)
    assert (weighted.positive_weight, weighted.r_max) == (0.3, 1.0)
    assert weighted(np.array([1.0, 0.0])).tolist() == [0.3, -1.0]
    assert ShiftedBaselineAdvantage(0.5).fraction == 0.5
    for estimator in (GRPOAdvantage, NGRPOAdvantage, MaxRLAdvantage):
        with pytest.raises(TypeError, match="positional argument"):
            estimator(2.0)
    with pytest.raises(TypeError, match="positional argument"):
        ShiftedBaselineAdvantage(0.5, 0.0, 2.0)  # r_max by name only


# -- loss aggregation ------------------------------------------------------------------------------

LOSS = np.array([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [5.0, 6.0, 9.0, 9.0]])
MASK = np.array([[1.0, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]])


def test_aggregation_by_hand():
    # token-mean: (1+2+3+4+5+6)/6; seq-mean-token-mean: (2 + 4 + 5.5)/3;
    # token-sum-norm: (6 + 4 + 11)/4/3.
    assert aggregate_loss(LOSS, MASK, "token-mean") == pytest.approx(21 / 6, rel=1e-15)
    assert aggregate_loss(LOSS, MASK, "seq-mean-token-mean") == pytest.approx(11.5 / 3, rel=1e-15)
    assert aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm") == pytest.approx(21 / 12,
                                                                                  rel=1e-15)
    assert aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm",
                          normaliser=7) == pytest.approx(21 / 21, rel=1e-15)


def test_aggregation_against_a_loop():
    rng = np.random.default_rng(0)
    loss, mask = rng.normal(size=(6, 9)), (rng.random((6, 9)) < 0.6).astype(float)
    mask[2] = 0.0  # an answer with no tokens
    rows = [[l for l, m in zip(learning_rate, mr) if m] for learning_rate, mr in zip(loss, mask)]
    tokens = [l for row in rows for l in row]
    assert aggregate_loss(loss, mask, "token-mean") == pytest.approx(sum(tokens) / len(tokens),
                                                                     rel=1e-12)
    assert aggregate_loss(loss, mask, "seq-mean-token-mean") == pytest.approx(
        sum(sum(r) / len(r) for r in rows if r) / len(rows), rel=1e-12)
    assert aggregate_loss(loss, mask, "seq-mean-token-sum-norm") == pytest.approx(
        sum(sum(r) / 9 for r in rows) / len(rows), rel=1e-12)


@pytest.mark.parametrize("mode", LOSS_AGGREGATIONS)
def test_empty_mask_gives_zero_not_nan(mode):
    assert aggregate_loss(LOSS, np.zeros_like(MASK), mode) == 0.0
    assert np.all(token_weights(np.zeros_like(MASK), mode) == 0.0)


def test_token_mean_weights_sum_to_one():
    assert token_weights(MASK, "token-mean").sum() == pytest.approx(1.0)
    assert token_weights(MASK, "seq-mean-token-mean").sum() == pytest.approx(1.0)


# -- bad input -------------------------------------------------------------------------------------

def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown method 'ngrpoo'; known methods: ppo, grpo"):
        get_method("ngrpoo")
    with pytest.raises(ValueError, match="unknown method 'bogus'"):
        parse_methods("grpo, bogus")
    with pytest.raises(ValueError, match="at least one method"):
        parse_methods(" , ")


@pytest.mark.parametrize("changes, message", [
    ({"clip_low": 1.0}, "clip_low must be < 1.0, got 1.0"),
    ({"clip_low": -0.1}, "clip_low must be >= 0.0, got -0.1"),
    ({"clip_high": -0.2}, "clip_high must be >= 0.0, got -0.2"),
    ({"loss_aggregation": "mean"}, "loss_aggregation must be one of .*got 'mean'"),
    ({"kl_coef": -1.0}, "kl_coef must be >= 0.0, got -1.0"),
    ({"advantage": "grpo"}, "advantage must be an AdvantageEstimator, got 'grpo'"),
])
def test_bad_method_fields_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        get_method("ngrpo").replace(**changes)


def test_aggregation_refuses_mismatched_shapes():
    with pytest.raises(ValueError,
                       match=r"token_loss has shape \(3, 3\) but mask has shape \(3, 4\)"):
        aggregate_loss(LOSS[:, :3], MASK, "token-mean")
    with pytest.raises(ValueError, match=r"mask must be shaped \(..., answers, tokens\)"):
        token_weights(np.ones(3), "token-mean")


@pytest.mark.parametrize("mode", LOSS_AGGREGATIONS)
def test_leading_axes_are_separate_minibatches(mode):
    rng = np.random.default_rng(1)
    loss, mask = rng.normal(size=(3, 5, 6)), (rng.random((3, 5, 6)) < 0.5).astype(float)
    stacked = aggregate_loss(loss, mask, mode)
    np.testing.assert_allclose(stacked, [aggregate_loss(loss[i], mask[i], mode) for i in range(3)],
                               rtol=1e-14)


def test_the_rivals_presets_follow_their_papers():
    maxrl, qae, rl_zvp, lens = (get_method(n) for n in ("maxrl", "qae", "rl_zvp", "lens"))
    assert maxrl.advantage == MaxRLAdvantage(eps=0.0)
    assert (maxrl.clip_low, maxrl.clip_high, maxrl.kl_coef, maxrl.entropy_coef) == (0.2, 0.2, 0, 0)
    assert isinstance(maxrl.group_filter, KeepAllGroups)
    assert qae.advantage == QAEAdvantage(quantile=0.4, interpolation="linear")
    assert (qae.clip_low, qae.clip_high) == (0.2, 0.28)
    assert isinstance(qae.group_filter, DropHomogeneousGroups)
    assert isinstance(rl_zvp.advantage, RLZVPAdvantage)
    assert rl_zvp.advantage.policy_inputs == ("entropy",)
    assert isinstance(rl_zvp.group_filter, KeepAllGroups)
    assert lens.advantage == LENSAdvantage(negative_weight=0.25)
    assert lens.advantage.policy_inputs == ("log_prob",)
    assert lens.loss_aggregation == "seq-mean-token-mean" and lens.kl_coef == 0.0
    assert get_method("asymre").advantage == ShiftedBaselineAdvantage(fraction=0.0, shift=-0.1)
    shifted = get_method("shifted_baseline")
    assert shifted.advantage == ShiftedBaselineAdvantage(fraction=1 / 9)
    assert (shifted.clip_low, shifted.clip_high) == (0.16, 0.24)
    assert shifted.group_filter == DropAllCorrectGroups()


def test_policy_inputs_pass_through_a_method():
    rewards = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    log_prob = np.log([[0.5, 0.25, 0.25], [0.25, 0.5, 0.125]])
    np.testing.assert_array_equal(get_method("lens").advantages(rewards, log_prob=log_prob),
                                  get_method("lens").advantage(rewards, log_prob=log_prob))
    with pytest.raises(ValueError, match="the lens estimator needs log_prob="):
        get_method("lens").advantages(rewards)

"""The bandit training loop: loop oracle, exact expectation, entropy prediction, clipping, metrics
by hand."""

import dataclasses
import itertools
import math

import numpy as np
import pytest

from ngrpo_sim import get_method
from ngrpo_sim.methods.metrics import powers_of_two_up_to
from ngrpo_sim.simulators.bandit import BanditTask
from ngrpo_sim.simulators.dynamics import (DynamicsConfig, Rollout, TrainState, apply_rollout,
                                           draw_rollout, expected_step, policy_metrics,
                                           predicted_entropy_change, simulate)
from ngrpo_sim.simulators.optim import Optimizer
from ngrpo_sim.simulators.reference_step import reference_apply_rollout
from ngrpo_sim.simulators.sequence_config import SequenceConfig

SMALL = dict(num_prompts=12, num_answers=5, prompts_per_step=4, group_size=4, minibatches=2,
             seeds=3, profile="mid")


def fresh_state(task, config):
    return TrainState.start(task, config)


@pytest.mark.parametrize("policy", ["tabular", "shared"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("method, options", [
    ("ngrpo", dict(epochs=2)), ("dapo", dict(refill=True, profile="base")),
    ("grpo", dict(refill=False)), ("ppo", dict(epochs=2)), ("psr_nsr", dict(rewards="graded")),
    ("ngrpo", dict(rewards="noise", epochs=2)), ("dapo", dict(rewards="noise", profile="base")),
])
def test_vectorised_step_equals_the_loop_oracle(policy, optimizer, method, options):
    config = DynamicsConfig(**{**SMALL, **options, "policy": policy, "optimizer": optimizer,
                               "learning_rate": 4.0})
    assert_steps_equal_the_oracle(reference_apply_rollout, get_method(method), config, fresh_state)


def assert_steps_equal_the_oracle(oracle, method, config, make_state, statistics_rtol=1e-12):
    """Two sampled steps of ``apply_rollout`` against ``oracle`` on the same rollouts: parameters,
    values and every statistic to 1e-12, and the clip's branches exercised when there are several
    epochs."""
    task = config.build_task()
    rng = np.random.default_rng(5)
    state = make_state(task, config)
    state.values = rng.random(state.values.shape)
    reference = task.logits(state.params).copy()
    # two steps, so Adam's moments and the values are not at their starting point
    for _ in range(2):
        rollout = draw_rollout(task, method, state.params, config, rng)
        expected_state, expected_stats = oracle(task, method, config, state, rollout, reference)
        stats = apply_rollout(task, method, config, state, rollout, reference)
        np.testing.assert_allclose(state.params, expected_state.params, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(state.values, expected_state.values, rtol=1e-12, atol=1e-12)
        for name, value in expected_stats.items():
            np.testing.assert_allclose(stats[name], value, rtol=statistics_rtol, atol=1e-14,
                                       err_msg=name)
    if config.epochs > 1:  # the clipped branches were exercised, not only the unclipped ones
        assert stats["clipfrac_low"].sum() + stats["clipfrac_high"].sum() > 0


def one_step_logits(method, config):
    """Tabular logits after one step from the task's starting logits, of every seed (S, ...)."""
    return one_step_params(method, config) - config.build_task().offsets


def one_step_params(method, config):
    """The trainable parameters after one step from the start, of every seed (S, ...)."""
    method, task = get_method(method), config.build_task()
    state = fresh_state(task, config)
    reference = task.logits(state.params).copy()
    if config.mode == "sampled":
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
        apply_rollout(task, method, config, state,
                      draw_rollout(task, method, state.params, config, rng), reference)
    else:
        expected_step(task, method, config, state, reference)
    return state.params


@pytest.mark.parametrize("method", ["grpo", "rloo", "psr_nsr", "ppo", "ngrpo_no_filter", "rl_zvp"])
def test_expected_mode_is_the_mean_of_sampled_steps(method):
    # Every prompt in every batch (B = P), SGD, tabular, no filter: the expected step is exact, not
    # approximate.
    common = dict(num_prompts=8, num_answers=4, prompts_per_step=8, group_size=4, minibatches=2,
                  profile="uniform",
                  optimizer="sgd", learning_rate=3.0, refill=False)
    sampled = one_step_logits(method, DynamicsConfig(**common, seeds=40_000))
    expected = one_step_logits(method, DynamicsConfig(**common, seeds=1, mode="expected"))[0]
    mean, sem = sampled.mean(axis=0), sampled.std(axis=0, ddof=1) / np.sqrt(sampled.shape[0])
    assert np.abs(expected).max() > 0.05  # a step large enough to see
    np.testing.assert_array_less(np.abs(mean - expected), 5 * sem + 1e-12)


def test_entropy_prediction_holds_at_small_steps_and_shows_where_it_stops():
    def relative_error(learning_rate):
        run_record = simulate("ngrpo",
                              DynamicsConfig(num_prompts=64, prompts_per_step=32, optimizer="sgd",
                                             learning_rate=learning_rate,
                                                      steps=1, seeds=4, profile="uniform"),
                              progress=False)
        measured = run_record.metrics["entropy_change"][1]
        predicted = run_record.metrics["entropy_change_predicted"][1]
        return np.max(np.abs(predicted - measured) / np.abs(measured))

    small, tenfold, large = relative_error(0.01), relative_error(0.1), relative_error(20.0)
    assert small < 1e-2
    # The error is second order: ten times the step, about ten times the relative error.
    assert 5 < tenfold / small < 20
    assert large > 0.1


def test_clipping_has_no_effect_with_one_update_per_rollout():
    config = DynamicsConfig(minibatches=1, epochs=1, steps=20, seeds=4)
    clipped = simulate("ngrpo", config, progress=False)
    unclippable = simulate(get_method("ngrpo").replace(clip_low=0.0, clip_high=0.0), config,
                           progress=False)
    assert (np.all(clipped.metrics["clipfrac_low"][1:] == 0)
            and np.all(clipped.metrics["clipfrac_high"][1:] == 0))
    for name in ("accuracy", "entropy", "approx_kl"):
        np.testing.assert_array_equal(clipped.metrics[name], unclippable.metrics[name])


def test_clipping_acts_with_several_updates():
    run_record = simulate("ngrpo",
                          DynamicsConfig(policy="shared", minibatches=4, steps=20, seeds=4,
                                         learning_rate=0.2),
                          progress=False)
    assert np.nanmean(run_record.metrics["clipfrac_low"]) > 0


def test_same_seed_gives_bit_identical_runs():
    config = DynamicsConfig(policy="shared", steps=15, seeds=3)
    first, second = simulate("dapo", config, progress=False), simulate("dapo", config,
                                                                       progress=False)
    for name in first.metrics:
        np.testing.assert_array_equal(first.metrics[name], second.metrics[name])
    np.testing.assert_array_equal(first.pass_at_k, second.pass_at_k)
    other = simulate("dapo", DynamicsConfig(policy="shared", steps=15, seeds=3, seed=1),
                     progress=False)
    assert not np.array_equal(first.metrics["accuracy"], other.metrics["accuracy"])


# -- every recorded metric on a case computed by hand ----------------------------------------------

def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def hand_task():
    # Two prompts with two answers; answer 0 is right. Prompt 0 starts at sigmoid(-0.1) = 0.475,
    # prompt 1 at 0.5.
    return BanditTask(rewards=np.array([[1.0, 0.0], [1.0, 0.0]]),
                      offsets=np.array([[-0.1, 0.0], [0.0, 0.0]]), features=None)


@pytest.mark.parametrize("method_name", ["grpo", "ngrpo"])
def test_rollout_metrics_by_hand(method_name):
    task = hand_task()
    config = DynamicsConfig(num_prompts=2, num_answers=2, prompts_per_step=2, group_size=2,
                            minibatches=1, epochs=2,
                            optimizer="sgd", learning_rate=2.0, kl_coef=0.0, entropy_coef=0.0,
                            seeds=1, refill=False)
    state = TrainState(task.initial_params(1), Optimizer("sgd", 2.0), np.zeros((1, 2)))
    # Prompt 0: one right and one wrong answer (mixed); prompt 1: two wrong answers.
    rollout = Rollout(prompts=np.array([[0, 1]]), answers=np.array([[[0, 1], [1, 1]]]))
    stats = apply_rollout(task, get_method(method_name), config, state, rollout,
                          task.initial_params(1))

    a = 0.5 / (math.sqrt(0.5) + 1e-6)  # GRPO: (1 - 0.5) / (std + eps), std of {1, 0} = sqrt(1/2)
    if method_name == "ngrpo":  # rewards {1, 0} plus a virtual 1: mean 2/3, std sqrt(1/3)
        a = (1 / 3) / (math.sqrt(1 / 3) + 1e-6)
        b = -(2 / 3) / (math.sqrt(1 / 3) + 1e-6)
        wrong_all = -(1 / 3) / (math.sqrt(1 / 3) + 1e-6)  # two wrong answers plus a virtual 1
    else:
        b, wrong_all = -a, 0.0
    assert stats["share_all_wrong"][0] == 0.5 and stats["share_all_correct"][0] == 0.0
    assert stats["sampled_answers"][0] == 4  # two groups of two
    assert stats["share_mixed"][0] == 0.5 and stats["kept_groups"][0] == 2
    assert stats["share_zero_advantage"][0] == (0.5 if method_name == "grpo" else 0.0)

    # Epoch 1 (ratio 1): descent gradient on prompt 0's logits is -(1/4)[a (e0 - pi) + b (e1 - pi)].
    pi0 = sigmoid(-0.1)
    grad0 = -(a * (1 - pi0) + b * (0 - pi0)) / 4
    logits0 = np.array([-0.1 - 2.0 * grad0, 0.0 + 2.0 * grad0])
    pi1 = 0.5
    grad1 = -(2 * wrong_all * (0 - pi1)) / 4  # both answers are answer 1
    logits1 = np.array([0.0 - 2.0 * grad1, 0.0 + 2.0 * grad1])
    new_pi0 = sigmoid(logits0[0] - logits0[1])
    ratio_right, ratio_wrong = new_pi0 / pi0, (1 - new_pi0) / (1 - pi0)
    # so epoch 2 clips both answers of prompt 0
    assert ratio_right > 1 + 0.28 and ratio_wrong < 1 - 0.2
    # Epoch 2: prompt 0's answers are clipped (1 high, 1 low out of 8 tokens); prompt 1 moves again
    # under NGRPO.
    if method_name == "ngrpo":
        new_pi1 = sigmoid(logits1[0] - logits1[1])
        ratio = (1 - new_pi1) / (1 - pi1)
        clipped = ratio < 1 - 0.16
        if not clipped:
            grad1b = -(2 * wrong_all * ratio * (0 - new_pi1)) / 4
            logits1 = logits1 + np.array([-2.0 * grad1b, 2.0 * grad1b])
        expected_low = (1 + 2 * clipped) / 8
    else:
        expected_low = 1 / 8
    np.testing.assert_allclose(state.params[0, 0], logits0, rtol=1e-12)
    np.testing.assert_allclose(state.params[0, 1], logits1, rtol=1e-12)
    assert stats["clipfrac_high"][0] == 1 / 8
    assert stats["clipfrac_low"][0] == expected_low

    def k3(ratio):
        return ratio - 1 - math.log(ratio)
    final_pi1 = sigmoid(logits1[0] - logits1[1])
    expected_kl = (k3(ratio_right) + k3(ratio_wrong) + 2 * k3((1 - final_pi1) / 0.5)) / 4
    assert stats["approx_kl"][0] == pytest.approx(expected_kl, rel=1e-12)


def test_policy_metrics_by_hand():
    task = hand_task()
    logits = np.array([[[0.8, -0.1], [0.0, 0.0]]])
    initial = np.array([sigmoid(-0.1), 0.5])
    metrics, pass_at_k = policy_metrics(task, logits, initial, powers_of_two_up_to(256))
    p0, p1 = sigmoid(0.9), 0.5

    def entropy(p):
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert metrics["accuracy"][0] == pytest.approx((p0 + p1) / 2, rel=1e-14)
    assert metrics["entropy"][0] == pytest.approx((entropy(p0) + entropy(p1)) / 2, rel=1e-14)
    assert (metrics["accuracy_mid"][0] == pytest.approx(p0)
            and metrics["accuracy_easy"][0] == pytest.approx(p1))
    assert (np.isnan(metrics["accuracy_hard"][0])
            and metrics["entropy_easy"][0] == pytest.approx(math.log(2)))
    assert metrics["newly_solved"][0] == 1 and metrics["abandoned"][0] == 0
    assert metrics["solved_hard"][0] == 0  # no prompt started below 5%
    # Prompt 0 counted as hard (start 1%): solved at sigmoid(0.8) = 0.69, not at sigmoid(-0.1).
    for offset, solved in ((0.8, 1), (-0.1, 0)):
        hard, _ = policy_metrics(task, np.array([[[offset, 0.0], [0.0, 0.0]]]),
                                 np.array([0.01, 0.5]), powers_of_two_up_to(256))
        assert hard["solved_hard"][0] == solved
    curve = [1 - ((1 - p0) ** k + (1 - p1) ** k) / 2 for k in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
    np.testing.assert_allclose(pass_at_k[0], curve, rtol=1e-13)
    assert metrics["pass_auc"][0] == pytest.approx(100 * sum((x + y) / 2
                                                             for x, y in zip(curve, curve[1:])) / 8)
    # Abandoned: a prompt below 1e-3.
    stuck, _ = policy_metrics(task, np.array([[[-8.0, 0.0], [0.0, 0.0]]]), initial,
                              powers_of_two_up_to(256))
    assert stuck["abandoned"][0] == 1
    # Regressed: below half its starting success (prompt 0 started at 0.475; sigmoid(-8.1) is far
    # below).
    assert stuck["regressed"][0] == 1 and metrics["regressed"][0] == 0
    # Prompt 1 started at 0.5: sigmoid(-1.2) = 0.23 is below half of it, sigmoid(-1.0) = 0.27 is
    # not.
    for offset, regressed in ((-1.2, 1), (-1.0, 0)):
        moved, _ = policy_metrics(task, np.array([[[0.0, 0.0], [offset, 0.0]]]), initial,
                                  powers_of_two_up_to(256))
        assert moved["regressed"][0] == regressed


def test_entropy_prediction_formula_by_hand():
    # Two answers: dH/dz0 = -pi0 pi1 (z-difference derivative of the binary entropy) = -pi0 (1 -
    # pi0) log(pi0/pi1).
    logits, change = np.array([0.3, -0.2]), np.array([1e-3, 0.0])
    p = sigmoid(0.5)
    assert predicted_entropy_change(logits, change) == pytest.approx(
        -p * (1 - p) * math.log(p / (1 - p)) * 1e-3, rel=1e-12)


@pytest.mark.parametrize("options, message", [
    (dict(num_answers=1), "num_answers must be >= 2, got 1"),
    (dict(group_size=1), "group_size must be >= 2, got 1"),
    (dict(profile="0.2,1.5"), r"profile success rates must lie in \[0, 1\], got 1.5"),
    (dict(profile="bogus"), "profile must be one of base, hard, mid, uniform or comma-separated"),
    (dict(learning_rate=0.0), "learning_rate must be > 0.0, got 0.0"),
    (dict(learning_rate=-1e-3), "learning_rate must be > 0.0, got -0.001"),
    (dict(prompts_per_step=300), "prompts_per_step=300 exceeds num_prompts=256"),
    (dict(mode="expected", rewards="graded"), "mode='expected' needs binary rewards"),
    (dict(optimizer="rmsprop"), "optimizer must be one of 'sgd', 'adam'; got 'rmsprop'"),
])
def test_bad_input_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        simulate("ngrpo", DynamicsConfig(**{"steps": 1, "seeds": 1, **options}), progress=False)


@pytest.mark.parametrize("options, message", [
    (dict(profile="bogus"), "profile must be one of base, hard, mid, uniform"),
    (dict(profile="0.2,-1"), r"profile success rates must lie in \[0, 1\], got -1.0"),
    (dict(rewards="partial"), "rewards must be one of 'binary', 'graded', 'noise'; got 'partial'"),
    (dict(correct_answers=16), "correct_answers must be <= 15, got 16"),
    (dict(feature_dim=0), "feature_dim must be >= 1, got 0"),
])
def test_the_config_refuses_a_task_it_cannot_build_when_it_is_made(options, message):
    # At construction, so that a command line or a notebook hears of it before any work starts.
    with pytest.raises(ValueError, match=message):
        DynamicsConfig(**options)


@pytest.mark.parametrize("options", [
    dict(policy="tabular", optimizer="adam"),
    dict(policy="tabular", optimizer="sgd", seeds=24, num_answers=32),
    dict(policy="shared", optimizer="adam", feature_dim=48),
    dict(policy="shared", prompts_per_step=96, group_size=16),
    dict(policy="tabular", mode="expected", num_prompts=512),
    dict(policy="shared", mode="expected", seeds=32),
    dict(policy="tabular", refill=False, steps=150, seeds=4, num_prompts=64, prompts_per_step=16),
])
@pytest.mark.parametrize("method", ["ngrpo", "psr_nsr"])
def test_the_memory_estimate_bounds_the_measured_peak(options, method):
    # tracemalloc sees every numpy allocation: the estimate must not fall short of the peak it
    # measures, and should not exceed it by much, or a command would refuse runs that fit.
    import tracemalloc

    config = DynamicsConfig(**{"num_prompts": 192, "prompts_per_step": 48, "seeds": 12, "steps": 2,
                               **options})
    # A first run puts caches and imports out of the measured peak.
    simulate(method, dataclasses.replace(config, steps=1), progress=False)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        simulate(method, config, progress=False)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak <= config.memory_bytes() <= 2.5 * peak


def test_a_run_beyond_the_memory_is_refused_before_it_starts(monkeypatch):
    from ngrpo_sim.base import checks

    monkeypatch.setattr(checks, "available_memory", lambda: 2 ** 30)
    # 4096 x 256 x 16 tabular logits and Adam's two moments: 3 GiB at least.
    config = DynamicsConfig(seeds=4096)
    with pytest.raises(ValueError, match=r"4096 seeds x 256 prompts x 16 answers .* needs about "
                                         r"\d+\.\d GiB of memory, more than the 1.0 GiB available "
                                         r"now; use fewer seeds"):
        simulate("grpo", config, progress=False)


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown method 'ngrpo2'"):
        simulate("ngrpo2", DynamicsConfig(steps=1, seeds=1), progress=False)


def test_rl_zvps_expected_step_is_not_grpos():
    # The test above could pass with GRPO's gain if the entropy term were too small to see: here it
    # is more than 6 standard errors wide, so the 5-error match below tells the two apart.
    common = dict(num_prompts=8, num_answers=4, prompts_per_step=8, group_size=4, minibatches=2,
                  profile="0.7", optimizer="sgd", learning_rate=3.0, refill=False, seeds=1,
                  mode="expected")
    rl_zvp = one_step_logits("rl_zvp", DynamicsConfig(**common))[0]
    grpo = one_step_logits("grpo", DynamicsConfig(**common, kl_coef=0.0, entropy_coef=0.0))[0]
    sampled = one_step_logits("rl_zvp", DynamicsConfig(**{**common, "seeds": 40_000,
                                                          "mode": "sampled"}))
    sem = sampled.std(axis=0, ddof=1) / np.sqrt(sampled.shape[0])
    assert np.max(np.abs(rl_zvp - grpo) / (sem + 1e-12)) > 6
    np.testing.assert_array_less(np.abs(sampled.mean(axis=0) - rl_zvp), 5 * sem + 1e-12)


# -- pure-noise rewards --------------------------------------------------------------------------

def noise_first_step_moments(num_answers, group_size, probs, learning_rate, answers_per_minibatch):
    """E[dz] and E[dz^2] of one prompt's logits after one SGD step of GRPO (token-mean, ratio 1)
    on a group with pure-noise rewards, by enumerating every group of answers and every reward
    pattern (each 2^-G)."""
    grpo = get_method("grpo")
    first, second = np.zeros(num_answers), np.zeros(num_answers)
    eye = np.eye(num_answers)
    for answers in itertools.product(range(num_answers), repeat=group_size):
        weight = np.prod(probs[list(answers)])
        for rewards in itertools.product((0.0, 1.0), repeat=group_size):
            advantages = grpo.advantages(np.array(rewards))
            step = learning_rate * sum(a * (eye[i] - probs) for a, i in zip(advantages, answers))
            step /= answers_per_minibatch
            first += weight * 2.0 ** -group_size * step
            second += weight * 2.0 ** -group_size * step ** 2
    return first, second


def test_pure_noise_rewards_move_the_first_step_as_enumeration_says():
    # Tabular SGD, every prompt in one minibatch: each prompt's first step depends on its own group
    # only. Under pure noise its mean is exactly 0 and its second moment is the enumerated one; the
    # verifier's rewards would give a non-zero mean, another reward rate another second moment.
    config = DynamicsConfig(num_prompts=2, num_answers=3, prompts_per_step=2, group_size=3,
                            minibatches=1, profile="0.3", optimizer="sgd", learning_rate=1.0,
                            refill=False, rewards="noise", kl_coef=0.0, entropy_coef=0.0,
                            seeds=60_000)
    steps = one_step_logits("grpo", config)  # (S, P, K)
    task = config.build_task()
    for prompt in range(2):
        probs = np.exp(task.offsets[prompt]) / np.exp(task.offsets[prompt]).sum()
        first, second = noise_first_step_moments(3, 3, probs, config.learning_rate,
                                                 answers_per_minibatch=6)
        assert np.all(first == pytest.approx(0.0, abs=1e-15)) and np.max(second) > 1e-3
        values = steps[:, prompt]
        sem = values.std(axis=0, ddof=1) / np.sqrt(len(values))
        np.testing.assert_array_less(np.abs(values.mean(axis=0) - first), 5 * sem)
        squares = values ** 2
        sem = squares.std(axis=0, ddof=1) / np.sqrt(len(squares))
        np.testing.assert_array_less(np.abs(squares.mean(axis=0) - second), 5 * sem)


@pytest.mark.parametrize("config_class, options", [
    (DynamicsConfig, dict(num_answers=4)), (SequenceConfig, dict(vocab_size=3, max_length=3))])
def test_pure_noise_rewards_are_fair_coins_whatever_the_answer(config_class, options):
    config = config_class(num_prompts=64, prompts_per_step=64, group_size=4, refill=False, seeds=50,
                          rewards="noise", profile="base", **options)
    task = config.build_task()
    rng = np.random.default_rng(3)
    params = task.initial_params(config.seeds)
    rollout = draw_rollout(task, get_method("grpo"), params, config, rng)
    right = task.score(rollout.prompts, rollout.answers) == 1.0  # what the verifier says
    rewards = rollout.rewards
    assert right.any() and (~right).any() and set(np.unique(rewards)) == {0.0, 1.0}
    for answers in (right, ~right):  # P(reward 1) = 1/2 for right and for wrong answers
        mean = rewards[answers].mean()
        assert abs(mean - 0.5) < 4 * math.sqrt(0.25 / answers.sum())
    # All-wrong groups: 2^-G of them, whatever the prompt's success rate.
    all_wrong = np.mean(~(rewards == 1.0).any(axis=-1))
    groups = rewards.shape[0] * rewards.shape[1]
    share = 2.0 ** -config.group_size
    assert abs(all_wrong - share) < 4 * math.sqrt(share * (1 - share) / groups)

"""The long-answer simulator: its exact recursions against a plain enumeration of every answer, the
existing token simulator on a policy both can express, finite differences and Monte Carlo; its
sampler, verifier and step against plain-loop oracles; the gain identity by Monte Carlo; DAPO's
overlong options; the starting profile; bad input."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
from long_answer_oracle import (END, STEP, enumerate_answers, logits_at,
                                reference_apply_long_rollout, reward_of, softmax)
from test_dynamics import assert_steps_equal_the_oracle, one_step_params

from ngrpo_sim import get_method
from ngrpo_sim.analysis.landscape import expected_gain
from ngrpo_sim.methods.metrics import powers_of_two_up_to
from ngrpo_sim.methods.presets import LOSS_AGGREGATIONS, token_weights
from ngrpo_sim.simulators.bandit import starting_success
from ngrpo_sim.simulators.long_answer_config import LongAnswerConfig, make_long_answer_task
from ngrpo_sim.simulators.long_answer_exact import (END_WRONG, TEXT, expectation_gradient,
                                                    values_to_go)
from ngrpo_sim.simulators.long_answer_update import LongAnswerUpdate
from ngrpo_sim.simulators.long_answers import pmf_quantile
from ngrpo_sim.simulators.optim import Optimizer
from ngrpo_sim.simulators.sequences import SequenceTask
from ngrpo_sim.simulators.task_parts import Coefficients
from ngrpo_sim.simulators.training_loop import TrainState, apply_rollout, draw_rollout, simulate


def tiny_task(max_length=4, work_cap=3, num_prompts=3, rewards="binary", **options):
    return make_long_answer_task(num_prompts, max_length, work_cap, profile="0.2,0.5,0.05",
                                 feature_dim=2, rewards=rewards, **options)


def random_params(task, seeds=2, scale=0.8, seed=1):
    return np.random.default_rng(seed).normal(scale=scale, size=(seeds, task.num_params))


# -------------------------------------------------------------------------------------------------
# Exact recursions against every answer
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_length, work_cap", [(2, 2), (3, 2), (4, 3), (5, 4), (4, 6)])
def test_answer_statistics_equal_an_enumeration_of_every_answer(max_length, work_cap):
    task = tiny_task(max_length, work_cap)
    params = random_params(task)
    statistics = task.statistics(params)
    for seed, prompt in itertools.product(range(2), range(task.num_prompts)):
        answers = enumerate_answers(task, params, seed, prompt)
        probability = np.array([a.probability for a in answers])
        assert probability.sum() == pytest.approx(1.0, abs=1e-14)
        right = np.array([a.correct_probability for a in answers])
        lengths = np.array([a.length for a in answers])
        truncated = np.array([a.truncated for a in answers])
        work = np.array([a.work for a in answers])
        token_entropy = sum(a.probability * sum(
            -sum(p * math.log(p) for p in softmax(logits_at(task, params, seed, prompt, t, w)))
            for t, w in a.states) for a in answers)
        end_mass = sum(a.probability * sum(
            softmax(logits_at(task, params, seed, prompt, t, w))[END] for t, w in a.states)
            for a in answers)
        expected = {"success": probability @ right, "length": probability @ lengths,
                    "correct_length": probability @ (right * lengths),
                    "truncation": probability @ truncated, "work": probability @ work,
                    "entropy": token_entropy, "end_mass": end_mass}
        for name, value in expected.items():
            measured = getattr(statistics, name)[seed, prompt]
            assert measured == pytest.approx(value, rel=1e-12, abs=1e-15), name
        for length in range(1, max_length + 1):
            at = lengths == length
            assert statistics.correct_pmf[seed, prompt, length - 1] == pytest.approx(
                probability[at] @ right[at], rel=1e-12, abs=1e-15)
            assert statistics.wrong_pmf[seed, prompt, length - 1] == pytest.approx(
                probability[at] @ (1 - right[at]), rel=1e-12, abs=1e-15)
        for level in range(work_cap):
            ends = (work == level) & ~truncated
            assert statistics.end_work[seed, prompt, level] == pytest.approx(
                probability[ends].sum(), rel=1e-12, abs=1e-15)


def test_the_policy_is_the_documented_log_linear_form():
    # Features and offsets as the module docstring describes them, rebuilt by hand.
    task = tiny_task(5, 4)
    share = np.arange(4) / 3
    tau = np.arange(5) / 5
    plasticity = {0: 0.25, 1: 1.0}
    per_token = 3 + 2
    for token in (0, 1):
        block = task.state_features[..., token, token * per_token:(token + 1) * per_token]
        np.testing.assert_allclose(block[..., 0], plasticity[token])
        np.testing.assert_allclose(block[..., 1], plasticity[token] * np.tile(share, (3, 1)))
        np.testing.assert_allclose(block[..., 2], plasticity[token] * np.tile(share, (3, 1)) ** 2)
        # The prompt features do not depend on the work.
        np.testing.assert_array_equal(np.repeat(block[:, :1, 3:], 4, axis=1), block[:, :, 3:])
        column = 2 * per_token + 2 * token
        np.testing.assert_allclose(task.time_features[:, token, column],
                                   plasticity[token] * tau)
        np.testing.assert_allclose(task.time_features[:, token, column + 1],
                                   plasticity[token] * tau ** 2)
    assert task.num_params == 2 * per_token + 4
    used = (task.state_features != 0).any(axis=(0, 1, 2)) | (task.time_features != 0).any((0, 1))
    assert used.all()
    np.testing.assert_array_equal(task.time_offsets, 0.0)
    # The verifier's curve: sigmoid(w - r_p).
    np.testing.assert_allclose(task.correct, 1 / (1 + np.exp(task.required_work[:, None]
                                                           - np.arange(4.0)[None, :])),
                               rtol=1e-15)


def test_the_starting_profile_hits_its_targets_and_has_realistic_lengths():
    task = make_long_answer_task(256, 1024, 16, profile="base", seed=3)
    statistics = task.statistics(task.initial_params(1))
    target = starting_success("base", 256, np.random.default_rng(3))
    reachable = 0.98 * (1 - statistics.truncation[0])
    np.testing.assert_allclose(statistics.success[0], np.minimum(target, reachable), rtol=1e-10)
    share = statistics.length.mean() / 1024
    lengths = (statistics.correct_pmf + statistics.wrong_pmf).sum(axis=1)[0]
    assert 0.18 < share < 0.32  # mean well under the cap
    assert pmf_quantile(lengths, 0.9) > 1.8 * pmf_quantile(lengths, 0.5)  # a long tail
    assert 0.01 < statistics.truncation.mean() < 0.06  # some already truncated
    assert np.mean(target < 0.05) > 0.4  # many hard prompts
    # The same task at a quarter of the length has nearly the same shape.
    quarter = make_long_answer_task(256, 256, 16, profile="base", seed=3)
    short = quarter.statistics(quarter.initial_params(1))
    assert short.length.mean() / 256 == pytest.approx(share, rel=0.05)


def test_a_natural_length_above_the_cap_is_the_same_task_under_a_tighter_cap():
    tight = make_long_answer_task(64, 128, natural_length=256, seed=4)
    loose = make_long_answer_task(64, 256, seed=4)
    np.testing.assert_array_equal(tight.state_offsets, loose.state_offsets)
    np.testing.assert_array_equal(tight.habit, loose.habit)
    start = tight.statistics(tight.initial_params(1))
    assert start.truncation.mean() > 3 * loose.statistics(loose.initial_params(1)).truncation.mean()


def test_without_position_features_the_policy_cannot_read_its_position():
    config = LongAnswerConfig(num_prompts=16, prompts_per_step=8, max_length=32, steps=3, seeds=2,
                              position_features=False)
    task = config.build_task()
    np.testing.assert_array_equal(task.time_features, 0.0)
    with_positions = dataclasses.replace(config, position_features=True).build_task()
    np.testing.assert_array_equal(task.state_features, with_positions.state_features)
    # A trained theta leaves the position entries where they started: nothing reads them.
    state = TrainState.start(task, config)
    rng = np.random.default_rng(0)
    method = get_method("ngrpo")
    for _ in range(3):
        apply_rollout(task, method, config, state,
                      draw_rollout(task, method, state.params, config, rng), state.params.copy())
    position = np.any(with_positions.time_features != 0, axis=(0, 1))
    assert np.all(state.params[:, position] == 0) and np.any(state.params[:, ~position] != 0)


# -------------------------------------------------------------------------------------------------
# The same policy in the existing token simulator
# -------------------------------------------------------------------------------------------------


def as_sequence_task(task, params, seed, prompt):
    """A tabular ``SequenceTask`` with V = 2 content tokens (text, step) and the end token whose
    logits at every prefix are this policy's at the prefix's (position, work); its keys are
    irrelevant (rewards 0)."""
    vocab, max_length = 2, task.max_length
    nodes = sum(vocab ** d for d in range(max_length))
    offsets = np.zeros((1, nodes, 3))
    node = 0
    for depth in range(max_length):
        for local in range(vocab ** depth):
            prefix = [(local // vocab ** (depth - 1 - i)) % vocab for i in range(depth)]
            work = min(sum(prefix), task.work_cap - 1)
            offsets[0, node] = logits_at(task, params, seed, prompt, depth, work)
            node += 1
    sequence = SequenceTask(rewards=np.zeros((1, vocab)), offsets=offsets, features=None,
                            max_length=max_length, end_token=True)
    return sequence, offsets


@pytest.mark.parametrize("max_length, work_cap", [(4, 3), (5, 2)])
def test_the_token_simulator_agrees_on_a_policy_both_can_express(max_length, work_cap):
    task = tiny_task(max_length, work_cap)
    params = random_params(task)
    statistics = task.statistics(params)
    for seed, prompt in itertools.product(range(2), range(task.num_prompts)):
        sequence, logits = as_sequence_task(task, params, seed, prompt)
        theirs = sequence.answer_statistics(logits)
        for name in ("length", "truncation", "entropy", "end_mass"):
            assert getattr(statistics, name)[seed, prompt] == pytest.approx(
                getattr(theirs, name)[0], rel=1e-12), name


def test_the_success_gradient_agrees_with_the_token_simulator_and_finite_differences():
    task = tiny_task(5, 3)
    params = random_params(task)
    state, time = task.state_logits(params), task.time_logits(params)
    ones = np.ones((2, task.num_prompts, task.max_length))
    gradient = task.to_params(expectation_gradient(state, time, task.correct, ones, 0 * ones,
                                                   np.zeros((2, task.num_prompts))))
    for seed, prompt in itertools.product(range(2), range(task.num_prompts)):
        sequence, logits = as_sequence_task(task, params, seed, prompt)
        # The value of each terminal choice: q(w) of its prefix for the end token, 0 otherwise.
        values = np.zeros(logits.shape)
        node = 0
        for depth in range(task.max_length):
            for local in range(2 ** depth):
                work = min(bin(local).count("1"), task.work_cap - 1)
                values[0, node, 2] = task.correct[prompt, work]
                node += 1
        per_logit = sequence.gradient_of_expectation(logits, values)[0]
        # Chain to theta: d z / d theta of each prefix's step and end logits.
        chained = np.zeros(task.num_params)
        node = 0
        for depth in range(task.max_length):
            for local in range(2 ** depth):
                work = min(bin(local).count("1"), task.work_cap - 1)
                for token in (0, 1):
                    chained += per_logit[node, token + 1] * (
                        task.state_features[prompt, work, token]
                        + task.time_features[depth, token])
                node += 1
        np.testing.assert_allclose(gradient[seed, prompt], chained, rtol=1e-10, atol=1e-14)
    # Central finite differences of the success rate of every prompt.
    step = 1e-6
    for d in range(task.num_params):
        shift = np.zeros_like(params)
        shift[:, d] = step
        numeric = (task.success(params + shift) - task.success(params - shift)) / (2 * step)
        np.testing.assert_allclose(gradient[..., d], numeric, rtol=1e-6, atol=1e-10)


def test_values_to_go_are_conditional_expectations():
    # V_0(0) is the expectation itself; with the length as the value it is the mean length.
    task = tiny_task(5, 3)
    params = random_params(task)
    state, time = task.state_logits(params), task.time_logits(params)
    lengths = np.broadcast_to(np.arange(1.0, 6.0), (2, 3, 5))
    values = values_to_go(state, time, task.correct, lengths, lengths, np.full((2, 3), 5.0))
    statistics = task.statistics(params)
    np.testing.assert_allclose(values[0][..., 0], statistics.length, rtol=1e-13)


# -------------------------------------------------------------------------------------------------
# Sampling and scoring
# -------------------------------------------------------------------------------------------------


def test_sampled_answers_follow_the_policy_and_are_scored_by_the_rule():
    task = tiny_task(4, 3, rewards="graded", overlong_buffer=2, overlong_penalty=0.5)
    params = random_params(task, seeds=1)
    prompts = np.ones((1, 3000), dtype=int)
    tokens = task.sample(params, prompts, 4, np.random.default_rng(0))
    assert tokens.dtype == np.int8 and tokens.shape == (1, 3000, 4, 4)
    answers = enumerate_answers(task, params, 0, 1)
    index = {tuple(a.choices): a for a in answers}
    observed = [tuple(int(min(t, END)) for t in row if t >= 0) for row in tokens.reshape(-1, 4)]
    counts = {answer: observed.count(answer) for answer in index}
    n = len(observed)
    for answer, count in counts.items():
        p = index[answer].probability
        assert abs(count / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3
    # Verdicts: among the answers that ended with work w, the share of END is q(w).
    rows = tokens.reshape(-1, 4)
    last = np.array([row[row >= 0][-1] for row in rows])
    work = np.minimum((rows == STEP).sum(axis=1), 2)
    for level in range(3):
        ended = np.isin(last, (END, END_WRONG)) & (work == level)
        if ended.sum() > 200:
            share = np.mean(last[ended] == END)
            q = task.correct[1, level]
            assert abs(share - q) < 5 * math.sqrt(q * (1 - q) / ended.sum())
    rewards = task.score(prompts, tokens).ravel()
    np.testing.assert_allclose(rewards, [reward_of(task, 1, row) for row in rows], rtol=1e-15)
    assert (tokens[..., 1:][tokens[..., :-1] < 0] < 0).all()  # padding only after the end


def test_dapo_soft_overlong_punishment_by_hand():
    task = tiny_task(10, 3, overlong_buffer=4, overlong_penalty=1.0)
    # DAPO's eq. 13 with L_max = 10, L_cache = 4: 0 up to 6 tokens, then -(l - 6) / 4.
    np.testing.assert_allclose(task.overlong_punishment(np.array([1, 6, 7, 8, 10])),
                               [0, 0, -0.25, -0.5, -1.0])
    prompts = np.zeros((1, 1), dtype=int)
    truncated = np.array([[[[TEXT] * 10, [STEP] * 6 + [END] + [-1] * 3]]], dtype=np.int8)
    np.testing.assert_allclose(task.score(prompts, truncated), [[[-1.0, 1.0 - 0.25]]])


# -------------------------------------------------------------------------------------------------
# The step against its plain-loop oracle, and the loss weights
# -------------------------------------------------------------------------------------------------

SMALL = dict(num_prompts=10, max_length=6, work_cap=3, feature_dim=2, prompts_per_step=4,
             group_size=4, minibatches=2, seeds=3, profile="mid")


def fresh_state(task, config, adam_eps=1e-8):
    optimizer = Optimizer(config.optimizer, config.learning_rate, eps=adam_eps)
    return TrainState(task.initial_params(config.seeds), optimizer,
                      np.zeros((config.seeds, task.num_prompts)))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("method, options", [
    ("ngrpo", dict(epochs=2)), ("dapo", dict(refill=True, profile="base")),
    ("grpo", dict(refill=False, kl_coef=0.05, entropy_coef=0.02)),
    ("ppo", dict(epochs=2, loss_aggregation="seq-mean-token-mean")),
    ("psr_nsr", dict(rewards="graded")), ("dr_grpo", dict(overlong_filter=True)),
    ("grpo", dict(loss_aggregation="seq-mean-token-mean", epochs=2, overlong_filter=True)),
    ("ngrpo", dict(overlong_buffer=3, loss_aggregation="token-mean")),
    ("maxrl", dict(max_length=3)),
])
def test_vectorised_long_step_equals_the_loop_oracle(optimizer, method, options):
    config = LongAnswerConfig(**{**SMALL, **options, "optimizer": optimizer,
                                 "learning_rate": 0.5})
    assert_steps_equal_the_oracle(reference_apply_long_rollout, get_method(method), config,
                                  lambda task, config: fresh_state(task, config, adam_eps=1e-4),
                                  statistics_rtol=1e-11)


@pytest.mark.parametrize("aggregation", LOSS_AGGREGATIONS)
@pytest.mark.parametrize("overlong_filter", [False, True])
def test_answer_weights_are_methods_token_weights(aggregation, overlong_filter):
    task = tiny_task(6, 3, overlong_filter=overlong_filter)
    params = random_params(task)
    prompts = np.array([[0, 1, 2], [2, 0, 1]])
    tokens = task.sample(params, prompts, 4, np.random.default_rng(3))
    update = LongAnswerUpdate(task, prompts, tokens, params, params)
    in_part = np.array([[True, False, True], [False, True, True]])
    weights = update.answer_weights(in_part, aggregation)
    for seed in range(2):
        members = np.flatnonzero(in_part[seed])
        mask = (tokens[seed, members] >= 0).astype(float)
        if overlong_filter:
            ended = np.any(tokens[seed, members] >= END, axis=-1)
            mask *= ended[..., None]
        expected = token_weights(mask.reshape(-1, 6), aggregation, normaliser=6.0)
        got = np.broadcast_to(weights[seed, members][..., None], mask.shape) * mask
        np.testing.assert_allclose(got.reshape(-1, 6), expected, rtol=1e-15)
        assert np.all(weights[seed, ~in_part[seed]] == 0)


def test_the_policy_inputs_of_lens_and_rl_zvp_by_hand():
    task = tiny_task(5, 3)
    params = random_params(task, seeds=1)
    prompts = np.array([[0, 2]])
    tokens = task.sample(params, prompts, 3, np.random.default_rng(4))
    inputs = LongAnswerUpdate(task, prompts, tokens, params, params).policy_inputs(
        ("log_prob", "entropy"))
    for b, g in itertools.product(range(2), range(3)):
        answer = [int(t) for t in tokens[0, b, g] if t >= 0]
        log_probs, entropies, work = [], [], 0
        for t, token in enumerate(answer):
            probs = softmax(logits_at(task, params, 0, prompts[0, b], t, work))
            log_probs.append(math.log(probs[min(token, END)]))
            entropies.append(-sum(p * math.log(p) for p in probs))
            work = min(work + (token == STEP), task.work_cap - 1)
        assert inputs["log_prob"][0, b, g] == pytest.approx(np.mean(log_probs), rel=1e-12)
        np.testing.assert_allclose(inputs["entropy"][0, b, g],
                                   entropies + [0.0] * (5 - len(answer)), rtol=1e-12)


@pytest.mark.parametrize("method", ["rl_zvp", "lens"])
def test_estimators_that_read_the_policy_train_here(method):
    config = LongAnswerConfig(num_prompts=16, prompts_per_step=8, max_length=32, steps=3, seeds=2)
    run_record = simulate(method, config, progress=False)
    assert np.all(np.isfinite(run_record.metrics["accuracy"]))
    assert np.nanmax(np.abs(run_record.metrics["approx_kl"])) > 0  # the policy moved
    with pytest.raises(ValueError, match=f"cannot train method '{method}': it reads"):
        simulate(method, dataclasses.replace(config, mode="expected", seeds=1), progress=False)


def test_an_update_is_freed_once_its_step_is_done():
    # Nothing may keep a rollout's per-token arrays alive after its updates (a cache of the
    # reference's log-probabilities did, one rollout per step, until the run was killed).
    import gc
    import weakref

    task = tiny_task(5, 3)
    params = random_params(task, seeds=1)
    prompts = np.array([[0, 1]])
    tokens = task.sample(params, prompts, 4, np.random.default_rng(0))
    update = LongAnswerUpdate(task, prompts, tokens, params, params)
    update.gradient(params, np.ones((1, 2, 4)), np.array([[True, True]]), get_method("grpo"),
                    Coefficients(kl=0.01, entropy=0.01))
    freed = weakref.ref(update)
    del update
    gc.collect()
    assert freed() is None


def test_overlong_filtering_removes_truncated_answers_from_the_loss():
    # The gradient does not change when the truncated answers' tokens change.
    task = tiny_task(5, 3, overlong_filter=True)
    params = random_params(task, seeds=1)
    prompts = np.array([[0]])
    tokens = np.array([[[[STEP, END, -1, -1, -1], [TEXT] * 5, [STEP, TEXT, END_WRONG, -1, -1],
                         [TEXT, STEP, TEXT, STEP, TEXT]]]], dtype=np.int8)
    other = tokens.copy()
    other[0, 0, 1] = [STEP, STEP, STEP, TEXT, STEP]
    method = get_method("grpo")
    advantages = np.array([[[1.0, -0.5, -0.2, -0.3]]])
    results = [LongAnswerUpdate(task, prompts, t, params, params).gradient(
        params + 0.1, advantages, np.array([[True]]), method, Coefficients(0.01, 0.02))
        for t in (tokens, other)]
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][3][0] == 5  # the two answers that ended: 2 + 3 tokens


# -------------------------------------------------------------------------------------------------
# The gain identity and the expected mode, by Monte Carlo
# -------------------------------------------------------------------------------------------------

MEAN_STEP = dict(num_prompts=4, max_length=5, work_cap=3, feature_dim=2, prompts_per_step=4,
                 group_size=4, minibatches=1, profile="0.3,0.6,0.1,0.5", optimizer="sgd",
                 learning_rate=3.0, refill=False)


def sampled_mean(method, config, seeds=20_000):
    sampled = one_step_params(method, dataclasses.replace(config, seeds=seeds))
    return sampled.mean(axis=0), sampled.std(axis=0, ddof=1) / np.sqrt(seeds)


@pytest.mark.parametrize("method", ["grpo", "ngrpo_no_filter", "dr_grpo", "psr_nsr", "rloo"])
def test_the_gain_identity_holds_by_monte_carlo(method):
    # Constant per-answer weights (seq-mean-token-sum-norm, 1 / L), ratio 1, no KL or entropy
    # term: the mean sampled step is lr / (L P) sum_p c(p) grad p, with c the single-action gain.
    config = LongAnswerConfig(**MEAN_STEP, loss_aggregation="seq-mean-token-sum-norm",
                              kl_coef=0.0, entropy_coef=0.0)
    task = config.build_task()
    theta = task.initial_params(1)
    success = task.success(theta)[0]
    gain = expected_gain(get_method(method), config.group_size, success)
    ones = np.ones((1, 4, 5))
    grad_success = task.to_params(expectation_gradient(
        task.state_logits(theta), task.time_logits(theta), task.correct, ones, 0 * ones,
        np.zeros((1, 4))))[0]
    predicted = config.learning_rate / (5 * 4) * (gain[:, None] * grad_success).sum(axis=0)
    mean, sem = sampled_mean(method, config)
    assert np.abs(predicted).max() > 0.02  # a step large enough to see
    np.testing.assert_array_less(np.abs(mean - predicted), 5 * sem + 1e-12)


@pytest.mark.parametrize("method, aggregation, options", [
    ("grpo", "seq-mean-token-mean", {}), ("ngrpo_no_filter", "seq-mean-token-sum-norm", {}),
    ("psr_nsr", "seq-mean-token-mean", dict(entropy_coef=0.05)),
    ("grpo", "seq-mean-token-mean", dict(kl_coef=0.05, overlong_filter=True)),
    ("ppo", "seq-mean-token-sum-norm", {})])
def test_expected_mode_is_the_mean_of_sampled_steps(method, aggregation, options):
    # Every prompt in every batch (B = P), SGD, no filter, one minibatch, a per-answer
    # aggregation: the expected step is exact, KL and entropy terms included.
    config = LongAnswerConfig(**MEAN_STEP, loss_aggregation=aggregation, **options)
    expected = one_step_params(method, dataclasses.replace(config, mode="expected", seeds=1))[0]
    mean, sem = sampled_mean(method, config)
    assert np.abs(expected).max() > 0.02
    np.testing.assert_array_less(np.abs(mean - expected), 5 * sem + 1e-12)


def test_expected_token_mean_takes_the_token_count_at_its_mean():
    # Token-mean divides by the minibatch's token count, which the expected mode takes at its
    # expected value: with four groups of four answers that costs a few percent of the step.
    config = LongAnswerConfig(**MEAN_STEP, loss_aggregation="token-mean")
    expected = one_step_params("ngrpo_no_filter",
                               dataclasses.replace(config, mode="expected", seeds=1))[0]
    mean, sem = sampled_mean("ngrpo_no_filter", config)
    np.testing.assert_array_less(np.abs(mean - expected), 5 * sem + 0.05 * np.abs(expected).max())


# -------------------------------------------------------------------------------------------------
# Metrics
# -------------------------------------------------------------------------------------------------


def test_policy_metrics_against_the_enumeration():
    task = tiny_task(5, 3, group_size=3)
    params = random_params(task, seeds=1)
    initial = np.array([0.2, 0.5, 0.01])
    metrics, _ = task.policy_metrics(task.measure(params), initial, powers_of_two_up_to(256))
    per_prompt = [enumerate_answers(task, params, 0, p) for p in range(3)]

    def per(value):
        return np.array([sum(a.probability * value(a) for a in answers)
                         for answers in per_prompt])

    success = per(lambda a: a.correct_probability)
    lengths = per(lambda a: a.length)
    truncation = per(lambda a: a.truncated)
    entropy = np.zeros(3)
    for p, answers in enumerate(per_prompt):
        for a in answers:
            for t, w in a.states:
                probs = softmax(logits_at(task, params, 0, p, t, w))
                entropy[p] += a.probability * -sum(q * math.log(q) for q in probs)
    assert metrics["accuracy"][0] == pytest.approx(success.mean(), rel=1e-12)
    assert metrics["entropy"][0] == pytest.approx(entropy.sum() / lengths.sum(), rel=1e-12)
    assert metrics["entropy_hard"][0] == pytest.approx(entropy[2] / lengths[2], rel=1e-12)
    assert metrics["length_hard"][0] == pytest.approx(lengths[2], rel=1e-12)
    assert metrics["length_correct"][0] == pytest.approx(
        per(lambda a: a.length * a.correct_probability).sum() / success.sum(), rel=1e-12)
    assert metrics["length_wrong"][0] == pytest.approx(
        per(lambda a: a.length * (1 - a.correct_probability)).sum() / (3 - success.sum()),
        rel=1e-12)
    assert metrics["wrong_truncated"][0] == pytest.approx(truncation.sum() / (3 - success.sum()),
                                                          rel=1e-12)
    assert metrics["all_wrong_truncated"][0] == pytest.approx(
        np.sum(truncation ** 3) / np.sum((1 - success) ** 3), rel=1e-12)
    # Quantiles of the pooled length distribution of wrong answers, by sorting every answer.
    pooled = sorted((a.length, a.probability * (1 - a.correct_probability))
                    for answers in per_prompt for a in answers)
    total = sum(weight for _, weight in pooled)
    for share in (0.1, 0.5, 0.9):
        running = 0.0
        for length, weight in pooled:
            running += weight
            if running >= share * total * (1 - 1e-12):
                break
        assert metrics[f"length_wrong_q{round(100 * share)}"][0] == length


def test_expected_approx_kl_against_the_enumeration():
    task = tiny_task(4, 3)
    old, new = random_params(task, seeds=1, seed=2), random_params(task, seeds=1, seed=3)
    per_token = lengths = 0.0
    for p in range(3):
        for a in enumerate_answers(task, old, 0, p):
            lengths += a.probability * a.length
            for t, w in a.states:
                before = softmax(logits_at(task, old, 0, p, t, w))
                after = softmax(logits_at(task, new, 0, p, t, w))
                per_token += a.probability * sum(b * math.log(b / c)
                                                 for b, c in zip(before, after))
    assert task.expected_approx_kl(old, new)[0] == pytest.approx(per_token / lengths, rel=1e-12)


def test_a_run_records_every_metric():
    config = LongAnswerConfig(num_prompts=16, prompts_per_step=8, max_length=32, steps=3, seeds=2)
    run_record = simulate("ngrpo", config, progress=False)
    assert set(run_record.metrics) == set(config.build_task().metric_names)
    for name, values in run_record.metrics.items():
        assert np.all(np.isfinite(values[1:])), name


# -------------------------------------------------------------------------------------------------
# Bad input
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (dict(policy="tabular"), "policy must be 'shared' for long answers"),
    (dict(max_length=1), "max_length must be >= 2, got 1"),
    (dict(work_cap=1), "work_cap must be >= 2, got 1"),
    (dict(overlong_buffer=64, max_length=64), "overlong_buffer must be <= 63, got 64"),
    (dict(overlong_penalty=-1.0), "overlong_penalty must be >= 0.0, got -1.0"),
    (dict(step_plasticity=-0.5), "step_plasticity must be >= 0.0, got -0.5"),
    (dict(loss_aggregation="sum"), "loss_aggregation must be one of"),
    (dict(mode="expected", overlong_buffer=8), "mode='expected' cannot train with overlong_buf"),
    (dict(overlong_filter="yes"), "overlong_filter must be True or False, got 'yes'"),
    (dict(natural_length=1), "natural_length must be >= 2, got 1"),
    (dict(position_features=0), "position_features must be True or False, got 0"),
])
def test_bad_input_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        LongAnswerConfig(**{"steps": 1, "seeds": 1, "num_prompts": 64, **options})


@pytest.mark.parametrize("method", ["psr_nsr", "maxrl"])
def test_punishment_is_refused_for_estimators_without_negative_rewards(method):
    config = LongAnswerConfig(num_prompts=64, max_length=64, overlong_buffer=8, steps=1, seeds=1)
    with pytest.raises(ValueError, match=f"method '{method}' takes rewards >= 0.0, but the soft"):
        simulate(method, config, progress=False)


# -------------------------------------------------------------------------------------------------
# Memory
# -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NeverEndingConfig(LongAnswerConfig):
    """The same task with an end logit of -40 everywhere: every answer is truncated (the largest
    rollout a config can have)."""

    def build_task(self):
        task = super().build_task()
        offsets = task.state_offsets.copy()
        offsets[..., 1] = -40.0
        return dataclasses.replace(task, state_offsets=offsets)


@pytest.mark.parametrize("config_class, options", [
    (LongAnswerConfig, dict(mode="sampled")), (NeverEndingConfig, dict(mode="sampled")),
    (NeverEndingConfig, dict(mode="sampled", minibatches=1, kl_coef=0.01)),
    (LongAnswerConfig, dict(mode="expected", seeds=1, kl_coef=0.01)),
    (LongAnswerConfig, dict(mode="sampled", max_length=32, num_prompts=256, seeds=8)),
])
def test_the_memory_estimate_bounds_the_measured_peak(config_class, options):
    # tracemalloc sees every numpy allocation: the estimate must not fall short of the peak it
    # measures, and should not overstate it much.
    import tracemalloc

    config = config_class(**{**dict(num_prompts=64, prompts_per_step=16, max_length=256, seeds=4,
                                    steps=2), **options})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run_record = simulate("grpo", config, progress=False)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    if config_class is NeverEndingConfig:
        np.testing.assert_allclose(run_record.metrics["truncation"], 1.0, atol=1e-9)
    assert peak <= config.memory_bytes() <= 3 * peak, (peak, config.memory_bytes())


# -------------------------------------------------------------------------------------------------
# The command line
# -------------------------------------------------------------------------------------------------


def test_lengths_writes_a_run_folder(tmp_path, capsys):
    from ngrpo_sim.cli import main

    main(["lengths", "--methods", "grpo,ngrpo", "--mode", "sampled,expected", "--steps", "2",
          "--seeds", "2", "--num-prompts", "16", "--prompts-per-step", "8", "--max-length", "48",
          "--overlong-filter", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ngrpo (expected)" in out and "truncation" in out
    for name in ("config.json", "metrics.csv", "summary.csv", "dynamics.png", "lengths.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert '"overlong_filter": true' in (tmp_path / "config.json").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--max-length", "1"], "max_length must be >= 2, got 1"),
    (["--overlong-buffer", "2000"], "overlong_buffer must be <= 1023, got 2000"),
    (["--policy", "tabular"], "policy must be 'shared' for long answers"),
    (["--methods", "psr_nsr", "--overlong-buffer", "100"],
     "method 'psr_nsr' takes rewards >= 0.0, but the soft overlong punishment"),
    (["--mode", "expected", "--overlong-buffer", "100"], "mode='expected' cannot train with"),
    (["--seeds", "100000", "--steps", "1"], "of memory, more than the"),
])
def test_lengths_bad_input_exits_with_one_line(argv, message, tmp_path, capsys):
    from ngrpo_sim.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["lengths", *argv, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert out == "" and not (tmp_path / "run").exists()


# -------------------------------------------------------------------------------------------------
# The report's section
# -------------------------------------------------------------------------------------------------


def test_collapse_drop_by_hand():
    from ngrpo_sim.reports.length_report import collapse_drop
    from ngrpo_sim.simulators.training_loop import RunRecord

    # Seed 0: accuracy peaks at 0.6 (truncation 0.10), falls to 0.45 while truncation reaches 0.20:
    # a drop of 0.15 with truncation 0.10 higher. Seed 1: it falls as far, but truncation stays.
    accuracy = np.array([[0.3, 0.3], [0.6, 0.6], [0.5, 0.5], [0.45, 0.45]])
    truncation = np.array([[0.05, 0.05], [0.10, 0.10], [0.12, 0.12], [0.20, 0.11]])
    record = RunRecord("grpo", LongAnswerConfig(seeds=2),
                       {"accuracy": accuracy, "truncation": truncation})
    np.testing.assert_allclose(collapse_drop(record), [0.15, 0.0], atol=1e-15)


def test_the_section_answers_its_five_questions(tmp_path):
    from ngrpo_sim.reports.length_report import LENGTH_HEADLINE, length_section

    base = dataclasses.replace(LENGTH_HEADLINE, steps=2, seeds=2, num_prompts=16,
                               prompts_per_step=8, max_length=32)
    lines = length_section(tmp_path, base)
    text = "\n".join(lines)
    for number in range(1, 6):
        assert f"\n{number}. " in text
    assert "ngrpo − grpo" in text and "grpo [seq-mean-token-mean] + overlong filtering" in text
    assert "grpo [seq-mean-token-mean]" in text and "soft punishment (buffer 6)" in text
    assert "not run" in text  # no one-token or short-answer runs were given
    assert "| calibrated |" in text and "| cap binds |" in text
    assert (tmp_path / "lengths.png").stat().st_size > 0
    for folder in ("calibrated/presets", "calibrated/seq-mean-token-mean",
                   "cap-binds/overlong-filtering", "cap-binds/soft-punishment"):
        assert (tmp_path / folder / "summary.csv").is_file()

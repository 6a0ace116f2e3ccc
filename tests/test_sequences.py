"""The token simulator: its tree passes against a plain enumeration of answers, sampling and
scoring, the step against its loop oracle, the bandit as its L = 1 case, the expected mode
against sampled steps, and the metrics."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
from answer_enumeration import enumerate_answers, node_of, softmax
from test_dynamics import assert_steps_equal_the_oracle, one_step_logits

from ngrpo_sim import get_method
from ngrpo_sim.methods.metrics import powers_of_two_up_to
from ngrpo_sim.simulators.bandit import make_task
from ngrpo_sim.simulators.dynamics import METRICS as BANDIT_METRICS
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.optim import Optimizer
from ngrpo_sim.simulators.reference_sequence_step import reference_apply_sequence_rollout
from ngrpo_sim.simulators.sequence_config import SequenceConfig, make_sequence_task
from ngrpo_sim.simulators.sequences import SequenceTask
from ngrpo_sim.simulators.training_loop import TrainState, apply_rollout, simulate


def tiny_task(vocab=2, max_length=3, end_token=True, num_prompts=3, seed=0):
    return make_sequence_task(num_prompts, vocab, max_length, end_token, profile="0.2,0.5,0.05",
                              feature_dim=3, seed=seed)


@pytest.mark.parametrize("vocab, max_length, end_token",
                         [(2, 3, True), (3, 2, True), (2, 3, False), (3, 1, False)])
def test_answer_statistics_equal_an_enumeration_of_every_answer(vocab, max_length, end_token):
    task = tiny_task(vocab, max_length, end_token)
    logits = np.random.default_rng(1).normal(size=(2,) + task.offsets.shape)  # two seeds
    statistics = task.answer_statistics(logits)
    for seed, prompt in itertools.product(range(2), range(task.num_prompts)):
        answers = enumerate_answers(vocab, max_length, end_token, task.rewards[prompt],
                                    logits[seed, prompt])
        probability = np.array([a.probability for a in answers])
        assert probability.sum() == pytest.approx(1.0, abs=1e-14)
        right = np.array([a.reward == 1.0 for a in answers])
        lengths = np.array([a.length for a in answers])
        expected = {"success": probability @ right, "length": probability @ lengths,
                    "correct_length": probability @ (right * lengths),
                    "truncation": probability @ np.array([a.truncated for a in answers]),
                    "entropy": -probability @ np.log(probability)}
        for name, value in expected.items():
            measured = getattr(statistics, name)[seed, prompt]
            assert measured == pytest.approx(value, rel=1e-12, abs=1e-15), name


def test_sampled_answers_follow_the_policy_and_are_scored_by_the_rule():
    task = tiny_task(2, 3, True)
    params = task.initial_params(1)
    prompts = np.zeros((1, 4000), dtype=int) + 1
    tokens = task.sample(params, prompts, 5, np.random.default_rng(0))
    answers = enumerate_answers(2, 3, True, task.rewards[1], task.offsets[1])
    index = {tuple(a.tokens): a for a in answers}
    observed = [tuple(t for t in row if t >= 0) for row in tokens.reshape(-1, 3)]
    assert all(answer in index for answer in observed)
    counts = {answer: observed.count(answer) for answer in index}
    n = len(observed)
    # Every answer's frequency within 5 standard errors of its probability.
    for answer, count in counts.items():
        p = index[answer].probability
        assert abs(count / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3
    rewards = task.score(prompts, tokens).ravel()
    np.testing.assert_array_equal(rewards, [index[a].reward for a in observed])


def test_the_starting_policy_hits_the_profile_and_lengths_vary():
    task = make_sequence_task(64, 4, 4, profile="base", seed=3)
    statistics = task.answer_statistics(task.offsets)
    from ngrpo_sim.simulators.profile import starting_success
    target = starting_success("base", 64, np.random.default_rng(3))
    np.testing.assert_allclose(statistics.success, target, rtol=1e-12)
    assert np.ptp(statistics.length) > 1.0 and 0 < statistics.truncation.mean() < 0.5


# -------------------------------------------------------------------------------------------------
# L = 1 without an end token is the bandit
# -------------------------------------------------------------------------------------------------

BANDIT_SIZES = dict(num_prompts=24, prompts_per_step=8, group_size=4, profile="base", steps=6)


@pytest.mark.parametrize("policy", ["tabular", "shared"])
@pytest.mark.parametrize("rewards", ["binary", "graded"])
def test_one_token_without_an_end_token_builds_the_bandit_task(policy, rewards):
    bandit = make_task(24, 5, 2, "base", policy, 4, 0.5, rewards, seed=7)
    tokens = make_sequence_task(24, 5, 1, False, 2, "base", policy, 4, 0.5, 0.0, rewards, seed=7)
    np.testing.assert_array_equal(tokens.rewards, bandit.rewards)
    np.testing.assert_allclose(tokens.offsets[:, 0], bandit.offsets, rtol=1e-13, atol=1e-13)
    if policy == "shared":
        np.testing.assert_array_equal(tokens.features[:, 0], bandit.features)


def equal_runs(method, mode, policy, optimizer, **options):
    common = dict(BANDIT_SIZES, policy=policy, optimizer=optimizer, mode=mode, **options,
                  learning_rate=0.05 if optimizer == "adam" else 4.0,
                  seeds=3 if mode == "sampled" else 1)
    bandit = simulate(method, DynamicsConfig(num_answers=5, **common), progress=False)
    tokens = simulate(method, SequenceConfig(vocab_size=5, max_length=1, end_token=False,
                                             token_sharing=0.0, **common), progress=False)
    return bandit, tokens


@pytest.mark.parametrize("mode", ["expected", "sampled"])
@pytest.mark.parametrize("policy, optimizer", [("tabular", "adam"), ("shared", "adam"),
                                               ("tabular", "sgd"), ("shared", "sgd")])
@pytest.mark.parametrize("method", ["grpo", "ngrpo", "ppo"])
def test_one_token_without_an_end_token_trains_as_the_bandit(mode, policy, optimizer, method):
    bandit, tokens = equal_runs(method, mode, policy, optimizer)
    for name in BANDIT_METRICS:
        np.testing.assert_allclose(tokens.metrics[name], bandit.metrics[name], rtol=1e-9,
                                   atol=1e-11, err_msg=name)
    np.testing.assert_allclose(tokens.pass_at_k, bandit.pass_at_k, rtol=1e-9, atol=1e-12)
    # The token-only metrics agree with what one-token answers must give.
    np.testing.assert_allclose(tokens.metrics["length"], 1.0, rtol=1e-14)
    np.testing.assert_allclose(tokens.metrics["sequence_entropy"], tokens.metrics["entropy"],
                               rtol=1e-12)
    np.testing.assert_array_equal(tokens.metrics["truncation"], 0.0)


# -------------------------------------------------------------------------------------------------
# One sampled step against its plain-loop oracle
# -------------------------------------------------------------------------------------------------

SMALL = dict(num_prompts=10, vocab_size=2, max_length=3, prompts_per_step=4, group_size=4,
             minibatches=2, seeds=3, profile="mid", feature_dim=3)


def fresh_state(task, config, adam_eps=1e-8):
    optimizer = Optimizer(config.optimizer, config.learning_rate, eps=adam_eps)
    return TrainState(task.initial_params(config.seeds), optimizer,
                      np.zeros((config.seeds, task.num_prompts)))


@pytest.mark.parametrize("policy", ["tabular", "shared"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("method, options", [
    ("ngrpo", dict(epochs=2)), ("dapo", dict(refill=True, profile="base")),
    ("grpo", dict(refill=False)), ("ppo", dict(epochs=2, loss_aggregation="seq-mean-token-mean")),
    ("psr_nsr", dict(rewards="graded")), ("dr_grpo", dict(end_token=False)),
    ("grpo", dict(loss_aggregation="seq-mean-token-mean", epochs=2)),
])
def test_vectorised_token_step_equals_the_loop_oracle(policy, optimizer, method, options):
    options = {**SMALL, **options, "policy": policy, "optimizer": optimizer, "learning_rate": 2.0}
    config = SequenceConfig(**options)
    # Advantages that sum to 0 over a group whose answers share a prefix give that prefix a
    # gradient of exactly 0, which the two implementations round to different numbers of order
    # 1e-17; Adam's eps = 1e-8 would turn that into steps of order 1e-9. A larger eps keeps
    # rounding at rounding's size and tests the same formula.
    assert_steps_equal_the_oracle(reference_apply_sequence_rollout, get_method(method), config,
                                  lambda task, config: fresh_state(task, config, adam_eps=1e-4),
                                  statistics_rtol=1e-11)


def test_the_unsampled_mass_by_hand():
    # One prompt, V = 2, L = 2 with the end token; one group of two answers: [0, end] and the
    # truncated [0, 1].
    offsets = np.array([[[0.2, -0.1, 0.3], [0.5, 0.0, -0.4], [0.0, 0.1, 0.2]]])
    task = SequenceTask(rewards=np.array([[1.0, 0.0]]), offsets=offsets, features=None,
                        max_length=2, end_token=True)
    config = SequenceConfig(num_prompts=1, vocab_size=2, max_length=2, prompts_per_step=1,
                            group_size=2, minibatches=1, seeds=1, optimizer="sgd",
                            learning_rate=1.0, kl_coef=0.0, entropy_coef=0.0, refill=False)
    from ngrpo_sim.simulators.training_loop import Rollout
    rollout = Rollout(prompts=np.array([[0]]), answers=np.array([[[[0, 2], [0, 1]]]]))
    state = fresh_state(task, config)
    stats = apply_rollout(task, get_method("ngrpo"), config, state, rollout,
                          task.offsets[None].copy())

    def probs(logits):
        e = np.exp(logits - logits.max())
        return e / e.sum()
    # Root: both answers chose token 0, so tokens 1 and end are unsampled (twice); at prefix [0]
    # (node 1) both tokens end and 1 were chosen, so only token 0 is unsampled (twice).
    before = 2 * probs(task.offsets[0, 0])[1:].sum() + 2 * probs(task.offsets[0, 1])[0]
    after = 2 * probs(state.params[0, 0, 0])[1:].sum() + 2 * probs(state.params[0, 0, 1])[0]
    assert stats["unsampled_mass"][0] == pytest.approx(after / 4, rel=1e-12)
    assert stats["unsampled_mass_gain"][0] == pytest.approx((after - before) / 4, rel=1e-12)
    # Token 0 is the key: [0, end] is right, [0, 1] truncated, so the group is mixed.
    assert stats["share_mixed"][0] == 1.0


# -------------------------------------------------------------------------------------------------
# The expected mode
# -------------------------------------------------------------------------------------------------


MEAN_STEP = dict(num_prompts=4, vocab_size=2, max_length=3, prompts_per_step=4, group_size=4,
                 minibatches=2, profile="0.3,0.6", optimizer="sgd", learning_rate=3.0, refill=False)


def sampled_mean_and_expected(method, aggregation, seeds=12_000):
    sampled = one_step_logits(method, SequenceConfig(**MEAN_STEP, loss_aggregation=aggregation,
                                                     seeds=seeds))
    expected = one_step_logits(method, SequenceConfig(**MEAN_STEP, loss_aggregation=aggregation,
                                                      seeds=1, mode="expected"))[0]
    mean, sem = sampled.mean(axis=0), sampled.std(axis=0, ddof=1) / np.sqrt(sampled.shape[0])
    assert np.abs(expected).max() > 0.05  # a step large enough to see
    return mean, sem, expected


@pytest.mark.parametrize("method, aggregation", [("grpo", "seq-mean-token-mean"),
        ("ngrpo_no_filter", "seq-mean-token-sum-norm"), ("psr_nsr", "seq-mean-token-sum-norm"),
        ("ppo", "seq-mean-token-mean")])
def test_expected_mode_is_the_mean_of_sampled_steps(method, aggregation):
    # Every prompt in every batch (B = P), SGD, tabular, no filter, a per-answer aggregation: the
    # expected step is exact, not approximate.
    mean, sem, expected = sampled_mean_and_expected(method, aggregation)
    np.testing.assert_array_less(np.abs(mean - expected), 5 * sem + 1e-12)


def test_expected_token_mean_takes_the_token_count_at_its_mean():
    # Token-mean divides by the minibatch's token count, which the expected mode takes at its
    # expected value: with two groups of four answers per minibatch that costs about 2% of the step
    # (measured: 1.9-2.2%).
    mean, sem, expected = sampled_mean_and_expected("ngrpo_no_filter", "token-mean")
    np.testing.assert_array_less(np.abs(mean - expected), 5 * sem + 0.05 * np.abs(expected).max())


# -------------------------------------------------------------------------------------------------
# Metrics
# -------------------------------------------------------------------------------------------------


def test_policy_metrics_against_the_enumeration():
    task = tiny_task(2, 3, True)
    logits = np.random.default_rng(2).normal(size=(1,) + task.offsets.shape)
    initial = np.array([0.2, 0.5, 0.05])
    metrics, _ = task.policy_metrics(task.measure(logits), initial, powers_of_two_up_to(256))
    per_prompt = [enumerate_answers(2, 3, True, task.rewards[p], logits[0, p]) for p in range(3)]

    def total(value):
        return sum(sum(a.probability * value(a) for a in answers) for answers in per_prompt)

    token_entropy = 0.0
    for p, answers in enumerate(per_prompt):
        # The entropy of the next-token distribution at every token of every answer.
        for a in answers:
            for node, _ in a.positions:
                probs = np.array(softmax(list(logits[0, p, node])))
                token_entropy += a.probability * -(probs @ np.log(probs))
    lengths = total(lambda a: a.length)
    right = total(lambda a: a.reward == 1.0)
    assert metrics["entropy"][0] == pytest.approx(token_entropy / lengths, rel=1e-12)
    assert metrics["length"][0] == pytest.approx(lengths / 3, rel=1e-12)
    assert metrics["length_correct"][0] == pytest.approx(
        total(lambda a: a.length * (a.reward == 1.0)) / right, rel=1e-12)
    assert metrics["length_wrong"][0] == pytest.approx(total(lambda a: a.length * (a.reward != 1.0))
                                                       / (3 - right), rel=1e-12)
    assert metrics["truncation"][0] == pytest.approx(total(lambda a: a.truncated) / 3, rel=1e-12)
    ends = 0.0
    for p, answers in enumerate(per_prompt):
        for a in answers:
            ends += a.probability * sum(softmax(list(logits[0, p, node]))[-1] for node,
                                        _ in a.positions)
    assert metrics["end_probability"][0] == pytest.approx(ends / lengths, rel=1e-12)
    assert metrics["sequence_entropy"][0] == pytest.approx(total(lambda a: -np.log(a.probability))
                                                           / 3, rel=1e-12)


def test_entropy_prediction_holds_at_small_steps():
    def relative_error(learning_rate):
        run_record = simulate("ngrpo", SequenceConfig(num_prompts=32, prompts_per_step=16,
                                                      optimizer="sgd", learning_rate=learning_rate,
                                                      steps=1, seeds=2, profile="uniform"),
                              progress=False)
        positional = run_record.metrics["entropy_change_positional"][1]
        predicted = run_record.metrics["entropy_change_predicted"][1]
        return np.max(np.abs(predicted - positional) / np.abs(positional))

    small, tenfold = relative_error(0.05), relative_error(0.5)
    assert small < 1e-2
    # Second order: ten times the step, about ten times the relative error.
    assert 5 < tenfold / small < 20


@pytest.mark.parametrize("options, message", [
    (dict(vocab_size=1), "vocab_size must be >= 2, got 1"),
    (dict(max_length=1), "max_length must be >= 2 with an end token"),
    (dict(correct_answers=4), "correct_answers must be <= 3, got 4"),
    (dict(end_probability=0.9), "end_probability must be <= 0.666"),
    (dict(token_sharing=1.5), "token_sharing must be <= 1.0, got 1.5"),
    (dict(loss_aggregation="sum"), "loss_aggregation must be one of"),
    (dict(vocab_size=12, max_length=6), "above the limit of"),
    (dict(mode="expected", rewards="graded"), "mode='expected' needs binary rewards"),
])
def test_bad_input_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        SequenceConfig(**{"steps": 1, "seeds": 1, **options})


def test_the_policy_inputs_of_lens_and_rl_zvp_by_hand():
    task = tiny_task(2, 3, True)
    params = task.initial_params(1)
    prompts = np.array([[0, 2]])
    tokens = task.sample(params, prompts, 3, np.random.default_rng(4))
    update = task.update_batch(params, prompts, tokens, task.logits(params))
    inputs = update.policy_inputs(("log_prob", "entropy"))
    for b, g in itertools.product(range(2), range(3)):
        answer = [int(t) for t in tokens[0, b, g] if t >= 0]
        log_probs, entropies = [], []
        for t, token in enumerate(answer):
            probs = np.array(softmax(list(task.offsets[prompts[0, b], node_of(2, answer[:t])])))
            log_probs.append(np.log(probs[token]))
            entropies.append(-(probs @ np.log(probs)))
        assert inputs["log_prob"][0, b, g] == pytest.approx(np.mean(log_probs), rel=1e-12)
        expected_entropy = entropies + [0.0] * (3 - len(answer))
        np.testing.assert_allclose(inputs["entropy"][0, b, g], expected_entropy, rtol=1e-12)


@pytest.mark.parametrize("method", ["rl_zvp", "lens"])
@pytest.mark.parametrize("config_class, options", [
    (SequenceConfig, dict(vocab_size=3, max_length=3)), (DynamicsConfig, dict(num_answers=5))])
def test_estimators_that_read_the_policy_train_in_both_simulators(method, config_class, options):
    config = config_class(num_prompts=16, prompts_per_step=8, steps=3, seeds=2, **options)
    run_record = simulate(method, config, progress=False)
    assert np.all(np.isfinite(run_record.metrics["accuracy"]))
    assert np.nanmax(np.abs(run_record.metrics["approx_kl"])) > 0  # the policy moved
    expected = dataclasses.replace(config, mode="expected", seeds=1)
    if method == "rl_zvp" and config_class is DynamicsConfig:  # one token: the prompt's entropy
        assert np.all(np.isfinite(simulate(method, expected, progress=False).final("accuracy")))
        return
    refusal = f"cannot train method '{method}': it reads the policy's"
    with pytest.raises(ValueError, match=refusal):
        simulate(method, expected, progress=False)

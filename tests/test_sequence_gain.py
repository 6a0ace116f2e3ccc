"""The sequence gain identity and its length term: against every ordered group of answers (tiny V,
L, G), against complex-step derivatives of the success rate written out by hand, and against
Monte Carlo for a larger task."""

import itertools

import numpy as np
import pytest
from answer_enumeration import enumerate_answers

from ngrpo_sim import get_method
from ngrpo_sim.analysis.landscape import expected_gain
from ngrpo_sim.analysis.sequence_gain import (expected_group_update, length_decomposition,
                                              outcome_advantages)
from ngrpo_sim.methods.presets import LOSS_AGGREGATIONS, token_weights
from ngrpo_sim.simulators.sequence_config import make_sequence_task
from ngrpo_sim.simulators.sequences import SequenceTask

METHODS = ["grpo", "ngrpo", "dapo", "psr_nsr", "rloo", "dr_grpo", "ppo"]


def task_and_logits(vocab, max_length, end_token, seed=0, policy="tabular"):
    task = make_sequence_task(2, vocab, max_length, end_token, profile="0.3,0.6", policy=policy,
                              feature_dim=3, seed=seed)
    logits = task.offsets + np.random.default_rng(seed).normal(scale=0.7, size=task.offsets.shape)
    return task, logits


def enumerated_group_update(task, logits, prompt, method, group_size, aggregation, value=None):
    """sum over every ordered group of G answers of P(group) sum_i sum_t w_it A_i (e_token -
    pi_prefix)."""
    answers = enumerate_answers(task.vocab_size, task.max_length, task.end_token,
                                task.rewards[prompt], logits[prompt])
    probs = {node: np.exp(logits[prompt, node] - logits[prompt, node].max())
             for node in range(logits.shape[1])}
    probs = {node: p / p.sum() for node, p in probs.items()}
    total = np.zeros(logits.shape[1:])
    for group in itertools.product(answers, repeat=group_size):
        rewards = np.array([a.reward for a in group])
        values = None if value is None else np.full(group_size, value)
        advantages = method.advantages(rewards, values)
        mask = np.zeros((group_size, task.max_length))
        for i, answer in enumerate(group):
            mask[i, :answer.length] = 1.0
        weights = token_weights(mask, aggregation, normaliser=float(task.max_length))
        probability = np.prod([a.probability for a in group]).real
        for i, answer in enumerate(group):
            for t, (node, token) in enumerate(answer.positions):
                step = -probs[node]
                step[token] += 1.0
                total[node] += probability * weights[i, t] * advantages[i] * step
    return total


@pytest.mark.parametrize("aggregation", LOSS_AGGREGATIONS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("vocab, max_length, end_token, group_size",
                         [(2, 2, True, 3), (2, 2, False, 3), (2, 3, True, 2)])
def test_expected_group_update_equals_every_ordered_group(aggregation, method, vocab, max_length,
                                                          end_token, group_size):
    task, logits = task_and_logits(vocab, max_length, end_token)
    method = get_method(method)
    values = np.array([0.3, 0.8]) if method.advantage.uses_values else None
    exact = expected_group_update(task, logits, method, group_size, aggregation, values)
    for prompt in range(2):
        enumerated = enumerated_group_update(task, logits, prompt, method, group_size, aggregation,
                                             None if values is None else values[prompt])
        np.testing.assert_allclose(exact[prompt], enumerated, rtol=1e-12, atol=1e-14)


# -- complex-step derivatives of expectations over answers, written out by hand ------------------


def expectation(vocab, max_length, end_token, rewards, logits, value_of):
    """sum over answers of pi(o) value_of(o), for complex logits (N, C)."""
    total = 0j
    for answer in enumerate_answers(vocab, max_length, end_token, rewards, logits):
        total += answer.probability * value_of(answer)
    return total


def complex_step_gradient(function, point, step=1e-30):
    """d function / d point by the complex step: exact to rounding, no subtraction."""
    gradient = np.zeros(point.shape)
    for index in np.ndindex(point.shape):
        shifted = point.astype(complex)
        shifted[index] += 1j * step
        gradient[index] = function(shifted).imag / step
    return gradient


def right(answer):
    return float(answer.reward == 1.0)


@pytest.mark.parametrize("method", ["grpo", "ngrpo", "psr_nsr", "dr_grpo"])
@pytest.mark.parametrize("end_token", [True, False])
def test_constant_weights_move_along_the_gradient_of_the_success_rate(method, end_token):
    task, logits = task_and_logits(2, 3, end_token, seed=1)
    method = get_method(method)
    exact = expected_group_update(task, logits, method, 4, "seq-mean-token-sum-norm")
    for prompt in range(2):
        rewards = task.rewards[prompt]
        grad_p = complex_step_gradient(lambda z: expectation(2, 3, end_token, rewards, z, right),
                                       logits[prompt])
        p = expectation(2, 3, end_token, rewards, logits[prompt], right).real
        # E[g] = c(p) grad p / L, with c(p) the single-action gain.
        gain = expected_gain(method, 4, p)
        np.testing.assert_allclose(exact[prompt], gain * grad_p / 3, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("method", ["grpo", "ngrpo", "psr_nsr", "ppo"])
def test_length_normalisation_adds_the_length_terms(method):
    task, logits = task_and_logits(2, 3, True, seed=2)
    method = get_method(method)
    values = np.array([0.4, 0.1])
    decomposition = length_decomposition(task, logits, method, 4, values)
    exact = expected_group_update(task, logits, method, 4, "seq-mean-token-mean", values)
    for prompt in range(2):
        rewards = task.rewards[prompt]
        def inverse_length_gradient(outcome):
            return complex_step_gradient(
                lambda z: expectation(2, 3, True, rewards, z, lambda a: outcome(a) / a.length),
                logits[prompt])

        m_right = inverse_length_gradient(right)
        m_wrong = inverse_length_gradient(lambda a: 1 - right(a))
        p = expectation(2, 3, True, rewards, logits[prompt], right).real
        alpha, beta = outcome_advantages(method, 4, np.array(p), values[prompt])
        # E[g] = alpha grad E[r / |o|] + beta grad E[(1 - r) / |o|].
        np.testing.assert_allclose(exact[prompt], alpha * m_right + beta * m_wrong,
                                   rtol=1e-11, atol=1e-14)
        parts = (decomposition["gain"][prompt] * decomposition["success_gradient"][prompt]
                 + decomposition["correct_length_term"][prompt]
                 + decomposition["wrong_length_term"][prompt])
        np.testing.assert_allclose(parts, exact[prompt], rtol=1e-11, atol=1e-14)
        # The mean inverse lengths of right and of wrong answers, by enumeration.
        answers = enumerate_answers(2, 3, True, rewards, logits[prompt])
        h_right = sum(a.probability.real * right(a) / a.length for a in answers) / p
        h_wrong = sum(a.probability.real * (1 - right(a)) / a.length for a in answers) / (1 - p)
        for side, value in (("correct", h_right), ("wrong", h_wrong)):
            measured = decomposition[f"mean_inverse_length_{side}"][prompt]
            assert measured == pytest.approx(value, rel=1e-12)


def test_outcome_advantages_give_the_single_action_gain():
    p = np.linspace(0.01, 0.99, 9)
    for name in ("grpo", "ngrpo", "dapo", "psr_nsr", "rloo"):
        alpha, beta = outcome_advantages(get_method(name), 8, p)
        gain = expected_gain(get_method(name), 8, p)
        np.testing.assert_allclose(alpha - beta, gain, rtol=1e-12, atol=1e-14)


def test_every_length_has_the_same_weight_when_every_answer_has_the_same_length():
    # Without an end token every answer has L tokens: the length terms vanish, and
    # seq-mean-token-mean is seq-mean-token-sum-norm.
    task, logits = task_and_logits(2, 3, False, seed=3)
    decomposition = length_decomposition(task, logits, get_method("grpo"), 4)
    np.testing.assert_allclose(decomposition["correct_length_term"], 0.0, atol=1e-15)
    np.testing.assert_allclose(decomposition["wrong_length_term"], 0.0, atol=1e-15)
    normalised, summed = (expected_group_update(task, logits, get_method("grpo"), 4, aggregation)
                          for aggregation in ("seq-mean-token-mean", "seq-mean-token-sum-norm"))
    np.testing.assert_allclose(normalised, summed, rtol=1e-12, atol=1e-15)


def test_the_identity_holds_for_the_shared_parameterisation():
    # E[g] with respect to theta is c(p) grad_theta p / L, theta shared by every prefix and token.
    task, _ = task_and_logits(2, 3, True, seed=4, policy="shared")
    theta = np.array([[0.3, -0.5, 0.8]])
    method = get_method("ngrpo")
    update = expected_group_update(task, task.logits(theta), method, 4, "seq-mean-token-sum-norm")
    exact = task.backprop(update)[0]
    features, offsets = task.features, task.offsets

    def success(parameters):
        total = 0j
        for prompt in range(2):
            logits = offsets[prompt] + np.einsum("ncd,d->nc", features[prompt], parameters)
            total_p = expectation(2, 3, True, task.rewards[prompt], logits, right)
            # c(p) is held fixed: its value enters, not its slope.
            total += expected_gain(method, 4, total_p.real) * total_p
        return total

    # d/dtheta sum_p c(p) p with c frozen at each p: sum_p c(p) grad p.
    np.testing.assert_allclose(exact, complex_step_gradient(success, theta[0]) / 3,
                               rtol=1e-11, atol=1e-14)


def test_expected_group_update_against_monte_carlo_on_a_larger_task():
    # V = 4, L = 4 (341 answers), G = 8: the mean of sampled groups' ascents against the exact
    # expectation, for every aggregation.
    task = make_sequence_task(1, 4, 4, profile="0.3", seed=5)
    method, group_size, groups = get_method("ngrpo"), 8, 30_000
    params = task.initial_params(1)
    prompts = np.zeros((1, groups), dtype=int)
    tokens = task.sample(params, prompts, group_size, np.random.default_rng(0))[0]
    rewards = task.score(prompts, tokens[None])[0]
    advantages = method.advantages(rewards)
    probs = np.exp(task.offsets[0] - task.offsets[0].max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    mask = (tokens >= 0).astype(float)
    # The prefix of every token: 1 + V + ... + V^(t-1) + sum_{i<t} x_i V^(t-1-i), accumulated
    # position by position.
    nodes = np.zeros(tokens.shape, dtype=int)
    local = np.zeros(tokens.shape[:-1], dtype=int)
    for t in range(4):
        nodes[..., t] = sum(4 ** d for d in range(t)) + local
        local = local * 4 + np.clip(tokens[..., t], 0, 3)
    chosen = np.clip(tokens, 0, None)[..., None] == np.arange(5)
    for aggregation in LOSS_AGGREGATIONS:
        weights = token_weights(mask, aggregation, normaliser=4.0)  # every group its own minibatch
        steps = (weights * advantages[..., None])[..., None] * (chosen - probs[nodes])
        ascent = np.zeros((groups,) + task.offsets.shape[1:])
        np.add.at(ascent, (np.arange(groups)[:, None, None], nodes), steps)
        mean, sem = ascent.mean(axis=0), ascent.std(axis=0, ddof=1) / np.sqrt(groups)
        exact = expected_group_update(task, task.offsets, method, group_size, aggregation)[0]
        assert np.abs(exact).max() > 10 * sem.max()
        np.testing.assert_array_less(np.abs(mean - exact), 5 * sem + 1e-12)


def test_a_task_with_graded_rewards_is_refused():
    task = SequenceTask(np.array([[1.0, 0.4]]), np.zeros((1, 3, 3)), None, 2, True)
    with pytest.raises(ValueError, match="rewards must be binary"):
        expected_group_update(task, task.offsets, get_method("grpo"), 4, "token-mean")

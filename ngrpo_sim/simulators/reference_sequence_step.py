"""One sampled step of the token simulator as plain loops: the oracle of its vectorised step.

The vectorised step is ``training_loop.apply_rollout`` on a ``sequences.SequenceTask``. This one is
slow on purpose and independent of it where it can be: it walks seed by seed, group by group,
answer by answer and token by token; finds each token's prefix from its tokens with the numbering
rule in the module docstring of ``ngrpo_sim.simulators.sequences``; scores answers by the verifier's
rule; weighs tokens by the three loss aggregations written out; applies the clip by its two cases;
computes softmaxes, the per-token KL and entropy gradients, the chain rule to the shared
parameters, and the unsampled-token mass element by element. It shares the method definitions
(estimators and filters, with their own tests), the bandit oracle's walk over the drawn groups and
its optimiser step. The tests check that both give the same parameters and statistics to 1e-12;
``benchmarks/bench_token_step.py`` times both on the same inputs.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ngrpo_sim.methods.presets import Method
from ngrpo_sim.simulators.loop_config import LoopConfig
from ngrpo_sim.simulators.reference_step import _adam_or_sgd, _count_update, _softmax, walk_groups
from ngrpo_sim.simulators.sequences import TOKEN_ROLLOUT_METRICS, SequenceTask
from ngrpo_sim.simulators.task_parts import Coefficients
from ngrpo_sim.simulators.training_loop import Rollout, TrainState


def _tokens_of(answer: list[int]) -> list[int]:
    """The answer's tokens, without the padding after its end."""
    return [token for token in answer if token >= 0]


def _prefix_index(task: SequenceTask, content: list[int]) -> int:
    """The node of a prefix of content tokens: 1 + V + ... + V^(t-1) + sum_i x_i V^(t-1-i)."""
    vocab, depth = task.vocab_size, len(content)
    local = 0
    for token in content:
        local = local * vocab + token
    return sum(vocab ** d for d in range(depth)) + local


def _reward(task: SequenceTask, prompt: int, answer: list[int]) -> float:
    tokens, end = _tokens_of(answer), task.vocab_size
    if task.end_token:
        if not tokens or tokens[-1] != end or len(tokens) < 2:
            return 0.0  # truncated, or empty
        return float(task.rewards[prompt, tokens[-2]])
    return float(task.rewards[prompt, tokens[-1]])


def _positions(task: SequenceTask, answer: list[int]) -> list[tuple[int, int]]:
    """(prefix node, token) of every token of the answer."""
    tokens = _tokens_of(answer)
    return [(_prefix_index(task, tokens[:t]), token) for t, token in enumerate(tokens)]


def _logits(task: SequenceTask, params: np.ndarray, seed: int, prompt: int, node: int
            ) -> list[float]:
    choices = task.num_choices
    if task.features is None:
        return [float(params[seed, prompt, node, c]) for c in range(choices)]
    logits = []
    for c in range(choices):
        features = task.features[prompt, node, c]
        dot = sum(float(features[d]) * float(params[seed, d]) for d in range(params.shape[1]))
        logits.append(float(task.offsets[prompt, node, c]) + dot)
    return logits


def _token_weights(answers: list[list[int]], aggregation: str, max_length: int) -> list[float]:
    """The weight of each token of each answer in one minibatch: one number per answer, which each
    of its tokens gets."""
    lengths = [len(_tokens_of(answer)) for answer in answers]
    if aggregation == "token-mean":
        return [1.0 / sum(lengths)] * len(answers)
    if aggregation == "seq-mean-token-mean":
        return [1.0 / (length * len(answers)) for length in lengths]
    return [1.0 / (max_length * len(answers))] * len(answers)


def reference_apply_sequence_rollout(task: SequenceTask, method: Method, config: LoopConfig,
                                     state: TrainState, rollout: Rollout, reference: np.ndarray
                                     ) -> tuple[TrainState, dict[str, np.ndarray]]:
    """Same contract as ``training_loop.apply_rollout``, but returns a new state instead of
    updating ``state``."""
    state = copy.deepcopy(state)
    optimizer = state.optimizer
    num_seeds, choices = rollout.prompts.shape[0], task.num_choices
    aggregation = task.loss_aggregation or method.loss_aggregation
    coefficients = Coefficients.of(method, config)
    statistics = {name: np.zeros(num_seeds) for name in TOKEN_ROLLOUT_METRICS}

    updates = []
    for seed in range(num_seeds):
        groups = walk_groups(method, config, state, rollout, seed, statistics,
                             lambda prompt, answer: _reward(task, prompt, answer))
        # Per used group and answer, the (node, token, old next-token probabilities) of its tokens.
        old = [[[(node, token, _softmax(_logits(task, state.params, seed, prompt, node)))
                 for node, token in _positions(task, answer)] for answer in answers]
               for prompt, answers, _, _ in groups]
        updates.append((groups, old))

    clipped_low, clipped_high, counted = (np.zeros(num_seeds) for _ in range(3))
    parts = config.minibatches
    for _ in range(config.epochs):
        for part in range(parts):
            _count_update(optimizer, state.params)
            for seed, (groups, old) in enumerate(updates):
                members = [g for g in range(len(groups))
                           if g * parts // max(len(groups), 1) == part]
                answers = [(g, i) for g in members for i in range(len(groups[g][1]))]
                weights = _token_weights([groups[g][1][i] for g, i in answers], aggregation,
                                         task.max_length)
                # (prompt, node) -> gradient of the loss w.r.t. that prefix's logits
                logit_grads = {}
                for (g, i), weight in zip(answers, weights):
                    prompt, _, _, advantages = groups[g]
                    advantage = advantages[i]
                    for node, token, old_probs in old[g][i]:
                        probs = _softmax(_logits(task, state.params, seed, prompt, node))
                        grad = logit_grads.setdefault((prompt, node), [0.0] * choices)
                        ratio = math.exp(math.log(probs[token]) - math.log(old_probs[token]))
                        counted[seed] += 1
                        if advantage > 0 and ratio > 1 + method.clip_high:
                            clipped_high[seed] += 1
                        elif advantage < 0 and ratio < 1 - method.clip_low:
                            clipped_low[seed] += 1
                        else:
                            # d(-A ratio)/d logit_c = -A ratio (1[c = token] - pi_c), weighted.
                            for c in range(choices):
                                grad[c] += -advantage * ratio * ((c == token) - probs[c]) * weight
                        reference_probs = _softmax([float(z)
                                                    for z in reference[seed, prompt, node]])
                        kl = sum(p * math.log(p / q) for p, q in zip(probs, reference_probs))
                        entropy = -sum(p * math.log(p) for p in probs)
                        for c in range(choices):
                            log_ratio = math.log(probs[c] / reference_probs[c])
                            grad[c] += weight * (
                                coefficients.kl * probs[c] * (log_ratio - kl)
                                + coefficients.entropy * probs[c] * (math.log(probs[c]) + entropy))
                if task.features is None:
                    param_grads = np.zeros(state.params.shape[1:])
                    for (prompt, node), grad in logit_grads.items():
                        for c in range(choices):
                            param_grads[prompt, node, c] = grad[c]
                else:
                    param_grads = np.zeros(state.params.shape[1])
                    for (prompt, node), grad in logit_grads.items():
                        for c in range(choices):
                            for d in range(param_grads.size):
                                param_grads[d] += grad[c] * task.features[prompt, node, c, d]
                _adam_or_sgd(optimizer, state.params, param_grads, seed)

    for seed, (groups, old) in enumerate(updates):
        k3 = unsampled = gain = 0.0
        tokens = 0
        for (prompt, answers, rewards, _), old_tokens in zip(groups, old):
            chosen_at = {}  # node -> tokens some answer of the group chose there
            for per_answer in old_tokens:
                for node, token, _ in per_answer:
                    chosen_at.setdefault(node, set()).add(token)
            for per_answer in old_tokens:
                for node, token, old_probs in per_answer:
                    probs = _softmax(_logits(task, state.params, seed, prompt, node))
                    log_ratio = math.log(probs[token]) - math.log(old_probs[token])
                    k3 += math.expm1(log_ratio) - log_ratio
                    after = sum(p for c, p in enumerate(probs) if c not in chosen_at[node])
                    unsampled += after
                    before = sum(p for c, p in enumerate(old_probs) if c not in chosen_at[node])
                    gain += after - before
                    tokens += 1
            if method.advantage.uses_values:
                mean_reward = sum(rewards) / len(rewards)
                value = state.values[seed, prompt]
                state.values[seed, prompt] += config.value_learning_rate * (mean_reward - value)
        statistics["approx_kl"][seed] = k3 / max(tokens, 1)
        statistics["unsampled_mass"][seed] = unsampled / max(tokens, 1)
        statistics["unsampled_mass_gain"][seed] = gain / max(tokens, 1)
    statistics["clipfrac_low"] = clipped_low / np.maximum(counted, 1)
    statistics["clipfrac_high"] = clipped_high / np.maximum(counted, 1)
    return state, statistics

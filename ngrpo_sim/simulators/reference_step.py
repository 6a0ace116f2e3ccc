"""One sampled step of the bandit as plain loops: the oracle of ``training_loop.apply_rollout``.

Slow on purpose and independent of the vectorised code where it can be: it walks seed by seed, group
by group, answer by answer, applies the clip by its two cases instead of calling
``surrogate.clipped_surrogate``, computes softmaxes, the KL and entropy gradients, the chain rule to
the shared parameters and Adam element by element. It shares with the vectorised step only the
method definitions (advantage estimator and group filter), which have their own tests. The tests
check that both give the same parameters and statistics to 1e-12;
``benchmarks/bench_dynamics_step.py`` times both on the same inputs.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ngrpo_sim.methods.presets import Method
from ngrpo_sim.simulators.bandit import BanditTask
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.task_parts import ROLLOUT_METRICS, Coefficients
from ngrpo_sim.simulators.training_loop import Rollout, TrainState


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    total = sum(exps)
    return [e / total for e in exps]


def _prompt_logits(task: BanditTask, params: np.ndarray, seed: int, prompt: int) -> list[float]:
    num_answers = task.rewards.shape[1]
    if task.features is None:
        return [float(params[seed, prompt, a]) for a in range(num_answers)]
    return [float(task.offsets[prompt, a])
            + sum(float(task.features[prompt, a, d]) * float(params[seed, d])
                  for d in range(params.shape[1]))
            for a in range(num_answers)]


def _regulariser_grad(probs: list[float], reference_probs: list[float],
                      coefficients: Coefficients) -> list[float]:
    """Gradient w.r.t. one prompt's logits of kl * KL(pi || pi_ref) - entropy * H(pi), logit by
    logit."""
    kl = sum(p * math.log(p / q) for p, q in zip(probs, reference_probs))
    entropy = -sum(p * math.log(p) for p in probs)
    return [coefficients.kl * p * (math.log(p / q) - kl)
            + coefficients.entropy * p * (math.log(p) + entropy)
            for p, q in zip(probs, reference_probs)]


def _parameter_gradient(task: BanditTask, params: np.ndarray,
                        logit_grads: dict[int, list[float]]) -> np.ndarray:
    """One seed's parameter gradient from gradients w.r.t. the logits of the prompts
    ``logit_grads`` names: the logits themselves (tabular) or the chain rule to theta (shared)."""
    num_answers = task.rewards.shape[1]
    if task.features is None:
        param_grads = np.zeros(params.shape[1:])
        for prompt, grad in logit_grads.items():
            for b in range(num_answers):
                param_grads[prompt, b] = grad[b]
        return param_grads
    param_grads = np.zeros(params.shape[1])
    for prompt, grad in logit_grads.items():
        for b in range(num_answers):
            for d in range(param_grads.size):
                param_grads[d] += grad[b] * task.features[prompt, b, d]
    return param_grads


def _count_update(optimizer, params: np.ndarray) -> None:
    """The optimiser's step counter is shared by all seeds: advance it once per update, before the
    seed loop."""
    if optimizer.kind == "adam":
        if optimizer.first_moment is None:
            optimizer.first_moment = np.zeros_like(params)
            optimizer.second_moment = np.zeros_like(params)
        optimizer.steps += 1


def _adam_or_sgd(optimizer, params: np.ndarray, grads: np.ndarray, seed: int) -> None:
    """One optimiser step on seed ``seed``, element by element, in place."""
    view = params[seed].reshape(-1)
    grad = grads.reshape(-1)
    if optimizer.kind == "sgd":
        for i in range(view.size):
            view[i] -= optimizer.learning_rate * grad[i]
        return
    first, second = (optimizer.first_moment[seed].reshape(-1),
                     optimizer.second_moment[seed].reshape(-1))
    t = optimizer.steps
    for i in range(view.size):
        first[i] = optimizer.beta1 * first[i] + (1 - optimizer.beta1) * grad[i]
        second[i] = optimizer.beta2 * second[i] + (1 - optimizer.beta2) * grad[i] ** 2
        corrected_first = first[i] / (1 - optimizer.beta1 ** t)
        corrected_second = second[i] / (1 - optimizer.beta2 ** t)
        view[i] -= (optimizer.learning_rate * corrected_first
                    / (math.sqrt(corrected_second) + optimizer.eps))


def walk_groups(method: Method, config, state: TrainState, rollout: Rollout, seed: int,
                statistics: dict[str, np.ndarray], reward_of) -> list[tuple]:
    """Walk one seed's drawn groups in order, stop once B groups were kept, and fill that seed's
    group shares in ``statistics``; returns (prompt, answers, rewards, advantages) of the used
    groups. ``reward_of(prompt, answer)`` scores one answer (an answer index, or a token
    sequence); pure-noise rewards (``rewards="noise"``) are the rollout's own draws."""
    groups = []
    examined = all_wrong = all_correct = zero_answers = 0
    for c in range(rollout.prompts.shape[1]):
        if len(groups) >= config.prompts_per_step:
            break
        prompt = int(rollout.prompts[seed, c])
        answers = [answer.tolist() for answer in rollout.answers[seed, c]]
        if config.rewards == "noise":
            rewards = [float(reward) for reward in rollout.rewards[seed, c]]
        else:
            rewards = [reward_of(prompt, answer) for answer in answers]
        examined += 1
        all_wrong += all(r != 1.0 for r in rewards)
        all_correct += all(r == 1.0 for r in rewards)
        if not method.group_filter.keep(np.array(rewards)):
            zero_answers += len(answers)
            continue
        values = (np.full(len(rewards), state.values[seed, prompt]) if method.advantage.uses_values
                  else None)
        advantages = [float(a) for a in method.advantage(np.array(rewards), values)]
        zero_answers += sum(a == 0.0 for a in advantages)
        groups.append((prompt, answers, rewards, advantages))
    statistics["sampled_answers"][seed] = examined * config.group_size
    statistics["share_all_wrong"][seed] = all_wrong / examined
    statistics["share_all_correct"][seed] = all_correct / examined
    statistics["share_mixed"][seed] = (examined - all_wrong - all_correct) / examined
    statistics["share_zero_advantage"][seed] = zero_answers / (examined * config.group_size)
    statistics["kept_groups"][seed] = len(groups)
    return groups


def reference_apply_rollout(task: BanditTask, method: Method, config: DynamicsConfig,
                            state: TrainState, rollout: Rollout,
                            reference: np.ndarray) -> tuple[TrainState, dict[str, np.ndarray]]:
    """Same contract as ``dynamics.apply_rollout``, but returns a new state instead of updating
    ``state``."""
    state = copy.deepcopy(state)
    optimizer = state.optimizer
    num_seeds = rollout.prompts.shape[0]
    num_answers = task.rewards.shape[1]
    parts = config.minibatches
    coefficients = Coefficients.of(method, config)
    statistics = {name: np.zeros(num_seeds) for name in ROLLOUT_METRICS}

    updates = []
    for seed in range(num_seeds):
        groups = walk_groups(method, config, state, rollout, seed, statistics,
                             lambda prompt, answer: float(task.rewards[prompt, answer]))
        old_logp = [[math.log(_softmax(_prompt_logits(task, state.params, seed, p))[a])
                     for a in answers]
                    for p, answers, _, _ in groups]
        updates.append((groups, old_logp))

    clipped_low, clipped_high, tokens = (np.zeros(num_seeds), np.zeros(num_seeds),
                                         np.zeros(num_seeds))
    for _ in range(config.epochs):
        for part in range(parts):
            _count_update(optimizer, state.params)
            for seed, (groups, old_logp) in enumerate(updates):
                members = [g for g in range(len(groups))
                           if g * parts // max(len(groups), 1) == part]
                part_tokens = sum(len(groups[g][1]) for g in members)
                logit_grads = {}
                for g in members:
                    prompt, answers, _, advantages = groups[g]
                    logits = _prompt_logits(task, state.params, seed, prompt)
                    probs = _softmax(logits)
                    grad = [0.0] * num_answers
                    for answer, advantage, logp_old in zip(answers, advantages, old_logp[g]):
                        ratio = math.exp(math.log(probs[answer]) - logp_old)
                        tokens[seed] += 1
                        if advantage > 0 and ratio > 1 + method.clip_high:
                            clipped_high[seed] += 1
                            continue
                        if advantage < 0 and ratio < 1 - method.clip_low:
                            clipped_low[seed] += 1
                            continue
                        # d(-A ratio)/d logit_b = -A ratio (1[b = answer] - pi_b), weighted by
                        # 1 / tokens.
                        for b in range(num_answers):
                            grad[b] += -advantage * ratio * ((b == answer) - probs[b]) / part_tokens
                    reference_probs = _softmax([float(z) for z in reference[seed, prompt]])
                    for b, regulariser in enumerate(_regulariser_grad(probs, reference_probs,
                                                                      coefficients)):
                        grad[b] += regulariser / len(members)
                    logit_grads[prompt] = grad
                _adam_or_sgd(optimizer, state.params,
                             _parameter_gradient(task, state.params, logit_grads), seed)

    for seed, (groups, old_logp) in enumerate(updates):
        k3 = 0.0
        for (prompt, answers, rewards, _), logp_old in zip(groups, old_logp):
            probs = _softmax(_prompt_logits(task, state.params, seed, prompt))
            for answer, old in zip(answers, logp_old):
                log_ratio = math.log(probs[answer]) - old
                k3 += math.expm1(log_ratio) - log_ratio
            if method.advantage.uses_values:
                mean_reward = sum(rewards) / len(rewards)
                error = mean_reward - state.values[seed, prompt]
                state.values[seed, prompt] += config.value_learning_rate * error
        statistics["approx_kl"][seed] = k3 / max(len(groups) * config.group_size, 1)
    statistics["clipfrac_low"] = clipped_low / np.maximum(tokens, 1)
    statistics["clipfrac_high"] = clipped_high / np.maximum(tokens, 1)
    return state, statistics

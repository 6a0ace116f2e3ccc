"""Plain-loop oracles of the long-answer simulator, written from the rules in the module docstring
of ``ngrpo_sim.simulators.long_answers``: the logits of a state from the task's offsets and
features, every answer of a short task by depth-first search, and one sampled training step walked
seed by seed,
group by group, answer by answer and token by token (the oracle of ``training_loop.apply_rollout``
on a ``LongAnswerTask``)."""

import copy
import dataclasses
import math

import numpy as np

from ngrpo_sim.simulators.long_answer_exact import END, END_WRONG, STEP, TEXT
from ngrpo_sim.simulators.reference_step import _adam_or_sgd, _count_update, walk_groups
from ngrpo_sim.simulators.task_parts import ROLLOUT_METRICS, Coefficients


def logits_at(task, params, seed, prompt, position, work):
    """[0, z_step, z_end] at (position, work): O + R + theta . (F + G), written out."""
    logits = [0.0]
    for token in range(2):
        value = float(task.state_offsets[prompt, work, token]
                      + task.time_offsets[position, token])
        for d in range(task.num_params):
            value += float(params[seed, d]) * float(task.state_features[prompt, work, token, d]
                                                    + task.time_features[position, token, d])
        logits.append(value)
    return logits


def softmax(logits):
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    return [e / sum(exps) for e in exps]


def feature_row(task, prompt, position, work, choice):
    """d z_choice / d theta at (position, work): 0 for text."""
    if choice == TEXT:
        return np.zeros(task.num_params)
    return task.state_features[prompt, work, choice - 1] + task.time_features[position, choice - 1]


@dataclasses.dataclass
class Answer:
    choices: list  # TEXT, STEP or END per token
    probability: float
    correct_probability: float  # P(correct | these tokens): q(w) if it ended, 0 if truncated
    work: int
    states: list  # (position, work) of every token

    @property
    def length(self):
        return len(self.choices)

    @property
    def truncated(self):
        return self.choices[-1] != END


def enumerate_answers(task, params, seed, prompt):
    """Every answer (token choices) of one prompt with its probability, by depth-first search."""
    answers = []
    cap = task.work_cap - 1

    def walk(choices, probability, work, states):
        position = len(choices)
        probs = softmax(logits_at(task, params, seed, prompt, position, work))
        for choice, p in enumerate(probs):
            here = states + [(position, work)]
            after = min(work + (choice == STEP), cap)
            if choice == END:
                answers.append(Answer(choices + [END], probability * p,
                                      float(task.correct[prompt, work]), work, here))
            elif position + 1 == task.max_length:
                answers.append(Answer(choices + [choice], probability * p, 0.0, after, here))
            else:
                walk(choices + [choice], probability * p, after, here)

    walk([], 1.0, 0, [])
    return answers


def work_of(tokens):
    return sum(1 for token in tokens if token == STEP)


def reward_of(task, prompt, answer):
    """The verifier's reward of one sampled answer (tokens with -1 padding), by the rules."""
    tokens = [int(token) for token in answer if token >= 0]
    work = min(work_of(tokens), task.work_cap - 1)
    reward = 0.0
    if tokens[-1] == END:
        reward = 1.0
    elif tokens[-1] == END_WRONG:
        reward = float(task.credit[prompt, work])
    if task.overlong_buffer:
        start = task.max_length - task.overlong_buffer
        if len(tokens) > start:
            reward -= task.overlong_penalty * (len(tokens) - start) / task.overlong_buffer
    return reward


def states_of(task, tokens):
    """(position, work, choice) of every token of an answer."""
    states, work = [], 0
    for position, token in enumerate(tokens):
        states.append((position, work, min(int(token), END)))
        work = min(work + (token == STEP), task.work_cap - 1)
    return states


def in_loss(task, tokens):
    return not (task.overlong_filter and tokens[-1] not in (END, END_WRONG))


def loss_weights(task, answers, aggregation):
    """One weight per answer of a minibatch (its tokens share it), written out per aggregation."""
    lengths = [len(tokens) if in_loss(task, tokens) else 0 for tokens in answers]
    if aggregation == "token-mean":
        return [1.0 / max(sum(lengths), 1)] * len(answers)
    if aggregation == "seq-mean-token-mean":
        return [1.0 / (max(length, 1) * len(answers)) for length in lengths]
    return [1.0 / (task.max_length * len(answers))] * len(answers)


def reference_apply_long_rollout(task, method, config, state, rollout, reference):
    """Same contract as ``training_loop.apply_rollout``, but returns a new state."""
    state = copy.deepcopy(state)
    optimizer = state.optimizer
    num_seeds = rollout.prompts.shape[0]
    aggregation = task.loss_aggregation or method.loss_aggregation
    coefficients = Coefficients.of(method, config)
    statistics = {name: np.zeros(num_seeds) for name in ROLLOUT_METRICS}
    updates = []
    for seed in range(num_seeds):
        groups = walk_groups(method, config, state, rollout, seed, statistics,
                             lambda prompt, answer: reward_of(task, prompt, answer))
        groups = [(prompt, [[int(t) for t in answer if t >= 0] for answer in answers], rewards,
                   advantages) for prompt, answers, rewards, advantages in groups]
        old = [[[softmax(logits_at(task, state.params, seed, prompt, position, work))[choice]
                 for position, work, choice in states_of(task, tokens)] for tokens in answers]
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
                weights = loss_weights(task, [groups[g][1][i] for g, i in answers], aggregation)
                grads = np.zeros(task.num_params)
                for (g, i), weight in zip(answers, weights):
                    prompt, tokens_of_group, _, advantages = groups[g]
                    tokens = tokens_of_group[i]
                    if not in_loss(task, tokens):
                        continue
                    for t, (position, work, choice) in enumerate(states_of(task, tokens)):
                        advantage = (advantages[i][t] if np.ndim(advantages[i])
                                     else advantages[i])
                        logits = logits_at(task, state.params, seed, prompt, position, work)
                        probs = softmax(logits)
                        ratio = math.exp(math.log(probs[choice]) - math.log(old[g][i][t]))
                        counted[seed] += 1
                        logit_grad = [0.0, 0.0, 0.0]
                        if advantage > 0 and ratio > 1 + method.clip_high:
                            clipped_high[seed] += 1
                        elif advantage < 0 and ratio < 1 - method.clip_low:
                            clipped_low[seed] += 1
                        else:
                            for c in range(3):
                                logit_grad[c] += -advantage * ratio * ((c == choice) - probs[c])
                        ref = softmax(logits_at(task, reference, seed, prompt, position, work))
                        kl = sum(p * math.log(p / q) for p, q in zip(probs, ref))
                        entropy = -sum(p * math.log(p) for p in probs)
                        for c in range(3):
                            logit_grad[c] += (
                                coefficients.kl * probs[c] * (math.log(probs[c] / ref[c]) - kl)
                                + coefficients.entropy * probs[c] * (math.log(probs[c]) + entropy))
                        for c in range(3):
                            grads += weight * logit_grad[c] * feature_row(task, prompt, position,
                                                                          work, c)
                _adam_or_sgd(optimizer, state.params, grads, seed)

    for seed, (groups, old) in enumerate(updates):
        k3, tokens_seen = 0.0, 0
        for (prompt, answers, rewards, _), old_probs in zip(groups, old):
            for tokens, per_token in zip(answers, old_probs):
                if not in_loss(task, tokens):
                    continue
                for (position, work, choice), p_old in zip(states_of(task, tokens), per_token):
                    p = softmax(logits_at(task, state.params, seed, prompt, position, work))[choice]
                    log_ratio = math.log(p) - math.log(p_old)
                    k3 += math.expm1(log_ratio) - log_ratio
                    tokens_seen += 1
            if method.advantage.uses_values:
                value = state.values[seed, prompt]
                state.values[seed, prompt] += config.value_learning_rate * (
                    sum(rewards) / len(rewards) - value)
        statistics["approx_kl"][seed] = k3 / max(tokens_seen, 1)
    statistics["clipfrac_low"] = clipped_low / np.maximum(counted, 1)
    statistics["clipfrac_high"] = clipped_high / np.maximum(counted, 1)
    return state, statistics

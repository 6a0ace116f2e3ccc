"""A plain enumeration of every answer of the token task, written from the rules in the module
docstring of ``ngrpo_sim.simulators.sequences`` (depth-first search over tokens, probabilities as
products of softmaxes), for the tests."""

import dataclasses

import numpy as np


def softmax(logits):
    top = max(z.real for z in logits)
    exps = [np.exp(z - top) for z in logits]
    return [e / sum(exps) for e in exps]


def node_of(vocab, content):
    """1 + V + ... + V^(t-1) + sum_i x_i V^(t-1-i)."""
    local = 0
    for token in content:
        local = local * vocab + token
    return sum(vocab ** d for d in range(len(content))) + local


@dataclasses.dataclass
class Answer:
    tokens: list
    probability: complex
    reward: float
    truncated: bool
    positions: list  # (node, token) of every token

    @property
    def length(self):
        return len(self.tokens)


def enumerate_answers(vocab, max_length, end_token, rewards, logits):
    """Every answer of one prompt with its probability under ``logits`` (N, C): by depth-first
    search."""
    answers = []

    def walk(content, probability, positions):
        node = node_of(vocab, content)
        probs = softmax(list(logits[node]))
        for token, p in enumerate(probs):
            here = positions + [(node, token)]
            if end_token and token == vocab:
                reward = float(rewards[content[-1]]) if content else 0.0
                answers.append(Answer(content + [token], probability * p, reward, False, here))
            elif len(content) == max_length - 1:
                reward = 0.0 if end_token else float(rewards[token])
                answers.append(Answer(content + [token], probability * p, reward, end_token, here))
            else:
                walk(content + [token], probability * p, here)

    walk([], 1.0, [])
    return answers

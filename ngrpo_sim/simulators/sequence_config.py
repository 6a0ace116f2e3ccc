"""The token task as a run is given it: ``SequenceConfig`` (the sizes of the task, on top of the
loop's settings) and ``make_sequence_task``, which draws the task and calibrates its starting
policy so that each prompt's exact success rate equals its target of the difficulty profile.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ngrpo_sim.base import checks
from ngrpo_sim.methods.presets import LOSS_AGGREGATIONS
from ngrpo_sim.simulators.bandit import draw_features, draw_prompts
from ngrpo_sim.simulators.loop_config import POLICIES, REWARD_KINDS, LoopConfig
from ngrpo_sim.simulators.sequences import (EMPTY_ANSWER_SHARE, MAX_LOGITS, SequenceTask,
                                            check_sizes, prefix_count)


def make_sequence_task(num_prompts: int = 128, vocab_size: int = 4, max_length: int = 4,
                       end_token: bool = True, correct_answers: int = 1, profile="base",
                       policy: str = "tabular", feature_dim: int = 16, feature_signal: float = 0.5,
                       token_sharing: float = 0.5, rewards: str = "binary",
                       end_probability: float = 0.35, logit_spread: float = 1.0,
                       loss_aggregation: str | None = None, seed: int = 0) -> SequenceTask:
    """Build a task whose prompts start at the profile's success rates, exactly (see the module
    docstring). ``profile`` is a name of ``profile.PROFILES``, comma-separated rates or a sequence
    of rates.

    The random draws come in ``bandit.make_task``'s order (targets, keys, content logits, graded
    credits, feature direction and features), then the end probabilities and the shared token
    features, so that with ``max_length=1``, ``end_token=False`` and ``token_sharing=0`` the task is
    the bandit's for ``num_answers=V``. Tasks are cached by their arguments (a run of several
    methods builds one), so their arrays are read-only.
    """
    if not isinstance(profile, str):
        profile = tuple(checks.finite_array("profile", profile).ravel())
    return _cached_sequence_task(num_prompts, vocab_size, max_length, end_token, correct_answers,
                                 profile, policy, feature_dim, feature_signal, token_sharing,
                                 rewards, end_probability, logit_spread, loss_aggregation, seed)


@functools.lru_cache(maxsize=8)
def _cached_sequence_task(num_prompts, vocab_size, max_length, end_token, correct_answers, profile,
                          policy, feature_dim, feature_signal, token_sharing, rewards,
                          end_probability, logit_spread, loss_aggregation, seed) -> SequenceTask:
    num_prompts = checks.integer("num_prompts", num_prompts, low=1)
    vocab_size, max_length = check_sizes(vocab_size, max_length, end_token, correct_answers)
    checks.choice("policy", policy, POLICIES)
    checks.choice("rewards", rewards, REWARD_KINDS)
    feature_dim = checks.integer("feature_dim", feature_dim, low=1)
    feature_signal = checks.number("feature_signal", feature_signal, low=0.0)
    token_sharing = checks.number("token_sharing", token_sharing, low=0.0, high=1.0)
    end_probability = checks.number("end_probability", end_probability, low=0.0, high=2 / 3,
                                     low_open=True)
    logit_spread = checks.number("logit_spread", logit_spread, low=0.0)
    if loss_aggregation is not None:
        checks.choice("loss_aggregation", loss_aggregation, LOSS_AGGREGATIONS)
    num_nodes, choices = prefix_count(vocab_size, max_length), vocab_size + int(end_token)
    rng = np.random.default_rng(seed)
    target, keys, content, reward_table = draw_prompts(rng, profile, num_prompts, vocab_size,
                                                       correct_answers, (num_prompts, num_nodes,
            vocab_size), logit_spread, rewards)
    features = None
    if policy == "shared":
        direction, noise = draw_features(rng, (num_prompts, num_nodes, choices), feature_dim)
    hazard = end_probability * rng.uniform(0.5, 1.5, size=num_prompts) if end_token else None
    task = SequenceTask(reward_table, np.zeros((num_prompts, num_nodes, choices)), None, max_length,
                        bool(end_token), loss_aggregation)
    key_last = keys[:, np.maximum(task.node_last, 0)] & (task.node_depth > 0)

    def starting_logits(delta):
        logits = np.where(keys[:, None, :], delta[:, None, None], content)
        if not end_token:
            return logits
        # The end token's odds against the content tokens are h / (1 - h) after a content token,
        # times e^delta after a key; at the empty prefix they are EMPTY_ANSWER_SHARE / (1 -
        # EMPTY_ANSWER_SHARE) against the non-key tokens, so that an empty answer vanishes as delta
        # grows.
        share = np.where(task.node_depth > 0, hazard[:, None], EMPTY_ANSWER_SHARE)
        against = np.where(task.node_depth > 0, _logsumexp(logits), _logsumexp(np.where(keys[:,
                None, :], -np.inf, logits)))
        end = np.log(share) - np.log1p(-share) + against + delta[:, None] * key_last
        return np.concatenate([logits, end[..., None]], axis=-1)

    delta = _solve_increasing(lambda d: task.success(starting_logits(d)), target)
    offsets = starting_logits(delta)
    if policy == "shared":
        token_features = rng.normal(scale=1.0 / np.sqrt(feature_dim), size=(choices, feature_dim))
        makes_correct = np.zeros((num_prompts, num_nodes, choices))
        makes_correct[..., :vocab_size] = keys[:, None, :]
        if end_token:
            makes_correct[..., -1] = key_last
        centred = makes_correct - makes_correct.mean(axis=-1, keepdims=True)
        features = (np.sqrt(1.0 - token_sharing) * noise
                    + np.sqrt(token_sharing) * token_features
                    + feature_signal * centred[..., None] * direction)
    for array in (reward_table, offsets) + (() if features is None else (features,)):
        array.flags.writeable = False
    return SequenceTask(reward_table, offsets, features, max_length, bool(end_token),
                        loss_aggregation)


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    top = np.max(logits, axis=-1, keepdims=True)
    return top[..., 0] + np.log(np.sum(np.exp(logits - top), axis=-1))


def _solve_increasing(function, target: np.ndarray, low: float = -60.0,
                      high: float = 60.0) -> np.ndarray:
    """x with function(x) = target elementwise, by bisection on [low, high] (vectorised over the
    elements)."""
    low, high = np.full(target.shape, low), np.full(target.shape, high)
    if np.any(function(low) > target) or np.any(function(high) < target):
        raise ValueError("the starting profile asks for success rates this task cannot reach; "
                         "lower max_length or raise end_probability")
    while True:
        middle = 0.5 * (low + high)
        if np.all((middle == low) | (middle == high)):  # the bracket is down to neighbouring floats
            return middle
        below = function(middle) < target
        low, high = np.where(below, middle, low), np.where(below, high, middle)


@dataclass(frozen=True)
class SequenceConfig(LoopConfig):
    """Everything one simulated training run on the token task needs, besides the method."""

    num_prompts: int = 128
    """P, the size of the training set."""
    vocab_size: int = 4
    """V, content tokens. Every prefix of fewer than L content tokens has its own next-token
    distribution, so the tabular policy holds P (V^L - 1) / (V - 1) (V + 1) logits per seed."""
    max_length: int = 4
    """L, most tokens per answer (the end token included)."""
    end_token: bool = True
    """Whether answers can stop before L tokens; without the end token every answer has L tokens."""
    correct_answers: int = 1
    """How many of the V tokens are keys: an answer is correct when its final content token is a
    key."""
    end_probability: float = 0.35
    """Mean starting probability of the end token after a content token (drawn per prompt between
    half and 1.5 times it): lower values start with longer answers and more truncation."""
    token_sharing: float = 0.5
    """Shared policy: the share of a token's features that is the same at every prefix of every
    prompt, so that a push on a token at one position moves it everywhere (0: every prefix has
    its own features, as the bandit)."""
    loss_aggregation: str | None = None
    """``token-mean``, ``seq-mean-token-mean`` or ``seq-mean-token-sum-norm`` for every method; None
    keeps each method's own (most presets: token-mean; Dr. GRPO: seq-mean-token-sum-norm)."""

    def __post_init__(self):
        super().__post_init__()
        vocab_size, max_length = check_sizes(self.vocab_size, self.max_length, self.end_token,
                                              self.correct_answers)
        checks.number("end_probability", self.end_probability, low=0.0, high=2 / 3, low_open=True)
        checks.number("token_sharing", self.token_sharing, low=0.0, high=1.0)
        if self.loss_aggregation is not None:
            checks.choice("loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS)
        choices = vocab_size + int(self.end_token)
        logits = self.num_prompts * prefix_count(vocab_size, max_length) * choices
        # Every seed's logits at every prefix; the shared policy also holds D features per logit.
        copies = max(self.seeds, self.feature_dim if self.policy == "shared" else 1)
        if logits * copies > MAX_LOGITS:
            raise ValueError(f"vocab_size={vocab_size}, max_length={max_length} and num_prompts="
                             f"{self.num_prompts} need {logits * copies:,} numbers ({logits:,} "
                             f"logits x {copies}), above the limit of {MAX_LOGITS:,}; lower "
                             f"vocab_size or max_length (the prefixes grow as V^L)")

    def build_task(self) -> SequenceTask:
        return make_sequence_task(self.num_prompts, self.vocab_size, self.max_length,
                                  self.end_token, self.correct_answers, self.profile, self.policy,
                                  self.feature_dim, self.feature_signal, self.token_sharing,
                                  self.rewards, self.end_probability,
                                  loss_aggregation=self.loss_aggregation, seed=self.seed)

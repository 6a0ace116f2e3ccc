"""Answers with tokens: a task whose answers are token sequences, and two autoregressive softmax
policies over it.

Each of P prompts is answered by a sequence of at most L tokens. Every token is one of V content
tokens or, with ``end_token``, the end token, which closes the answer (and counts as one of its
tokens, as an LLM's EOS does). An answer that reaches L tokens without the end token is *truncated*;
without an end token every answer has exactly L tokens. A verifier scores the final content token:
an answer is correct (reward 1) when that token is one of the prompt's *keys* and the answer is
neither truncated nor empty. Graded rewards give a wrong answer the partial credit of its final
token (in [0, 0.9]); a truncated or empty answer earns 0.

The prefix tree. A policy chooses among C = V + 1 tokens (V without an end token) at every prefix of
fewer than L content tokens: N = 1 + V + ... + V^(L-1) *nodes*, numbered depth by depth, the prefix
(x_0 .. x_{t-1}) at O_t + sum_i x_i V^(t-1-i) with O_t = 1 + V + ... + V^(t-1). Every quantity of an
answer distribution (success rate, lengths, truncation, entropy, the expected update) is exact, by
passes over the L depths of the tree.

Two policies, as in ``ngrpo_sim.simulators.bandit``:

* **tabular**: free logits (P, N, C) at every prefix of every prompt. A push at one prefix moves
  nothing else.
* **shared** (log-linear): logits = b + Phi theta with fixed features Phi (P, N, C, D) and one theta
  (D) for all prompts and positions. Phi = sqrt(1 - s) xi + sqrt(s) u_token + signal: a random part
  xi per prompt, prefix and token; a part u_token that every occurrence of the same token shares
  (``token_sharing`` s), so that pushing a token down at one position pushes it down at every
  position of every prompt, as a network's weights do; and ``feature_signal`` times a direction
  shared by the choices that make answers correct (emitting a key, stopping after one). This is
  where the penalty of an all-wrong group can leak into tokens that nobody sampled.

The starting policy follows a difficulty profile of ``profile.starting_success`` exactly. Content
logits are drawn from N(0, logit_spread^2); each prompt gets an end probability h
(``end_probability`` times U(0.5, 1.5)) after every content token, and 2% (of its non-key mass) at
the empty prefix, so answer lengths vary between prompts. Then every key gets one logit delta per
prompt, and the odds of stopping correct after a key are multiplied by e^delta; delta is solved by
bisection so that the prompt's exact success rate equals its target. With L = 1 and no end token the
task is ``bandit.make_task``'s: the same random draws, the same rewards, starting logits equal to
rounding.

Each task also supplies its side of ``ngrpo_sim.simulators.training_loop``: sampling, scoring, the
token-level clipped loss of a minibatch, the exact expected update and the metrics (see
``SequenceUpdate`` and the methods below).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ngrpo_sim.analysis.sequence_gain import outcome_advantages
from ngrpo_sim.base import checks
from ngrpo_sim.methods.metrics import as_probability, log_softmax
from ngrpo_sim.methods.presets import LOSS_AGGREGATIONS, Method, token_weights
from ngrpo_sim.methods.surrogate import clipped_surrogate
from ngrpo_sim.simulators.bandit import draw_features, draw_prompts
from ngrpo_sim.simulators.profile import difficulty_masks
from ngrpo_sim.simulators.training_loop import (POLICIES, REWARD_KINDS, ROLLOUT_METRICS,
                                                Coefficients, LoopConfig, answer_mask, approx_kl,
                                                covariance_entropy_change,
                                                regulariser_grads_from_log_probs,
                                                regulariser_logit_grads, starting_params,
                                                success_metrics, weighted_ratio)

EMPTY_ANSWER_SHARE = 0.02
"""Starting probability of the end token at the empty prefix, relative to the prompt's non-key
tokens."""
MAX_LOGITS = 40_000_000
"""Most logits (seeds x prompts x prefixes x tokens) a run may hold: about 320 MB per copy in
float64."""

SEQUENCE_POLICY_METRICS = ("accuracy", "accuracy_hard", "accuracy_mid", "accuracy_easy", "entropy",
                           "entropy_hard", "entropy_mid", "entropy_easy", "pass_auc", "abandoned",
                           "newly_solved", "regressed", "entropy_change",
                           "entropy_change_predicted", "entropy_change_positional",
                           "sequence_entropy", "length", "length_correct", "length_wrong",
                           "truncation", "end_probability", "solved_hard")
"""What the token simulator records of its policy at every step, all exact (no sampling):

* ``accuracy`` .. ``regressed`` and ``solved_hard``: as the bandit's
  (``training_loop.SUCCESS_METRICS``);
* ``entropy`` (and per difficulty bucket): the mean token entropy as verl and TRL log it, the
  entropy of the next-token distribution averaged over the tokens of sampled answers, here in the
  limit of many answers: sum over prompts of the answers' expected summed token entropies / sum of
  their expected lengths (nats per token);
* ``sequence_entropy``: the entropy of the whole answer, mean over prompts (nats per answer); it
  equals the expected sum of the token entropies along the answer;
* ``entropy_change``: the change of ``entropy`` over the step; ``entropy_change_predicted``: its
  first-order prediction at each prefix, -Cov(log pi, dz) (Cui et al. 2025), weighted like
  ``entropy`` by the old policy's visits; ``entropy_change_positional``: the measured change of the
  per-prefix entropies under the same weights (what the prediction predicts; the rest of
  ``entropy_change`` comes from answers visiting other prefixes);
* ``length``: mean answer length in tokens (the end token included); ``length_correct``,
  ``length_wrong``: the mean length of correct and of wrong answers, one answer per prompt;
  ``truncation``: the share of truncated answers;
* ``end_probability``: the probability of the end token, averaged over the tokens of sampled answers
  (NaN without an end token).
"""
TOKEN_ROLLOUT_METRICS = ROLLOUT_METRICS + ("unsampled_mass", "unsampled_mass_gain")
"""The rollout metrics of ``training_loop`` and, over the tokens of the step's used answers: the
probability that the updated policy gives, at that token's prefix, to tokens that no answer of the
group chose there (``unsampled_mass``), and how much the step's updates changed it
(``unsampled_mass_gain``: the leak when positive)."""
METRICS = SEQUENCE_POLICY_METRICS + TOKEN_ROLLOUT_METRICS


def prefix_count(vocab_size: int, max_length: int) -> int:
    """N = 1 + V + ... + V^(L-1), the prefixes at which a policy chooses a token."""
    return sum(vocab_size ** depth for depth in range(max_length))


def _check_sizes(vocab_size, max_length, end_token, correct_answers) -> tuple[int, int]:
    vocab_size = checks.integer("vocab_size", vocab_size, low=2)
    max_length = checks.integer("max_length", max_length, low=1)
    checks.integer("correct_answers", correct_answers, low=1, high=vocab_size - 1)
    if end_token and max_length < 2:
        raise ValueError(f"max_length must be >= 2 with an end token (a correct answer is a key "
                         f"and the end token), got {max_length}; or set end_token=False")
    return vocab_size, max_length


@dataclass(frozen=True)
class AnswerStatistics:
    """Exact per-prompt quantities of a policy's answer distribution, each (S, P) unless said
    otherwise."""

    logits: np.ndarray
    """(S, P, N, C) the policy's logits at every prefix."""
    log_probs: np.ndarray
    """(S, P, N, C) next-token log-probabilities at every prefix."""
    probs: np.ndarray
    """(S, P, N, C) next-token probabilities at every prefix."""
    prefix_entropy: np.ndarray
    """(S, P, N) entropy of the next-token distribution at every prefix (nats)."""
    reach: np.ndarray
    """(S, P, N) probability that an answer passes through each prefix."""
    success: np.ndarray
    """Probability of a correct answer."""
    length: np.ndarray
    """Expected answer length in tokens."""
    correct_length: np.ndarray
    """E[length * 1(correct)]."""
    truncation: np.ndarray
    """Probability of a truncated answer."""
    entropy: np.ndarray
    """Entropy of the answer distribution (nats), the expected sum of next-token entropies along an
    answer."""
    end_mass: np.ndarray
    """Expected number of times an answer meets the end token's probability: sum over prefixes of
    reach x pi(end)."""


@dataclass(frozen=True)
class SequenceTask:
    """P prompts answered by token sequences, and the policy's fixed parts (see the module
    docstring)."""

    rewards: np.ndarray
    """(P, V) reward of an answer whose final content token is v (neither truncated nor empty); keys
    earn 1."""
    offsets: np.ndarray
    """(P, N, C) starting logits at every prefix (tabular) or the fixed offsets b (shared)."""
    features: np.ndarray | None
    """(P, N, C, D) fixed features Phi of the shared policy; None for the tabular policy."""
    max_length: int
    """L, most tokens per answer."""
    end_token: bool
    """Whether the end token exists (token index V); without it every answer has L tokens."""
    loss_aggregation: str | None = None
    """The loss aggregation every method trains with on this task; None keeps each method's own."""

    @property
    def num_prompts(self) -> int:
        return self.rewards.shape[0]

    @property
    def vocab_size(self) -> int:
        """V, the content tokens."""
        return self.rewards.shape[1]

    @property
    def num_choices(self) -> int:
        """C, the tokens a prefix chooses from: V content tokens and the end token if it exists."""
        return self.vocab_size + int(self.end_token)

    @functools.cached_property
    def depth_starts(self) -> np.ndarray:
        """(L + 1,) O_t, the index of the first prefix with t content tokens; the last entry is
        N."""
        return np.concatenate([[0], np.cumsum(self.vocab_size ** np.arange(self.max_length))])

    @property
    def num_nodes(self) -> int:
        return int(self.depth_starts[-1])

    @functools.cached_property
    def node_depth(self) -> np.ndarray:
        """(N,) content tokens in each prefix."""
        return np.repeat(np.arange(self.max_length), np.diff(self.depth_starts))

    @functools.cached_property
    def node_last(self) -> np.ndarray:
        """(N,) the last content token of each prefix (-1 for the empty prefix)."""
        local = np.arange(self.num_nodes) - self.depth_starts[self.node_depth]
        return np.where(self.node_depth > 0, local % self.vocab_size, -1)

    @functools.cached_property
    def terminal(self) -> np.ndarray:
        """(N, C) True where choosing the token ends the answer: the end token, or any token at the
        last depth L - 1."""
        ends = np.broadcast_to((self.node_depth == self.max_length - 1)[:, None],
                               (self.num_nodes, self.num_choices)).copy()
        if self.end_token:
            ends[:, -1] = True
        return ends

    @functools.cached_property
    def terminal_weight(self) -> np.ndarray:
        """``terminal`` as 0.0 and 1.0, to multiply with (converted once)."""
        return self.terminal.astype(np.float64)

    @functools.cached_property
    def answer_length(self) -> np.ndarray:
        """(N, C) length in tokens of the answer that choosing the token ends (meaningful where
        ``terminal``)."""
        return np.broadcast_to((self.node_depth + 1.0)[:, None], (self.num_nodes,
                self.num_choices)).copy()

    @functools.cached_property
    def truncated(self) -> np.ndarray:
        """(N, C) True where choosing the token truncates the answer: a content token at the last
        depth L - 1."""
        if not self.end_token:
            return np.zeros((self.num_nodes, self.num_choices), dtype=bool)
        return self.terminal & (np.arange(self.num_choices) < self.vocab_size)

    @functools.cached_property
    def outcome_rewards(self) -> np.ndarray:
        """(P, N, C) reward of the answer that choosing the token ends; 0 where it does not end
        one."""
        rewards = np.zeros((self.num_prompts, self.num_nodes, self.num_choices))
        if self.end_token:
            stops = self.node_depth > 0
            rewards[:, stops, -1] = self.rewards[:, self.node_last[stops]]
        else:
            last = self.node_depth == self.max_length - 1
            rewards[:, last, :] = self.rewards[:, None, :]
        return rewards

    @functools.cached_property
    def outcome_correct(self) -> np.ndarray:
        """(P, N, C) True where choosing the token ends a correct answer."""
        return self.outcome_rewards == 1.0

    # -- the policy ------------------------------------------------------------------------------

    def initial_params(self, num_seeds: int) -> np.ndarray:
        """Trainable parameters of every seed: logits (S, P, N, C) for tabular, theta (S, D) for
        shared."""
        return starting_params(self.offsets, self.features, num_seeds)

    def logits(self, params: np.ndarray) -> np.ndarray:
        """Logits (S, P, N, C) at every prefix of every prompt."""
        if self.features is None:
            return params
        flat = params @ self.features.reshape(-1, self.features.shape[-1]).T
        return self.offsets + flat.reshape((params.shape[0],) + self.offsets.shape)

    def prefix_logits(self, params: np.ndarray, prompts: np.ndarray, nodes: np.ndarray
                      ) -> np.ndarray:
        """Logits (S, ..., C) at the prefixes ``nodes`` (S, ...) of ``prompts`` (broadcasting
        against ``nodes``)."""
        if self.features is None:
            seeds = np.arange(params.shape[0]).reshape((-1,) + (1,) * (nodes.ndim - 1))
            return params[seeds, prompts, nodes]
        features = self.features[prompts, nodes]
        return self.offsets[prompts, nodes] + np.einsum("s...cd,sd->s...c", features, params)

    def backprop(self, logit_grads: np.ndarray) -> np.ndarray:
        """Parameter gradient from gradients (S, P, N, C) with respect to the logits."""
        if self.features is None:
            return logit_grads
        features = self.features.reshape(-1, self.features.shape[-1])
        return logit_grads.reshape(logit_grads.shape[0], -1) @ features

    # -- exact passes over the tree --------------------------------------------------------------

    def reach(self, probs: np.ndarray) -> np.ndarray:
        """(..., N) probability of passing through each prefix, from next-token probabilities
        (..., N, C)."""
        reach = np.empty(probs.shape[:-1])
        reach[..., 0] = 1.0
        starts, vocab = self.depth_starts, self.vocab_size
        for depth in range(self.max_length - 1):
            block = slice(starts[depth], starts[depth + 1])
            children = reach[..., block, None] * probs[..., block, :vocab]
            next_block = slice(starts[depth + 1], starts[depth + 2])
            reach[..., next_block] = children.reshape(children.shape[:-2] + (-1,))
        return reach

    def completion_values(self, probs: np.ndarray, outcome_values: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
        """(Y, Y_choice) for values of the answers (..., N, C), given where a choice ends one.

        Y (..., N) is the expected value of the answer given that it passes through the prefix,
        Y_choice (..., N, C) given that it also chooses the token there (the value itself where the
        choice ends the answer).
        """
        starts, vocab = self.depth_starts, self.vocab_size
        shape = np.broadcast_shapes(probs.shape, outcome_values.shape)
        choice = np.where(self.terminal, outcome_values, 0.0) * np.ones(shape)
        expected = np.empty(shape[:-1])
        for depth in reversed(range(self.max_length)):
            block = slice(starts[depth], starts[depth + 1])
            if depth < self.max_length - 1:
                children = expected[..., starts[depth + 1]:starts[depth + 2]]
                choice[..., block, :vocab] = children.reshape(children.shape[:-1] + (-1, vocab))
            expected[..., block] = np.sum(probs[..., block, :] * choice[..., block, :], axis=-1)
        return expected, choice

    def gradient_of_expectation(self, logits: np.ndarray, outcome_values: np.ndarray
                                ) -> np.ndarray:
        """d E_{o ~ pi}[W(o)] / d logits (..., N, C) = sum_o pi(o) W(o) d log pi(o) / d logits.

        ``outcome_values`` (..., N, C) gives W of the answer that each terminal choice ends. At a
        prefix n the gradient is reach(n) pi(c | n) (Y_c(n) - Y(n)) (``completion_values``).
        """
        probs = np.exp(log_softmax(logits))
        expected, choice = self.completion_values(probs, outcome_values)
        return self.reach(probs)[..., None] * probs * (choice - expected[..., None])

    def answer_statistics(self, logits: np.ndarray) -> AnswerStatistics:
        """The exact quantities of ``AnswerStatistics`` for logits (S, P, N, C)."""
        log_probs = log_softmax(logits)
        probs = np.exp(log_probs)
        reach = self.reach(probs)
        ending = reach[..., None] * probs * self.terminal_weight
        right = ending * self.outcome_correct
        prefix_entropy = -np.sum(probs * log_probs, axis=-1)
        if self.end_token:
            end_mass = np.sum(reach * probs[..., -1], axis=-1)
        else:
            end_mass = np.full(reach.shape[:-1], np.nan)
        return AnswerStatistics(
            logits=logits, log_probs=log_probs, probs=probs, prefix_entropy=prefix_entropy,
            reach=reach, success=as_probability(right.sum(axis=(-2, -1))),
            length=np.einsum("...nc,nc->...", ending, self.answer_length),
            correct_length=np.einsum("...nc,nc->...", right, self.answer_length),
            truncation=as_probability(np.einsum("...nc,nc->...", ending,
                                                self.truncated.astype(np.float64))),
            entropy=np.sum(reach * prefix_entropy, axis=-1), end_mass=end_mass)

    def success(self, logits: np.ndarray) -> np.ndarray:
        """Success rate (probability of a correct answer) per prompt, for logits (..., P, N, C)."""
        probs = np.exp(log_softmax(logits))
        return as_probability(np.sum(self.reach(probs)[..., None] * probs * self.outcome_correct,
                                     axis=(-2, -1)))

    # -- answers as token arrays -----------------------------------------------------------------

    def prefixes(self, tokens: np.ndarray) -> np.ndarray:
        """(..., L) the prefix (node) at which each token of the answers (..., L) was chosen;
        positions after the end hold some valid node and must be masked with ``tokens >= 0``."""
        local = np.zeros(tokens.shape[:-1], dtype=np.int64)
        nodes = np.empty(tokens.shape, dtype=np.int64)
        for depth in range(self.max_length):
            nodes[..., depth] = self.depth_starts[depth] + local
            local = local * self.vocab_size + np.clip(tokens[..., depth], 0, self.vocab_size - 1)
        return nodes

    def sample(self, params: np.ndarray, prompts: np.ndarray, group_size: int,
               rng: np.random.Generator) -> np.ndarray:
        """G answers per (seed, prompt) of ``prompts`` (S, C) as tokens (S, C, G, L).

        The end token is V, and -1 pads the positions after it.

        One loop over the L positions, vectorised over everything else; position t takes
        uniforms[..., t] of one (S, C, G, L) draw, so that with L = 1 the draws are the bandit's.
        """
        uniforms = rng.random(prompts.shape + (group_size, self.max_length))
        tokens = np.full(uniforms.shape, -1, dtype=np.int64)
        local = np.zeros(uniforms.shape[:-1], dtype=np.int64)
        alive = np.ones(uniforms.shape[:-1], dtype=bool)
        for depth in range(self.max_length):
            nodes = self.depth_starts[depth] + local
            logits = self.prefix_logits(params, prompts[..., None], nodes)
            cdf = np.cumsum(np.exp(log_softmax(logits)), axis=-1)
            choice = np.sum(uniforms[..., depth, None] >= cdf[..., :-1], axis=-1)
            tokens[..., depth] = np.where(alive, choice, -1)
            alive &= choice < self.vocab_size
            local = np.where(alive, local * self.vocab_size + choice, 0)
        return tokens

    def score(self, prompts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Rewards (S, C, G) of answers (S, C, G, L) to ``prompts`` (S, C)."""
        if self.end_token:
            lengths = np.sum(tokens >= 0, axis=-1)
            closed = np.any(tokens == self.vocab_size, axis=-1) & (lengths >= 2)
            before_end = np.maximum(lengths - 2, 0)[..., None]
            final = np.take_along_axis(tokens, before_end, axis=-1)[..., 0]
        else:
            closed, final = True, tokens[..., -1]
        final = np.clip(final, 0, self.vocab_size - 1)
        return np.where(closed, self.rewards[prompts[..., None], final], 0.0)

    # -- what the shared training loop (training_loop) asks of a task ---------------------------

    metric_names = METRICS

    def aggregation(self, method: Method) -> str:
        """The loss aggregation ``method`` trains with on this task."""
        return self.loss_aggregation or method.loss_aggregation

    def update_batch(self, params: np.ndarray, prompts: np.ndarray, tokens: np.ndarray,
                     reference: np.ndarray, stale: np.ndarray | None = None,
                     stale_params: np.ndarray | None = None) -> "SequenceUpdate":
        """The rollout's answers ready for minibatch updates, with their token log-probabilities
        under ``params`` (under ``stale_params`` for the groups marked ``stale`` (S, B))."""
        return SequenceUpdate(self, prompts, tokens, reference, params, stale, stale_params)

    def answer_weights(self, aggregation: str, mean_length: np.ndarray) -> np.ndarray:
        """Per answer (S, 1, N, C), the weight its tokens get relative to an answer's 1/G share of a
        group under ``aggregation``: 1 / (mean answer length) for token-mean (the minibatch's token
        count taken as its expected value), 1 / length for seq-mean-token-mean, 1 / L for
        seq-mean-token-sum-norm."""
        if aggregation == "token-mean":
            return np.ones(self.answer_length.shape) / mean_length[:, None, None, None]
        if aggregation == "seq-mean-token-mean":
            shape = (mean_length.size, 1) + self.answer_length.shape
            return np.broadcast_to(1.0 / self.answer_length, shape)
        return np.full((mean_length.size, 1) + self.answer_length.shape, 1.0 / self.max_length)

    def expected_direction(self, logits: np.ndarray, method: Method, group_size: int,
                           values: np.ndarray, reference: np.ndarray, coefficients: Coefficients,
                           keep_probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt, the exact expected ascent of one group's loss (each answer's 1/G share
        weighted by ``answer_weights``; see ``ngrpo_sim.analysis.sequence_gain``) and the gradient
        of the per-token KL and entropy terms at the prefixes answers visit, weighted the same way;
        both with respect to the logits (S, P, N, C)."""
        statistics = self.answer_statistics(logits)
        alpha, beta = outcome_advantages(method, group_size, statistics.success, values)
        mean_length = weighted_ratio(keep_probability * statistics.length, keep_probability)
        weights = self.answer_weights(self.aggregation(method), np.nan_to_num(mean_length, nan=1.0))
        per_answer = np.where(self.outcome_correct, alpha[..., None, None], beta[..., None, None])
        outcome = weights * per_answer
        ascent = self.gradient_of_expectation(logits, outcome)
        visits = statistics.reach * self.completion_values(statistics.probs, weights)[0]
        return ascent, visits[..., None] * regulariser_logit_grads(logits, reference, coefficients)

    def expected_approx_kl(self, logits: np.ndarray, new_logits: np.ndarray) -> np.ndarray:
        """The token mean of KL(pi_old || pi_new) at the prefixes of the old policy's answers, per
        seed: what ``approx_kl`` estimates from sampled answers."""
        statistics = self.answer_statistics(logits)
        log_ratio = log_softmax(logits) - log_softmax(new_logits)
        per_prefix = np.sum(statistics.probs * log_ratio, axis=-1)
        return weighted_ratio(np.sum(statistics.reach * per_prefix, axis=-1), statistics.length)

    def measure(self, logits: np.ndarray) -> AnswerStatistics:
        """What the metrics read of a policy: its ``answer_statistics``."""
        return self.answer_statistics(logits)

    def policy_metrics(self, statistics: AnswerStatistics, initial_success: np.ndarray,
                       ks: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``SEQUENCE_POLICY_METRICS`` on all prompts, one value per seed, and pass@k (S, ks)."""
        buckets = difficulty_masks(initial_success)
        metrics, pass_at_k = success_metrics(statistics.success, initial_success, ks, buckets)
        metrics["entropy"] = weighted_ratio(statistics.entropy, statistics.length)
        for bucket, members in buckets.items():
            metrics[f"entropy_{bucket}"] = weighted_ratio(statistics.entropy, statistics.length,
                                                          members)
        wrong_length = statistics.length - statistics.correct_length
        metrics.update(
            sequence_entropy=statistics.entropy.mean(1), length=statistics.length.mean(1),
            length_correct=weighted_ratio(statistics.correct_length, statistics.success),
            length_wrong=weighted_ratio(wrong_length, 1 - statistics.success),
            truncation=statistics.truncation.mean(1),
            end_probability=weighted_ratio(statistics.end_mass, statistics.length))
        return metrics, pass_at_k

    def entropy_prediction(self, before: AnswerStatistics, after: AnswerStatistics
                           ) -> dict[str, np.ndarray]:
        """The first-order prediction of the step's token-entropy change at every prefix, and the
        measured change at every prefix, both weighted by the old policy's visits like
        ``entropy``."""
        predicted = covariance_entropy_change(before.log_probs, after.logits - before.logits)
        per_prefix = {"entropy_change_predicted": predicted,
                      "entropy_change_positional": after.prefix_entropy - before.prefix_entropy}
        return {name: weighted_ratio(np.sum(before.reach * values, axis=-1), before.length)
                for name, values in per_prefix.items()}


class SequenceUpdate:
    """One rollout's used answers (B slots per seed; the loop marks the valid ones), for the
    minibatch updates of ``training_loop.apply_rollout``.

    The answers of a group share prefixes (all G share the empty one), so the work is done once per
    distinct (seed, prompt, prefix), a *node*: its logits, softmax, KL and entropy terms and its
    share of the chain rule. The tokens, each with its node, carry the ratios, the clip and the
    loss weights, and meet their node's softmax through d log pi(token) / d logits =
    e_token - pi: per node, the sum of the tokens' weighted gradients at their tokens minus pi
    times their sum. A node can hold the tokens of two groups of the same prompt (a
    release-assembled batch's carried group and a new one); the tokens of the groups marked
    ``stale`` (S, B) keep the log-probabilities of ``stale_params``, the policy that sampled them,
    while the node's own statistics (entropy, unsampled mass) are the rollout policy's.
    """

    def __init__(self, task: SequenceTask, prompts: np.ndarray, tokens: np.ndarray,
                 reference: np.ndarray, params: np.ndarray, stale: np.ndarray | None = None,
                 stale_params: np.ndarray | None = None):
        self.task, self.tokens = task, tokens
        num_seeds, batch, group_size, length = tokens.shape
        choices = task.num_choices
        self.mask = tokens >= 0
        seeds, slots, answers, depths = np.nonzero(self.mask)
        prefixes = task.prefixes(tokens)[self.mask]
        # A node's key: its row in the (S P N, C) table of every seed's logits at every prefix.
        keys = (seeds * task.num_prompts + prompts[seeds, slots]) * task.num_nodes + prefixes
        self.keys, self.node_of_token = np.unique(keys, return_inverse=True)
        self.token_seed, self.token_slot, self.token_answer = seeds, slots, answers
        self.token_depth, self.token = depths, tokens[self.mask]
        self.node_seed = self.keys // (task.num_prompts * task.num_nodes)
        rows = self.keys % (task.num_prompts * task.num_nodes)
        if task.features is not None:
            self.features = task.features.reshape(-1, choices, task.features.shape[-1])[rows]
            self.offsets = task.offsets.reshape(-1, choices)[rows]
        self.reference_log_pi = log_softmax(reference.reshape(-1, choices)[self.keys])
        old_log_pi = log_softmax(self.node_logits(params, slice(None)))
        self.old_logp = old_log_pi[self.node_of_token, self.token]
        if stale is not None:
            stale_log_pi = log_softmax(self.node_logits(stale_params, slice(None)))
            self.old_logp = np.where(stale[seeds, slots],
                                     stale_log_pi[self.node_of_token, self.token], self.old_logp)
        self.old_entropy = -np.sum(np.exp(old_log_pi) * old_log_pi, axis=-1)
        # The tokens some answer of the group chose at each node; the others are "unsampled".
        chosen = np.bincount(self.node_of_token * choices + self.token,
                             minlength=self.keys.size * choices).reshape(-1, choices)
        self.unsampled = chosen == 0
        self.old_unsampled_mass = as_probability(np.sum(np.exp(old_log_pi) * self.unsampled,
                                                        axis=-1))

    def node_logits(self, params: np.ndarray, nodes) -> np.ndarray:
        """(nodes, C) logits at the ``nodes`` (an index or mask into ``keys``)."""
        if self.task.features is None:
            return params.reshape(-1, self.task.num_choices)[self.keys[nodes]]
        return self.offsets[nodes] + np.einsum("ucd,ud->uc", self.features[nodes],
                                               params[self.node_seed[nodes]])

    def backprop(self, params: np.ndarray, nodes: np.ndarray, node_grads: np.ndarray
                 ) -> np.ndarray:
        """Parameter gradient from gradients (nodes, C) with respect to the logits at ``nodes``."""
        if self.task.features is None:
            grads = np.zeros((params.size // self.task.num_choices, self.task.num_choices))
            grads[self.keys[nodes]] = node_grads
            return grads.reshape(params.shape)
        per_node = np.einsum("uc,ucd->ud", node_grads, self.features[nodes])
        grads = np.zeros(params.shape)
        np.add.at(grads, self.node_seed[nodes], per_node)
        return grads

    def token_weights(self, in_part: np.ndarray, aggregation: str) -> np.ndarray:
        """(S, B, G, L) weight of each token of the minibatch ``in_part`` (groups (S, B) or
        answers (S, B, G)) in its loss."""
        num_seeds, batch, group_size, length = self.tokens.shape
        in_part = answer_mask(in_part, self.tokens.shape[:3])
        mask = (self.mask & in_part[..., None]).reshape(num_seeds, batch * group_size, length)
        weights = token_weights(mask.astype(np.float64), aggregation, normaliser=float(length))
        if aggregation != "token-mean":
            # token_weights averages over all B G rows; the minibatch holds only its own answers.
            answers_in_part = np.maximum(in_part.sum(axis=(1, 2)), 1)
            weights *= (batch * group_size / answers_in_part)[:, None, None]
        return weights.reshape(self.tokens.shape)

    def policy_inputs(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The rollout policy's quantities an estimator declares (``advantages.POLICY_INPUTS``):
        ``log_prob``, each answer's mean token log-probability (S, B, G), and ``entropy``, the
        next-token entropy at each of its tokens (S, B, G, L), 0 after the end."""
        log_prob = np.zeros(self.tokens.shape)
        log_prob[self.mask] = self.old_logp
        entropy = np.zeros(self.tokens.shape)
        entropy[self.mask] = self.old_entropy[self.node_of_token]
        lengths = np.maximum(self.mask.sum(axis=-1), 1)
        inputs = {"log_prob": log_prob.sum(axis=-1) / lengths, "entropy": entropy}
        return {name: inputs[name] for name in names}

    def gradient(self, params: np.ndarray, advantages: np.ndarray, in_part: np.ndarray,
                 method: Method, coefficients: Coefficients
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The parameter gradient of the clipped token-level loss of the groups ``in_part`` (S, B)
        (or answers, (S, B, G)) under the task's aggregation of ``method``, plus per seed the
        tokens clipped at the low and at the high bound and the tokens trained on. Each token's
        loss is max(-A rho, -A clip(rho)) with its answer's advantage A (``advantages`` (S, B, G),
        or (S, B, G, L) per token); the KL to the starting policy and the entropy bonus are the
        exact per-token terms at each token's prefix, aggregated like the loss (verl's kl_loss
        and entropy_loss with the full next-token distribution in place of an estimate)."""
        choices = self.task.num_choices
        in_part = answer_mask(in_part, self.tokens.shape[:3])
        here = in_part[self.token_seed, self.token_slot, self.token_answer]
        nodes = np.bincount(self.node_of_token[here], minlength=self.keys.size) > 0
        node = (np.cumsum(nodes) - 1)[self.node_of_token[here]]  # among the minibatch's nodes
        seed, slot, answer = self.token_seed[here], self.token_slot[here], self.token_answer[here]
        log_pi = log_softmax(self.node_logits(params, nodes))
        logp = log_pi[node, self.token[here]]
        if advantages.ndim == self.tokens.ndim:
            advantage = advantages[seed, slot, answer, self.token_depth[here]]
        else:
            advantage = advantages[seed, slot, answer]
        surrogate = clipped_surrogate(np.exp(logp - self.old_logp[here]), advantage,
                                      method.clip_low, method.clip_high)
        weight = self.token_weights(in_part, self.task.aggregation(method))[self.mask][here]
        grad_logp = surrogate.grad_logp * weight
        size = int(nodes.sum())
        at_token = np.bincount(node * choices + self.token[here], grad_logp,
                               minlength=size * choices)
        node_grads = (at_token.reshape(size, choices)
                      - np.exp(log_pi) * np.bincount(node, grad_logp, minlength=size)[:, None])
        if coefficients.kl or coefficients.entropy:
            node_weight = np.bincount(node, weight, minlength=size)
            node_grads += node_weight[:, None] * regulariser_grads_from_log_probs(
                log_pi, self.reference_log_pi[nodes], coefficients)
        num_seeds = self.tokens.shape[0]
        return (self.backprop(params, nodes, node_grads),
                np.bincount(seed, surrogate.clipped_low.astype(np.float64), minlength=num_seeds),
                np.bincount(seed, surrogate.clipped_high.astype(np.float64), minlength=num_seeds),
                np.bincount(seed, minlength=num_seeds))

    def statistics(self, params: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """After the updates: verl's approx_kl and the unsampled-token mass
        (``TOKEN_ROLLOUT_METRICS``) over the tokens of the ``valid`` groups (S, B) or answers (S,
        B, G)."""
        valid = answer_mask(valid, self.tokens.shape[:3])
        log_pi = log_softmax(self.node_logits(params, slice(None)))
        unsampled_mass = as_probability(np.sum(np.exp(log_pi) * self.unsampled, axis=-1))
        gain = unsampled_mass - self.old_unsampled_mass
        here = valid[self.token_seed, self.token_slot, self.token_answer]
        seed, node = self.token_seed[here], self.node_of_token[here]
        num_seeds = self.tokens.shape[0]
        count = np.maximum(np.bincount(seed, minlength=num_seeds), 1)
        log_ratio = np.zeros(self.tokens.shape)
        log_ratio[self.mask] = log_pi[self.node_of_token, self.token] - self.old_logp
        return {"approx_kl": approx_kl(log_ratio, self.mask & valid[..., None]),
                "unsampled_mass": np.bincount(seed, unsampled_mass[node], minlength=num_seeds)
                / count,
                "unsampled_mass_gain": np.bincount(seed, gain[node], minlength=num_seeds) / count}


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
    vocab_size, max_length = _check_sizes(vocab_size, max_length, end_token, correct_answers)
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
        vocab_size, max_length = _check_sizes(self.vocab_size, self.max_length, self.end_token,
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

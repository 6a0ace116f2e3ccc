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
from ngrpo_sim.methods.presets import Method
from ngrpo_sim.simulators.profile import difficulty_masks
from ngrpo_sim.simulators.sequence_update import SequenceUpdate
from ngrpo_sim.simulators.task_parts import (ROLLOUT_METRICS, Coefficients,
                                             covariance_entropy_change, regulariser_logit_grads,
                                             starting_params, success_metrics, weighted_ratio)

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


def check_sizes(vocab_size, max_length, end_token, correct_answers) -> tuple[int, int]:
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



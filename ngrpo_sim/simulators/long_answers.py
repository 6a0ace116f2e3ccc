"""Answers of realistic length: a task where answers run to hundreds of tokens, and a policy whose
cost is linear in the answer's length.

**The task.** Each of P prompts needs an amount of work before its answer. An answer is written
token by token from three tokens: *text* (writing that makes no progress: restating, checking,
hesitating), *step* (completing one step of work) and *end* (stop and give the final answer). When
the answer ends with w steps done, the verifier finds it correct with probability

    q_p(w) = sigmoid(w - r_p),

which grows with the work done relative to the prompt's required work r_p (about r_p steps for
even odds; each step more multiplies the odds by e). An answer that reaches ``max_length`` = L
tokens without ending is truncated and earns 0, as verifiers score a truncated answer. With
``rewards="graded"`` a wrong answer that ended earns partial credit for its work,
``GRADED_CREDIT`` min(1, w / max(r_p, 1)). Work beyond ``work_cap`` - 1 = W - 1 steps is not
counted (q saturates there), which bounds the summary state.

Why it represents the phenomena: length is what an answer spends on work, so a prompt that needs
more work has longer correct answers, and a method that rewards success can make answers grow; the
cap turns the longest answers into wrong ones with reward 0, so growth can end in truncation, in
all-wrong groups made of truncated answers (which GRPO ignores and NGRPO pushes down) and in a
collapse of accuracy; text tokens let the policy lengthen or shorten an answer without changing its
work (verbosity), the end token lets it stop earlier or later than its work warrants.

**The policy** reads the prefix only through a summary state: the position t and the work w done
so far. The text token's logit is 0; the step and end logits are

    z_c(p, t, w) = O_c(p, w) + R_c(t) + theta . (F_c(p, w) + G_c(t)),   c in {step, end},

one parameter vector theta (S seeds, D entries) shared by every prompt and position, as a
network's weights are. F holds, for each of the two tokens, a bias, the work x = w / (W - 1) and
x^2, and ``feature_dim`` = k prompt features u_p (random, N(0, 1/k), plus ``feature_signal`` times
a direction along the prompt's standardised extra work r_p - e_p: a network sees partly how hard a
prompt is); G holds the position tau = t / L and tau^2 for each token (zero without
``position_features``: a policy that cannot tell how far it has written). So D = 2 (k + 3) + 4. The
step token's features are scaled by ``step_plasticity`` (0: the tokens spent per step of work are
fixed). A push on the end token at one position of one prompt moves it at every position of every
prompt. Cost:
O(L) per sampled answer, O(L W) per prompt for every exact quantity
(``ngrpo_sim.simulators.long_answer_exact``), never a sum over the 3^L prefixes.

**The starting policy** (theta = 0; the offsets O, R = 0) is a base model with a habit: prompt p
writes about e_p steps (lognormal around ``HABIT_STEPS``) at ``TOKENS_PER_STEP`` L tokens per step
(times a lognormal verbosity per prompt), rarely stops before (``EARLY_END`` stops per L tokens) and
wraps up about ``WRAP_UP`` L tokens after its habit is done. Then r_p is solved per prompt
(``scipy.optimize.brentq`` on the exact success rate) so that the starting success rate equals the
profile's target (``profile.starting_success``), capped at ``MAX_START_SHARE`` of the answers that
are not truncated. At L = 1024 and W = 32 with the ``base`` profile (128 prompts, task seeds 0-2)
this gives answers of mean length 21-23% of L (median 15-17%, 90th percentile 46-49%), 1.4-3.2% of
them truncated, and about half of the prompts hard (starting below 5%, at 0.5-0.8% on average):
their r_p lies 10-12 steps beyond their habit, so the policy has to work longer on them to
succeed; for 3-5% of all prompts r_p lies beyond the W - 1 = 31 steps an answer can count (they
stay hard). The lengths scale with L, so a smaller L is the same task at a coarser grain;
``natural_length`` > L keeps the task's token scale and tightens the cap (at twice L, 10-12% of
the answers start truncated).

**DAPO's remedies against truncation** (Yu et al. 2025, arXiv 2503.14476, section 3.4), as options:
*overlong filtering* (``overlong_filter``): truncated answers leave the loss (their tokens weigh 0;
their reward 0 still enters their group's statistics); *soft overlong punishment*
(``overlong_buffer`` = L_cache > 0): the reward of an answer of length l gains
min(0, (L - L_cache - l) / L_cache) x ``overlong_penalty``, so a truncated answer earns -penalty.

Each task supplies its side of ``ngrpo_sim.simulators.training_loop``: sampling, scoring, the
clipped token-level loss of a minibatch through per-state sufficient statistics, the exact expected
update (a backward and a forward pass) and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ngrpo_sim.analysis.sequence_gain import outcome_advantages
from ngrpo_sim.methods.presets import Method
from ngrpo_sim.simulators.long_answer_exact import (END, END_WRONG, STEP, TEXT, ExactStatistics,
                                                    LogitGradient, answer_statistics,
                                                    expectation_gradient, expected_token_kl,
                                                    log_probabilities, values_to_go,
                                                    visit_weighted_gradient)
from ngrpo_sim.simulators.long_answer_update import LongAnswerUpdate
from ngrpo_sim.simulators.profile import difficulty_masks
from ngrpo_sim.simulators.task_parts import (ROLLOUT_METRICS, SUCCESS_METRICS, Coefficients,
                                             regulariser_grads_from_log_probs, success_metrics,
                                             weighted_ratio)

HABIT_STEPS = 3.0
"""Median over prompts of e_p, the steps the starting policy does before it wraps up."""
HABIT_SPREAD = 0.8
"""Standard deviation of log e_p over prompts."""
TOKENS_PER_STEP = 1 / 24
"""Median tokens per step of the starting policy, as a share of L."""
VERBOSITY_SPREAD = 0.7
"""Standard deviation over prompts of the log of the tokens per step."""
EARLY_END = 0.3
"""Expected premature ends per L tokens while the habit is not done (the end hazard is EARLY_END /
L per token)."""
WRAP_UP = 1 / 20
"""Mean tokens from the habit's last step to the end, as a share of L (hazard 1 / (WRAP_UP L))."""
DONE_SHARPNESS = 2.0
"""How sharply the end hazard switches from early to wrap-up around w = e_p (per step)."""
MAX_START_SHARE = 0.98
"""A prompt's starting success rate is at most this share of its answers that are not truncated."""
GRADED_CREDIT = 0.5
"""With graded rewards, the most a wrong answer that ended earns (for work w >= r_p)."""
POSITION_FEATURES = 2
"""tau and tau^2, per token."""
STEP_PLASTICITY = 0.25
"""The scale of the step token's features against the end token's: a change of theta moves the step
logit a quarter as far, because RL changes how many tokens a model spends per step of its reasoning
more slowly than when it stops (1 makes both equally plastic)."""

LENGTH_POLICY_METRICS = SUCCESS_METRICS + (
    "entropy", "entropy_hard", "entropy_mid", "entropy_easy", "entropy_change", "sequence_entropy",
    "length", "length_correct", "length_wrong", "length_hard", "length_q90", "length_correct_q10",
    "length_correct_q50", "length_correct_q90",
    "length_wrong_q10", "length_wrong_q50", "length_wrong_q90", "truncation", "truncation_hard",
    "wrong_truncated", "all_wrong_truncated", "work", "end_probability")
"""What the long-answer simulator records of its policy at every step, all exact:

* ``accuracy`` .. ``solved_hard``: ``training_loop.SUCCESS_METRICS``;
* ``entropy`` (and per difficulty bucket): the token entropy as verl and TRL log it (next-token
  entropy averaged over the tokens of sampled answers), in the limit of many answers (nats per
  token); ``entropy_change`` its change over the step; ``sequence_entropy``: the entropy of the
  whole answer (nats per answer, mean over prompts);
* lengths in tokens (the end token included): ``length`` (mean over prompts of the mean length),
  ``length_correct`` and ``length_wrong`` (one answer per prompt), ``length_hard`` (prompts starting
  below 5%), and quantiles of the lengths of all answers (``length_q90``), of correct and of wrong
  answers (``length_correct_q10`` .. ``length_wrong_q90``), pooled over prompts;
* ``truncation``: the share of truncated answers (``truncation_hard``: on the hard prompts);
  ``wrong_truncated``: the share of wrong answers that are truncated; ``all_wrong_truncated``: of
  the groups of G that are all wrong, the share whose answers are all truncated
  (sum_p trunc_p^G / sum_p (1 - p_p)^G);
* ``work``: mean steps of work when the answer stops; ``end_probability``: the end token's
  probability averaged over the tokens of sampled answers.
"""
METRICS = LENGTH_POLICY_METRICS + ROLLOUT_METRICS


def pmf_quantile(pmf: np.ndarray, share: float) -> np.ndarray:
    """The smallest length l (tokens, 1..L) with P(length <= l) >= ``share`` for each length
    distribution ``pmf`` (..., L) (not necessarily normalised; NaN for an empty one)."""
    total = pmf.sum(axis=-1)
    cumulative = np.cumsum(pmf, axis=-1)
    with np.errstate(invalid="ignore"):
        reached = cumulative >= share * total[..., None] * (1 - 1e-12)
    return np.where(total > 0, np.argmax(reached, axis=-1) + 1.0, np.nan)


@dataclass(frozen=True)
class LongAnswerTask:
    """P prompts answered by long token sequences, and the policy's fixed parts (see the module
    docstring). The policy is its parameters: ``logits(params)`` returns them, and every quantity is
    computed from them when asked (the logits at every state would be S P L W 2 numbers)."""

    correct: np.ndarray
    """(P, W) probability q_p(w) that an answer ending with w steps of work is correct."""
    credit: np.ndarray
    """(P, W) reward of a wrong answer that ended with w steps (0 with binary rewards)."""
    required_work: np.ndarray
    """(P,) r_p, the work at which the answer is correct half the time."""
    habit: np.ndarray
    """(P,) e_p, the steps after which the starting policy wraps up."""
    state_offsets: np.ndarray
    """(P, W, 2) O: the starting step and end logits at each work level."""
    time_offsets: np.ndarray
    """(L, 2) R: the starting step and end logits' part at each position."""
    state_features: np.ndarray
    """(P, W, 2, D) F: the features of the step and end tokens at each work level."""
    time_features: np.ndarray
    """(L, 2, D) G: the features of the step and end tokens at each position."""
    loss_aggregation: str | None = None
    """The loss aggregation every method trains with on this task; None keeps each method's own."""
    overlong_filter: bool = False
    """Truncated answers leave the loss (DAPO's overlong filtering)."""
    overlong_buffer: int = 0
    """L_cache of DAPO's soft overlong punishment, in tokens; 0: no punishment."""
    overlong_penalty: float = 1.0
    """The punishment of an answer of length L (DAPO: 1)."""
    group_size: int = 8
    """G, for the metric ``all_wrong_truncated`` (groups of G answers)."""

    @property
    def num_prompts(self) -> int:
        return self.correct.shape[0]

    @property
    def work_cap(self) -> int:
        """W, the work levels 0 .. W - 1 an answer can count."""
        return self.correct.shape[1]

    @property
    def max_length(self) -> int:
        """L, most tokens per answer."""
        return self.time_offsets.shape[0]

    @property
    def num_params(self) -> int:
        """D, the entries of theta."""
        return self.state_features.shape[-1]

    # -- the policy ------------------------------------------------------------------------------

    def initial_params(self, num_seeds: int) -> np.ndarray:
        """theta of every seed at the start: zeros (S, D)."""
        return np.zeros((num_seeds, self.num_params))

    def logits(self, params: np.ndarray) -> np.ndarray:
        """The policy itself: its parameters (S, D) (what the shared loop calls logits)."""
        return params

    def state_logits(self, params: np.ndarray) -> np.ndarray:
        """A (S, P, W, 2): the step and end logits' state part, for theta (S, D)."""
        return self.state_offsets + np.einsum("pwkd,sd->spwk", self.state_features, params)

    def time_logits(self, params: np.ndarray) -> np.ndarray:
        """B (S, L, 2): the step and end logits' position part, for theta (S, D)."""
        return self.time_offsets + np.einsum("tkd,sd->stk", self.time_features, params)

    def to_params(self, gradient: LogitGradient) -> np.ndarray:
        """(S, P, D): a per-prompt gradient with respect to the logits, chained to theta."""
        return (np.einsum("spwk,pwkd->spd", gradient.state, self.state_features)
                + np.einsum("sptk,tkd->spd", gradient.time, self.time_features))

    def backprop(self, grads: np.ndarray) -> np.ndarray:
        """Parameter gradient (S, D) from the per-prompt gradients (S, P, D) that
        ``expected_direction`` returns (already chained to theta)."""
        return grads.sum(axis=1)

    def statistics(self, params: np.ndarray) -> ExactStatistics:
        """The exact ``ExactStatistics`` of theta (S, D)."""
        return answer_statistics(self.state_logits(params), self.time_logits(params),
                                 self.correct)

    def success(self, params: np.ndarray) -> np.ndarray:
        """Success rate per prompt: (P,) for theta (D,), (S, P) for (S, D)."""
        params = np.asarray(params, dtype=np.float64)
        success = self.statistics(np.atleast_2d(params)).success
        return success[0] if params.ndim == 1 else success

    # -- answers as token arrays -----------------------------------------------------------------

    def sample(self, params: np.ndarray, prompts: np.ndarray, group_size: int,
               rng: np.random.Generator) -> np.ndarray:
        """G answers per (seed, prompt) of ``prompts`` (S, C) as int8 tokens (S, C, G, L): TEXT,
        STEP, then END or END_WRONG (the verdict, drawn with probability q_p(w)), -1 after the end.

        One loop over the positions, vectorised over the answers still being written; at each
        position one uniform per such answer picks the token, and one per ending answer its
        verdict."""
        num_seeds, count = prompts.shape
        max_length, work_cap = self.max_length, self.work_cap
        step_part, end_part = np.moveaxis(self.state_logits(params), -1, 0).reshape(2, -1)
        time_part = self.time_logits(params)
        seed = np.repeat(np.arange(num_seeds), count * group_size)
        prompt = np.repeat(prompts.ravel(), group_size)
        row = (seed * self.num_prompts + prompt) * work_cap
        tokens = np.full((max_length, seed.size), -1, dtype=np.int8)  # position-major: rows write
        alive = np.arange(seed.size)
        work = np.zeros(seed.size, dtype=np.int64)
        for position in range(max_length):
            if alive.size == 0:
                break
            log_text, log_step, _ = log_probabilities(
                step_part[row[alive] + work] + time_part[seed[alive], position, 0],
                end_part[row[alive] + work] + time_part[seed[alive], position, 1])
            uniform = rng.random(alive.size)
            p_text = np.exp(log_text)
            choice = np.where(uniform < p_text, TEXT,
                              np.where(uniform < p_text + np.exp(log_step), STEP, END))
            work = np.minimum(work + (choice == STEP), work_cap - 1)
            ended = choice == END
            right = rng.random(int(ended.sum())) < self.correct[prompt[alive[ended]], work[ended]]
            choice[ended] = np.where(right, END, END_WRONG)
            tokens[position, alive] = choice
            alive, work = alive[~ended], work[~ended]
        return np.ascontiguousarray(tokens.T).reshape(num_seeds, count, group_size, max_length)

    def score(self, prompts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Rewards (S, C, G) of answers (S, C, G, L) to ``prompts`` (S, C): 1 for a correct answer,
        the graded credit of its work for a wrong one that ended, 0 for a truncated one; plus the
        soft overlong punishment when ``overlong_buffer`` > 0."""
        lengths = np.sum(tokens >= 0, axis=-1)
        last = np.take_along_axis(tokens, np.maximum(lengths - 1, 0)[..., None], axis=-1)[..., 0]
        rewards = (last == END).astype(np.float64)
        if self.credit.any():
            work = np.minimum(np.sum(tokens == STEP, axis=-1), self.work_cap - 1)
            credit = self.credit[prompts[..., None], work]
            rewards += np.where(last == END_WRONG, credit, 0.0)
        return rewards + self.overlong_punishment(lengths)

    def overlong_punishment(self, lengths: np.ndarray) -> np.ndarray:
        """DAPO's soft overlong punishment of answers of ``lengths`` tokens: min(0, (L - L_cache -
        l) / L_cache) x penalty (0 everywhere without a buffer)."""
        if not self.overlong_buffer:
            return np.zeros(np.shape(lengths))
        start = self.max_length - self.overlong_buffer
        return self.overlong_penalty * np.minimum(0.0, (start - np.asarray(lengths, float))
                                                  / self.overlong_buffer)

    # -- what the shared training loop (training_loop) asks of a task ---------------------------

    metric_names = METRICS

    def aggregation(self, method: Method) -> str:
        """The loss aggregation ``method`` trains with on this task."""
        return self.loss_aggregation or method.loss_aggregation

    def update_batch(self, params: np.ndarray, prompts: np.ndarray, tokens: np.ndarray,
                     reference: np.ndarray) -> "LongAnswerUpdate":
        """The rollout's answers ready for minibatch updates, with their token log-probabilities
        under ``params``."""
        return LongAnswerUpdate(self, prompts, tokens, reference, params)

    def length_weights(self, aggregation: str, mean_tokens: np.ndarray) -> np.ndarray:
        """(S, L): the loss weight of the tokens of an answer of length l + 1, relative to its 1/G
        share of a group, under ``aggregation``: 1 / (mean loss tokens per answer) for token-mean
        (the minibatch's token count taken at its expected value), 1 / l for seq-mean-token-mean,
        1 / L for seq-mean-token-sum-norm."""
        lengths = np.arange(1, self.max_length + 1, dtype=np.float64)
        if aggregation == "token-mean":
            return np.broadcast_to(1.0 / mean_tokens[:, None], (mean_tokens.size, lengths.size))
        if aggregation == "seq-mean-token-mean":
            return np.broadcast_to(1.0 / lengths, (mean_tokens.size, lengths.size))
        return np.full((mean_tokens.size, lengths.size), 1.0 / self.max_length)

    def expected_direction(self, params: np.ndarray, method: Method, group_size: int,
                           values: np.ndarray, reference: np.ndarray, coefficients: Coefficients,
                           keep_probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt, the exact expected ascent of one group's loss and the gradient of the
        per-token KL and entropy terms at the states answers visit, both chained to theta
        (S, P, D).

        The ascent is sum_o pi(o) w(|o|) (alpha r(o) + beta (1 - r(o))) grad log pi(o) (the gain
        identity of ``ngrpo_sim.analysis.sequence_gain``), with w the aggregation's weight of an
        answer's tokens (``length_weights``; 0 for a truncated answer under overlong filtering): a
        backward pass for the values to go and a forward pass for the gradient
        (``long_answer_exact.expectation_gradient``)."""
        state_logits, time_logits = self.state_logits(params), self.time_logits(params)
        statistics = answer_statistics(state_logits, time_logits, self.correct)
        alpha, beta = outcome_advantages(method, group_size, statistics.success, values)
        tokens = statistics.length
        if self.overlong_filter:
            tokens = tokens - self.max_length * statistics.truncation
        mean_tokens = weighted_ratio(keep_probability * tokens, keep_probability)
        weights = self.length_weights(self.aggregation(method),
                                      np.nan_to_num(mean_tokens, nan=1.0))[:, None, :]
        truncated = 0.0 if self.overlong_filter else weights[..., -1]
        ascent = expectation_gradient(state_logits, time_logits, self.correct,
                                      alpha[..., None] * weights, beta[..., None] * weights,
                                      beta * truncated)
        regulariser = np.zeros(ascent.state.shape[:2] + (self.num_params,))
        if coefficients.kl or coefficients.entropy:
            per_answer = np.broadcast_to(weights, alpha.shape + (self.max_length,))
            weights_to_go = values_to_go(state_logits, time_logits, self.correct, per_answer,
                                         per_answer, np.broadcast_to(truncated, alpha.shape))
            reference_state = self.state_logits(reference)
            reference_time = self.time_logits(reference)

            def state_gradient(position, log_probs):
                reference_log_probs = np.stack(log_probabilities(
                    reference_state[..., 0] + reference_time[:, position, 0][:, None, None],
                    reference_state[..., 1] + reference_time[:, position, 1][:, None, None]), -1)
                return regulariser_grads_from_log_probs(log_probs, reference_log_probs,
                                                        coefficients)

            regulariser = self.to_params(visit_weighted_gradient(
                state_logits, time_logits, weights_to_go, state_gradient))
        return self.to_params(ascent), regulariser

    def expected_approx_kl(self, params: np.ndarray, new_params: np.ndarray) -> np.ndarray:
        """The token mean of KL(pi_old || pi_new) over the old policy's answers, per seed: what
        ``approx_kl`` estimates from sampled answers."""
        kl, tokens = expected_token_kl(self.state_logits(params), self.time_logits(params),
                                       self.state_logits(new_params),
                                       self.time_logits(new_params))
        return weighted_ratio(kl, tokens)

    def measure(self, params: np.ndarray) -> ExactStatistics:
        """What the metrics read of a policy: its exact statistics."""
        return self.statistics(params)

    def policy_metrics(self, statistics: ExactStatistics, initial_success: np.ndarray,
                       ks: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``LENGTH_POLICY_METRICS`` on all prompts, one value per seed, and pass@k (S, ks)."""
        group_size = self.group_size
        buckets = difficulty_masks(initial_success)
        success = statistics.success
        metrics, pass_at_k = success_metrics(success, initial_success, ks, buckets)
        metrics["entropy"] = weighted_ratio(statistics.entropy, statistics.length)
        for bucket, members in buckets.items():
            metrics[f"entropy_{bucket}"] = weighted_ratio(statistics.entropy, statistics.length,
                                                          members)
        wrong = 1.0 - success
        all_pmf = statistics.correct_pmf + statistics.wrong_pmf
        metrics.update(
            sequence_entropy=statistics.entropy.mean(1), length=statistics.length.mean(1),
            length_correct=weighted_ratio(statistics.correct_length, success),
            length_wrong=weighted_ratio(statistics.length - statistics.correct_length, wrong),
            length_hard=weighted_ratio(statistics.length, np.ones_like(success), buckets["hard"]),
            length_q90=pmf_quantile(all_pmf.sum(axis=1), 0.9),
            truncation=statistics.truncation.mean(1),
            truncation_hard=weighted_ratio(statistics.truncation, np.ones_like(success),
                                           buckets["hard"]),
            wrong_truncated=weighted_ratio(statistics.truncation, wrong),
            all_wrong_truncated=weighted_ratio(statistics.truncation ** group_size,
                                               wrong ** group_size),
            work=statistics.work.mean(1),
            end_probability=weighted_ratio(statistics.end_mass, statistics.length))
        for share in (0.1, 0.5, 0.9):
            name = f"q{round(100 * share)}"
            metrics[f"length_correct_{name}"] = pmf_quantile(statistics.correct_pmf.sum(1), share)
            metrics[f"length_wrong_{name}"] = pmf_quantile(statistics.wrong_pmf.sum(1), share)
        return metrics, pass_at_k

    def entropy_prediction(self, before: ExactStatistics, after: ExactStatistics
                           ) -> dict[str, np.ndarray]:
        """Nothing: this task records the measured entropy change only (a first-order prediction
        would cost the metrics' pass again)."""
        return {}



"""A bandit stand-in for RL on language models: prompts, candidate answers, verifiable rewards,
softmax policies.

Each of P prompts has K candidate answers with a fixed reward each (binary: correct 1, wrong 0; or
graded in [0, 1] with the correct answers at 1). A policy gives every prompt a softmax distribution
over its answers. Sampling G answers for a prompt is a "group"; the success rate p of a prompt is
the probability of sampling a correct answer, which is also its pass@1.

Two policies:

* **tabular**: free logits per prompt and answer. An update on one prompt never moves another, so
  every effect seen here is the method's, not the network's.
* **shared** (log-linear): logits = b + Phi theta, with fixed features Phi (P, K, D) and one
  parameter vector theta (D) shared by all prompts, as the weights of a network are. An update on
  one prompt moves all the others. The features are random (interference) plus ``feature_signal``
  times a direction that correct answers share (generalisation: raising the correct answer of one
  prompt raises the correct answers of the others). b is a fixed per-answer offset that sets the
  starting success rates; theta starts at 0.

Starting success rates follow a *profile* (``ngrpo_sim.simulators.profile``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ngrpo_sim.analysis.landscape import expected_gain
from ngrpo_sim.base import checks
from ngrpo_sim.methods.metrics import as_probability, log_softmax
from ngrpo_sim.methods.presets import Method, token_weights
from ngrpo_sim.methods.surrogate import clipped_surrogate
from ngrpo_sim.simulators.loop_config import POLICIES, REWARD_KINDS
from ngrpo_sim.simulators.profile import difficulty_masks, parse_profile, starting_success
from ngrpo_sim.simulators.task_parts import (ROLLOUT_METRICS, Coefficients, answer_mask, approx_kl,
                                             predicted_entropy_change, regulariser_logit_grads,
                                             starting_params, success_metrics)

POLICY_METRICS = ("accuracy", "accuracy_hard", "accuracy_mid", "accuracy_easy", "entropy",
                  "entropy_hard", "entropy_mid", "entropy_easy", "pass_auc", "abandoned",
                  "newly_solved", "regressed", "entropy_change", "entropy_change_predicted",
                  "solved_hard")
"""What the bandit records of its policy at every step: ``training_loop.SUCCESS_METRICS``, the mean
entropy of the prompts' answer distributions (overall and per difficulty bucket), its change over
the step and the change's first-order prediction."""


@dataclass(frozen=True)
class BanditTask:
    """P prompts with K answers each, and the policy's fixed parts."""

    rewards: np.ndarray
    """(P, K) reward of each answer; an answer is *correct* when its reward is 1."""
    offsets: np.ndarray
    """(P, K) starting logits (tabular) or the fixed offsets b (shared)."""
    features: np.ndarray | None
    """(P, K, D) fixed features Phi of the shared policy; None for the tabular policy."""

    @property
    def num_prompts(self) -> int:
        return self.rewards.shape[0]

    @property
    def correct(self) -> np.ndarray:
        """(P, K) True for correct answers."""
        return self.rewards == 1.0

    def initial_params(self, num_seeds: int) -> np.ndarray:
        """Trainable parameters of every seed: logits (S, P, K) for tabular, theta (S, D) for
        shared."""
        return starting_params(self.offsets, self.features, num_seeds)

    def logits(self, params: np.ndarray, prompts: np.ndarray | None = None) -> np.ndarray:
        """Logits of every seed: (S, P, K), or (S, C, K) for ``prompts`` of shape (S, C)."""
        if self.features is None:
            if prompts is None:
                return params
            return params[np.arange(params.shape[0])[:, None], prompts]
        if prompts is None:
            return self.offsets + np.einsum("pkd,sd->spk", self.features, params)
        return self.offsets[prompts] + np.einsum("sckd,sd->sck", self.features[prompts], params)

    def backprop(self, logit_grads: np.ndarray, prompts: np.ndarray | None = None) -> np.ndarray:
        """Gradient with respect to the parameters from gradients with respect to the logits.

        ``logit_grads`` is (S, P, K), or (S, C, K) for ``prompts`` (S, C); a prompt that appears
        more than once in a seed's row gets the sum of its gradients.
        """
        if self.features is None:
            if prompts is None:
                return logit_grads
            grads = np.zeros((logit_grads.shape[0], self.num_prompts, logit_grads.shape[-1]))
            np.add.at(grads, (np.arange(logit_grads.shape[0])[:, None], prompts), logit_grads)
            return grads
        features = self.features if prompts is None else self.features[prompts]
        pattern = "spk,pkd->sd" if prompts is None else "sck,sckd->sd"
        return np.einsum(pattern, logit_grads, features)

    def success(self, logits: np.ndarray, prompts: np.ndarray | None = None) -> np.ndarray:
        """Success rate (probability of a correct answer) per seed and prompt."""
        right = self.correct if prompts is None else self.correct[prompts]
        return success_rate(np.exp(log_softmax(logits)), right)

    # -- what the shared training loop (training_loop) asks of a task ---------------------------

    metric_names = POLICY_METRICS + ROLLOUT_METRICS

    def sample(self, params: np.ndarray, prompts: np.ndarray, group_size: int,
               rng: np.random.Generator) -> np.ndarray:
        """G answers per (seed, prompt) of ``prompts`` (S, C): (S, C, G) answer indices."""
        return sample_answers(self.logits(params, prompts), group_size, rng)

    def score(self, prompts: np.ndarray, answers: np.ndarray) -> np.ndarray:
        """Rewards (S, C, G) of sampled answers."""
        return self.rewards[prompts[..., None], answers]

    def update_batch(self, params: np.ndarray, prompts: np.ndarray, answers: np.ndarray,
                     reference: np.ndarray, stale: np.ndarray | None = None,
                     stale_params: np.ndarray | None = None) -> "BanditUpdate":
        """The rollout's groups ready for minibatch updates, with their log-probabilities under
        ``params`` (under ``stale_params`` for the groups marked ``stale`` (S, B))."""
        return BanditUpdate(self, prompts, answers, reference, params, stale, stale_params)

    def group_inputs(self, logits: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The policy inputs ``names`` that every answer of a prompt's group shares, each (S, P):
        ``entropy``, the entropy of the prompt's answer distribution (an answer is one token)."""
        for name in names:
            if name != "entropy":
                raise ValueError(f"the answers of a bandit group differ in their {name}; only "
                                 f"the entropy is the same for all of them")
        log_pi = log_softmax(logits)
        return {"entropy": -np.sum(np.exp(log_pi) * log_pi, axis=-1)} if names else {}

    def expected_direction(self, logits: np.ndarray, method: Method, group_size: int,
                           values: np.ndarray, reference: np.ndarray, coefficients: Coefficients,
                           keep_probability: np.ndarray, **group_inputs
                           ) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt, the expected ascent c(p) pi (r - p) of one group's policy-gradient estimate
        (the gain identity of ``ngrpo_sim.analysis.landscape``, at each prompt's ``group_inputs``
        for an estimator that reads them; for PPO's r - V, c = 1) and the gradient of the KL and
        entropy terms, both with respect to the logits (S, P, K). Every answer is one token, so all
        loss aggregations agree."""
        probs = np.exp(log_softmax(logits))
        success = success_rate(probs, self.correct)
        # PPO's r - V: a baseline that does not depend on the sampled group leaves the expected
        # gradient at c = 1.
        gain = 1.0 if method.advantage.uses_values else expected_gain(method, group_size, success,
                                                                      **group_inputs)
        ascent = np.asarray(gain)[..., None] * probs * (self.correct - success[..., None])
        return ascent, regulariser_logit_grads(logits, reference, coefficients)

    def expected_approx_kl(self, logits: np.ndarray, new_logits: np.ndarray) -> np.ndarray:
        """KL(pi_old || pi_new) averaged over prompts: what ``approx_kl`` estimates from the sampled
        answers."""
        log_pi = log_softmax(logits)
        return np.sum(np.exp(log_pi) * (log_pi - log_softmax(new_logits)), axis=-1).mean(1)

    def measure(self, logits: np.ndarray) -> np.ndarray:
        """What the metrics read of a policy: its logits (S, P, K)."""
        return logits

    def policy_metrics(self, logits: np.ndarray, initial_success: np.ndarray, ks: np.ndarray
                       ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Metrics of the policy on all prompts (means over prompts, one value per seed) and pass@k
        (S, len(ks))."""
        log_pi = log_softmax(logits)
        pi = np.exp(log_pi)
        success = success_rate(pi, self.correct)
        entropy = -np.sum(pi * log_pi, axis=-1)
        buckets = difficulty_masks(initial_success)
        metrics, pass_at_k = success_metrics(success, initial_success, ks, buckets)
        metrics["entropy"] = entropy.mean(1)
        for bucket, members in buckets.items():
            metrics[f"entropy_{bucket}"] = (entropy[:, members].mean(1) if members.any()
                                            else np.full(success.shape[0], np.nan))
        return metrics, pass_at_k

    def entropy_prediction(self, logits: np.ndarray, new_logits: np.ndarray
                           ) -> dict[str, np.ndarray]:
        """The first-order prediction -Cov(log pi, dz) of the step's entropy change, averaged over
        prompts."""
        change = predicted_entropy_change(logits, new_logits - logits)
        return {"entropy_change_predicted": change.mean(1)}


class BanditUpdate:
    """One rollout's used groups (B slots per seed; the loop marks the valid ones) and their
    log-probabilities under the rollout policy, for the minibatch updates of
    ``training_loop.apply_rollout``. The groups marked ``stale`` (S, B) were sampled by
    ``stale_params`` instead (a release-assembled batch's carried rows), and their ratios are
    taken against that policy."""

    def __init__(self, task: BanditTask, prompts: np.ndarray, answers: np.ndarray,
                 reference: np.ndarray, params: np.ndarray, stale: np.ndarray | None = None,
                 stale_params: np.ndarray | None = None):
        self.task, self.prompts, self.answers = task, prompts, answers
        self.old_log_pi = log_softmax(task.logits(params, prompts))
        if stale is not None:
            self.old_log_pi = np.where(stale[..., None],
                                       log_softmax(task.logits(stale_params, prompts)),
                                       self.old_log_pi)
        self.old_logp = np.take_along_axis(self.old_log_pi, answers, axis=-1)
        num_seeds, batch = prompts.shape
        self.num_answers = task.rewards.shape[1]
        # Flat (seed, slot, answer) index of every sampled answer, to scatter-add per-answer
        # gradients with bincount.
        slots = np.arange(num_seeds * batch).reshape(num_seeds, batch, 1)
        self.chosen = (slots * self.num_answers + answers).ravel()
        self.reference_logits = np.take_along_axis(reference, prompts[..., None], axis=1)

    def policy_inputs(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The rollout policy's quantities an estimator declares (``advantages.POLICY_INPUTS``),
        each (S, B, G): ``log_prob`` of each sampled answer, and ``entropy`` of its prompt's answer
        distribution (an answer is one token)."""
        log_pi = self.old_log_pi
        entropy = -np.sum(np.exp(log_pi) * log_pi, axis=-1, keepdims=True)
        inputs = {"log_prob": self.old_logp,
                  "entropy": np.broadcast_to(entropy, self.answers.shape)}
        return {name: inputs[name] for name in names}

    def gradient(self, params: np.ndarray, advantages: np.ndarray, in_part: np.ndarray,
                 method: Method, coefficients: Coefficients
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The parameter gradient of the clipped loss of the groups ``in_part`` (S, B), or of the
        answers ``in_part`` (S, B, G), plus per seed the answers clipped at the low and at the
        high bound and the answers trained on. Each answer is one token, so the three loss
        aggregations coincide: each answer of a minibatch weighs 1 / (answers in the minibatch).
        KL to the starting policy and the entropy bonus are computed exactly from the full
        distributions of the prompts in the minibatch (a language model can only estimate them
        from samples), each prompt's weighed by its share of the minibatch's answers."""
        num_seeds, batch = self.prompts.shape
        logits = self.task.logits(params, self.prompts)
        log_pi = log_softmax(logits)
        logp = np.take_along_axis(log_pi, self.answers, axis=-1)
        surrogate = clipped_surrogate(np.exp(logp - self.old_logp), advantages, method.clip_low,
                                      method.clip_high)
        mask = answer_mask(in_part, self.answers.shape).astype(np.float64)
        weights = token_weights(mask, "token-mean")  # over each seed's whole minibatch
        grad_logp = surrogate.grad_logp * weights
        size = num_seeds * batch * self.num_answers
        logit_grads = np.bincount(self.chosen, grad_logp.ravel(), minlength=size)
        logit_grads = (logit_grads.reshape(num_seeds, batch, self.num_answers)
                       - grad_logp.sum(-1)[..., None] * np.exp(log_pi))
        if coefficients.kl or coefficients.entropy:
            answers_in_group = mask.sum(axis=-1)
            group_weights = answers_in_group / np.maximum(
                answers_in_group.sum(axis=1, keepdims=True), 1)
            logit_grads += group_weights[..., None] * regulariser_logit_grads(
                logits, self.reference_logits, coefficients)
        return (self.task.backprop(logit_grads, self.prompts),
                np.sum(surrogate.clipped_low * mask, axis=(1, 2)),
                np.sum(surrogate.clipped_high * mask, axis=(1, 2)), mask.sum(axis=(1, 2)))

    def statistics(self, params: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """After the updates: verl's approx_kl between the rollout policy and ``params`` over the
        answers of the ``valid`` groups (S, B), or the ``valid`` answers (S, B, G)."""
        log_ratio = np.take_along_axis(log_softmax(self.task.logits(params, self.prompts)),
                                       self.answers, axis=-1) - self.old_logp
        return {"approx_kl": approx_kl(log_ratio, answer_mask(valid, self.answers.shape))}


def success_rate(probs: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """The probability of a correct answer from the answers' probabilities (..., K) and which are
    correct (broadcasting): their sum, kept inside [0, 1] (with several correct answers it can
    round to 1 + 1 ulp)."""
    return as_probability(np.sum(probs * correct, axis=-1))


def check_task_options(num_prompts: int, num_answers: int, correct_answers: int, profile,
                       policy: str,
                       feature_dim: int, feature_signal: float, rewards: str) -> None:
    """Refuse options ``make_task`` cannot build a task from, naming the option and the value."""
    checks.integer("num_prompts", num_prompts, low=1)
    num_answers = checks.integer("num_answers", num_answers, low=2)
    checks.integer("correct_answers", correct_answers, low=1, high=num_answers - 1)
    parse_profile(profile)
    checks.choice("policy", policy, POLICIES)
    checks.choice("rewards", rewards, REWARD_KINDS)
    checks.integer("feature_dim", feature_dim, low=1)
    checks.number("feature_signal", feature_signal, low=0.0)


def make_task(num_prompts: int = 256, num_answers: int = 16, correct_answers: int = 1,
              profile="base",
              policy: str = "tabular", feature_dim: int = 16, feature_signal: float = 0.5,
              rewards: str = "binary", logit_spread: float = 1.0, seed: int = 0) -> BanditTask:
    """Build a task whose prompts start at the profile's success rates, exactly.

    Wrong answers get logits drawn from N(0, logit_spread^2) (graded rewards: wrong answers earn
    U(0, 0.9)); the correct answers share one logit, set in closed form so that each prompt starts
    at its target success rate p: with A = sum of exp(correct logits) and W = sum of exp(wrong
    logits), shifting the correct logits by log(p W / ((1 - p) A)) gives success p.
    """
    check_task_options(num_prompts, num_answers, correct_answers, profile, policy, feature_dim,
                       feature_signal, rewards)
    logit_spread = checks.number("logit_spread", logit_spread, low=0.0)
    rng = np.random.default_rng(seed)
    target, right, logits, reward_table = draw_prompts(rng, profile, num_prompts, num_answers,
                                                       correct_answers, (num_prompts, num_answers),
                                                       logit_spread, rewards)
    wrong_mass = np.sum(np.exp(logits) * ~right, axis=1)
    correct_logit = np.log(target * wrong_mass / ((1 - target) * correct_answers))
    logits = np.where(right, correct_logit[:, None], logits)
    features = None
    if policy == "shared":
        # Random features make prompts interfere; the signal along one direction lets what is
        # learned on one prompt transfer to the others, as "being correct" is a shared concept to a
        # network.
        direction, noise = draw_features(rng, (num_prompts, num_answers), feature_dim)
        centred_correct = right - correct_answers / num_answers
        features = noise + feature_signal * centred_correct[..., None] * direction
    return BanditTask(rewards=reward_table, offsets=logits, features=features)


def draw_prompts(rng: np.random.Generator, profile, num_prompts: int, num_answers: int,
                 correct_answers: int, logits_shape: tuple, logit_spread: float,
                 rewards: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The random draws that start every task, in this order: the target success rates (P,), which
    ``correct_answers`` of the ``num_answers`` (or final tokens) are correct (P, K), logits from
    N(0, logit_spread^2) shaped ``logits_shape``, and the reward table (P, K) (graded: wrong ones
    earn U(0, 0.9))."""
    target = starting_success(profile, num_prompts, rng)
    right = np.zeros((num_prompts, num_answers), dtype=bool)
    right[:, :correct_answers] = True
    right = rng.permuted(right, axis=1)
    logits = rng.normal(scale=logit_spread, size=logits_shape)
    reward_table = right.astype(np.float64)
    if rewards == "graded":
        reward_table = np.where(right, 1.0, rng.uniform(0.0, 0.9, size=right.shape))
    return target, right, logits, reward_table


def draw_features(rng: np.random.Generator, shape: tuple, feature_dim: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The shared policy's random draws: a unit direction (D,) and features N(0, 1/D) shaped ``shape
    + (D,)``."""
    direction = rng.normal(size=feature_dim)
    direction /= np.linalg.norm(direction)
    return direction, rng.normal(scale=1.0 / np.sqrt(feature_dim), size=shape + (feature_dim,))


def sample_answers(logits: np.ndarray, group_size: int, rng: np.random.Generator) -> np.ndarray:
    """G answers per (seed, prompt) drawn from softmax(logits): (S, C, K) -> (S, C, G) answer
    indices."""
    cdf = np.cumsum(np.exp(log_softmax(logits)), axis=-1)
    uniforms = rng.random(logits.shape[:-1] + (group_size,))
    answers = np.sum(uniforms[..., None] >= cdf[..., None, :-1], axis=-1)
    return answers


"""Training dynamics of a method on a bandit task, vectorised over seeds and prompts.

One training step, as in the release's trainer:

1. **Rollout.** Each seed draws prompts without replacement and samples G answers per prompt from the current
   policy. With ``refill`` the draw continues past B prompts until B groups survive the method's group filter (as
   DAPO's and NGRPO's dynamic sampling do; at most ``max_candidates`` prompts are looked at); without it, the B
   drawn groups are filtered and the step trains on what is left.
2. **Advantages** from the method's estimator (PPO: r - V with a per-prompt value learned alongside).
3. **Updates.** The kept groups are split into ``minibatches`` parts; each part gives one optimiser step on the
   clipped surrogate, with ratios taken against the rollout policy; ``epochs`` passes over the batch. Every answer
   of the bandit is a single token, so the three loss aggregations coincide: each answer of a minibatch weighs
   1 / (answers in the minibatch). KL to the starting policy and the entropy bonus are computed exactly from the
   full distributions of the prompts in the minibatch (a language model can only estimate them from samples).

Clipping needs a ratio away from 1. With the tabular policy and SGD a prompt's logits only move when that prompt
is trained on, and every prompt sits in one minibatch per epoch, so clipping acts only with ``epochs > 1``. Adam's
momentum moves every logit at every update, and the shared policy moves every prompt with every update, so there
later minibatches see ratios away from 1.

``mode="expected"`` replaces steps 1-3 by their expectation at first order: the gain identity of
``ngrpo_sim.landscape`` gives the expected on-policy gradient c(p) pi (r - p) of each prompt's group, weighted as
the sampled step weighs it on average (every prompt has the same chance to be drawn; a group that survives the
filter shares its minibatch with 1 + Bin(n, kappa) survivors, kappa the mean chance to survive), applied once per
minibatch update without clipping. Sampled minus expected shows what sampling noise and clipping add. For SGD on
the tabular policy with a method that drops no group, one expected step equals the mean of sampled steps exactly;
with a filter the survivors' count is treated as independent of the group's own outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ngrpo_sim import _checks
from ngrpo_sim.bandit import (BanditTask, check_task_options, difficulty_masks, make_task,
                              sample_answers)
from ngrpo_sim.landscape import binomial_pmf, canonical_groups, expected_gain
from ngrpo_sim.methods import Method, get_method, token_weights
from ngrpo_sim.metrics import log_softmax, pass_at_k_auc, pass_at_k_exact, powers_of_two_up_to
from ngrpo_sim.optim import OPTIMIZERS, Optimizer
from ngrpo_sim.surrogate import clipped_surrogate

MODES = ("sampled", "expected")
ABANDONED_BELOW = 1e-3
"""A prompt counts as abandoned while its success rate is below this."""
SOLVED_FROM = 0.5
"""A prompt counts as solved once its success rate reaches this; newly solved if it started below."""
REGRESSED_SHARE = 0.5
"""A prompt counts as regressed once its success rate falls below this share of its starting value: training
made it worse, the signature of interference (shared policy) or of an unstable update."""
PASS_AT_K_MAX = 256


@dataclass(frozen=True)
class DynamicsConfig:
    """Everything one simulated training run needs, besides the method."""

    policy: str = "tabular"
    """``tabular`` (free logits per prompt: no interference) or ``shared`` (log-linear, parameters shared by all
    prompts, like a network)."""
    num_prompts: int = 256
    """P, the size of the training set."""
    num_answers: int = 16
    """K, candidate answers per prompt. More answers means more ways to be wrong and more entropy to lose."""
    right_answers: int = 1
    """How many of the K answers of each prompt are right."""
    profile: str = "base"
    """Starting success rates: a name in ``bandit.PROFILES`` or comma-separated rates cycled over prompts."""
    rewards: str = "binary"
    """``binary`` (right 1, wrong 0) or ``graded`` (wrong answers earn partial credit in [0, 0.9])."""
    feature_dim: int = 16
    """D, the size of the shared policy's parameter vector; smaller D means more interference between prompts."""
    feature_signal: float = 0.5
    """Strength of the feature direction that all right answers share (shared policy): 0 leaves only
    interference, larger values make learning transfer between prompts."""
    batch_prompts: int = 64
    """B, prompts per rollout batch (groups kept per step when refilling)."""
    group_size: int = 8
    """G, answers sampled per prompt."""
    minibatches: int = 4
    """Optimiser steps per epoch over the rollout batch (the release: 4). The first sees ratio 1."""
    epochs: int = 1
    """Passes over the rollout batch. Above 1 the tabular policy's ratios leave 1 and clipping acts."""
    refill: bool = True
    """Draw more prompts until B groups survive the group filter (the release's dynamic sampling)."""
    max_candidates: int | None = None
    """Most prompts a refilling rollout looks at (default: min(P, 4 B))."""
    optimizer: str = "adam"
    """``adam`` or ``sgd``."""
    lr: float = 0.05
    """Learning rate of the policy."""
    value_lr: float = 0.1
    """Step size of PPO's per-prompt value V towards the mean reward of its group."""
    kl_coef: float | None = None
    """KL-to-start coefficient; None takes the method preset's."""
    entropy_coef: float | None = None
    """Entropy bonus coefficient; None takes the method preset's."""
    steps: int = 200
    """Training steps (rollouts)."""
    seeds: int = 16
    """Independent runs on the same task, differing in their sampling."""
    mode: str = "sampled"
    """``sampled`` (real rollouts) or ``expected`` (the deterministic expected update, see the module doc)."""
    seed: int = 0
    """Seeds the task (prompts, starting logits, features) and the sampling."""

    def __post_init__(self):
        check_task_options(self.num_prompts, self.num_answers, self.right_answers, self.profile,
                           self.policy, self.feature_dim, self.feature_signal, self.rewards)
        _checks.integer("group_size", self.group_size, low=2)
        _checks.integer("batch_prompts", self.batch_prompts, low=1)
        if self.batch_prompts > self.num_prompts:
            raise ValueError(f"batch_prompts={self.batch_prompts} exceeds num_prompts={self.num_prompts}; prompts "
                             f"are drawn without replacement")
        _checks.integer("minibatches", self.minibatches, low=1, high=self.batch_prompts)
        _checks.integer("epochs", self.epochs, low=1)
        if self.max_candidates is not None:
            _checks.integer("max_candidates", self.max_candidates, low=self.batch_prompts, high=self.num_prompts)
        _checks.choice("optimizer", self.optimizer, OPTIMIZERS)
        _checks.number("lr", self.lr, low=0.0, low_open=True)
        _checks.number("value_lr", self.value_lr, low=0.0, high=1.0)
        if self.kl_coef is not None:
            _checks.number("kl_coef", self.kl_coef, low=0.0)
        if self.entropy_coef is not None:
            _checks.number("entropy_coef", self.entropy_coef)
        _checks.integer("steps", self.steps, low=1)
        _checks.integer("seeds", self.seeds, low=1)
        _checks.choice("mode", self.mode, MODES)
        _checks.integer("seed", self.seed, low=0)
        if self.mode == "expected" and self.rewards != "binary":
            raise ValueError(f"mode='expected' needs binary rewards (the gain identity), got rewards={self.rewards!r}")

    @property
    def candidates(self) -> int:
        """Prompts drawn per rollout."""
        if not self.refill:
            return self.batch_prompts
        return self.max_candidates or min(self.num_prompts, 4 * self.batch_prompts)

    def memory_bytes(self) -> float:
        """An upper estimate of the peak memory (bytes) that ``simulate`` needs for one method under
        this config, so that a run beyond the machine is refused before it starts.

        Each term is an array family of the run; its factor is an upper envelope of the peaks that
        tracemalloc measured over both policies, modes and optimisers (tests/test_dynamics.py checks
        that the estimate is never below the measured peak and at most 2.5 times above it):

        * S x P x K float64 arrays: every prompt's logits, probabilities and policy metrics
          (tabular: also the parameters and their gradient, Adam: its two moments; expected mode:
          the exact update of every prompt);
        * sampled: S x B x G x K comparisons drawing the answers, S x B x K arrays of the batch, and
          for the shared policy the batch's S x B x K x D features;
        * the shared policy's fixed P x K x D features;
        * the record: (steps + 1) x S values of every metric and of pass@k.
        """
        seeds, prompts, answers = self.seeds, self.num_prompts, self.num_answers
        batch, features = self.batch_prompts, self.feature_dim
        tabular, sampled = self.policy == "tabular", self.mode == "sampled"
        adam = self.optimizer == "adam"
        per_prompt = 7.0 + 1.5 * tabular + 2.0 * (tabular and adam) + 7.0 * (not sampled)
        total = 8.0 * per_prompt * seeds * prompts * answers
        if sampled:
            total += 7.0 * seeds * batch * self.group_size * answers
            total += 8.0 * 10.0 * seeds * batch * answers
            total += 8.0 * 1.0 * seeds * batch * answers * features * (not tabular)
        total += 8.0 * 2.2 * prompts * answers * features * (not tabular)
        recorded = len(METRICS) + len(powers_of_two_up_to(PASS_AT_K_MAX))
        total += 8.0 * 1.2 * (self.steps + 1) * seeds * recorded
        return total + 2 ** 18

    def build_task(self) -> BanditTask:
        return make_task(self.num_prompts, self.num_answers, self.right_answers, self.profile, self.policy,
                         self.feature_dim, self.feature_signal, self.rewards, seed=self.seed)


@dataclass
class Rollout:
    """The random part of a step: which prompts each seed drew and which answers it sampled."""

    prompts: np.ndarray
    """(S, C) prompt indices, distinct within a seed, in the order they were drawn."""
    answers: np.ndarray
    """(S, C, G) sampled answer indices."""


@dataclass
class TrainState:
    """What changes during training."""

    params: np.ndarray
    optimizer: Optimizer
    values: np.ndarray
    """(S, P) PPO's value estimates (zeros and unused for other methods)."""


@dataclass
class Coefficients:
    """The method's regularisation coefficients after the config's overrides."""

    kl: float
    entropy: float

    @classmethod
    def of(cls, method: Method, config: DynamicsConfig) -> "Coefficients":
        return cls(method.kl_coef if config.kl_coef is None else config.kl_coef,
                   method.entropy_coef if config.entropy_coef is None else config.entropy_coef)


def draw_rollout(task: BanditTask, method: Method, params: np.ndarray, config: DynamicsConfig,
                 rng: np.random.Generator) -> Rollout:
    """Draw prompts without replacement and sample a group of answers for each, in rounds of B prompts.

    Without refill one round is drawn. With refill, rounds continue until every seed holds B groups that pass
    the method's filter, or ``config.candidates`` prompts have been drawn.
    """
    num_seeds, batch = params.shape[0], config.batch_prompts
    order = rng.permuted(np.tile(np.arange(task.num_prompts), (num_seeds, 1)), axis=1)
    kept = np.zeros(num_seeds, dtype=int)
    prompts, answers = [], []
    for start in range(0, config.candidates, batch):
        round_prompts = order[:, start:min(start + batch, config.candidates)]
        round_answers = sample_answers(task.logits(params, round_prompts), config.group_size, rng)
        prompts.append(round_prompts)
        answers.append(round_answers)
        kept += method.group_filter.keep(task.rewards[round_prompts[..., None], round_answers]).sum(axis=1)
        if not config.refill or np.all(kept >= batch):
            break
    return Rollout(np.concatenate(prompts, axis=1), np.concatenate(answers, axis=1))


def regulariser_logit_grads(logits: np.ndarray, reference_logits: np.ndarray, coefficients: Coefficients
                            ) -> np.ndarray:
    """Gradient w.r.t. the logits of kl * KL(pi || pi_ref) - entropy * H(pi), per prompt."""
    log_pi = log_softmax(logits)
    pi = np.exp(log_pi)
    grads = np.zeros_like(logits)
    if coefficients.kl:
        log_ratio = log_pi - log_softmax(reference_logits)
        kl = np.sum(pi * log_ratio, axis=-1, keepdims=True)
        grads += coefficients.kl * pi * (log_ratio - kl)
    if coefficients.entropy:
        entropy = -np.sum(pi * log_pi, axis=-1, keepdims=True)
        grads += coefficients.entropy * pi * (log_pi + entropy)
    return grads


def apply_rollout(task: BanditTask, method: Method, config: DynamicsConfig, state: TrainState, rollout: Rollout,
                  reference: np.ndarray) -> dict[str, np.ndarray]:
    """Steps 2-3 of a sampled training step for a given rollout; updates ``state``, returns rollout statistics.

    ``reference`` holds the starting logits (S, P, K) for the KL term.
    """
    num_seeds = rollout.prompts.shape[0]
    batch, parts = config.batch_prompts, config.minibatches
    coefficients = Coefficients.of(method, config)
    all_rewards = task.rewards[rollout.prompts[..., None], rollout.answers]
    keep = method.group_filter.keep(all_rewards)
    kept_before = np.cumsum(keep, axis=1) - keep
    examined = kept_before < batch
    used = keep & examined
    right = all_rewards == 1.0
    num_examined = examined.sum(axis=1)
    statistics = {
        "share_all_wrong": np.sum(examined & ~right.any(-1), axis=1) / num_examined,
        "share_all_right": np.sum(examined & right.all(-1), axis=1) / num_examined,
        "share_mixed": np.sum(examined & right.any(-1) & ~right.all(-1), axis=1) / num_examined,
    }

    # The used groups, compacted in drawn order into B slots per seed (unused slots are padding).
    slots = np.argsort(~used, axis=1, kind="stable")[:, :batch]
    valid = np.take_along_axis(used, slots, axis=1)
    prompts = np.take_along_axis(rollout.prompts, slots, axis=1)
    answers = np.take_along_axis(rollout.answers, slots[..., None], axis=1)
    rewards = np.take_along_axis(all_rewards, slots[..., None], axis=1)
    values = np.take_along_axis(state.values, prompts, axis=1)[..., None] if method.advantage.uses_values else None
    advantages = method.advantage(rewards, values)
    num_used = valid.sum(axis=1, keepdims=True)
    # Equal consecutive minibatches of the used groups.
    minibatch = np.where(valid, np.arange(batch) * parts // np.maximum(num_used, 1), -1)
    zero_answers = np.sum(examined, axis=1) * config.group_size - np.sum(valid[..., None] & (advantages != 0.0),
                                                                          axis=(1, 2))
    statistics["share_zero_advantage"] = zero_answers / np.maximum(num_examined * config.group_size, 1)
    statistics["kept_groups"] = num_used[:, 0].astype(np.float64)

    old_logp = np.take_along_axis(log_softmax(task.logits(state.params, prompts)), answers, axis=-1)
    num_answers = task.rewards.shape[1]
    # Flat (seed, slot, answer) index of every sampled answer, to scatter-add per-answer gradients with bincount.
    chosen = (np.arange(num_seeds * batch).reshape(num_seeds, batch, 1) * num_answers + answers).ravel()
    reference_logits = np.take_along_axis(reference, prompts[..., None], axis=1)
    clipped_low = clipped_high = tokens = 0.0
    for _ in range(config.epochs):
        for part in range(parts):
            in_part = minibatch == part
            logits = task.logits(state.params, prompts)
            log_pi = log_softmax(logits)
            logp = np.take_along_axis(log_pi, answers, axis=-1)
            surrogate = clipped_surrogate(np.exp(logp - old_logp), advantages, method.clip_low, method.clip_high)
            mask = np.broadcast_to(in_part[..., None], answers.shape).astype(np.float64)
            weights = token_weights(mask, "token-mean")  # over each seed's whole minibatch
            grad_logp = surrogate.grad_logp * weights
            logit_grads = np.bincount(chosen, grad_logp.ravel(), minlength=num_seeds * batch * num_answers)
            logit_grads = logit_grads.reshape(num_seeds, batch, num_answers) - grad_logp.sum(-1)[..., None] * np.exp(
                log_pi)
            if coefficients.kl or coefficients.entropy:
                group_weights = in_part / np.maximum(in_part.sum(axis=1, keepdims=True), 1)
                logit_grads += group_weights[..., None] * regulariser_logit_grads(logits, reference_logits,
                                                                                  coefficients)
            state.params = state.optimizer.step(state.params, task.backprop(logit_grads, prompts))
            clipped_low += np.sum(surrogate.clipped_low * mask, axis=(1, 2))
            clipped_high += np.sum(surrogate.clipped_high * mask, axis=(1, 2))
            tokens += mask.sum(axis=(1, 2))

    if method.advantage.uses_values:
        seeds = np.arange(num_seeds)[:, None]
        update = config.value_lr * (rewards.mean(axis=-1) - values[..., 0])
        state.values[seeds, prompts] += np.where(valid, update, 0.0)

    log_ratio = np.take_along_axis(log_softmax(task.logits(state.params, prompts)), answers, axis=-1) - old_logp
    k3 = np.sum(np.where(valid[..., None], np.expm1(log_ratio) - log_ratio, 0.0), axis=(1, 2))
    statistics["clipfrac_low"] = clipped_low / np.maximum(tokens, 1)
    statistics["clipfrac_high"] = clipped_high / np.maximum(tokens, 1)
    statistics["approx_kl"] = k3 / np.maximum(num_used[:, 0] * config.group_size, 1)
    return statistics


def group_outcome_probabilities(method: Method, group_size: int, success: np.ndarray,
                                values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For success rates (S, P), the probability that a group is kept and the expected share of its answers with
    zero (filtered) advantage, exactly: from the canonical groups with k right answers, or for PPO's r - V from
    the chance that an answer's reward equals V."""
    if method.advantage.uses_values:
        zero_share = success * (values == 1.0) + (1 - success) * (values == 0.0)
        return np.ones_like(success), zero_share
    groups = canonical_groups(group_size)
    kept = method.group_filter.keep(groups)
    zero_share = np.mean(method.advantages(groups) == 0.0, axis=-1)
    pmf = binomial_pmf(group_size, success)
    return pmf @ kept, pmf @ zero_share


def _expected_examined(config: DynamicsConfig, keep_probability: np.ndarray) -> np.ndarray:
    """Expected number of groups a rollout examines: B, or with refill enough to keep B, at most the candidates."""
    if not config.refill:
        return np.full_like(keep_probability, float(config.batch_prompts))
    wanted = config.batch_prompts / np.maximum(keep_probability, 1e-300)
    return np.minimum(float(config.candidates), wanted)


def expected_step(task: BanditTask, method: Method, config: DynamicsConfig, state: TrainState,
                  reference: np.ndarray) -> dict[str, np.ndarray]:
    """The deterministic counterpart of ``draw_rollout`` + ``apply_rollout`` (see the module docstring)."""
    coefficients = Coefficients.of(method, config)
    logits = task.logits(state.params)
    log_pi = log_softmax(logits)
    probs = np.exp(log_pi)
    success = np.sum(probs * task.right, axis=-1)
    group_size, num_prompts = config.group_size, task.num_prompts
    # PPO's r - V: a baseline that does not depend on the sampled group leaves the expected gradient at c = 1.
    gain = 1.0 if method.advantage.uses_values else expected_gain(method, group_size, success)
    ascent = np.asarray(gain)[..., None] * probs * (task.right - success[..., None])
    keep_probability, zero_share = group_outcome_probabilities(method, group_size, success, state.values)
    mean_keep = keep_probability.mean(axis=1)
    examined = _expected_examined(config, mean_keep)
    # A kept group shares its minibatch with the other kept groups, 1 + Bin(examined - 1, kappa) in all, and
    # E[1 / (1 + Bin(n, q))] = (1 - (1 - q)^(n + 1)) / ((n + 1) q); times the chance examined / P of being drawn:
    with np.errstate(divide="ignore"):
        survivors = -np.expm1(examined * np.log1p(-mean_keep))
    weight = np.where(mean_keep > 0, survivors / np.maximum(mean_keep, 1e-300), examined) / num_prompts
    policy_grads = -weight[:, None, None] * ascent
    regulariser = (weight[:, None] * keep_probability)[..., None] * regulariser_logit_grads(logits, reference,
                                                                                           coefficients)
    param_grads = task.backprop(policy_grads + regulariser)
    for _ in range(config.epochs * config.minibatches):
        state.params = state.optimizer.step(state.params, param_grads)
    if method.advantage.uses_values:
        state.values += config.value_lr * (config.batch_prompts / num_prompts) * (success - state.values)
    new_log_pi = log_softmax(task.logits(state.params))
    kl = np.sum(probs * (log_pi - new_log_pi), axis=-1)
    all_wrong, all_right = (1 - success) ** group_size, success ** group_size
    kept = np.minimum(config.batch_prompts, examined * mean_keep)
    zeros = np.zeros(logits.shape[0])
    return {
        "share_all_wrong": all_wrong.mean(1), "share_all_right": all_right.mean(1),
        "share_mixed": (1 - all_wrong - all_right).mean(1), "share_zero_advantage": zero_share.mean(1),
        "kept_groups": kept,
        "clipfrac_low": zeros, "clipfrac_high": zeros, "approx_kl": kl.mean(1),
    }


ROLLOUT_METRICS = ("share_all_wrong", "share_all_right", "share_mixed", "share_zero_advantage", "kept_groups",
                   "clipfrac_low", "clipfrac_high", "approx_kl")
POLICY_METRICS = ("accuracy", "accuracy_hard", "accuracy_mid", "accuracy_easy", "entropy", "entropy_hard",
                  "entropy_mid", "entropy_easy", "pass_auc", "abandoned", "newly_solved", "regressed",
                  "entropy_change", "entropy_change_predicted")
METRICS = POLICY_METRICS + ROLLOUT_METRICS


@dataclass
class Trajectory:
    """The record of one method's run: every metric per step (row 0 = before training) and seed."""

    method: str
    config: DynamicsConfig
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    """name -> (steps + 1, S). Rollout metrics are NaN in row 0."""
    pass_at_k: np.ndarray | None = None
    """(steps + 1, S, len(ks)) exact pass@k averaged over prompts."""
    ks: np.ndarray = field(default_factory=lambda: powers_of_two_up_to(PASS_AT_K_MAX))
    initial_success: np.ndarray | None = None
    """(P,) starting success rate of each prompt."""
    final_success: np.ndarray | None = None
    """(S, P) success rate of each prompt after training."""

    def final(self, name: str) -> np.ndarray:
        """The metric after the last step, one value per seed."""
        return self.metrics[name][-1]


def predicted_entropy_change(logits: np.ndarray, logit_change: np.ndarray) -> np.ndarray:
    """First-order entropy change per prompt: -Cov_{a~pi}(log pi(a), dz(a)) (Cui et al. 2025)."""
    log_pi = log_softmax(logits)
    pi = np.exp(log_pi)
    centred = logit_change - np.sum(pi * logit_change, axis=-1, keepdims=True)
    return -np.sum(pi * log_pi * centred, axis=-1)


def policy_metrics(task: BanditTask, logits: np.ndarray, initial_success: np.ndarray, ks: np.ndarray
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Metrics of the policy on all prompts (means over prompts, one value per seed) and pass@k (S, len(ks))."""
    log_pi = log_softmax(logits)
    pi = np.exp(log_pi)
    success = np.sum(pi * task.right, axis=-1)
    entropy = -np.sum(pi * log_pi, axis=-1)
    pass_at_k = pass_at_k_exact(success[..., None], ks).mean(axis=1)
    metrics = {"accuracy": success.mean(1), "entropy": entropy.mean(1), "pass_auc": pass_at_k_auc(pass_at_k),
               "abandoned": np.sum(success < ABANDONED_BELOW, axis=1).astype(np.float64),
               "newly_solved": np.sum((success >= SOLVED_FROM) & (initial_success < SOLVED_FROM), axis=1
                                      ).astype(np.float64),
               "regressed": np.sum(success < REGRESSED_SHARE * initial_success, axis=1).astype(np.float64)}
    for bucket, members in difficulty_masks(initial_success).items():
        empty = np.full(success.shape[0], np.nan)
        metrics[f"accuracy_{bucket}"] = success[:, members].mean(1) if members.any() else empty
        metrics[f"entropy_{bucket}"] = entropy[:, members].mean(1) if members.any() else empty
    return metrics, pass_at_k


def check_memory(config: DynamicsConfig, at_once: int = 1) -> None:
    """Refuse, before any work, a run that would need more memory than the machine has available
    now; ``at_once`` runs of it side by side (a sweep's local processes) need that much more."""
    at_once = _checks.integer("at_once", at_once, low=1)
    steps = f"{config.steps} step" + ("s" if config.steps > 1 else "")
    _checks.fits_in_memory(
        f"a run of {config.seeds} seeds x {config.num_prompts} prompts x {config.num_answers} "
        f"answers (batch {config.batch_prompts} x group {config.group_size}, {steps})"
        + (f", {at_once} at once," if at_once > 1 else ""),
        at_once * config.memory_bytes(), "use fewer seeds, prompts, answers or steps"
        + (" or fewer workers" if at_once > 1 else ""))


def simulate(method: Method | str, config: DynamicsConfig = DynamicsConfig(), progress: bool | tqdm = True
             ) -> Trajectory:
    """Train ``method`` on the config's bandit task for every seed at once and record every metric per step.

    ``progress`` is True for a bar of this run's steps, False for none, or an existing bar to
    advance. Raises ValueError for an unknown method or a run that needs more memory than is
    available (``check_memory``).
    """
    method = get_method(method) if isinstance(method, str) else method
    if not isinstance(method, Method):
        raise ValueError(f"method must be a Method or a preset name, got {method!r}")
    check_memory(config)
    task = config.build_task()
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    state = TrainState(task.initial_params(config.seeds), Optimizer(config.optimizer, config.lr),
                       np.zeros((config.seeds, task.num_prompts)))
    reference = task.logits(state.params).copy()
    initial_success = task.success(reference[0])
    trajectory = Trajectory(method.name, config, initial_success=initial_success)
    ks = trajectory.ks
    records = {name: np.full((config.steps + 1, config.seeds), np.nan) for name in METRICS}
    pass_records = np.empty((config.steps + 1, config.seeds, len(ks)))
    logits = reference
    row, pass_records[0] = policy_metrics(task, logits, initial_success, ks)
    for name, value in row.items():
        records[name][0] = value
    bar = tqdm(total=config.steps, desc=method.name, leave=False) if progress is True else progress or None
    for step in range(1, config.steps + 1):
        if config.mode == "sampled":
            rollout = draw_rollout(task, method, state.params, config, rng)
            row = apply_rollout(task, method, config, state, rollout, reference)
        else:
            row = expected_step(task, method, config, state, reference)
        new_logits = task.logits(state.params)
        policy_row, pass_records[step] = policy_metrics(task, new_logits, initial_success, ks)
        row.update(policy_row)
        row["entropy_change"] = row["entropy"] - records["entropy"][step - 1]
        row["entropy_change_predicted"] = predicted_entropy_change(logits, new_logits - logits).mean(1)
        for name, value in row.items():
            records[name][step] = value
        logits = new_logits
        if bar is not None:
            bar.update(1)
    if progress is True:
        bar.close()
    trajectory.metrics, trajectory.pass_at_k = records, pass_records
    trajectory.final_success = task.success(logits)
    return trajectory

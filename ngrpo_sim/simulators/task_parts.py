"""What every task of the training loop computes alike: the coefficients of a method's KL and
entropy terms, the starting parameters, the gradients of those terms, the first-order prediction
of an entropy change, the ``approx_kl`` estimate, the mask of the answers a step trains on, and the
success metrics and their names. A task (``bandit``, ``sequences``, ``long_answers``) calls these
so that the three compute each the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ngrpo_sim.methods.metrics import log_softmax, pass_at_k_auc, pass_at_k_exact
from ngrpo_sim.methods.presets import Method
from ngrpo_sim.simulators.loop_config import (ABANDONED_BELOW, REGRESSED_SHARE, SOLVED_FROM,
                                              LoopConfig)


@dataclass
class Coefficients:
    """The method's regularisation coefficients after the config's overrides."""

    kl: float
    entropy: float

    @classmethod
    def of(cls, method: Method, config: LoopConfig) -> "Coefficients":
        return cls(method.kl_coef if config.kl_coef is None else config.kl_coef,
                   method.entropy_coef if config.entropy_coef is None else config.entropy_coef)


def starting_params(offsets: np.ndarray, features: np.ndarray | None, num_seeds: int) -> np.ndarray:
    """Trainable parameters of every seed for a softmax policy with logits ``offsets`` (tabular:
    ``features`` is None; the logits themselves are trained) or ``offsets + features theta``
    (shared: theta of size D, from 0)."""
    if features is None:
        return np.broadcast_to(offsets, (num_seeds,) + offsets.shape).copy()
    return np.zeros((num_seeds, features.shape[-1]))


def regulariser_logit_grads(logits: np.ndarray, reference_logits: np.ndarray,
                            coefficients: Coefficients) -> np.ndarray:
    """Gradient w.r.t. the logits of kl * KL(pi || pi_ref) - entropy * H(pi), per softmax over the
    last axis."""
    reference_log_pi = log_softmax(reference_logits) if coefficients.kl else None
    return regulariser_grads_from_log_probs(log_softmax(logits), reference_log_pi, coefficients)


def regulariser_grads_from_log_probs(log_pi: np.ndarray, reference_log_pi: np.ndarray | None,
                                     coefficients: Coefficients) -> np.ndarray:
    """``regulariser_logit_grads`` from the log-probabilities of the policy and of the reference
    (which only the KL term reads)."""
    pi = np.exp(log_pi)
    grads = np.zeros_like(log_pi)
    if coefficients.kl:
        log_ratio = log_pi - reference_log_pi
        kl = np.sum(pi * log_ratio, axis=-1, keepdims=True)
        grads += coefficients.kl * pi * (log_ratio - kl)
    if coefficients.entropy:
        entropy = -np.sum(pi * log_pi, axis=-1, keepdims=True)
        grads += coefficients.entropy * pi * (log_pi + entropy)
    return grads


def predicted_entropy_change(logits: np.ndarray, logit_change: np.ndarray) -> np.ndarray:
    """First-order entropy change of each softmax over the last axis: -Cov_{a~pi}(log pi(a), dz(a))
    (Cui et al. 2025, arXiv 2505.22617, eq. 2)."""
    return covariance_entropy_change(log_softmax(logits), logit_change)


def covariance_entropy_change(log_probs: np.ndarray, logit_change: np.ndarray) -> np.ndarray:
    """``predicted_entropy_change`` from the log-probabilities of the softmax instead of its
    logits."""
    pi = np.exp(log_probs)
    centred = logit_change - np.sum(pi * logit_change, axis=-1, keepdims=True)
    return -np.sum(pi * log_probs * centred, axis=-1)


def approx_kl(log_ratio: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """verl's ``approx_kl``: the token mean of the k3 estimate exp(x) - 1 - x of KL(pi_old || pi), x
    = log pi - log pi_old, over the ``mask``ed tokens of each seed (leading axis); 0 for a seed
    without tokens."""
    mask = np.broadcast_to(mask, log_ratio.shape)
    axes = tuple(range(1, log_ratio.ndim))
    k3 = np.sum(np.where(mask, np.expm1(log_ratio) - log_ratio, 0.0), axis=axes)
    return k3 / np.maximum(mask.sum(axis=axes), 1)


def answer_mask(marked: np.ndarray, group_shape: tuple[int, ...]) -> np.ndarray:
    """(S, B, G) True for the answers ``marked`` marks: whole groups (S, B) or single answers (S,
    B, G), as a task's ``gradient`` and ``statistics`` receive them."""
    if marked.ndim == len(group_shape):
        return marked
    return np.broadcast_to(marked[..., None], group_shape)


ROLLOUT_METRICS = ("share_all_wrong", "share_all_correct", "share_mixed", "share_zero_advantage",
                   "kept_groups", "clipfrac_low", "clipfrac_high", "approx_kl", "sampled_answers")
"""What every rollout records: group shares among the examined groups, the groups kept, the clip
fractions by sign (among all tokens of the updates), verl's ``approx_kl`` between the rollout
policy and the updated one, and the answers sampled: those of every group examined until B
survived the filter (G B without a filter; a refilling trainer that generates whole rounds of B
prompts samples up to (B - 1) G more). Expected mode: the expected number, which treats the
survivors as independent of each other."""


SUCCESS_METRICS = ("accuracy", "accuracy_hard", "accuracy_mid", "accuracy_easy", "pass_auc",
                   "abandoned", "newly_solved", "regressed", "solved_hard")
"""What every policy records from its prompts' success rates (``success_metrics``)."""


def success_metrics(success: np.ndarray, initial_success: np.ndarray, ks: np.ndarray,
                    buckets: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """From success rates (S, P): accuracy (overall and in each of the ``buckets``, boolean (P,)
    masks of prompts), pass@k AUC, abandoned, newly solved and regressed prompts, and the prompts
    of the ``hard`` bucket that are solved (one value per seed), and pass@k (S, len(ks))."""
    pass_at_k = pass_at_k_exact(success[..., None], ks).mean(axis=1)
    metrics = {"accuracy": success.mean(1), "pass_auc": pass_at_k_auc(pass_at_k),
               "abandoned": np.sum(success < ABANDONED_BELOW, axis=1).astype(np.float64),
               "newly_solved": np.sum((success >= SOLVED_FROM) & (initial_success < SOLVED_FROM),
                                      axis=1).astype(np.float64),
               "regressed": np.sum(success < REGRESSED_SHARE * initial_success,
                                   axis=1).astype(np.float64)}
    for bucket, members in buckets.items():
        metrics[f"accuracy_{bucket}"] = success[:, members].mean(1) if members.any() else np.full(
            success.shape[0], np.nan)
    metrics["solved_hard"] = np.sum((success >= SOLVED_FROM) & buckets["hard"],
                                    axis=1).astype(np.float64)
    return metrics, pass_at_k


def weighted_ratio(numerator: np.ndarray, denominator: np.ndarray,
                   members: np.ndarray | None = None) -> np.ndarray:
    """sum over (member) prompts of the numerator (S, P) / sum of the denominator (S, P), per seed
    (a token mean over prompts whose answers differ in length); NaN where nothing to divide."""
    if members is not None:
        numerator, denominator = numerator[:, members], denominator[:, members]
    total = denominator.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, numerator.sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)

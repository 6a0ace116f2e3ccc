"""NGRPO's rivals: estimators published beside it for the same problem, learning from hard prompts
and from groups that failed (MaxRL, QAE, the shifted baselines of AsymRE and of NGRPO's own mean,
RL-ZVP, LENS).

They follow the interface of ``advantages.AdvantageEstimator``; each docstring gives its source
equation and the choices its paper leaves open. MaxRL, QAE and the shifted baselines are
count-based; RL-ZVP and LENS read the policy (``policy_inputs``).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import numpy as np

from ngrpo_sim.base import checks
from ngrpo_sim.methods.advantages import (AdvantageEstimator, centre, known_mean, known_std,
                                          standardise)


@dataclass(frozen=True)
class MaxRLAdvantage(AdvantageEstimator):
    """MaxRL (Tajwar et al. 2026, arXiv 2602.02710, Algorithm 1): A_i = (r_i - mean(R)) / mean(R),
    and 0 for a group whose mean is 0.

    Dividing by the group's pass rate instead of its std turns the group's update (1/G) sum_i A_i
    grad log pi(a_i) into the paper's conditional estimator minus its control variate, sum_i (r_i /
    K - 1 / G) grad log pi(a_i) with K correct answers: the mean score of the correct answers minus
    the mean score of all. Its expectation is w(p) grad p, the gradient of a truncated
    maximum-likelihood objective -sum_{k <= T} (1 - p)^k / k with w(p) = [1 - (1 - p)^T] / p (the
    paper's weight function). The paper's estimator keeps the control variate in all-wrong groups
    and gets T = G; Algorithm 1, used here and in the authors' verl code, drops both terms when K =
    0, which gives T = G - 1: c(p) = [1 - (1 - p)^(G - 1)] / p in ``ngrpo_sim.analysis.landscape``
    (tested against enumeration). At p -> 0 that is G - 1, 7 for G = 8 against GRPO's 2.47: of all
    the methods here MaxRL pushes hardest on hard prompts, and a correct answer in a group of G with
    one correct gets G - 1.

    Choices the paper leaves open, made here:

    * ``eps``: Algorithm 1 divides by the mean exactly (eps = 0, the default); the authors' verl
      code adds 1e-6 to it, a relative change of 1e-6 / mean(R).
    * Graded rewards: the paper assumes binary ones. The authors' code applies the formula to any
      score, and so does this class for rewards >= 0: A = r / mean(R) - 1 credits each answer by its
      share of the group's reward. The maximum-likelihood reading holds for binary rewards only.
      Negative rewards are refused: a mean of 0 or below with a spread would blow up or flip the
      advantages.
    """

    name: ClassVar[str] = "maxrl"
    _: KW_ONLY  # calibration options and tolerances by name only
    eps: float = 0.0
    """Added to the mean in the denominator (the authors' code: 1e-6)."""

    def __post_init__(self):
        checks.number("eps", self.eps, low=0.0)

    def reward_bounds(self):
        return 0.0, None

    def _compute(self, rewards, values):
        deviation = centre(rewards, rewards)
        mean = known_mean(rewards)
        # A homogeneous group, the all-wrong one included, has zero deviation and gets exactly 0.
        return np.divide(deviation, mean + self.eps, out=np.zeros_like(deviation),
                         where=deviation != 0.0)


QUANTILE_INTERPOLATIONS = ("linear", "inverted_cdf")
"""How ``QAEAdvantage`` reads the K-quantile of a group (numpy's ``method`` names)."""


@dataclass(frozen=True)
class QAEAdvantage(AdvantageEstimator):
    """QAE (Wu et al. 2025, arXiv 2509.22611): GRPO with the group's K-quantile as baseline instead
    of its mean, A_i = (r_i - Q_K(R)) / (std(R) + eps).

    For binary rewards the paper's quantile is 0 or 1, a two-regime gate: on a hard group (share of
    correct answers <= 1 - K) the baseline is 0, so correct answers get +1 / std and wrong answers
    exactly 0; on an easy group the baseline is 1, so correct answers get 0 and wrong answers -1 /
    std. A hard prompt's failures are never pushed down: all-wrong groups stay silent, as under
    GRPO, and a hard prompt's rare correct answer gets +1 / std where GRPO gives (1 - k / G) / std
    (c(0) is G / (G - 1) times GRPO's).

    Choices the paper leaves open, made here:

    * ``interpolation``: the authors' code takes ``torch.quantile`` of the group's rewards, which
      interpolates linearly between order statistics; that is the default, ``"linear"``. For G = 8
      and K = 0.4 it gives the baseline 0.8 when k = 5 answers are correct, so both signs appear
      there. ``"inverted_cdf"`` is the empirical quantile min{r : F(r) >= K}, which gives exactly
      the paper's gate (baseline 0 if k / G <= 1 - K, else 1).
    * The std: the released recipe changes only the baseline of verl's GRPO estimator, which keeps
      its std (Bessel's, eps = 1e-6): the defaults here.
    * ``quantile`` K = 0.4, the authors' recommended start (their README; 0.6 against entropy
      collapse).
    * Graded rewards: accepted, as in the authors' code (a quantile of any rewards); the gate
      reading holds for binary rewards only.
    """

    name: ClassVar[str] = "qae"
    calibration_options: ClassVar[tuple[str, ...]] = ("ddof",)
    quantile: float = 0.4
    """K, strictly between 0 and 1: the larger K, the more groups count as hard (only successes
    move)."""
    interpolation: str = "linear"
    """One of ``QUANTILE_INTERPOLATIONS``: ``linear`` (the authors' code) or ``inverted_cdf`` (the
    paper's gate)."""
    _: KW_ONLY  # calibration options and tolerances by name only
    ddof: int = 1
    """Degrees of freedom removed from the std, as in GRPO."""
    eps: float = 1e-6
    """Added to the std, as in GRPO."""

    def __post_init__(self):
        checks.number("quantile", self.quantile, low=0.0, high=1.0, low_open=True, high_open=True)
        checks.choice("interpolation", self.interpolation, QUANTILE_INTERPOLATIONS)
        checks.integer("ddof", self.ddof, low=0, high=1)
        checks.number("eps", self.eps, low=0.0)

    def _compute(self, rewards, values):
        # The quantile of a homogeneous group is its common reward exactly, so its deviations are
        # exactly 0.
        unknown = np.isnan(rewards)
        if unknown.any():  # the quantile of the known rewards (a group without one gets 0 anyway)
            known = np.where(unknown.all(axis=-1, keepdims=True), 0.0, rewards)
            baseline = np.nanquantile(known, self.quantile, axis=-1, method=self.interpolation,
                                      keepdims=True)
        else:
            baseline = np.quantile(rewards, self.quantile, axis=-1, method=self.interpolation,
                                   keepdims=True)
        deviation = rewards - baseline
        std = known_std(rewards, self.ddof)
        return np.divide(deviation, std + self.eps, out=np.zeros_like(deviation),
                         where=deviation != 0.0)


@dataclass(frozen=True)
class ShiftedBaselineAdvantage(AdvantageEstimator):
    """A = r - V with V = mean(R) + fraction * (r_max - mean(R)) + shift: the shifted baselines of
    Asymmetric REINFORCE (Arnal et al. 2025, arXiv 2506.20520), no std.

    Arnal et al. study A = r - V with a tunable V: lowering V emphasises correct answers, raising it
    penalises wrong ones more. Their LLM runs set V to the group's mean reward plus a constant delta
    V (``shift``; delta V < 0, a baseline below the expected reward, is where their off-policy
    improvement guarantee holds). ``fraction`` moves V a fixed share of the way from the group mean
    to r_max: for binary rewards ``fraction = 1 / (G + 1)`` gives V = (k + 1) / (G + 1), NGRPO's
    mean with its virtual r_max answer (1/9 for G = 8), so NGRPO's effective baseline is one point
    of this family, taken without NGRPO's std. ``fraction = shift = 0`` is Dr.GRPO; ``fraction = 1``
    gives r - r_max, which is NSR on binary rewards.

    On policy, a baseline that does not depend on the sampled group leaves the expected update
    unchanged. This V contains each answer's own reward through the mean, so for binary rewards c(p)
    = 1 - (1 - fraction) / G at every p (``ngrpo_sim.analysis.landscape``; tested), whatever the
    shift: on the first update of a rollout the family differs in noise and in which groups are
    silent, not in the expected step. Its differences in the mean appear off policy, on the later
    minibatches and stale rollouts that Arnal et al. analyse.

    Graded rewards: the formula applies as it is; rewards above r_max are refused.
    """

    name: ClassVar[str] = "shifted_baseline"
    calibration_options: ClassVar[tuple[str, ...]] = ("r_max",)
    fraction: float = 0.0
    """lambda in [0, 1]: the share of the way from the group mean to r_max at which V sits."""
    shift: float = 0.0
    """delta V: a constant added to the baseline (Arnal et al.; negative favours correct
    answers)."""
    _: KW_ONLY  # calibration options and tolerances by name only
    r_max: float = 1.0
    """The best reward the verifier can give."""

    def __post_init__(self):
        checks.number("fraction", self.fraction, low=0.0, high=1.0)
        checks.number("shift", self.shift)
        checks.number("r_max", self.r_max)

    def reward_bounds(self):
        return None, self.r_max

    def _compute(self, rewards, values):
        # (1 - lambda)(r - mean) + lambda (r - r_max) - delta: exactly 0 for an all-r_max group when
        # delta = 0.
        towards_best = self.fraction * (rewards - self.r_max)
        return (1.0 - self.fraction) * centre(rewards, rewards) + towards_best - self.shift


@dataclass(frozen=True)
class RLZVPAdvantage(AdvantageEstimator):
    """RL-ZVP (Le et al. 2025, arXiv 2509.21880, Eq. 5): GRPO's z-score on groups with both
    outcomes; on a zero-variance group an advantage signed by the outcome and shaped by the policy's
    token entropy H:

        all correct: A_{i,t} = alpha * H_{i,t}
        all wrong: A_{i,t} = -alpha * (max_t' H_{i,t'} - H_{i,t}),

    H_{i,t} the entropy over the vocabulary at token t of answer i (detached). A correct answer's
    uncertain tokens (its forks) are reinforced most; a wrong answer's confident tokens are
    penalised most and its most uncertain token not at all.

    Inputs. ``entropy`` shaped (..., G, T) gives per-token advantages (..., G, T), the z-scores of
    mixed groups repeated over the tokens; padding must hold entropy 0 (it then cannot raise an
    answer's maximum) and its advantages are meaningless, so the loss's token mask must drop them.
    Shaped (..., G), each answer is one token.

    In the single-action bandit an answer is one token and H is the policy's entropy at the prompt,
    the same for the G answers. An all-correct group then gets +alpha H for every answer, and an
    all-wrong group gets exactly 0: a one-token answer's entropy is its own maximum. So in the
    bandit RL-ZVP never learns from all-wrong groups; it is GRPO plus a push on the prompts it
    solves in all G samples, scaled by how uncertain the policy still is: its expected update is
    [c_GRPO(p) + alpha H p^(G - 1)] pi * (r - p), along the same direction as every count-based
    method's (tested by enumeration in tests/test_landscape.py).

    Choices made here: the maximum runs over the answer's own tokens (Eq. 5); the z-score is GRPO's
    with Bessel's std and eps = 1e-6; ``scale`` alpha = 0.1 (the paper's value could not be checked
    here; the zero-variance push scales with it). Binary rewards only: the sign of a zero-variance
    group needs correct and wrong.
    """

    name: ClassVar[str] = "rl_zvp"
    count_based: ClassVar[bool] = False
    policy_inputs: ClassVar[tuple[str, ...]] = ("entropy",)
    binary_rewards: ClassVar[bool] = True
    calibration_options: ClassVar[tuple[str, ...]] = ("ddof",)
    scale: float = 0.1
    """alpha > 0: advantage per nat of entropy on zero-variance groups."""
    _: KW_ONLY  # calibration options and tolerances by name only
    ddof: int = 1
    """Degrees of freedom removed from the std of mixed groups, as in GRPO."""
    eps: float = 1e-6
    """Added to the std of mixed groups, as in GRPO."""

    def __post_init__(self):
        checks.number("scale", self.scale, low=0.0, low_open=True)
        checks.integer("ddof", self.ddof, low=0, high=1)
        checks.number("eps", self.eps, low=0.0)

    def _compute(self, rewards, values, entropy):
        mixed = standardise(rewards, rewards, self.ddof, self.eps)
        zero_variance = np.all(rewards == rewards[..., :1], axis=-1, keepdims=True)
        right = rewards == 1.0
        if entropy.ndim > rewards.ndim:  # per token: the answer's maximum over its tokens
            mixed, zero_variance = mixed[..., None], zero_variance[..., None]
            right = right[..., None]
            peak = np.max(entropy, axis=-1, keepdims=True)
        else:
            peak = entropy
        shaped = np.where(right, self.scale * entropy, self.scale * (entropy - peak))
        return np.where(zero_variance, shaped, np.broadcast_to(mixed, shaped.shape))


@dataclass(frozen=True)
class LENSAdvantage(AdvantageEstimator):
    """LENS (Feng et al. 2025, arXiv 2510.08696, Eq. 10 and Section 5.1): wrong answers get a
    negative reward that grows with the policy's confidence in them, then GRPO's normalisation.

    From a maximum-likelihood fit of the reward model p(q, o) = pi(o | q) / D(q) (D the inverse
    number of correct answers) the paper derives the calibrated reward
    r~ = r - (1 - r) pi / (D - pi): a confident mistake is penalised most. Section 5.1 makes it
    practical; per group of G answers with confidences c_i = exp(log_prob_i):

    * D = max(D_imp, 2 max_j c_j) with D_imp = [(1/G) sum_i r_i / c_i]^-1 (importance sampling, Eq.
      14) in a group with a correct answer, D = 2 max_j c_j in an all-wrong group; so r~ stays
      in [-1, 1];
    * r~_i = r_i - (1 - r_i) (1/G) c_i / (D - c_i): the 1/G keeps every wrong answer of a mixed
      group below the group mean (GRPO's sign invariance);
    * a group with a correct answer gets GRPO's z-score of r~; an all-wrong group gets r~ minus its
      mean (no std), times ``negative_weight`` alpha = 0.25. An all-correct group gets 0.

    In an all-wrong group the advantages sum to 0: the most confidently sampled mistakes are pushed
    down and the least confident ones up. A group whose G answers are the same answer (equal
    confidences) stays silent.

    Inputs: ``log_prob``, each answer's log-probability under the rollout policy; for an LLM its
    length-normalised value (the paper's geometric-mean probability pi^(1/|o|)). In the
    single-action bandit it is log pi(a).

    Choices made here: D_imp uses the same confidences c_i (Eq. 14 writes the raw sequence
    probability; for a one-token answer the two coincide, and for long answers the raw one makes
    D_imp negligible beside 2 max c_j); the z-score is GRPO's with Bessel's std and eps = 1e-6.
    Binary rewards only: the paper states its algorithm for correct/wrong rewards and leaves graded
    ones to future work.
    """

    name: ClassVar[str] = "lens"
    count_based: ClassVar[bool] = False
    policy_inputs: ClassVar[tuple[str, ...]] = ("log_prob",)
    binary_rewards: ClassVar[bool] = True
    calibration_options: ClassVar[tuple[str, ...]] = ("ddof",)
    negative_weight: float = 0.25
    """alpha >= 0: weight of the all-wrong groups' de-meaned calibrated rewards (paper: 0.25)."""
    _: KW_ONLY  # calibration options and tolerances by name only
    ddof: int = 1
    """Degrees of freedom removed from the std of groups with a correct answer, as in GRPO."""
    eps: float = 1e-6
    """Added to that std, as in GRPO."""

    def __post_init__(self):
        checks.number("negative_weight", self.negative_weight, low=0.0)
        checks.integer("ddof", self.ddof, low=0, high=1)
        checks.number("eps", self.eps, low=0.0)

    def _compute(self, rewards, values, log_prob):
        group_size = rewards.shape[-1]
        right = rewards == 1.0
        # Confidences relative to the group's most confident answer: D and c / (D - c) are
        # scale-free, and exp(log_prob) of a long answer would underflow.
        relative = np.exp(log_prob - np.max(log_prob, axis=-1, keepdims=True))
        with np.errstate(divide="ignore"):
            inverse_imp = np.mean(np.where(right, 1.0 / relative, 0.0), axis=-1, keepdims=True)
            scale = np.maximum(np.where(inverse_imp > 0, 1.0 / inverse_imp, 0.0), 2.0)  # D / max c
        calibrated = np.where(right, 1.0, -(relative / (scale - relative)) / group_size)
        any_correct = np.any(right, axis=-1, keepdims=True)
        return np.where(any_correct, standardise(calibrated, calibrated, self.ddof, self.eps),
                        self.negative_weight * centre(calibrated, calibrated))

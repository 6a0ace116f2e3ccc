"""Advantage estimators: how each method turns a group of rewards into one number per answer.

Every estimator is a small frozen dataclass whose fields are its hyperparameters. Calling it on rewards shaped
``(..., G)`` (any leading axes for seeds and prompts; the last axis is the group of G answers sampled for one
prompt) returns float64 advantages of the same shape. Rewards are outcome rewards: one number per answer, spread
over all of its tokens by the loss.

The estimators fall into two families:

* group-relative ones (GRPO, NGRPO, Dr.GRPO, RLOO) compare an answer with its siblings, so a group whose answers
  all earn the same reward gives every answer the same centred value;
* fixed-weight ones (PSR, NSR, W-REINFORCE) and the critic baseline of PPO look at one answer at a time.

For binary rewards all of them except the critic baseline are *count-based*: an answer's advantage depends only
on its own reward and on how many answers of its group are right. ``ngrpo_sim.landscape`` relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ngrpo_sim import _checks


def _centre(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values - mean(reference)`` over the last axis, shifted by a member of ``reference`` first.

    The shift makes a group of identical rewards centre to exactly 0.0 (not 1e-17), so "no gradient from a
    homogeneous group" holds bit for bit, for any reward value.
    """
    shift = reference[..., :1]
    return (values - shift) - np.mean(reference - shift, axis=-1, keepdims=True)


def _standardise(rewards: np.ndarray, reference: np.ndarray, ddof: int, eps: float) -> np.ndarray:
    """z-score of each reward against the sample ``reference``: (r - mean) / (std + eps)."""
    deviation = _centre(rewards, reference)
    std = np.std(reference - reference[..., :1], axis=-1, ddof=ddof, keepdims=True)
    # A zero deviation is a zero advantage even when eps = 0 makes the denominator 0 as well.
    return np.divide(deviation, std + eps, out=np.zeros_like(deviation), where=deviation != 0.0)


@dataclass(frozen=True)
class AdvantageEstimator:
    """Base class: validates rewards, then hands them to ``_compute``.

    Subclasses set the class attributes below and implement ``_compute(rewards, values)``.
    """

    name: ClassVar[str] = ""
    min_group_size: ClassVar[int] = 2
    """Smallest G the estimator is defined for (a group-relative baseline needs a sibling)."""
    count_based: ClassVar[bool] = True
    """Whether, for binary rewards, the advantage depends only on the answer's reward and its group's count of
    right answers. The advantage landscape and the gain c(p) exist for these estimators only."""
    uses_values: ClassVar[bool] = False
    """Whether the estimator needs a learned value V (PPO's critic)."""
    calibration_options: ClassVar[tuple[str, ...]] = ()
    """The fields that the landscape's options (r_max and virtual_samples of NGRPO's virtual answer, the std's
    ddof) retune. A field of the same name that means something else, such as PSR's reward scale r_max, is not
    listed."""

    def reward_bounds(self) -> tuple[float | None, float | None]:
        """The closed interval rewards must lie in; ``None`` for an open side."""
        return None, None

    def __call__(self, rewards, values=None) -> np.ndarray:
        floor, ceiling = self.reward_bounds()
        rewards = _checks.group_rewards("rewards", rewards, min_group_size=self.min_group_size,
                                        floor=floor, ceiling=ceiling)
        if self.uses_values:
            if values is None:
                raise ValueError(f"the {self.name} estimator needs values (the critic's V), got None")
            values = _checks.finite_array("values", values)
            try:
                values = np.broadcast_to(values, rewards.shape)
            except ValueError as error:
                raise ValueError(f"values of shape {values.shape} do not broadcast to rewards of shape "
                                 f"{rewards.shape}; give one value per answer, or shape (..., 1) per prompt"
                                 ) from error
        elif values is not None:
            raise ValueError(f"the {self.name} estimator takes no values; got values={values!r}")
        return self._compute(rewards, values)

    def _compute(self, rewards: np.ndarray, values: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class GRPOAdvantage(AdvantageEstimator):
    """GRPO (Shao et al. 2024): A_i = (r_i - mean(R)) / (std(R) + eps).

    The group mean is the baseline and the group std rescales, so every group with both outcomes pushes with
    about the same force whatever its difficulty. A group whose answers are all right or all wrong has zero
    deviation everywhere: it contributes no gradient at all. That blind spot is what NGRPO repairs.
    """

    name: ClassVar[str] = "grpo"
    calibration_options: ClassVar[tuple[str, ...]] = ("ddof",)
    ddof: int = 1
    """Degrees of freedom removed from the std: 1 is Bessel's correction (``torch.std``'s default, used by verl
    and the NGRPO release); 0 is the population std of the GRPO paper's formula."""
    eps: float = 1e-6
    """Added to the std so that a group with a tiny spread cannot blow the advantage up."""

    def __post_init__(self):
        _checks.integer("ddof", self.ddof, low=0, high=1)
        _checks.number("eps", self.eps, low=0.0)

    def _compute(self, rewards, values):
        return _standardise(rewards, rewards, self.ddof, self.eps)


@dataclass(frozen=True)
class NGRPOAdvantage(AdvantageEstimator):
    """NGRPO advantage calibration (Nan et al. 2025).

    ``virtual_samples`` copies of the best possible reward ``r_max`` join the group's statistics (never the
    batch: they have no tokens and get no advantage). The baseline rises towards r_max, so

    * an all-wrong group is no longer silent: each answer gets -(mean') / std' < 0 (G = 8: -1/3), which pushes
      probability away from the failed answers and towards everything not yet tried;
    * in a hard group the one right answer is rewarded less than under GRPO (G = 8, k = 1: +1.76 instead of
      +2.47) and each wrong answer is penalised more (-0.50 instead of -0.35);
    * an all-correct group still gets exactly 0: the virtual sample is equal to its answers.
    """

    name: ClassVar[str] = "ngrpo"
    calibration_options: ClassVar[tuple[str, ...]] = ("r_max", "virtual_samples", "ddof")
    r_max: float = 1.0
    """The best reward the verifier can give; the virtual sample's reward. Rewards above it are refused."""
    virtual_samples: int = 1
    """How many virtual r_max samples join each group (the release's ``add_max_reward_num``). The paper
    reports that more than one over-explores: the negative push grows with each copy."""
    ddof: int = 1
    """Bessel's correction on the G + virtual_samples values, as in the release (and the paper's numbers)."""
    eps: float = 1e-6
    """Added to the std, as in GRPO."""

    def __post_init__(self):
        _checks.number("r_max", self.r_max, low=0.0, low_open=True)
        _checks.integer("virtual_samples", self.virtual_samples, low=1)
        _checks.integer("ddof", self.ddof, low=0, high=1)
        _checks.number("eps", self.eps, low=0.0)

    def reward_bounds(self):
        return None, self.r_max

    def _compute(self, rewards, values):
        virtual = np.full(rewards.shape[:-1] + (self.virtual_samples,), self.r_max)
        return _standardise(rewards, np.concatenate([rewards, virtual], axis=-1), self.ddof, self.eps)


@dataclass(frozen=True)
class DrGRPOAdvantage(AdvantageEstimator):
    """Dr.GRPO (Liu et al. 2025): A_i = r_i - mean(R), GRPO without the std.

    Dividing by the std up-weights groups that are almost all right or almost all wrong; Dr.GRPO removes that
    question-difficulty bias, so easy and hard groups push in proportion to their reward spread.
    """

    name: ClassVar[str] = "dr_grpo"

    def _compute(self, rewards, values):
        return _centre(rewards, rewards)


@dataclass(frozen=True)
class RLOOAdvantage(AdvantageEstimator):
    """RLOO (Ahmadian et al. 2024): A_i = r_i - mean of the other G - 1 rewards.

    Leaving the answer out of its own baseline makes the estimate unbiased; it equals G / (G - 1) times
    Dr.GRPO's advantage.
    """

    name: ClassVar[str] = "rloo"

    def _compute(self, rewards, values):
        group_size = rewards.shape[-1]
        return _centre(rewards, rewards) * (group_size / (group_size - 1))


@dataclass(frozen=True)
class _OutcomeWeights(AdvantageEstimator):
    """Fixed weights for a right and for a wrong answer, interpolated linearly for graded rewards.

    With ``s = r / r_max`` the advantage is ``s * right + (1 - s) * wrong``, so binary rewards get exactly the
    two weights and W-REINFORCE stays lambda * PSR + NSR for graded rewards too.
    """

    min_group_size: ClassVar[int] = 1
    r_max: float = 1.0
    """The reward of a fully right answer; rewards must lie in [0, r_max]."""

    def __post_init__(self):
        _checks.number("r_max", self.r_max, low=0.0, low_open=True)

    def reward_bounds(self):
        return 0.0, self.r_max

    def weights(self) -> tuple[float, float]:
        """(advantage of a right answer, advantage of a wrong answer)."""
        raise NotImplementedError

    def _compute(self, rewards, values):
        right, wrong = self.weights()
        share_right = rewards / self.r_max
        return share_right * right + (1.0 - share_right) * wrong


@dataclass(frozen=True)
class PSRAdvantage(_OutcomeWeights):
    """Positive sample reinforcement (Zhu et al. 2025): right answers +1, wrong answers 0.

    Plain imitation of the model's own successes: sharpens what already works and tends to collapse entropy.
    """

    name: ClassVar[str] = "psr"

    def weights(self):
        return 1.0, 0.0


@dataclass(frozen=True)
class NSRAdvantage(_OutcomeWeights):
    """Negative sample reinforcement (Zhu et al. 2025): right answers 0, wrong answers -1.

    Only pushes down what failed; the freed probability flows to all other answers in proportion to their
    current probability, which keeps entropy up.
    """

    name: ClassVar[str] = "nsr"

    def weights(self):
        return 0.0, -1.0


@dataclass(frozen=True)
class WeightedReinforceAdvantage(_OutcomeWeights):
    """W-REINFORCE, the paper's PSR-NSR baseline: right answers +lambda, wrong answers -1, no normalisation.

    Equals lambda * PSR + NSR. With lambda = 0.1 the negative signal dominates; the advantages do not adapt to
    the group, which the NGRPO paper blames for unstable training.
    """

    name: ClassVar[str] = "w_reinforce"
    positive_weight: float = 0.1
    """lambda: the weight of a right answer relative to the -1 of a wrong one."""

    def __post_init__(self):
        super().__post_init__()
        _checks.number("positive_weight", self.positive_weight, low=0.0)

    def weights(self):
        return self.positive_weight, -1.0


@dataclass(frozen=True)
class CriticAdvantage(AdvantageEstimator):
    """PPO's advantage with a learned critic, for outcome rewards: A_i = r_i - V.

    With one reward at the end and gamma = lambda = 1, GAE reduces to the final reward minus the value
    estimate. V must be given (per answer, or shape (..., 1) per prompt); the estimator does not learn it.
    It is not count-based: the advantage depends on V, not on the group.
    """

    name: ClassVar[str] = "critic"
    min_group_size: ClassVar[int] = 1
    count_based: ClassVar[bool] = False
    uses_values: ClassVar[bool] = True

    def _compute(self, rewards, values):
        return rewards - values

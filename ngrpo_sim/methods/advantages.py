"""Advantage estimators: how each method turns a group of rewards into one number per answer.

Every estimator is a small frozen dataclass whose fields are its hyperparameters. Calling it on
rewards shaped ``(..., G)`` (any leading axes for seeds and prompts; the last axis is the group of G
answers sampled for one prompt) returns float64 advantages of the same shape. Rewards are outcome
rewards: one number per answer, spread over all of its tokens by the loss.

The estimators fall into two families:

* group-relative ones (GRPO, NGRPO, Dr.GRPO, RLOO here; MaxRL, QAE and the shifted baselines of
  AsymRE in ``rival_advantages``) compare an answer with its siblings, so a group whose answers all
  earn the same reward gives every answer the same centred value (a shifted baseline can move it
  off 0);
* fixed-weight ones (PSR, NSR, W-REINFORCE) and the critic baseline of PPO look at one answer at a
  time.

For binary rewards all of them except the critic baseline are *count-based*: an answer's advantage
depends only on its own reward and on how many answers of its group are correct.
``ngrpo_sim.analysis.landscape`` relies on that.

Two rivals (``rival_advantages``) also read the policy: RL-ZVP shapes the advantages of
zero-variance groups by the policy's token entropy, LENS penalises a wrong answer by the policy's
confidence in it. Such an estimator lists what it needs in ``policy_inputs`` and takes it by keyword
(``log_prob=``, ``entropy=``; ``POLICY_INPUTS`` gives the shapes), so one call site can serve every
estimator:
``estimator(rewards, values, **{name: inputs[name] for name in estimator.policy_inputs})``. A call
without a declared input, or with one the estimator does not declare, is refused. These two are not
count-based: the same rewards give different advantages under different policies.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import numpy as np

from ngrpo_sim.base import checks


def known_statistics(reference: np.ndarray, ddof: int) -> tuple[np.ndarray, ...]:
    """(shift, mean, std) over the last axis of the known (non-NaN) members of ``reference``: the
    mean and std of ``reference - shift``, the shift a known member (0 in a group without one).
    With every member known this is the arithmetic of ``np.mean`` and ``np.std`` on ``reference -
    reference[..., :1]``, bit for bit."""
    known = ~np.isnan(reference)
    count = known.sum(axis=-1, keepdims=True)
    first = np.take_along_axis(reference, np.argmax(known, axis=-1)[..., None], axis=-1)
    shift = np.where(count > 0, first, 0.0)
    centred = np.where(known, reference - shift, 0.0)
    mean = centred.sum(axis=-1, keepdims=True) / np.maximum(count, 1)
    squares = np.where(known, centred - mean, 0.0) ** 2
    std = np.sqrt(squares.sum(axis=-1, keepdims=True) / np.maximum(count - ddof, 1))
    return shift, mean, std


def centre(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values - mean(reference)`` over the last axis, shifted by a member of ``reference`` first.

    The shift makes a group of identical rewards centre to exactly 0.0 (not 1e-17), so "no gradient
    from a homogeneous group" holds bit for bit, for any reward value. NaN members of ``reference``
    (unknown rewards) stay out of the mean; a NaN value stays NaN.
    """
    if np.isnan(reference).any():
        shift, mean, _ = known_statistics(reference, ddof=0)
        return (values - shift) - mean
    shift = reference[..., :1]
    return (values - shift) - np.mean(reference - shift, axis=-1, keepdims=True)


def known_std(reference: np.ndarray, ddof: int) -> np.ndarray:
    """The std over the last axis of the known members of ``reference`` (``np.std`` of ``reference -
    reference[..., :1]`` when all are known)."""
    if np.isnan(reference).any():
        return known_statistics(reference, ddof)[2]
    return np.std(reference - reference[..., :1], axis=-1, ddof=ddof, keepdims=True)


def known_mean(rewards: np.ndarray) -> np.ndarray:
    """The mean over the last axis of the known rewards (``np.mean`` when all are known)."""
    known = ~np.isnan(rewards)
    if known.all():
        return np.mean(rewards, axis=-1, keepdims=True)
    count = np.maximum(known.sum(axis=-1, keepdims=True), 1)
    return np.where(known, rewards, 0.0).sum(axis=-1, keepdims=True) / count


def statistics(estimator, rewards, reference) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of a z-score estimator's reference sample, after its checks of ``rewards``."""
    floor, ceiling = estimator.reward_bounds()
    rewards = checks.group_rewards("rewards", rewards, min_group_size=estimator.min_group_size,
                                    floor=floor, ceiling=ceiling)
    values = reference(rewards)
    return np.mean(values, axis=-1), np.std(values, axis=-1, ddof=estimator.ddof)


def standardise(rewards: np.ndarray, reference: np.ndarray, ddof: int, eps: float) -> np.ndarray:
    """z-score of each reward against the sample ``reference``: (r - mean) / (std + eps), the mean
    and std over the known (non-NaN) members of ``reference``."""
    deviation = centre(rewards, reference)
    std = known_std(reference, ddof)
    # A zero deviation is a zero advantage even when eps = 0 makes the denominator 0 as well (a
    # group with one known reward and ddof = 1 has no std, and its deviation is 0).
    return np.divide(deviation, std + eps, out=np.zeros_like(deviation), where=deviation != 0.0)


POLICY_INPUTS = {
    "log_prob": "the rollout policy's log-probability (nats, <= 0) of each sampled answer, shaped "
                "like the rewards (..., G); for an answer of several tokens its length-normalised "
                "value, the mean of its token log-probabilities",
    "entropy": "the rollout policy's entropy (nats, >= 0) where each answer was sampled, shaped "
               "like the rewards (..., G) for one-token answers or (..., G, T) for T token "
               "positions (0 at padding)",
}
"""The policy quantities an estimator may declare in ``policy_inputs``: keyword name -> shape."""


def policy_input(name: str, value, rewards: np.ndarray) -> np.ndarray:
    """``value`` checked as the policy input ``name`` for ``rewards``."""
    array = checks.finite_array(name, value)
    token_axis = name == "entropy" and array.ndim == rewards.ndim + 1 and array.shape[-1] >= 1
    if array.shape != rewards.shape and not (token_axis and array.shape[:-1] == rewards.shape):
        raise ValueError(f"{name} has shape {array.shape} but rewards have shape {rewards.shape}; "
                         f"{name} is {POLICY_INPUTS[name]}")
    if name == "log_prob" and array.size and array.max() > 0.0:
        raise ValueError(f"log_prob holds {array.max()}, above 0: it must be a log-probability "
                         f"(<= 0)")
    if name == "entropy" and array.size and array.min() < 0.0:
        raise ValueError(f"entropy holds {array.min()}, below 0: an entropy is >= 0 (give 0 at "
                         f"padding tokens)")
    return array


@dataclass(frozen=True)
class AdvantageEstimator:
    """Base class: validates rewards, then hands them to ``_compute``.

    Subclasses set the class attributes below and implement ``_compute(rewards, values)``.
    """

    name: ClassVar[str] = ""
    min_group_size: ClassVar[int] = 2
    """Smallest G the estimator is defined for (a group-relative baseline needs a sibling)."""
    count_based: ClassVar[bool] = True
    """Whether, for binary rewards, the advantage depends only on the answer's reward and its
    group's count of correct answers. The advantage landscape and the gain c(p) exist for these
    estimators only."""
    uses_values: ClassVar[bool] = False
    """Whether the estimator needs a learned value V (PPO's critic)."""
    policy_inputs: ClassVar[tuple[str, ...]] = ()
    """The policy quantities the estimator needs, each a keyword of ``__call__`` (names and shapes:
    ``POLICY_INPUTS``). An estimator that reads the policy is not count-based."""
    binary_rewards: ClassVar[bool] = False
    """Whether the estimator is defined for binary rewards (0 wrong, 1 correct) only; others are
    refused."""
    calibration_options: ClassVar[tuple[str, ...]] = ()
    """The fields that the landscape's options (r_max and virtual_samples of NGRPO's virtual answer,
    the std's ddof) retune. A field of the same name that means something else, such as PSR's reward
    scale r_max, is not listed."""

    def reward_bounds(self) -> tuple[float | None, float | None]:
        """The closed interval rewards must lie in; ``None`` for an open side."""
        return None, None

    def __call__(self, rewards, values=None, *, log_prob=None, entropy=None,
                 mask_unknown: bool = False) -> np.ndarray:
        """Advantages shaped like ``rewards`` (..., G), or (..., G, T) for an estimator that shapes
        them per token when given a token axis (RL-ZVP with ``entropy`` shaped (..., G, T)).

        ``values``: PPO's V, for an estimator with ``uses_values``. ``log_prob`` and ``entropy``:
        the policy inputs of ``POLICY_INPUTS``, for an estimator that lists them in
        ``policy_inputs``. Raises ValueError for bad rewards and for a missing, unexpected or
        misshapen input.

        ``mask_unknown=True`` lets NaN mark an *unknown* reward (a verifier that failed, timed out
        or returned nothing usable): the answer gets advantage 0, and the statistics of its group
        (mean, std, quantile, leave-one-out baseline) are those of the known answers only. NGRPO's
        virtual r_max samples still count, so a group with one known answer still gets a
        calibrated advantage; a group without a known answer gets 0 everywhere. An estimator whose
        statistics need two answers (GRPO's std with ddof = 1, RLOO's baseline) gives 0 to a group
        with one known answer. The estimators that read the policy (RL-ZVP, LENS) refuse unknown
        rewards. Without the option a NaN raises ValueError, as do infinities always.
        """
        floor, ceiling = self.reward_bounds()
        rewards = checks.group_rewards("rewards", rewards, min_group_size=self.min_group_size,
                                        floor=floor, ceiling=ceiling, allow_unknown=mask_unknown)
        unknown = np.isnan(rewards)
        if unknown.any() and self.policy_inputs:
            raise ValueError(f"the {self.name} estimator reads the policy and takes no unknown "
                             f"rewards (NaN); give it the known ones")
        if self.binary_rewards and not np.all((rewards == 0.0) | (rewards == 1.0)):
            bad = rewards[(rewards != 0.0) & (rewards != 1.0)].ravel()[0]
            raise ValueError(f"the {self.name} estimator takes binary rewards only (0 wrong, 1 "
                             f"correct), got {bad}; its paper defines it for a verifier that says "
                             f"correct or wrong: binarise the reward")
        inputs = {}
        for name, value in (("log_prob", log_prob), ("entropy", entropy)):
            if name in self.policy_inputs:
                if value is None:
                    raise ValueError(f"the {self.name} estimator needs {name}= "
                                     f"({POLICY_INPUTS[name]}); got None")
                inputs[name] = policy_input(name, value, rewards)
            elif value is not None:
                raise ValueError(f"the {self.name} estimator takes no {name}; got {name} of shape "
                                 f"{np.shape(value)}")
        if self.uses_values:
            if values is None:
                raise ValueError(f"the {self.name} estimator needs values (the critic's V), "
                                 "got None")
            values = checks.finite_array("values", values)
            try:
                values = np.broadcast_to(values, rewards.shape)
            except ValueError as error:
                raise ValueError(f"values of shape {values.shape} do not broadcast to rewards of "
                                 f"shape {rewards.shape}; give one value per answer, or shape "
                                 "(..., 1) per prompt") from error
        elif values is not None:
            raise ValueError(f"the {self.name} estimator takes no values; got values={values!r}")
        if unknown.any():
            return np.where(unknown, 0.0, self._compute(rewards, values, **inputs))
        return self._compute(rewards, values, **inputs)

    def _compute(self, rewards: np.ndarray, values: np.ndarray | None,
                 **policy_inputs) -> np.ndarray:
        """The advantages of checked rewards; ``policy_inputs`` holds exactly the declared ones."""
        raise NotImplementedError


@dataclass(frozen=True)
class GRPOAdvantage(AdvantageEstimator):
    """GRPO (Shao et al. 2024): A_i = (r_i - mean(R)) / (std(R) + eps).

    The group mean is the baseline and the group std rescales, so every group with both outcomes
    pushes with about the same force whatever its difficulty. A group whose answers are all correct
    or all wrong has zero deviation everywhere: it contributes no gradient at all. That blind spot
    is what NGRPO repairs.
    """

    name: ClassVar[str] = "grpo"
    calibration_options: ClassVar[tuple[str, ...]] = ("ddof",)
    _: KW_ONLY  # calibration options and tolerances by name only
    ddof: int = 1
    """Degrees of freedom removed from the std: 1 is Bessel's correction (``torch.std``'s default,
    used by verl and the NGRPO release); 0 is the population std of the GRPO paper's formula."""
    eps: float = 1e-6
    """Added to the std so that a group with a tiny spread cannot blow the advantage up."""

    def __post_init__(self):
        checks.integer("ddof", self.ddof, low=0, high=1)
        checks.number("eps", self.eps, low=0.0)

    def _compute(self, rewards, values):
        return standardise(rewards, rewards, self.ddof, self.eps)

    def group_statistics(self, rewards) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of each group's G rewards, shaped ``rewards.shape[:-1]``:
        A_i = (r_i - mean) / (std + eps)."""
        return statistics(self, rewards, lambda checked: checked)


@dataclass(frozen=True)
class NGRPOAdvantage(AdvantageEstimator):
    """NGRPO advantage calibration (Nan et al. 2025).

    ``virtual_samples`` copies of the best possible reward ``r_max`` join the group's statistics
    (never the batch: they have no tokens and get no advantage). The baseline rises towards r_max,
    so

    * an all-wrong group is no longer silent: each answer gets -(mean') / std' < 0 (G = 8: -1/3),
      which pushes probability away from the failed answers and towards everything not yet tried;
    * in a hard group the one correct answer is rewarded less than under GRPO (G = 8, k = 1: +1.76
      instead of +2.47) and each wrong answer is penalised more (-0.50 instead of -0.35);
    * an all-correct group still gets exactly 0: the virtual sample is equal to its answers.
    """

    name: ClassVar[str] = "ngrpo"
    calibration_options: ClassVar[tuple[str, ...]] = ("r_max", "virtual_samples", "ddof")
    _: KW_ONLY  # calibration options and tolerances by name only
    r_max: float = 1.0
    """The best reward the verifier can give; the virtual sample's reward. Rewards above it are
    refused."""
    virtual_samples: int = 1
    """How many virtual r_max samples join each group (the release's ``add_max_reward_num``). The
    paper reports that more than one over-explores: the negative push grows with each copy."""
    ddof: int = 1
    """Bessel's correction on the G + virtual_samples values, as in the release (and the paper's
    numbers)."""
    eps: float = 1e-6
    """Added to the std, as in GRPO."""

    def __post_init__(self):
        checks.number("r_max", self.r_max, low=0.0, low_open=True)
        checks.integer("virtual_samples", self.virtual_samples, low=1)
        checks.integer("ddof", self.ddof, low=0, high=1)
        checks.number("eps", self.eps, low=0.0)

    def reward_bounds(self):
        return None, self.r_max

    def _with_virtual_samples(self, rewards: np.ndarray) -> np.ndarray:
        """(..., G + virtual_samples): the group's rewards followed by the virtual r_max samples."""
        virtual = np.full(rewards.shape[:-1] + (self.virtual_samples,), self.r_max)
        return np.concatenate([rewards, virtual], axis=-1)

    def _compute(self, rewards, values):
        return standardise(rewards, self._with_virtual_samples(rewards), self.ddof, self.eps)

    def group_statistics(self, rewards) -> tuple[np.ndarray, np.ndarray]:
        """(mean', std') of each group's rewards with the virtual samples, shaped
        ``rewards.shape[:-1]``: A_i = (r_i - mean') / (std' + eps). G = 8 all wrong: mean' = 1/9,
        std' = 1/3 (Bessel)."""
        return statistics(self, rewards, self._with_virtual_samples)


@dataclass(frozen=True)
class DrGRPOAdvantage(AdvantageEstimator):
    """Dr.GRPO (Liu et al. 2025): A_i = r_i - mean(R), GRPO without the std.

    Dividing by the std up-weights groups that are almost all correct or almost all wrong; Dr.GRPO
    removes that question-difficulty bias, so easy and hard groups push in proportion to their
    reward spread.
    """

    name: ClassVar[str] = "dr_grpo"

    def _compute(self, rewards, values):
        return centre(rewards, rewards)


@dataclass(frozen=True)
class RLOOAdvantage(AdvantageEstimator):
    """RLOO (Ahmadian et al. 2024): A_i = r_i - mean of the other G - 1 rewards.

    Leaving the answer out of its own baseline makes the estimate unbiased; it equals G / (G - 1)
    times Dr.GRPO's advantage.
    """

    name: ClassVar[str] = "rloo"

    def _compute(self, rewards, values):
        if np.isnan(rewards).any():  # the other known answers; none (one known answer): no baseline
            known = np.sum(~np.isnan(rewards), axis=-1, keepdims=True)
            others = known / np.maximum(known - 1, 1)
            return np.where(known > 1, centre(rewards, rewards) * others, 0.0)
        group_size = rewards.shape[-1]
        return centre(rewards, rewards) * (group_size / (group_size - 1))


@dataclass(frozen=True)
class _OutcomeWeights(AdvantageEstimator):
    """Fixed weights for a correct and for a wrong answer, interpolated linearly for graded rewards.

    With ``s = r / r_max`` the advantage is ``s * correct + (1 - s) * wrong``, so binary rewards get
    exactly the two weights and W-REINFORCE stays lambda * PSR + NSR for graded rewards too.
    """

    min_group_size: ClassVar[int] = 1
    _: KW_ONLY  # calibration options and tolerances by name only
    r_max: float = 1.0
    """The reward of a fully correct answer; rewards must lie in [0, r_max]."""

    def __post_init__(self):
        checks.number("r_max", self.r_max, low=0.0, low_open=True)

    def reward_bounds(self):
        return 0.0, self.r_max

    def weights(self) -> tuple[float, float]:
        """(advantage of a correct answer, advantage of a wrong answer)."""
        raise NotImplementedError

    def _compute(self, rewards, values):
        right, wrong = self.weights()
        share_correct = rewards / self.r_max
        return share_correct * right + (1.0 - share_correct) * wrong


@dataclass(frozen=True)
class PSRAdvantage(_OutcomeWeights):
    """Positive sample reinforcement (Zhu et al. 2025): correct answers +1, wrong answers 0.

    Plain imitation of the model's own successes: sharpens what already works and tends to collapse
    entropy.
    """

    name: ClassVar[str] = "psr"

    def weights(self):
        return 1.0, 0.0


@dataclass(frozen=True)
class NSRAdvantage(_OutcomeWeights):
    """Negative sample reinforcement (Zhu et al. 2025): correct answers 0, wrong answers -1.

    Only pushes down what failed; the freed probability flows to all other answers in proportion to
    their current probability, which keeps entropy up.
    """

    name: ClassVar[str] = "nsr"

    def weights(self):
        return 0.0, -1.0


@dataclass(frozen=True)
class WeightedReinforceAdvantage(_OutcomeWeights):
    """W-REINFORCE, the paper's PSR-NSR baseline: correct answers +lambda, wrong answers -1, no
    normalisation.

    Equals lambda * PSR + NSR. With lambda = 0.1 the negative signal dominates; the advantages do
    not adapt to the group, which the NGRPO paper blames for unstable training.
    """

    name: ClassVar[str] = "w_reinforce"
    positive_weight: float = 0.1
    """lambda: the weight of a correct answer relative to the -1 of a wrong one."""

    def __post_init__(self):
        super().__post_init__()
        checks.number("positive_weight", self.positive_weight, low=0.0)

    def weights(self):
        return self.positive_weight, -1.0


@dataclass(frozen=True)
class CriticAdvantage(AdvantageEstimator):
    """PPO's advantage with a learned critic, for outcome rewards: A_i = r_i - V.

    With one reward at the end and gamma = lambda = 1, GAE reduces to the final reward minus the
    value estimate. V must be given (per answer, or shape (..., 1) per prompt); the estimator does
    not learn it. It is not count-based: the advantage depends on V, not on the group.
    """

    name: ClassVar[str] = "critic"
    min_group_size: ClassVar[int] = 1
    count_based: ClassVar[bool] = False
    uses_values: ClassVar[bool] = True

    def _compute(self, rewards, values):
        return rewards - values

"""Advantage estimators: how each method turns a group of rewards into one number per answer.

Every estimator is a small frozen dataclass whose fields are its hyperparameters. Calling it on
rewards shaped ``(..., G)`` (any leading axes for seeds and prompts; the last axis is the group of G
answers sampled for one prompt) returns float64 advantages of the same shape. Rewards are outcome
rewards: one number per answer, spread over all of its tokens by the loss.

The estimators fall into two families:

* group-relative ones (GRPO, NGRPO, Dr.GRPO, RLOO, MaxRL, QAE, the shifted baselines of AsymRE)
  compare an answer with its siblings, so a group whose answers all earn the same reward gives every
  answer the same centred value (a shifted baseline can move it off 0);
* fixed-weight ones (PSR, NSR, W-REINFORCE) and the critic baseline of PPO look at one answer at a
  time.

For binary rewards all of them except the critic baseline are *count-based*: an answer's advantage
depends only on its own reward and on how many answers of its group are correct.
``ngrpo_sim.landscape`` relies on that.

Two estimators also read the policy: RL-ZVP shapes the advantages of zero-variance groups by the
policy's token entropy, LENS penalises a wrong answer by the policy's confidence in it. Such an
estimator lists what it needs in ``policy_inputs`` and takes it by keyword (``log_prob=``,
``entropy=``; ``POLICY_INPUTS`` gives the shapes), so one call site can serve every estimator:
``estimator(rewards, values, **{name: inputs[name] for name in estimator.policy_inputs})``. A call
without a declared input, or with one the estimator does not declare, is refused. These two are not
count-based: the same rewards give different advantages under different policies.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import numpy as np

from ngrpo_sim import _checks


def _known_statistics(reference: np.ndarray, ddof: int) -> tuple[np.ndarray, ...]:
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


def _centre(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values - mean(reference)`` over the last axis, shifted by a member of ``reference`` first.

    The shift makes a group of identical rewards centre to exactly 0.0 (not 1e-17), so "no gradient
    from a homogeneous group" holds bit for bit, for any reward value. NaN members of ``reference``
    (unknown rewards) stay out of the mean; a NaN value stays NaN.
    """
    if np.isnan(reference).any():
        shift, mean, _ = _known_statistics(reference, ddof=0)
        return (values - shift) - mean
    shift = reference[..., :1]
    return (values - shift) - np.mean(reference - shift, axis=-1, keepdims=True)


def _known_std(reference: np.ndarray, ddof: int) -> np.ndarray:
    """The std over the last axis of the known members of ``reference`` (``np.std`` of ``reference -
    reference[..., :1]`` when all are known)."""
    if np.isnan(reference).any():
        return _known_statistics(reference, ddof)[2]
    return np.std(reference - reference[..., :1], axis=-1, ddof=ddof, keepdims=True)


def _known_mean(rewards: np.ndarray) -> np.ndarray:
    """The mean over the last axis of the known rewards (``np.mean`` when all are known)."""
    known = ~np.isnan(rewards)
    if known.all():
        return np.mean(rewards, axis=-1, keepdims=True)
    count = np.maximum(known.sum(axis=-1, keepdims=True), 1)
    return np.where(known, rewards, 0.0).sum(axis=-1, keepdims=True) / count


def _statistics(estimator, rewards, reference) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of a z-score estimator's reference sample, after its checks of ``rewards``."""
    floor, ceiling = estimator.reward_bounds()
    rewards = _checks.group_rewards("rewards", rewards, min_group_size=estimator.min_group_size,
                                    floor=floor, ceiling=ceiling)
    values = reference(rewards)
    return np.mean(values, axis=-1), np.std(values, axis=-1, ddof=estimator.ddof)


def _standardise(rewards: np.ndarray, reference: np.ndarray, ddof: int, eps: float) -> np.ndarray:
    """z-score of each reward against the sample ``reference``: (r - mean) / (std + eps), the mean
    and std over the known (non-NaN) members of ``reference``."""
    deviation = _centre(rewards, reference)
    std = _known_std(reference, ddof)
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


def _policy_input(name: str, value, rewards: np.ndarray) -> np.ndarray:
    """``value`` checked as the policy input ``name`` for ``rewards``."""
    array = _checks.finite_array(name, value)
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
        rewards = _checks.group_rewards("rewards", rewards, min_group_size=self.min_group_size,
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
                inputs[name] = _policy_input(name, value, rewards)
            elif value is not None:
                raise ValueError(f"the {self.name} estimator takes no {name}; got {name} of shape "
                                 f"{np.shape(value)}")
        if self.uses_values:
            if values is None:
                raise ValueError(f"the {self.name} estimator needs values (the critic's V), "
                                 "got None")
            values = _checks.finite_array("values", values)
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
        _checks.integer("ddof", self.ddof, low=0, high=1)
        _checks.number("eps", self.eps, low=0.0)

    def _compute(self, rewards, values):
        return _standardise(rewards, rewards, self.ddof, self.eps)

    def group_statistics(self, rewards) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of each group's G rewards, shaped ``rewards.shape[:-1]``:
        A_i = (r_i - mean) / (std + eps)."""
        return _statistics(self, rewards, lambda checked: checked)


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
        _checks.number("r_max", self.r_max, low=0.0, low_open=True)
        _checks.integer("virtual_samples", self.virtual_samples, low=1)
        _checks.integer("ddof", self.ddof, low=0, high=1)
        _checks.number("eps", self.eps, low=0.0)

    def reward_bounds(self):
        return None, self.r_max

    def _with_virtual_samples(self, rewards: np.ndarray) -> np.ndarray:
        """(..., G + virtual_samples): the group's rewards followed by the virtual r_max samples."""
        virtual = np.full(rewards.shape[:-1] + (self.virtual_samples,), self.r_max)
        return np.concatenate([rewards, virtual], axis=-1)

    def _compute(self, rewards, values):
        return _standardise(rewards, self._with_virtual_samples(rewards), self.ddof, self.eps)

    def group_statistics(self, rewards) -> tuple[np.ndarray, np.ndarray]:
        """(mean', std') of each group's rewards with the virtual samples, shaped
        ``rewards.shape[:-1]``: A_i = (r_i - mean') / (std' + eps). G = 8 all wrong: mean' = 1/9,
        std' = 1/3 (Bessel)."""
        return _statistics(self, rewards, self._with_virtual_samples)


@dataclass(frozen=True)
class DrGRPOAdvantage(AdvantageEstimator):
    """Dr.GRPO (Liu et al. 2025): A_i = r_i - mean(R), GRPO without the std.

    Dividing by the std up-weights groups that are almost all correct or almost all wrong; Dr.GRPO
    removes that question-difficulty bias, so easy and hard groups push in proportion to their
    reward spread.
    """

    name: ClassVar[str] = "dr_grpo"

    def _compute(self, rewards, values):
        return _centre(rewards, rewards)


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
            return np.where(known > 1, _centre(rewards, rewards) * others, 0.0)
        group_size = rewards.shape[-1]
        return _centre(rewards, rewards) * (group_size / (group_size - 1))


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
        _checks.number("r_max", self.r_max, low=0.0, low_open=True)

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
        _checks.number("positive_weight", self.positive_weight, low=0.0)

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


# --------------------------------------------------------------------------------------------------
# NGRPO's rivals: methods published beside it for the same problem, learning from hard prompts and
# from failed groups
# --------------------------------------------------------------------------------------------------


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
    0, which gives T = G - 1: c(p) = [1 - (1 - p)^(G - 1)] / p in ``ngrpo_sim.landscape`` (tested
    against enumeration). At p -> 0 that is G - 1, 7 for G = 8 against GRPO's 2.47: of all the
    methods here MaxRL pushes hardest on hard prompts, and a correct answer in a group of G with one
    correct gets G - 1.

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
        _checks.number("eps", self.eps, low=0.0)

    def reward_bounds(self):
        return 0.0, None

    def _compute(self, rewards, values):
        deviation = _centre(rewards, rewards)
        mean = _known_mean(rewards)
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
        _checks.number("quantile", self.quantile, low=0.0, high=1.0, low_open=True, high_open=True)
        _checks.choice("interpolation", self.interpolation, QUANTILE_INTERPOLATIONS)
        _checks.integer("ddof", self.ddof, low=0, high=1)
        _checks.number("eps", self.eps, low=0.0)

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
        std = _known_std(rewards, self.ddof)
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
    = 1 - (1 - fraction) / G at every p (``ngrpo_sim.landscape``; tested), whatever the shift: on
    the first update of a rollout the family differs in noise and in which groups are silent, not in
    the expected step. Its differences in the mean appear off policy, on the later minibatches and
    stale rollouts that Arnal et al. analyse.

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
        _checks.number("fraction", self.fraction, low=0.0, high=1.0)
        _checks.number("shift", self.shift)
        _checks.number("r_max", self.r_max)

    def reward_bounds(self):
        return None, self.r_max

    def _compute(self, rewards, values):
        # (1 - lambda)(r - mean) + lambda (r - r_max) - delta: exactly 0 for an all-r_max group when
        # delta = 0.
        towards_best = self.fraction * (rewards - self.r_max)
        return (1.0 - self.fraction) * _centre(rewards, rewards) + towards_best - self.shift


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
        _checks.number("scale", self.scale, low=0.0, low_open=True)
        _checks.integer("ddof", self.ddof, low=0, high=1)
        _checks.number("eps", self.eps, low=0.0)

    def _compute(self, rewards, values, entropy):
        mixed = _standardise(rewards, rewards, self.ddof, self.eps)
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
        _checks.number("negative_weight", self.negative_weight, low=0.0)
        _checks.integer("ddof", self.ddof, low=0, high=1)
        _checks.number("eps", self.eps, low=0.0)

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
        return np.where(any_correct, _standardise(calibrated, calibrated, self.ddof, self.eps),
                        self.negative_weight * _centre(calibrated, calibrated))

"""Method presets: advantage + clip range + group filter + loss aggregation + KL and entropy
coefficients.

A *method* in this project is everything that distinguishes GRPO from NGRPO from DAPO in a training
step, and nothing else (learning rate, batch sizes and the policy belong to the experiment).
``METHODS`` is the one registry every part of the project reads: the landscape, the bandit
simulator, the checks of the single-file trainer and the engine integrations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ngrpo_sim.base import checks
from ngrpo_sim.methods.advantages import (AdvantageEstimator, CriticAdvantage, DrGRPOAdvantage,
                                          GRPOAdvantage, NGRPOAdvantage, NSRAdvantage, PSRAdvantage,
                                          RLOOAdvantage, WeightedReinforceAdvantage)
from ngrpo_sim.methods.rival_advantages import (LENSAdvantage, MaxRLAdvantage, QAEAdvantage,
                                                RLZVPAdvantage, ShiftedBaselineAdvantage)

# --------------------------------------------------------------------------------------------------
# Group filters
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupFilter:
    """Decides which sampled groups enter the update. The trainer refills the batch with new groups
    (the release's dynamic sampling) or trains on fewer; here we only say which groups stay."""

    name: ClassVar[str] = ""

    def keep(self, rewards, *, mask_unknown: bool = False) -> np.ndarray:
        """Boolean array shaped like ``rewards`` without its last (group) axis: True where the group
        stays.

        ``mask_unknown=True`` reads NaN as an unknown reward (see ``AdvantageEstimator.__call__``):
        a filter judges a group on its known answers only, so "all correct" means every known answer
        earns r_max and "homogeneous" that the known answers agree. A group without any known answer
        is dropped by every filter that drops groups (it has nothing to teach, and the trainer
        refills it); ``KeepAllGroups`` keeps it, and its advantages are 0. Without the option a NaN
        is a reward like any other: never equal, so kept.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class KeepAllGroups(GroupFilter):
    """Every group stays (GRPO, PPO, PSR-NSR)."""

    name: ClassVar[str] = "none"

    def keep(self, rewards, *, mask_unknown=False):
        return np.ones(np.shape(rewards)[:-1], dtype=bool)


@dataclass(frozen=True)
class DropHomogeneousGroups(GroupFilter):
    """DAPO's dynamic sampling: drop every group whose rewards are all equal (all correct or all
    wrong).

    Under GRPO's advantage such a group gives zero gradient anyway, so dropping it and refilling
    keeps the batch full of informative groups.
    """

    name: ClassVar[str] = "drop_homogeneous"

    def keep(self, rewards, *, mask_unknown=False):
        rewards = np.asarray(rewards)
        if mask_unknown:
            unknown = np.isnan(rewards)
            first = np.take_along_axis(rewards, np.argmax(~unknown, axis=-1)[..., None], axis=-1)
            return ~np.all((rewards == first) | unknown, axis=-1)
        return ~np.all(rewards == rewards[..., :1], axis=-1)


@dataclass(frozen=True)
class DropAllCorrectGroups(GroupFilter):
    """The NGRPO release's filter: drop groups in which every answer earns r_max, keep all-wrong
    groups.

    NGRPO gives an all-correct group zero advantage, so it would only dilute the batch; an all-wrong
    group is exactly where calibration creates a learning signal, so it must stay.
    """

    name: ClassVar[str] = "drop_all_correct"
    r_max: float = 1.0
    """The reward of a correct answer; a group is all-correct when every reward equals it."""

    def __post_init__(self):
        checks.number("r_max", self.r_max)

    def keep(self, rewards, *, mask_unknown=False):
        rewards = np.asarray(rewards)
        unknown = np.isnan(rewards) if mask_unknown else np.zeros(rewards.shape, dtype=bool)
        return ~np.all((rewards == self.r_max) | unknown, axis=-1)


# --------------------------------------------------------------------------------------------------
# Loss aggregation
# --------------------------------------------------------------------------------------------------

LOSS_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
"""How per-token losses of a minibatch become one number (verl's names):

* ``token-mean``: every response token of the minibatch weighs the same (NGRPO, DAPO). Long answers
  count more.
* ``seq-mean-token-mean``: average within each answer, then over answers (the original GRPO). Every
  answer weighs the same, so a token of a short answer counts more than one of a long answer.
* ``seq-mean-token-sum-norm``: token sums divided by a constant length, then averaged over answers
  (Dr.GRPO). No length bias in either direction.
"""


def token_weights(mask, mode: str, normaliser: float | None = None) -> np.ndarray:
    """The weight of each token in the aggregated loss: ``aggregate = sum(weights * token_loss)``.

    ``mask`` is shaped ``(..., N, T)``: N answers of T token slots, 1 where a slot holds a response
    token; any leading axes (seeds) are separate minibatches. Aggregation is linear, so these
    weights are also how the gradient of each token's loss enters the update. An answer with no
    tokens still counts as an answer in the sequence means (it contributes 0), and a minibatch with
    no tokens at all has all-zero weights (a loss of 0, never a division by zero). ``normaliser`` is
    the constant length of ``seq-mean-token-sum-norm`` (default: T, the padded response length).
    """
    checks.choice("loss_aggregation", mode, LOSS_AGGREGATIONS)
    mask = checks.finite_array("mask", mask)
    if mask.ndim < 2:
        raise ValueError(f"mask must be shaped (..., answers, tokens), got shape {mask.shape}")
    num_answers, num_slots = mask.shape[-2:]
    if mode == "token-mean":
        return mask / np.maximum(mask.sum(axis=(-2, -1), keepdims=True), 1.0)
    if mode == "seq-mean-token-mean":
        lengths = np.maximum(mask.sum(axis=-1, keepdims=True), 1.0)
        return mask / lengths / max(num_answers, 1)
    if normaliser is None:
        normaliser = float(num_slots)
    normaliser = checks.number("normaliser", normaliser, low=0.0, low_open=True)
    return mask / normaliser / max(num_answers, 1)


def aggregate_loss(token_loss, mask, mode: str, normaliser: float | None = None):
    """Aggregate ``(..., N, T)`` per-token losses under ``mask`` with one of ``LOSS_AGGREGATIONS``.

    Returns a float for a single minibatch ``(N, T)``, an array over the leading axes otherwise.
    """
    weights = token_weights(mask, mode, normaliser)
    token_loss = checks.finite_array("token_loss", token_loss)
    if token_loss.shape != weights.shape:
        raise ValueError(f"token_loss has shape {token_loss.shape} but mask has shape "
                         f"{weights.shape}")
    total = np.sum(weights * token_loss, axis=(-2, -1))
    return float(total) if total.ndim == 0 else total


# --------------------------------------------------------------------------------------------------
# Methods and the registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One RL-for-LLM method, as far as a single policy-gradient step is concerned."""

    name: str
    """Registry key, also the method's label and colour in every figure."""
    advantage: AdvantageEstimator
    """Turns a group's rewards into one advantage per answer."""
    clip_low: float = 0.2
    """eps_low: the ratio pi/pi_old may fall to 1 - eps_low before an answer with negative advantage
    stops being pushed down. Smaller is stricter: NGRPO's 0.16 limits how hard one step can penalise
    failures."""
    clip_high: float = 0.2
    """eps_high: the ratio may rise to 1 + eps_high before an answer with positive advantage stops
    being pushed up. Larger lets rare correct answers gain probability faster (DAPO's clip-higher
    against entropy collapse)."""
    group_filter: GroupFilter = field(default_factory=KeepAllGroups)
    """Which sampled groups enter the update."""
    loss_aggregation: str = "token-mean"
    """How per-token losses become one number: one of ``LOSS_AGGREGATIONS``."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to the initial (reference) policy; 0 lets the policy drift
    freely."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus; positive values reward keeping the policy spread out."""
    summary: str = ""
    """One line for tables and ``--help``."""

    def __post_init__(self):
        if not isinstance(self.advantage, AdvantageEstimator):
            raise ValueError(f"advantage must be an AdvantageEstimator, got {self.advantage!r}")
        if not isinstance(self.group_filter, GroupFilter):
            raise ValueError(f"group_filter must be a GroupFilter, got {self.group_filter!r}")
        checks.number("clip_low", self.clip_low, low=0.0, high=1.0, high_open=True)
        checks.number("clip_high", self.clip_high, low=0.0)
        checks.choice("loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS)
        checks.number("kl_coef", self.kl_coef, low=0.0)
        checks.number("entropy_coef", self.entropy_coef)

    def advantages(self, rewards, values=None, *, mask_unknown: bool = False,
                   **policy_inputs) -> np.ndarray:
        """Advantages of every answer (of every token, for a per-token estimator), with the answers
        of dropped groups set to 0. ``values`` and ``policy_inputs`` go to the estimator (see
        ``AdvantageEstimator``). ``mask_unknown=True``: NaN marks an unknown reward, which gets 0
        and stays out of its group's statistics and filter (``AdvantageEstimator.__call__``,
        ``GroupFilter.keep``); without it a NaN raises."""
        advantages = self.advantage(rewards, values, mask_unknown=mask_unknown, **policy_inputs)
        keep = self.group_filter.keep(rewards, mask_unknown=mask_unknown)
        keep = keep.reshape(keep.shape + (1,) * (advantages.ndim - keep.ndim))
        return np.where(keep, advantages, 0.0)

    def replace(self, **changes) -> "Method":
        """A copy with some fields changed (and validated again)."""
        return dataclasses.replace(self, **changes)

    def retuned(self, *, r_max: float | None = None, virtual_samples: int | None = None,
                ddof: int | None = None, clip_low: float | None = None,
                clip_high: float | None = None) -> "Method":
        """A copy with the method knobs that are given (None leaves a knob as the preset has it);
        the one retuning of the project, behind every command's ``--r-max``, ``--virtual-samples``,
        ``--ddof``, ``--clip-low``, ``--clip-high`` and the notebooks' sliders.

        ``r_max`` (the best reward, NGRPO's virtual answer), ``virtual_samples`` and ``ddof`` (the
        std convention) retune the estimators that list them in ``calibration_options`` and leave
        the others as they are, so one call can retune a whole list of methods; PSR-NSR's r_max,
        the scale of graded rewards, is left alone, so a correct answer (reward 1) stays correct.
        ``r_max`` moves the all-correct filter (``DropAllCorrectGroups``) with it: a group is
        all-correct when every answer earns the best reward. ``clip_low`` and ``clip_high`` are the
        PPO ratio's bounds 1 - clip_low and 1 + clip_high. Raises ``ValueError`` naming a knob out
        of range (r_max <= 0, virtual_samples < 1, ddof not 0 or 1, a bad clip bound).
        """
        if r_max is not None:
            r_max = checks.number("r_max", r_max, low=0.0, low_open=True)
        if virtual_samples is not None:
            virtual_samples = checks.integer("virtual_samples", virtual_samples, low=1)
        if ddof is not None:
            ddof = checks.integer("ddof", ddof, low=0, high=1)
        options = dict(r_max=r_max, virtual_samples=virtual_samples, ddof=ddof)
        calibration = {key: value for key, value in options.items()
                       if value is not None and key in self.advantage.calibration_options}
        changes = {key: value for key, value in dict(clip_low=clip_low, clip_high=clip_high).items()
                   if value is not None}
        if calibration:
            changes["advantage"] = dataclasses.replace(self.advantage, **calibration)
        if r_max is not None and isinstance(self.group_filter, DropAllCorrectGroups):
            changes["group_filter"] = DropAllCorrectGroups(r_max=r_max)
        return self.replace(**changes) if changes else self


# verl's inherited default in the NGRPO release; its baselines run in the same fork.
_RELEASE_ENTROPY = 0.001

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ppo", CriticAdvantage(), 0.2, 0.2, KeepAllGroups(), kl_coef=0.001,
           entropy_coef=_RELEASE_ENTROPY,
           summary="PPO: r - V with a learned critic; symmetric clip 0.2"),
    Method("grpo", GRPOAdvantage(), 0.2, 0.2, KeepAllGroups(), kl_coef=0.001,
           entropy_coef=_RELEASE_ENTROPY,
           summary="GRPO: group z-score; homogeneous groups give no gradient"),
    Method("dapo", GRPOAdvantage(), 0.2, 0.28, DropHomogeneousGroups(),
           entropy_coef=_RELEASE_ENTROPY,
           summary="DAPO: GRPO advantage, clip-higher 0.2/0.28, homogeneous groups dropped"),
    Method("psr_nsr", WeightedReinforceAdvantage(positive_weight=0.1), 0.2, 0.2, KeepAllGroups(),
           entropy_coef=_RELEASE_ENTROPY,
           summary="PSR-NSR (W-REINFORCE): +0.1 correct, -1 wrong, no normalisation"),
    Method("ngrpo", NGRPOAdvantage(), 0.16, 0.24, DropAllCorrectGroups(),
           entropy_coef=_RELEASE_ENTROPY,
           summary="NGRPO: virtual r_max sample in the statistics, clip 0.16/0.24, "
                   "all-correct groups dropped"),
    Method("dr_grpo", DrGRPOAdvantage(), 0.2, 0.2, KeepAllGroups(),
           loss_aggregation="seq-mean-token-sum-norm",
           summary="Dr.GRPO: r - mean, no std, constant length normaliser"),
    Method("rloo", RLOOAdvantage(), 0.2, 0.2, KeepAllGroups(),
           summary="RLOO: r - mean of the other answers"),
    Method("psr", PSRAdvantage(), 0.2, 0.2, KeepAllGroups(),
           summary="PSR: only correct answers, +1"),
    Method("nsr", NSRAdvantage(), 0.2, 0.2, KeepAllGroups(), summary="NSR: only wrong answers, -1"),
    # The paper's ablations, on the NGRPO recipe (no KL) with one component at a time.
    Method("grpo_asym_clip", GRPOAdvantage(), 0.16, 0.24, KeepAllGroups(),
           entropy_coef=_RELEASE_ENTROPY,
           summary="ablation: GRPO advantage + asymmetric clip 0.16/0.24"),
    Method("grpo_calibrated", NGRPOAdvantage(), 0.2, 0.2, KeepAllGroups(),
           entropy_coef=_RELEASE_ENTROPY,
           summary="ablation: GRPO + advantage calibration, symmetric clip 0.2"),
    Method("ngrpo_no_filter", NGRPOAdvantage(), 0.16, 0.24, KeepAllGroups(),
           entropy_coef=_RELEASE_ENTROPY,
           summary="ablation: calibration + asymmetric clip, all-correct groups kept"),
    # NGRPO's rivals (sources and open choices: the estimators' docstrings), each on its paper's
    # recipe: MaxRL's verl scripts (clip 0.2, no KL, no entropy bonus), QAE on the DAPO recipe it
    # was released with, RL-ZVP with DAPO's clip-higher, LENS on its paper's GRPO (no KL,
    # sequence-mean loss). AsymRE's off-policy REINFORCE has no ratio; clip 0.2 here matches it on
    # each rollout's first update. shifted_baseline is the NGRPO recipe with NGRPO's baseline and no
    # std.
    Method("maxrl", MaxRLAdvantage(), 0.2, 0.2, KeepAllGroups(),
           summary="MaxRL: (r - mean) / mean, 0 for an all-wrong group; pushes hard prompts most"),
    Method("qae", QAEAdvantage(), 0.2, 0.28, DropHomogeneousGroups(),
           summary="QAE: GRPO with the group's 0.4-quantile as baseline, on the DAPO recipe"),
    Method("rl_zvp", RLZVPAdvantage(), 0.2, 0.28, KeepAllGroups(),
           summary="RL-ZVP: GRPO on mixed groups, +/- alpha * token entropy on zero-variance ones"),
    Method("lens", LENSAdvantage(), 0.2, 0.2, KeepAllGroups(),
           loss_aggregation="seq-mean-token-mean",
           summary="LENS: wrong answers penalised by the policy's confidence in them"),
    Method("asymre", ShiftedBaselineAdvantage(shift=-0.1), 0.2, 0.2, KeepAllGroups(),
           summary="AsymRE: r - (mean - 0.1), no std"),
    Method("shifted_baseline", ShiftedBaselineAdvantage(fraction=1 / 9), 0.16, 0.24,
           DropAllCorrectGroups(), entropy_coef=_RELEASE_ENTROPY,
           summary="NGRPO's baseline (k + 1) / 9 at G = 8 without its std, on the NGRPO recipe"),
)}


def check_scores_correct_answers(method: Method, because: str) -> None:
    """Refuse, with ``ValueError``, a method whose estimator would refuse the reward 1 of a correct
    answer (its r_max below 1); ``because`` says why the caller's rewards reach 1."""
    ceiling = method.advantage.reward_bounds()[1]
    if ceiling is not None and ceiling < 1.0:
        raise ValueError(f"r_max must be at least 1, got {ceiling}: {because}")


def get_method(name: str) -> Method:
    """The preset called ``name``; a clear error listing the known names otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def parse_methods(text: str) -> list[Method]:
    """Presets from a comma-separated list such as ``"grpo,ngrpo"``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"methods must name at least one method, got {text!r}")
    return [get_method(name) for name in names]

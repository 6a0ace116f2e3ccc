"""The long-answer task as a run is given it: ``LongAnswerConfig`` (the task's sizes and options on
top of the loop's settings: the cap, the work levels, the natural length, DAPO's overlong filter
and soft punishment) and ``make_long_answer_task``, which draws the task and solves each prompt's
required work so that its exact starting success rate equals its target of the difficulty profile.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from ngrpo_sim.base import checks
from ngrpo_sim.methods.metrics import powers_of_two_up_to
from ngrpo_sim.methods.presets import LOSS_AGGREGATIONS, Method
from ngrpo_sim.simulators.bandit import draw_features
from ngrpo_sim.simulators.long_answer_exact import CHUNK, answer_statistics
from ngrpo_sim.simulators.long_answers import (DONE_SHARPNESS, EARLY_END, GRADED_CREDIT,
                                               HABIT_SPREAD, HABIT_STEPS, MAX_START_SHARE, METRICS,
                                               POSITION_FEATURES, STEP_PLASTICITY, TOKENS_PER_STEP,
                                               VERBOSITY_SPREAD, WRAP_UP, LongAnswerTask)
from ngrpo_sim.simulators.loop_config import PASS_AT_K_MAX, REWARD_KINDS, LoopConfig
from ngrpo_sim.simulators.profile import starting_success


def make_long_answer_task(num_prompts: int = 128, max_length: int = 1024, work_cap: int = 32,
                          profile="base", feature_dim: int = 4, feature_signal: float = 0.5,
                          rewards: str = "binary", loss_aggregation: str | None = None,
                          overlong_filter: bool = False, overlong_buffer: int = 0,
                          overlong_penalty: float = 1.0, group_size: int = 8,
                          step_plasticity: float = STEP_PLASTICITY,
                          natural_length: int | None = None, position_features: bool = True,
                          seed: int = 0) -> LongAnswerTask:
    """Build a task whose prompts start at the profile's success rates (see the module docstring).
    ``profile`` is a name of ``profile.PROFILES`` or comma-separated rates. ``natural_length`` is
    the token scale of the task's starting lengths (default: ``max_length``); a larger one is the
    same task under a tighter cap. Without ``position_features`` the policy cannot read its position
    (G = 0). Tasks are cached by their arguments (a run of several methods
    builds one), so their arrays are read-only."""
    if not isinstance(profile, str):
        profile = ",".join(str(float(rate)) for rate in np.ravel(profile))
    options = dict(num_prompts=num_prompts, max_length=max_length, work_cap=work_cap,
                   profile=profile, feature_dim=feature_dim, feature_signal=feature_signal,
                   rewards=rewards, loss_aggregation=loss_aggregation,
                   overlong_filter=overlong_filter, overlong_buffer=overlong_buffer,
                   overlong_penalty=overlong_penalty, group_size=group_size,
                   step_plasticity=step_plasticity, natural_length=natural_length,
                   position_features=position_features)
    check_task_options(**options)
    return _cached_task(**options, seed=seed)


def check_task_options(*, num_prompts, max_length, work_cap, feature_dim, feature_signal, rewards,
                       loss_aggregation, overlong_filter, overlong_buffer, overlong_penalty,
                       step_plasticity, natural_length, position_features, **_) -> None:
    """Refuse, naming the option and the value, what ``make_long_answer_task`` cannot build."""
    checks.integer("num_prompts", num_prompts, low=1)
    checks.integer("max_length", max_length, low=2)
    checks.integer("work_cap", work_cap, low=2)
    checks.integer("feature_dim", feature_dim, low=1)
    checks.number("feature_signal", feature_signal, low=0.0)
    checks.choice("rewards", rewards, REWARD_KINDS)
    if loss_aggregation is not None:
        checks.choice("loss_aggregation", loss_aggregation, LOSS_AGGREGATIONS)
    if not isinstance(overlong_filter, bool):
        raise ValueError(f"overlong_filter must be True or False, got {overlong_filter!r}")
    checks.integer("overlong_buffer", overlong_buffer, low=0, high=max_length - 1)
    checks.number("overlong_penalty", overlong_penalty, low=0.0)
    checks.number("step_plasticity", step_plasticity, low=0.0)
    if natural_length is not None:
        checks.integer("natural_length", natural_length, low=2)
    if not isinstance(position_features, bool):
        raise ValueError(f"position_features must be True or False, got {position_features!r}")


@functools.lru_cache(maxsize=8)
def _cached_task(*, num_prompts, max_length, work_cap, profile, feature_dim, feature_signal,
                 rewards, loss_aggregation, overlong_filter, overlong_buffer, overlong_penalty,
                 group_size, step_plasticity, natural_length, position_features,
                 seed) -> LongAnswerTask:
    scale = natural_length or max_length
    rng = np.random.default_rng(seed)
    target = starting_success(profile, num_prompts, rng)
    habit = HABIT_STEPS * np.exp(HABIT_SPREAD * rng.normal(size=num_prompts))
    tokens_per_step = scale * TOKENS_PER_STEP * np.exp(
        VERBOSITY_SPREAD * rng.normal(size=num_prompts))
    direction, noise = draw_features(rng, (num_prompts,), feature_dim)

    work = np.arange(work_cap, dtype=np.float64)
    step_rate = np.clip(1.0 / tokens_per_step, 1e-4, 0.5)[:, None]
    early, late = EARLY_END / scale, min(0.5, 1.0 / (WRAP_UP * scale))
    hazard = early + (late - early) / (1.0 + np.exp(-DONE_SHARPNESS * (work - habit[:, None])))
    state_offsets = np.stack(np.broadcast_arrays(
        np.log(step_rate / (1 - step_rate)), np.log(hazard / ((1 - hazard) * (1 - step_rate)))),
        axis=-1)
    time_offsets = np.zeros((max_length, 2))
    start = answer_statistics(state_offsets[None], time_offsets[None],
                              np.zeros((num_prompts, work_cap)))
    reachable = MAX_START_SHARE * (1.0 - start.truncation[0])
    required = np.array([_required_work(row, rate) for row, rate in
                         zip(start.end_work[0], np.minimum(target, reachable))])
    correct = 1.0 / (1.0 + np.exp(-(work - required[:, None])))
    credit = np.zeros_like(correct)
    if rewards == "graded":
        credit = GRADED_CREDIT * np.minimum(1.0, work / np.maximum(required[:, None], 1.0))

    extra = required - habit
    signal = (extra - extra.mean()) / max(extra.std(), 1e-12)
    prompt_features = noise + feature_signal * signal[:, None] * direction
    per_token = 3 + feature_dim
    num_params = 2 * per_token + 2 * POSITION_FEATURES
    state_features = np.zeros((num_prompts, work_cap, 2, num_params))
    time_features = np.zeros((max_length, 2, num_params))
    share = work / (work_cap - 1)
    tau = np.arange(max_length) / max_length
    for token in range(2):
        block = slice(token * per_token, (token + 1) * per_token)
        columns = state_features[:, :, token, block]
        columns[..., 0], columns[..., 1], columns[..., 2] = 1.0, share, share ** 2
        columns[..., 3:] = prompt_features[:, None, :]
        if token == 0:
            columns *= step_plasticity
        column = 2 * per_token + POSITION_FEATURES * token
        time_features[:, token, column:column + POSITION_FEATURES] = np.stack(
            [tau, tau ** 2], -1) * (step_plasticity if token == 0 else 1.0) * position_features
    arrays = (correct, credit, required, habit, state_offsets, time_offsets, state_features,
              time_features)
    for array in arrays:
        array.flags.writeable = False
    return LongAnswerTask(*arrays, loss_aggregation=loss_aggregation,
                          overlong_filter=overlong_filter, overlong_buffer=overlong_buffer,
                          overlong_penalty=overlong_penalty, group_size=group_size)


def _required_work(end_work: np.ndarray, target: float) -> float:
    """r with sum_w end_work[w] sigmoid(w - r) = target: the required work that gives a prompt
    whose answers end at each work level with ``end_work`` the success rate ``target``."""
    work = np.arange(end_work.size)

    def excess(required):
        return end_work @ (1.0 / (1.0 + np.exp(required - work))) - target

    low, high = -60.0, end_work.size + 60.0
    return brentq(excess, low, high, xtol=1e-13, rtol=4 * np.finfo(float).eps)


@dataclass(frozen=True)
class LongAnswerConfig(LoopConfig):
    """Everything one simulated training run on the long-answer task needs, besides the method."""

    policy: str = "shared"
    """``shared`` only: one theta for every prompt and position (the task's point is that a push at
    one position moves all of them)."""
    num_prompts: int = 128
    """P, the size of the training set."""
    feature_dim: int = 4
    """k, the prompt features per token; theta has 2 (k + 3) + 4 entries."""
    learning_rate: float = 0.01
    """Learning rate of the policy."""
    max_length: int = 1024
    """L, most tokens per answer (the end token included); an answer that reaches it without ending
    is truncated and earns 0."""
    work_cap: int = 32
    """W: an answer counts at most W - 1 steps of work (the exact metrics cost O(L W) per
    prompt)."""
    loss_aggregation: str | None = None
    """``token-mean``, ``seq-mean-token-mean`` or ``seq-mean-token-sum-norm`` for every method; None
    keeps each method's own (most presets: token-mean; Dr. GRPO: seq-mean-token-sum-norm)."""
    overlong_filter: bool = False
    """DAPO's overlong filtering: truncated answers leave the loss."""
    overlong_buffer: int = 0
    """L_cache of DAPO's soft overlong punishment in tokens (DAPO: a fifth of L); 0: none."""
    overlong_penalty: float = 1.0
    """The soft punishment of an answer of L tokens (DAPO: 1)."""
    step_plasticity: float = STEP_PLASTICITY
    """How far a change of theta moves the step token's logit against the end token's (the scale of
    its features): how freely training changes the tokens spent per step of work."""
    natural_length: int | None = None
    """The token scale of the task: its starting lengths are fractions of it (None: max_length). A
    natural_length above max_length is the same task under a tighter cap."""
    position_features: bool = True
    """Whether the policy reads its position t / L (without, it cannot learn to stop near the cap
    other than by working less)."""

    def __post_init__(self):
        super().__post_init__()
        if self.policy != "shared":
            raise ValueError(f"policy must be 'shared' for long answers (one theta for every "
                             f"prompt and position), got {self.policy!r}")
        check_task_options(**self.task_options())
        if self.mode == "expected" and self.overlong_buffer:
            raise ValueError(f"mode='expected' cannot train with overlong_buffer="
                             f"{self.overlong_buffer}: the punished rewards depend on the length, "
                             f"outside the gain identity (use mode='sampled')")

    def check_method(self, method: Method) -> None:
        """``LoopConfig.check_method``, and refuse an estimator that takes no negative rewards when
        the soft overlong punishment gives them."""
        super().check_method(method)
        floor = method.advantage.reward_bounds()[0]
        if self.overlong_buffer and self.overlong_penalty and floor is not None and floor >= 0:
            raise ValueError(f"method {method.name!r} takes rewards >= {floor}, but the soft "
                             f"overlong punishment (overlong_buffer={self.overlong_buffer}) gives "
                             f"rewards down to -{self.overlong_penalty}; use overlong_filter or "
                             f"another method")

    def memory_bytes(self) -> float:
        """An upper estimate of the peak memory (bytes) of one run under this config, so that a run
        beyond the machine is refused before it starts. Each term is an array family of the run,
        its factor an upper envelope of the peaks tracemalloc measured (tests/test_long_answers.py
        checks that the estimate is never below the measured peak, also when every answer is
        truncated, and at most 3 times above it):

        * sampled: the rollout's int8 tokens of every candidate group (S x C x G x L, a few
          copies), and per token slot of the B used groups (S x B x G x L: every answer may be
          truncated) the update's indices, log-probabilities and a minibatch's temporaries;
        * the exact metrics: length distributions (S x P x L, several) and the pass's buffers
          (S x P x W per position of a chunk); expected mode: the values to go (S x P x L x W,
          twice);
        * the features (P x W x 2 x D) and the record ((steps + 1) x S per metric and pass@k).
        """
        seeds, prompts, length = self.seeds, self.num_prompts, self.max_length
        num_params = 2 * (self.feature_dim + 3) + 2 * POSITION_FEATURES
        total = 8.0 * 8 * seeds * prompts * length
        total += 8.0 * 4 * CHUNK * seeds * prompts * self.work_cap
        total += 8.0 * 2 * prompts * self.work_cap * num_params + 8.0 * 2 * length * num_params
        if self.mode == "sampled":
            slots = seeds * self.prompts_per_step * self.group_size * length
            total += 5.0 * seeds * self.candidates * self.group_size * length
            total += (190.0 + 300.0 / self.minibatches) * slots
        else:
            total += 8.0 * 1.3 * seeds * prompts * (length + 1) * self.work_cap
        recorded = len(METRICS) + len(powers_of_two_up_to(PASS_AT_K_MAX))
        return total + 8.0 * 1.2 * (self.steps + 1) * seeds * recorded + 2 ** 20

    def task_options(self) -> dict:
        """The fields that ``make_long_answer_task`` takes."""
        names = ("num_prompts", "max_length", "work_cap", "profile", "feature_dim",
                 "feature_signal", "rewards", "loss_aggregation", "overlong_filter",
                 "overlong_buffer", "overlong_penalty", "group_size", "step_plasticity",
                 "natural_length", "position_features")
        return {name: getattr(self, name) for name in names}

    def build_task(self) -> LongAnswerTask:
        return make_long_answer_task(**self.task_options(), seed=self.seed)

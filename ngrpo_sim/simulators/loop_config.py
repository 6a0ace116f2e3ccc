"""What a simulated training run is given, checked when it is made: the settings every simulator
shares (``LoopConfig``: the policy kind, the starting profile, the rollout, the updates, the
optimiser, the run), the fixed names and thresholds the loop and its metrics use, the refusal of a
run beyond the machine's memory (``check_memory``) and the one error a diverging run raises
(``TrainingDiverged``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ngrpo_sim.base import checks
from ngrpo_sim.methods.presets import Method, check_scores_correct_answers
from ngrpo_sim.simulators.optim import OPTIMIZERS
from ngrpo_sim.simulators.profile import parse_profile
from ngrpo_sim.simulators.release_assembly import ESTIMATORS

MODES = ("sampled", "expected")


POLICIES = ("tabular", "shared")


REWARD_KINDS = ("binary", "graded", "noise")


BATCH_ASSEMBLIES = ("whole_groups", "release")


NOISE_REWARD_RATE = 0.5
"""With ``rewards="noise"``, the chance that a sampled answer earns 1 (and 0 otherwise), whatever
the answer: the largest reward variance, so the most noise per step."""


ABANDONED_BELOW = 1e-3
"""A prompt counts as abandoned while its success rate is below this."""


SOLVED_FROM = 0.5
"""A prompt counts as solved once its success rate reaches this; newly solved if it started
below."""


REGRESSED_SHARE = 0.5
"""A prompt counts as regressed once its success rate falls below this share of its starting value:
training made it worse, the signature of interference (shared policy) or of an unstable update."""


PASS_AT_K_MAX = 256


class TrainingDiverged(ValueError):
    """A run whose numbers are no longer finite: its parameters after an optimiser update, its
    logits, which may also lie further apart than a float holds (their log-probabilities
    overflow), or the KL estimate of a step (``approx_kl``), whose log-ratios may add up past it.

    Only a learning rate far too large gets there: a saturated policy (logits in the thousands,
    ratios that underflow to 0) is still finite and trains on. ``args`` are (method name,
    learning rate, what went wrong, the 1-based step or None inside a step); ``simulate`` adds
    the step. A ValueError, so that ``ngrpo-sim`` prints it as one line with exit code 2.
    """

    def __init__(self, method: str, learning_rate: float, what: str, step: int | None = None):
        super().__init__(method, learning_rate, what, step)

    def __str__(self) -> str:
        method, learning_rate, what, step = self.args
        at = "" if step is None else f" at step {step}"
        return (f"method {method!r} diverged{at} with learning_rate={learning_rate:g}: {what}; "
                f"lower --learning-rate (learning_rate; the default is "
                f"{LoopConfig.learning_rate:g})")


@dataclass(frozen=True)
class LoopConfig:
    """What every simulated training run needs besides its task's own sizes: the policy kind, the
    starting profile, the rollout, the updates, the optimiser and the run."""

    policy: str = "tabular"
    """``tabular`` (free logits per prompt: no interference) or ``shared`` (log-linear, parameters
    shared by all prompts, like a network)."""
    num_prompts: int = 256
    """P, the size of the training set."""
    profile: str = "base"
    """Starting success rates: a name in ``profile.PROFILES`` or comma-separated rates cycled over
    prompts."""
    rewards: str = "binary"
    """``binary`` (correct 1, wrong 0), ``graded`` (wrong answers earn partial credit in [0, 0.9])
    or ``noise`` (each sampled answer earns 1 with probability 1/2 whatever it is; accuracy still
    counts the correct answers)."""
    feature_dim: int = 16
    """D, the size of the shared policy's parameter vector; smaller D means more interference
    between prompts."""
    feature_signal: float = 0.5
    """Strength of the feature direction that all correct answers share (shared policy): 0 leaves
    only interference, larger values make learning transfer between prompts."""
    prompts_per_step: int = 64
    """B, prompts per rollout batch (groups kept per step when refilling)."""
    group_size: int = 8
    """G, answers sampled per prompt."""
    minibatches: int = 4
    """Optimiser steps per epoch over the rollout batch (the release: 4). The first sees ratio 1."""
    epochs: int = 1
    """Passes over the rollout batch. Above 1 the tabular policy's ratios leave 1 and clipping
    acts."""
    refill: bool = True
    """Draw more prompts until B groups survive the group filter (the release's dynamic
    sampling)."""
    max_candidates: int | None = None
    """Most prompts a refilling rollout looks at (default: min(P, 4 B))."""
    optimizer: str = "adam"
    """``adam`` or ``sgd``."""
    learning_rate: float = 0.05
    """Learning rate of the policy."""
    value_learning_rate: float = 0.1
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
    """``sampled`` (real rollouts) or ``expected`` (the deterministic expected update, see the
    module doc)."""
    seed: int = 0
    """Seeds the task (prompts, starting logits, features) and the sampling."""
    batch_assembly: str = "whole_groups"
    """``whole_groups`` (the method as the paper defines it: a step trains B whole groups) or
    ``release`` (as the authors' release assembles its batches from rows: groups split at the cut
    of B G rows, the rest carried to the next step and trained there against the policy that
    sampled them, a group of one row gets A = r; see ``ngrpo_sim.simulators.release_assembly``).
    Sampled mode with refill; methods with GRPO's or NGRPO's advantage."""

    expected_inputs: ClassVar[tuple[str, ...]] = ()
    """The policy inputs (``advantages.POLICY_INPUTS``) that this config's task gives the same for
    every answer of a group (``group_inputs``): an estimator that reads only these has the
    expected update of a count-based one at each value, so the expected mode can train it."""

    def __post_init__(self):
        checks.choice("policy", self.policy, POLICIES)
        checks.integer("num_prompts", self.num_prompts, low=1)
        parse_profile(self.profile)
        checks.choice("rewards", self.rewards, REWARD_KINDS)
        checks.integer("feature_dim", self.feature_dim, low=1)
        checks.integer("group_size", self.group_size, low=2)
        checks.integer("prompts_per_step", self.prompts_per_step, low=1)
        if self.prompts_per_step > self.num_prompts:
            raise ValueError(f"prompts_per_step={self.prompts_per_step} exceeds num_prompts="
                             f"{self.num_prompts}; prompts are drawn without replacement")
        checks.integer("minibatches", self.minibatches, low=1, high=self.prompts_per_step)
        checks.integer("epochs", self.epochs, low=1)
        if self.max_candidates is not None:
            checks.integer("max_candidates", self.max_candidates, low=self.prompts_per_step,
                            high=self.num_prompts)
        checks.number("feature_signal", self.feature_signal, low=0.0)
        checks.choice("optimizer", self.optimizer, OPTIMIZERS)
        checks.number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        checks.number("value_learning_rate", self.value_learning_rate, low=0.0, high=1.0)
        if self.kl_coef is not None:
            checks.number("kl_coef", self.kl_coef, low=0.0)
        if self.entropy_coef is not None:
            checks.number("entropy_coef", self.entropy_coef)
        checks.integer("steps", self.steps, low=1)
        checks.integer("seeds", self.seeds, low=1)
        checks.choice("mode", self.mode, MODES)
        checks.integer("seed", self.seed, low=0)
        if self.mode == "expected" and self.rewards != "binary":
            raise ValueError(f"mode='expected' needs binary rewards (the gain identity), got "
                             f"rewards={self.rewards!r}")
        checks.choice("batch_assembly", self.batch_assembly, BATCH_ASSEMBLIES)
        if self.batch_assembly == "release" and (self.mode != "sampled" or not self.refill):
            raise ValueError(f"batch_assembly='release' needs mode='sampled' and refill=True (it "
                             f"assembles sampled rows until B G are collected), got mode="
                             f"{self.mode!r}, refill={self.refill}; use "
                             f"batch_assembly='whole_groups'")

    def check_method(self, method: Method) -> None:
        """Refuse, with ``ValueError``, a method this config cannot train: in expected mode, an
        estimator that reads a policy input differing between the answers of a group on this
        config's task (LENS's log-probabilities everywhere; RL-ZVP's token entropies on answers
        made of tokens), whose expected update has no closed form; and, in any mode, an estimator
        whose r_max lies below the task's best reward, 1."""
        check_scores_correct_answers(method, "the task's rewards reach 1 (a correct answer) and "
                                             "r_max is the best reward (use --r-max 1 or more)")
        if self.batch_assembly == "release" and not isinstance(method.advantage, ESTIMATORS):
            raise ValueError(f"batch_assembly='release' cannot train method {method.name!r}: the "
                             f"release's fallback for a group of one row exists for GRPO's and "
                             f"NGRPO's advantage only, and {method.name!r} uses the "
                             f"{method.advantage.name} estimator (use "
                             f"batch_assembly='whole_groups')")
        if self.mode != "expected":
            return
        varying = [name for name in method.advantage.policy_inputs
                   if name not in self.expected_inputs]
        if varying:
            raise ValueError(
                f"mode='expected' cannot train method {method.name!r}: it reads the policy's "
                f"{' and '.join(varying)}, which is not the same for every answer and token of a "
                f"group on this task, so its expected update has no closed form (use "
                f"mode='sampled')")

    @property
    def candidates(self) -> int:
        """Prompts drawn per rollout."""
        if not self.refill:
            return self.prompts_per_step
        return self.max_candidates or min(self.num_prompts, 4 * self.prompts_per_step)

    def build_task(self):
        """The task this config describes (see the module docstring for what a task provides)."""
        raise NotImplementedError

    def memory_bytes(self) -> float | None:
        """An upper estimate of the peak memory (bytes) of one run, so that ``check_memory`` can
        refuse a run beyond the machine before it starts; None where the config bounds its sizes
        itself (the token task refuses more than its ``MAX_LOGITS`` numbers)."""
        return None


def check_memory(config: LoopConfig, at_once: int = 1) -> None:
    """Refuse, before any work, a run that would need more memory than the machine has available
    now; ``at_once`` runs of it side by side (a sweep's local processes) need that much more."""
    at_once = checks.integer("at_once", at_once, low=1)
    needed = config.memory_bytes()
    if needed is None:
        return
    steps = f"{config.steps} step" + ("s" if config.steps > 1 else "")
    answers = getattr(config, "num_answers", None)
    checks.fits_in_memory(
        f"a run of {config.seeds} seeds x {config.num_prompts} prompts"
        + (f" x {answers} answers" if answers else "")
        + f" ({config.prompts_per_step} prompts per step x group {config.group_size}, {steps})"
        + (f", {at_once} at once," if at_once > 1 else ""),
        at_once * needed, "use fewer seeds, prompts, answers or steps"
        + (" or fewer workers" if at_once > 1 else ""))

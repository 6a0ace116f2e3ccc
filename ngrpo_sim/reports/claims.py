"""What every section of ``ngrpo-sim report`` starts from and how each says what it found: the
headline settings of the bandit and token experiments, and a difference with its interval in words.

The sections (``report``, ``token_report``, ``rivals_report``, ``clipping_report``) import from
here, never from each other's modules, so the report's parts form no cycle.
"""

from __future__ import annotations

import numpy as np

from ngrpo_sim.experiments.runs import difference_interval
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.sequence_config import SequenceConfig
from ngrpo_sim.simulators.training_loop import RunRecord

HEADLINE_METHODS = ("grpo", "ngrpo", "dapo", "psr_nsr", "ppo")
HEADLINE = DynamicsConfig(policy="shared", optimizer="adam", learning_rate=0.05, minibatches=4,
                          steps=200, seeds=16)
LEARNING_RATES = {("tabular", "adam"): 0.05, ("shared", "adam"): 0.05, ("tabular", "sgd"): 32.0,
                  ("shared", "sgd"): 4.0}
"""Per policy and optimiser, a step size at which GRPO gains a comparable amount of accuracy in the
sweep's steps (SGD steps scale with the gradient, which token-mean divides by the batch's answer
count)."""
TOKEN_LEARNING_RATES = {"shared": 0.01, "tabular": 0.05}
"""Adam's step size per policy: the shared policy's one parameter vector moves every prompt at once,
so it needs a smaller step for GRPO to make comparable progress in the section's steps."""
TOKEN_HEADLINE = SequenceConfig(policy="shared", optimizer="adam",
                                learning_rate=TOKEN_LEARNING_RATES["shared"], num_prompts=64,
                                prompts_per_step=16, minibatches=4, steps=80, seeds=8)

def verdict(mean: float, half: float, above: str, below: str) -> str:
    """A difference (``mean`` ± its 95% half-width ``half``) in words: ``above`` where the whole
    interval lies above 0, ``below`` where it lies below, "no clear difference" where it holds 0."""
    if not np.isfinite(half):
        return "n/a"
    if mean - half > 0:
        return above
    if mean + half < 0:
        return below
    return "no clear difference"


def entropy_at_matched_accuracy(run_record: RunRecord, accuracy: float) -> float:
    """Seed-mean entropy at the first moment the seed-mean accuracy reaches ``accuracy`` (linear
    interpolation)."""
    curve = np.nanmean(run_record.metrics["accuracy"], axis=1)
    entropy = np.nanmean(run_record.metrics["entropy"], axis=1)
    reached = np.nonzero(curve >= accuracy)[0]
    if reached.size == 0:
        return float("nan")
    step = reached[0]
    if step == 0:
        return float(entropy[0])
    share = (accuracy - curve[step - 1]) / (curve[step] - curve[step - 1])
    return float(entropy[step - 1] + share * (entropy[step] - entropy[step - 1]))


def difference(first: np.ndarray, second: np.ndarray, above: str, below: str,
               digits: int = 3) -> str:
    """``first`` − ``second`` (final values per seed) as "mean ± half-width: verdict", with the 95%
    Welch interval of ``experiments.runs.difference_interval`` and ``verdict``'s words."""
    mean, half = difference_interval(first, second)
    return f"{mean:+.{digits}f} ± {half:.{digits}f}: {verdict(mean, half, above, below)}"

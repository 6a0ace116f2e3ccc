"""Training dynamics of a method on a bandit task, vectorised over seeds and prompts.

The step is the one of ``ngrpo_sim.training_loop`` (rollout with refill, group filter, advantages,
clipped minibatch updates, or their expectation in ``mode="expected"``), shared with the token
simulator; this module holds the bandit's config. What is particular to the bandit
(``bandit.BanditTask``): every answer is a single token, so the three loss aggregations coincide and
each answer of a minibatch weighs 1 / (answers in the minibatch); KL to the starting policy and the
entropy bonus are computed exactly from the full distributions of the prompts in the minibatch (a
language model can only estimate them from samples).

Clipping needs a ratio away from 1. With the tabular policy and SGD a prompt's logits only move when
that prompt is trained on, and every prompt sits in one minibatch per epoch, so clipping acts only
with ``epochs > 1``. Adam's momentum moves every logit at every update, and the shared policy moves
every prompt with every update, so there later minibatches see ratios away from 1.

``mode="expected"`` uses the gain identity of ``ngrpo_sim.landscape``: the expected on-policy
gradient of each prompt's group is c(p) pi (r - p). Sampled minus expected shows what sampling noise
and clipping add. For SGD on the tabular policy with a method that drops no group, one expected step
equals the mean of sampled steps exactly; with a filter the survivors' count is treated as
independent of the group's own outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from ngrpo_sim import _checks
from ngrpo_sim.bandit import POLICY_METRICS, BanditTask, make_task
from ngrpo_sim.training_loop import (ABANDONED_BELOW, MODES, PASS_AT_K_MAX, REGRESSED_SHARE,
                                     ROLLOUT_METRICS, SOLVED_FROM, Coefficients, LoopConfig,
                                     Rollout, TrainState, Trajectory, apply_rollout, draw_rollout,
                                     expected_step, group_outcome_probabilities,
                                     predicted_entropy_change, regulariser_logit_grads, simulate)

# The shared loop's names stay importable from here, where they have always been.
__all__ = ["ABANDONED_BELOW", "METRICS", "MODES", "PASS_AT_K_MAX", "POLICY_METRICS",
           "REGRESSED_SHARE", "ROLLOUT_METRICS", "SOLVED_FROM", "Coefficients", "DynamicsConfig",
           "Rollout", "TrainState", "Trajectory", "apply_rollout", "draw_rollout", "expected_step",
           "group_outcome_probabilities", "policy_metrics", "predicted_entropy_change",
           "regulariser_logit_grads", "simulate"]

METRICS = POLICY_METRICS + ROLLOUT_METRICS


@dataclass(frozen=True)
class DynamicsConfig(LoopConfig):
    """Everything one simulated training run on the bandit needs, besides the method."""

    num_answers: int = 16
    """K, candidate answers per prompt. More answers means more ways to be wrong and more entropy to lose."""
    right_answers: int = 1
    """How many of the K answers of each prompt are right."""

    def __post_init__(self):
        super().__post_init__()
        _checks.integer("num_answers", self.num_answers, low=2)

    def build_task(self) -> BanditTask:
        return make_task(self.num_prompts, self.num_answers, self.right_answers, self.profile, self.policy,
                         self.feature_dim, self.feature_signal, self.rewards, seed=self.seed)


def policy_metrics(task: BanditTask, logits, initial_success, ks):
    """Metrics of the policy on all prompts (means over prompts, one value per seed) and pass@k (S, len(ks))."""
    return task.policy_metrics(logits, initial_success, ks)

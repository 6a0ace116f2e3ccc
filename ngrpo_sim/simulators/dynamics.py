"""Training dynamics of a method on a bandit task, vectorised over seeds and prompts.

The step is the one of ``ngrpo_sim.simulators.training_loop`` (rollout with refill, group filter,
advantages,
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

``mode="expected"`` uses the gain identity of ``ngrpo_sim.analysis.landscape``: the expected
on-policy gradient of each prompt's group is c(p) pi (r - p). Sampled minus expected shows what
sampling noise and clipping add. For SGD on the tabular policy with a method that drops no group,
one expected step equals the mean of sampled steps exactly; with a filter the survivors' count is
treated as independent of the group's own outcome. RL-ZVP trains here too: it reads the entropy of
the prompt's answer distribution, which the G answers share, so given it the advantage is
count-based and the gain is c_GRPO(p) + alpha H p^(G - 1), exact in the same cases. LENS reads each
answer's probability, which differs within a group: it has no closed form and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ngrpo_sim.methods.metrics import powers_of_two_up_to
from ngrpo_sim.simulators.bandit import POLICY_METRICS, BanditTask, check_task_options, make_task
from ngrpo_sim.simulators.loop_config import (ABANDONED_BELOW, MODES, PASS_AT_K_MAX,
                                              REGRESSED_SHARE, SOLVED_FROM, LoopConfig)
from ngrpo_sim.simulators.task_parts import (ROLLOUT_METRICS, Coefficients,
                                             predicted_entropy_change, regulariser_logit_grads)
from ngrpo_sim.simulators.training_loop import (Rollout, RunRecord, TrainState, apply_rollout,
                                                draw_rollout, expected_step,
                                                group_outcome_probabilities, simulate)

# The shared loop's names stay importable from here, where they have always been.
__all__ = ["ABANDONED_BELOW", "METRICS", "MODES", "PASS_AT_K_MAX", "POLICY_METRICS",
           "REGRESSED_SHARE", "ROLLOUT_METRICS", "SOLVED_FROM", "Coefficients", "DynamicsConfig",
           "Rollout", "TrainState", "RunRecord", "apply_rollout", "draw_rollout", "expected_step",
           "group_outcome_probabilities", "policy_metrics", "predicted_entropy_change",
           "regulariser_logit_grads", "simulate"]

METRICS = POLICY_METRICS + ROLLOUT_METRICS


@dataclass(frozen=True)
class DynamicsConfig(LoopConfig):
    """Everything one simulated training run on the bandit needs, besides the method."""

    num_answers: int = 16
    """K, candidate answers per prompt. More answers means more ways to be wrong and more entropy to
    lose."""
    correct_answers: int = 1
    """How many of the K answers of each prompt are correct."""

    expected_inputs: ClassVar[tuple[str, ...]] = ("entropy",)
    """An answer is one token: the entropy at it is the prompt's, the same for a whole group."""

    def __post_init__(self):
        super().__post_init__()
        # Everything make_task would refuse, refused now: before a command's first progress bar.
        check_task_options(self.num_prompts, self.num_answers, self.correct_answers, self.profile,
                           self.policy, self.feature_dim, self.feature_signal, self.rewards)

    def memory_bytes(self) -> float:
        """An upper estimate of the peak memory (bytes) that ``simulate`` needs for one method under
        this config, so that a run beyond the machine is refused before it starts.

        Each term is an array family of the run; its factor is an upper envelope of the peaks that
        tracemalloc measured over both policies, modes and optimisers (tests/test_dynamics.py checks
        that the estimate is never below the measured peak and at most 2.5 times above it):

        * S x P x K float64 arrays: every prompt's logits, probabilities and policy metrics
          (tabular: also the parameters and their gradient, Adam: its two moments; expected mode:
          the exact update of every prompt);
        * sampled: S x B x G x K comparisons drawing the answers, S x B x K arrays of the batch, and
          for the shared policy the batch's S x B x K x D features;
        * the shared policy's fixed P x K x D features;
        * the record: (steps + 1) x S values of every metric and of pass@k.
        """
        seeds, prompts, answers = self.seeds, self.num_prompts, self.num_answers
        batch, features = self.prompts_per_step, self.feature_dim
        tabular, sampled = self.policy == "tabular", self.mode == "sampled"
        adam = self.optimizer == "adam"
        per_prompt = 7.0 + 1.5 * tabular + 2.0 * (tabular and adam) + 7.0 * (not sampled)
        total = 8.0 * per_prompt * seeds * prompts * answers
        if sampled:
            total += 7.0 * seeds * batch * self.group_size * answers
            total += 8.0 * 10.0 * seeds * batch * answers
            total += 8.0 * 1.0 * seeds * batch * answers * features * (not tabular)
        total += 8.0 * 2.2 * prompts * answers * features * (not tabular)
        recorded = len(METRICS) + len(powers_of_two_up_to(PASS_AT_K_MAX))
        total += 8.0 * 1.2 * (self.steps + 1) * seeds * recorded
        return total + 2 ** 18

    def build_task(self) -> BanditTask:
        return make_task(self.num_prompts, self.num_answers, self.correct_answers, self.profile,
                         self.policy,
                         self.feature_dim, self.feature_signal, self.rewards, seed=self.seed)


def policy_metrics(task: BanditTask, logits, initial_success, ks):
    """Metrics of the policy on all prompts (means over prompts, one value per seed) and pass@k
    (S, len(ks))."""
    return task.policy_metrics(logits, initial_success, ks)

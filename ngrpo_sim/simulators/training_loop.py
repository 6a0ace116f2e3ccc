"""The training loop shared by the bandit simulator (``dynamics``) and the token simulator.

One training step, as in the release's trainer:

1. **Rollout.** Each seed draws prompts without replacement and samples G answers per prompt from
   the current policy. With ``refill`` the draw continues past B prompts until B groups survive
   the method's group filter (as DAPO's and NGRPO's dynamic sampling do; at most ``candidates``
   prompts are looked at); without it, the B drawn groups are filtered and the step trains on
   what is left.
2. **Advantages** from the method's estimator (PPO: r - V with a per-prompt value learned
   alongside).
3. **Updates.** The kept groups are split into ``minibatches`` consecutive parts; each part gives
   one optimiser step on the clipped surrogate, with ratios taken against the rollout policy;
   ``epochs`` passes over the batch.

With ``rewards="noise"`` the rollout's rewards are pure noise: each sampled answer earns 1 with
probability ``NOISE_REWARD_RATE``, whatever it is (arm-independent random rewards, as in Park et
al. 2025, arXiv 2509.26114, Section 5). Every estimator that reads only the rewards then has an
expected first update of exactly 0, so what moves the policy is sampling noise and, on later
minibatches, the clip. The verifier's correct answers still define accuracy and pass@k.

``mode="expected"`` replaces steps 1-3 by their expectation at first order: the task gives the
expected on-policy update of one prompt's group (the gain identity of
``ngrpo_sim.analysis.landscape``, or its sequence form in ``ngrpo_sim.analysis.sequence_gain``),
weighted as the sampled step weighs it on average (every prompt has the same chance to be drawn; a
group that survives the filter shares its minibatch with 1 + Bin(n, kappa) survivors, kappa the mean
chance to survive), applied once per minibatch update without clipping.

``batch_assembly="release"`` replaces steps 1-3's groups by rows, as the authors' release assembles
its batches (``ngrpo_sim.simulators.release_assembly``): each generation batch of B groups has its
rows shuffled and its all-correct groups dropped, generation batches are added until B G rows are
collected, the first B G rows are trained (cut in order into the minibatches) and the rest come
first in the next step, trained there against the log-probabilities of the policy that sampled
them; advantages are computed over the rows of each group that are present, a group of one row
getting A = r. Sampled mode only.

What differs between the simulators is the task: how a policy samples answers, scores them, turns
the clipped loss of a minibatch into a parameter gradient, gives the expected update, and
measures itself. A task supplies these as methods (``bandit.BanditTask`` for one-token answers,
``sequences.SequenceTask`` for token sequences):

* ``initial_params(S)``, ``logits(params)``, ``backprop(logit_grads)``, ``success(logits)``;
* ``sample(params, prompts, G, rng)`` -> answers (S, C, G, ...) and ``score(prompts, answers)``
  -> the verifier's rewards (S, C, G);
* ``update_batch(params, prompts, answers, reference, stale=None, stale_params=None)`` -> an
  object with ``policy_inputs(names)`` (what an estimator that reads the policy declares),
  ``gradient(params, advantages, in_part, method, coefficients)`` -> (parameter gradient, tokens
  clipped low, clipped high, tokens; each per seed) and ``statistics(params, valid)`` -> the
  rollout metrics measured after the updates (``approx_kl`` and the task's own); ``in_part`` and
  ``valid`` mark groups (S, B) or single answers (S, B, G), and the ratios of the groups marked
  ``stale`` (S, B) are taken against ``stale_params`` (the carried rows of a release-assembled
  batch);
* ``expected_direction(logits, method, group_size, values, reference, coefficients,
  keep_probability)`` -> the expected ascent of one group and the regulariser gradient, both per
  prompt in logit space;
* ``expected_approx_kl(logits, new_logits)``;
* ``group_inputs(logits, names)`` -> each policy input of ``names`` (S, P), for a task whose
  config lists them in ``expected_inputs`` (the same for every answer of a group, so an estimator
  that reads only these is count-based given them; the bandit: the entropy at the prompt, which
  RL-ZVP reads);
* ``measure(logits)`` -> what the metrics read of a policy (computed once per step),
  ``policy_metrics(measured, initial_success, ks)`` and ``entropy_prediction(measured_before,
  measured_after)``; ``metric_names``, every metric a step records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ngrpo_sim.analysis.landscape import binomial_pmf, canonical_groups, count_group_advantages
from ngrpo_sim.methods.metrics import as_probability, powers_of_two_up_to
from ngrpo_sim.methods.presets import Method, get_method
from ngrpo_sim.simulators.loop_config import (NOISE_REWARD_RATE, PASS_AT_K_MAX, LoopConfig,
                                              TrainingDiverged, check_memory)
from ngrpo_sim.simulators.optim import Optimizer
from ngrpo_sim.simulators.release_assembly import (RELEASE_METRICS, CarriedRows, assemble,
                                                   release_advantages)
from ngrpo_sim.simulators.task_parts import Coefficients


@dataclass
class Rollout:
    """The random part of a step: which prompts each seed drew, which answers it sampled and what
    they earned."""

    prompts: np.ndarray
    """(S, C) prompt indices, distinct within a seed, in the order they were drawn."""
    answers: np.ndarray
    """(S, C, G) sampled answer indices (bandit), or (S, C, G, L) sampled token sequences (token
    simulator)."""
    rewards: np.ndarray | None = None
    """(S, C, G) the rewards the answers earned; None: the task's verifier scores them."""
    row_order: np.ndarray | None = None
    """(S, C, G) with ``batch_assembly="release"``: each answer's place among the reordered rows of
    its generation batch (the B groups drawn together), a uniformly random permutation."""

    def scored(self, task) -> np.ndarray:
        """The rewards of the answers: as drawn, or the task's verifier's."""
        return task.score(self.prompts, self.answers) if self.rewards is None else self.rewards


def rollout_rewards(task, config: LoopConfig, prompts: np.ndarray, answers: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """The rewards (S, C, G) of sampled answers: the verifier's, or with ``rewards="noise"``
    independent draws that earn 1 with probability ``NOISE_REWARD_RATE`` (drawn from ``rng``,
    which other reward kinds leave untouched)."""
    if config.rewards != "noise":
        return task.score(prompts, answers)
    return (rng.random(prompts.shape + (config.group_size,)) < NOISE_REWARD_RATE).astype(
        np.float64)


@dataclass
class TrainState:
    """What changes during training."""

    params: np.ndarray
    optimizer: Optimizer
    values: np.ndarray
    """(S, P) PPO's value estimates (zeros and unused for other methods)."""
    carried: CarriedRows | None = None
    """With ``batch_assembly="release"``: the rows the last step collected beyond its B G."""

    @classmethod
    def start(cls, task, config: LoopConfig) -> "TrainState":
        """The state before the first step: the task's initial parameters for each of the config's
        seeds, a fresh optimiser, zero value estimates."""
        return cls(task.initial_params(config.seeds),
                   Optimizer(config.optimizer, config.learning_rate),
                   np.zeros((config.seeds, task.num_prompts)))


def _per_prompt(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``values`` shaped (S,) or (S, P) with trailing axes added to broadcast against ``like``."""
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def optimiser_step(state: TrainState, grads: np.ndarray, method: Method, config: LoopConfig
                   ) -> None:
    """One update of ``state.params`` by the optimiser; raises ``TrainingDiverged`` if it leaves a
    parameter that is not finite, before the next minibatch computes anything from it."""
    state.params = state.optimizer.step(state.params, grads)
    if not np.all(np.isfinite(state.params)):
        raise TrainingDiverged(method.name, config.learning_rate,
                               "its parameters are no longer finite after an optimiser update")


def check_step(logits: np.ndarray, approx_kl: np.ndarray, method: Method, config: LoopConfig
               ) -> None:
    """Raise ``TrainingDiverged`` after a step that left logits that are not finite or lie further
    apart than a float holds (checked on the spread of all of them, an upper bound on that of each
    softmax, in two reductions), or whose ``approx_kl`` is not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        spread = np.max(logits) - np.min(logits)
    if not np.isfinite(spread):
        raise TrainingDiverged(method.name, config.learning_rate,
                               "its logits are no longer finite or lie further apart than a "
                               "float holds (1.8e308)")
    if not np.all(np.isfinite(approx_kl)):
        raise TrainingDiverged(method.name, config.learning_rate,
                               "the step moved the policy further than a float holds (approx_kl "
                               "is no longer finite)")


def draw_rollout(task, method: Method, params: np.ndarray, config: LoopConfig,
                 rng: np.random.Generator, carried: CarriedRows | None = None,
                 order_rng: np.random.Generator | None = None) -> Rollout:
    """Draw prompts without replacement and sample a group of answers for each, in rounds of B.

    Without refill one round is drawn. With refill, rounds continue until every seed holds B
    groups that pass the method's filter, or ``config.candidates`` prompts have been drawn. With
    ``batch_assembly="release"`` a round is a generation batch and enough means B G rows with the
    ``carried`` ones; ``order_rng`` (a generator of its own, so that the answers drawn from ``rng``
    do not depend on the assembly) draws each generation batch's row order.
    """
    num_seeds, batch = params.shape[0], config.prompts_per_step
    order = rng.permuted(np.tile(np.arange(task.num_prompts), (num_seeds, 1)), axis=1)
    kept = np.zeros(num_seeds, dtype=int)
    needed = np.full(num_seeds, batch)
    if carried is not None:
        needed = -(-(batch * config.group_size - carried.count) // config.group_size)
    prompts, answers, rewards = [], [], []
    for start in range(0, config.candidates, batch):
        round_prompts = order[:, start:min(start + batch, config.candidates)]
        round_answers = task.sample(params, round_prompts, config.group_size, rng)
        prompts.append(round_prompts)
        answers.append(round_answers)
        rewards.append(rollout_rewards(task, config, round_prompts, round_answers, rng))
        kept += method.group_filter.keep(rewards[-1]).sum(axis=1)
        if not config.refill or np.all(kept >= needed):
            break
    rollout = Rollout(*(np.concatenate(parts, axis=1) for parts in (prompts, answers, rewards)))
    if config.batch_assembly == "release":
        rollout.row_order = np.concatenate([
            order_rng.permuted(np.tile(np.arange(part.size // num_seeds), (num_seeds, 1)),
                               axis=1).reshape(part.shape) for part in rewards], axis=1)
    return rollout


def apply_rollout(task, method: Method, config: LoopConfig, state: TrainState, rollout: Rollout,
                  reference: np.ndarray) -> dict[str, np.ndarray]:
    """Steps 2-3 of a sampled training step for a rollout; updates ``state``, returns the
    statistics ``ROLLOUT_METRICS`` (the task may add its own), each (S,).

    ``reference`` holds the starting logits (``task.logits`` of the starting parameters) for the KL
    term. Dense on purpose (it is the simulators' hot loop): the used groups are compacted into B
    slots per seed with a stable argsort, and the tasks' ``gradient`` scatters per-answer
    gradients into a flat (seed, slot, answer) index with one bincount. Its readable twins walk
    seed by seed, group by group, answer by answer: ``ngrpo_sim.simulators.reference_step`` (the
    bandit) and ``ngrpo_sim.simulators.reference_sequence_step`` (answers made of tokens); the tests
    ``test_vectorised_step_equals_the_loop_oracle`` (tests/test_dynamics.py) and
    ``test_vectorised_token_step_equals_the_loop_oracle`` (tests/test_sequences.py) check that they
    agree to 1e-12.

    With ``batch_assembly="release"`` the slots hold the partial groups that
    ``release_assembly.assemble`` cut from the rows (the carried ones in ``state.carried`` first),
    minibatches and ``valid`` mark single answers, and the step also records ``RELEASE_METRICS``;
    its oracle is ``release_step_oracle`` in tests/test_release_assembly.py.
    """
    num_seeds = rollout.prompts.shape[0]
    batch, parts = config.prompts_per_step, config.minibatches
    coefficients = Coefficients.of(method, config)
    all_rewards = rollout.scored(task)
    keep = method.group_filter.keep(all_rewards)
    values = None
    if config.batch_assembly == "release":
        assembled = assemble(rollout.prompts, rollout.answers, all_rewards, keep,
                             rollout.row_order, state.carried, batch, parts, state.params.copy())
        examined = assembled.examined
        prompts, answers, rewards = assembled.prompts, assembled.answers, assembled.rewards
        valid = trained = assembled.rows
        carried, state.carried = state.carried, assembled.carried
        stale, stale_params = ((None, None) if carried is None
                               else (assembled.stale, carried.sampled_by))
        update = task.update_batch(state.params, prompts, answers, reference, stale, stale_params)
        seed_of, slot_of, _ = np.nonzero(trained)
        advantages = np.zeros(rewards.shape)
        advantages[trained] = release_advantages(rewards[trained],
                                                 seed_of * rewards.shape[1] + slot_of,
                                                 method.advantage)
        minibatch = assembled.minibatch
        statistics = dict(assembled.statistics)
    else:
        kept_before = np.cumsum(keep, axis=1) - keep
        examined = kept_before < batch
        used = keep & examined
        # The used groups, compacted in drawn order into B slots per seed (unused slots are
        # padding).
        slots = np.argsort(~used, axis=1, kind="stable")[:, :batch]
        valid = np.take_along_axis(used, slots, axis=1)
        trained = np.broadcast_to(valid[..., None], valid.shape + (config.group_size,))
        prompts = np.take_along_axis(rollout.prompts, slots, axis=1)
        answers = rollout.answers[np.arange(num_seeds)[:, None], slots]
        rewards = np.take_along_axis(all_rewards, slots[..., None], axis=1)
        if method.advantage.uses_values:
            values = np.take_along_axis(state.values, prompts, axis=1)[..., None]
        update = task.update_batch(state.params, prompts, answers, reference)
        # The one place where rewards become advantages; an estimator that reads the policy (LENS:
        # the answers' log-probabilities, RL-ZVP: the entropy at their tokens) gets what it
        # declares.
        advantages = method.advantage(rewards, values,
                                      **update.policy_inputs(method.advantage.policy_inputs))
        num_used = valid.sum(axis=1, keepdims=True)
        # Equal consecutive minibatches of the used groups.
        minibatch = np.where(valid, np.arange(batch) * parts // np.maximum(num_used, 1), -1)
        statistics = {"kept_groups": num_used[:, 0].astype(np.float64)}
    right = all_rewards == 1.0
    num_examined = examined.sum(axis=1)
    statistics.update({
        "sampled_answers": (num_examined * config.group_size).astype(np.float64),
        "share_all_wrong": np.sum(examined & ~right.any(-1), axis=1) / num_examined,
        "share_all_correct": np.sum(examined & right.all(-1), axis=1) / num_examined,
        "share_mixed": np.sum(examined & right.any(-1) & ~right.all(-1), axis=1) / num_examined,
    })
    answer_nonzero = advantages != 0.0
    if answer_nonzero.ndim > rewards.ndim:  # per-token advantages: an answer with any is not zero
        answer_nonzero = answer_nonzero.any(axis=-1)
    # The examined answers without a gradient: those of the groups the filter dropped, and the
    # trained ones whose advantage is 0.
    dropped = np.sum(examined & ~keep, axis=1) * config.group_size
    answers_seen = dropped + trained.sum(axis=(1, 2))
    statistics["share_zero_advantage"] = (answers_seen - np.sum(trained & answer_nonzero,
                                                                axis=(1, 2))) / np.maximum(
        answers_seen, 1)

    clipped_low = clipped_high = tokens = 0.0
    for _ in range(config.epochs):
        for part in range(parts):
            grads, part_low, part_high, part_tokens = update.gradient(
                state.params, advantages, minibatch == part, method, coefficients)
            optimiser_step(state, grads, method, config)
            clipped_low += part_low
            clipped_high += part_high
            tokens += part_tokens

    if method.advantage.uses_values:
        seeds = np.arange(num_seeds)[:, None]
        step = config.value_learning_rate * (rewards.mean(axis=-1) - values[..., 0])
        state.values[seeds, prompts] += np.where(valid, step, 0.0)

    statistics["clipfrac_low"] = clipped_low / np.maximum(tokens, 1)
    statistics["clipfrac_high"] = clipped_high / np.maximum(tokens, 1)
    statistics.update(update.statistics(state.params, valid))
    return statistics


def group_outcome_probabilities(method: Method, group_size: int, success: np.ndarray,
                                values: np.ndarray | None = None, **group_inputs
                                ) -> tuple[np.ndarray, np.ndarray]:
    """For success rates (S, P), the probability that a group is kept and the expected share of its
    answers with zero (filtered) advantage, exactly: from the canonical groups with k correct
    answers (given each prompt's ``group_inputs`` (S, P), the policy inputs an estimator such as
    RL-ZVP reads, the same for every answer of a group), or for PPO's r - V from the chance that an
    answer's reward equals V."""
    if method.advantage.uses_values:
        zero_share = success * (values == 1.0) + (1 - success) * (values == 0.0)
        return np.ones_like(success), zero_share
    groups = canonical_groups(group_size)
    kept = method.group_filter.keep(groups)
    zero_share = np.mean(count_group_advantages(method, group_size, **group_inputs) == 0.0,
                         axis=-1)
    pmf = binomial_pmf(group_size, success)
    return as_probability(pmf @ kept), as_probability(np.sum(pmf * zero_share, axis=-1))


def _expected_examined(config: LoopConfig, keep_probability: np.ndarray) -> np.ndarray:
    """Expected number of groups a rollout examines: B, or with refill enough to keep B, at most the
    candidates."""
    if not config.refill:
        return np.full_like(keep_probability, float(config.prompts_per_step))
    wanted = config.prompts_per_step / np.maximum(keep_probability, 1e-300)
    return np.minimum(float(config.candidates), wanted)


def expected_step(task, method: Method, config: LoopConfig, state: TrainState, reference: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """The deterministic counterpart of ``draw_rollout`` + ``apply_rollout`` (see the module
    docstring), for a method that ``config.check_method`` accepts."""
    coefficients = Coefficients.of(method, config)
    logits = task.logits(state.params)
    success = task.success(logits)
    group_size, num_prompts = config.group_size, task.num_prompts
    inputs = (task.group_inputs(logits, method.advantage.policy_inputs)
              if method.advantage.policy_inputs else {})
    keep_probability, zero_share = group_outcome_probabilities(method, group_size, success,
                                                               state.values, **inputs)
    ascent, regulariser = task.expected_direction(logits, method, group_size, state.values,
                                                  reference, coefficients, keep_probability,
                                                  **inputs)
    mean_keep = keep_probability.mean(axis=1)
    examined = _expected_examined(config, mean_keep)
    # A kept group shares its minibatch with the other kept groups, 1 + Bin(examined - 1, kappa) in
    # all, and E[1 / (1 + Bin(n, q))] = (1 - (1 - q)^(n + 1)) / ((n + 1) q); times the chance
    # examined / P of being drawn:
    with np.errstate(divide="ignore"):
        survivors = -np.expm1(examined * np.log1p(-mean_keep))
    weight = np.where(mean_keep > 0, survivors / np.maximum(mean_keep, 1e-300),
                      examined) / num_prompts
    policy_grads = -_per_prompt(weight, ascent) * ascent
    regulariser = _per_prompt(weight[:, None] * keep_probability, regulariser) * regulariser
    param_grads = task.backprop(policy_grads + regulariser)
    for _ in range(config.epochs * config.minibatches):
        optimiser_step(state, param_grads, method, config)
    if method.advantage.uses_values:
        step = config.value_learning_rate * (config.prompts_per_step / num_prompts)
        state.values += step * (success - state.values)
    all_wrong, all_correct = (1 - success) ** group_size, success ** group_size
    kept = np.minimum(config.prompts_per_step, examined * mean_keep)
    zeros = np.zeros(logits.shape[0])
    return {
        "sampled_answers": examined * group_size,
        "share_all_wrong": all_wrong.mean(1), "share_all_correct": all_correct.mean(1),
        "share_mixed": as_probability(1 - all_wrong - all_correct).mean(1),
        "share_zero_advantage": zero_share.mean(1), "kept_groups": kept,
        "clipfrac_low": zeros, "clipfrac_high": zeros,
        "approx_kl": task.expected_approx_kl(logits, task.logits(state.params)),
    }


@dataclass
class RunRecord:
    """The record of one method's run: every metric per step (row 0 = before training) and seed."""

    method: str
    config: LoopConfig
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    """name -> (steps + 1, S). Rollout metrics are NaN in row 0."""
    pass_at_k: np.ndarray | None = None
    """(steps + 1, S, len(ks)) exact pass@k averaged over prompts."""
    ks: np.ndarray = field(default_factory=lambda: powers_of_two_up_to(PASS_AT_K_MAX))
    initial_success: np.ndarray | None = None
    """(P,) starting success rate of each prompt."""
    final_success: np.ndarray | None = None
    """(S, P) success rate of each prompt after training."""

    def final(self, name: str) -> np.ndarray:
        """The metric after the last step, one value per seed."""
        return self.metrics[name][-1]


def simulate(method: Method | str, config: LoopConfig, progress: bool | tqdm = True) -> RunRecord:
    """Train ``method`` on the config's task for every seed at once; record every metric per step.

    ``progress`` is True for a bar of this run's steps, False for none, or an existing bar to
    advance. Raises ValueError for an unknown method or a run that needs more memory than is
    available (``check_memory``), and its subclass ``TrainingDiverged`` for a run whose parameters
    or logits stop being finite (a learning rate far too large).
    """
    method = get_method(method) if isinstance(method, str) else method
    if not isinstance(method, Method):
        raise ValueError(f"method must be a Method or a preset name, got {method!r}")
    config.check_method(method)
    check_memory(config)
    return train(method, config, progress)


def train(method: Method, config: LoopConfig, progress: bool | tqdm = True) -> RunRecord:
    """``simulate`` for a method and config that were checked where they entered
    (``config.check_method`` and ``check_memory``; ``sweep.sweep_tasks`` and ``sweep.run_tasks``
    do both before any run): nothing is checked again, per run or per step."""
    task = config.build_task()
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    release = config.batch_assembly == "release"
    order_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2])) if release else None
    state = TrainState.start(task, config)
    reference = task.logits(state.params).copy()
    initial_success = task.success(reference[0])
    run_record = RunRecord(method.name, config, initial_success=initial_success)
    ks = run_record.ks
    records = {name: np.full((config.steps + 1, config.seeds), np.nan)
               for name in task.metric_names + (RELEASE_METRICS if release else ())}
    pass_records = np.empty((config.steps + 1, config.seeds, len(ks)))
    logits = reference
    measured = task.measure(logits)
    row, pass_records[0] = task.policy_metrics(measured, initial_success, ks)
    for name, value in row.items():
        records[name][0] = value
    bar = progress or None
    if progress is True:
        bar = tqdm(total=config.steps, desc=method.name, leave=False)
    for step in range(1, config.steps + 1):
        try:
            # What overflows in a diverging step is reported once, as TrainingDiverged.
            with np.errstate(over="ignore", invalid="ignore"):
                if config.mode == "sampled":
                    rollout = draw_rollout(task, method, state.params, config, rng,
                                           state.carried, order_rng)
                    row = apply_rollout(task, method, config, state, rollout, reference)
                else:
                    row = expected_step(task, method, config, state, reference)
                logits = task.logits(state.params)
            check_step(logits, row["approx_kl"], method, config)
        except TrainingDiverged as error:
            raise TrainingDiverged(*error.args[:3], step) from None
        new_measured = task.measure(logits)
        policy_row, pass_records[step] = task.policy_metrics(new_measured, initial_success, ks)
        row.update(policy_row)
        row["entropy_change"] = row["entropy"] - records["entropy"][step - 1]
        row.update(task.entropy_prediction(measured, new_measured))
        for name, value in row.items():
            records[name][step] = value
        measured = new_measured
        if bar is not None:
            bar.update(1)
    if progress is True:
        bar.close()
    run_record.metrics, run_record.pass_at_k = records, pass_records
    run_record.final_success = task.success(logits)
    return run_record

"""Training batches assembled as the authors' NGRPO release assembles them: the training loop's
``batch_assembly="release"``.

The release (github.com/nangongrui-ngr/NGRPO, branch ``ngr``, commit e7a3804; "What the release
computes" in docs/method_reference.md) builds a step's batch from rows, one answer each, not from
groups:

1. a *generation batch* of B prompts with G answers each, whose B G rows it reorders across GPUs
   to balance their token counts (``_balance_batch``, which scatters every group's rows);
2. the rows of all-correct groups dropped, judged on whole groups, keeping the order of the rest;
3. generation batches added while fewer than B G rows are collected (after the rows carried from
   the previous step, which come first);
4. the first B G rows trained; the others are carried to the next step;
5. advantages computed on the trained rows by group id: a group with m >= 2 rows in the batch gets
   the estimator over those m rewards (NGRPO: with its virtual r_max answer); a group with one row
   gets mean 0 and std 1, A = r / (1 + eps), without the virtual answer (``core_algos.py`` 190-193,
   the same in GRPO's function, 236-239);
6. carried rows trained with the log-probabilities of the policy that sampled them, one step (that
   step's minibatch updates) older than the current rollout policy;
7. the B G rows cut in order into the minibatches, so a group can straddle them.

The reordering is modelled as a uniformly random permutation of the rows of each generation batch:
the bandit's answers all have one token, so length balancing has nothing to go on, and on real
lengths the partitioner places a group's rows without regard to the group. The model reproduces what
docs/release/batch_assembly.py measured with the release's own partitioner. A group of the
generation batch that the cut falls in, at a fraction f of its kept rows, keeps Bin(G, f) rows
before the cut; with f spread evenly that count is uniform on 0..G, so a kept group of that batch is
split with chance (G - 1) / (G + 1) and the split groups leave 1, 2, ..., G - 1 rows on a side
equally often. The release's measured counts of rows per group are flat in the same way (within 5%
for 1..7 rows of 8), and (1 - a)(G - 1) / (G + 1) of the kept groups split (a the all-correct share)
gives 64%, 55% and 46% for its three scenarios, against the 61%, 52% and 43% measured. Two
simplifications: minibatches take consecutive rows of the whole batch (the release's take the same
stretch of each GPU's share, so that its carried rows spread over all minibatches, here over the
first ones), and each step draws its prompts afresh (the release reads epochs), so a carried
group's prompt can be drawn again in the next step, as a new group.

Here the trained rows are kept as the groups they belong to: (S, U, G) slots, one per group present
in the batch, each answer at its index in its group and marked in ``rows`` when it is trained now.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ngrpo_sim.methods.advantages import AdvantageEstimator, GRPOAdvantage, NGRPOAdvantage
from ngrpo_sim.methods.groups import group_advantages

ESTIMATORS = (GRPOAdvantage, NGRPOAdvantage)
"""The estimators whose release function has the fallback of a group of one row (mean 0, std 1):
GRPO's and NGRPO's (``core_algos.py`` 190-193, 236-239)."""

RELEASE_METRICS = ("groups_cut", "batch_groups", "partial_groups", "single_groups",
                   "carried_rows", "trained_rows")
"""What a release-assembled step records besides ``training_loop.ROLLOUT_METRICS``, each a count
per seed: the kept groups with rows on both sides of this step's cut (trained now and carried), the
groups with rows in the trained batch, those of them with fewer than G rows there and with one row
there (A = r), the trained rows that were carried from the previous step, and the rows trained. The
shares of docs/release/batch_assembly.md are ratios of their sums over steps: groups split over two
steps = groups_cut / kept_groups, partial groups = partial_groups / batch_groups, groups of one =
single_groups / batch_groups, rows carried = carried_rows / trained_rows."""


def release_advantages(rewards, group_ids, estimator: AdvantageEstimator) -> np.ndarray:
    """The advantages the release gives a flat batch of rows (N,) with their group ids (N,): each
    group's rows against the other rows of that group present in the batch (``estimator`` over m
    rewards, NGRPO's with its virtual answers), and a group of one row A = r / (1 + eps), the
    release's mean 0 and std 1 (``core_algos.py`` 190-193). Raises ValueError for an estimator
    without that fallback (``ESTIMATORS``)."""
    if not isinstance(estimator, ESTIMATORS):
        raise ValueError(f"the release's group-of-one fallback exists for GRPO's and NGRPO's "
                         f"estimators only, got the {estimator.name} estimator")
    advantages = group_advantages(rewards, group_ids, estimator)
    _, group_of_row, sizes = np.unique(group_ids, return_inverse=True, return_counts=True)
    alone = sizes[group_of_row] == 1
    advantages[alone] = np.asarray(rewards, dtype=np.float64)[alone] / (1.0 + estimator.eps)
    return advantages


@dataclass
class CarriedRows:
    """The rows a release-assembled step collected beyond its B G, for the front of the next step,
    kept as the U partial groups they belong to."""

    prompts: np.ndarray
    """(S, U) the prompt of each group."""
    answers: np.ndarray
    """(S, U, G, ...) the group's answers (all G; ``rows`` says which are carried)."""
    rewards: np.ndarray
    """(S, U, G) their rewards."""
    rows: np.ndarray
    """(S, U, G) True for the carried answers."""
    order: np.ndarray
    """(S, U, G) each carried row's place among its seed's carried rows (0 first)."""
    sampled_by: np.ndarray
    """The parameters (per seed) of the policy that sampled them: their old log-probabilities."""

    @property
    def count(self) -> np.ndarray:
        """(S,) carried rows per seed."""
        return self.rows.sum(axis=(1, 2))


@dataclass
class ReleaseBatch:
    """One step's trained rows, as U partial groups per seed (unused slots have no rows)."""

    prompts: np.ndarray
    """(S, U) the prompt of each group."""
    answers: np.ndarray
    """(S, U, G, ...) its answers."""
    rewards: np.ndarray
    """(S, U, G) their rewards."""
    rows: np.ndarray
    """(S, U, G) True for the answers trained in this step."""
    minibatch: np.ndarray
    """(S, U, G) the minibatch of each trained answer (-1 for the others)."""
    stale: np.ndarray
    """(S, U) True for the groups carried from the previous step (sampled by ``carried_in``'s
    ``sampled_by``)."""
    examined: np.ndarray
    """(S, C) the drawn groups whose generation batch was read (the others were never needed)."""
    carried: CarriedRows | None
    """The rows for the next step; None when no seed has any."""
    statistics: dict[str, np.ndarray]
    """``RELEASE_METRICS`` and ``kept_groups``, each (S,)."""


def _compact(selected: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The slots (axis 1) where ``selected`` (S, U) holds, moved to the front in their order and
    cut to the largest count of any seed; ``arrays`` are indexed by (seed, slot) first."""
    width = int(selected.sum(axis=1).max(initial=0))
    slots = np.argsort(~selected, axis=1, kind="stable")[:, :width]
    seeds = np.arange(selected.shape[0])[:, None]
    return tuple(array[seeds, slots] for array in (selected, *arrays))


def assemble(prompts: np.ndarray, answers: np.ndarray, rewards: np.ndarray, keep: np.ndarray,
             row_order: np.ndarray, carried_in: CarriedRows | None, prompts_per_batch: int,
             minibatches: int, sampled_by: np.ndarray) -> ReleaseBatch:
    """A step's batch from its drawn groups, assembled as the release assembles it.

    ``prompts`` (S, C) were drawn in generation batches of ``prompts_per_batch`` = B (the last may
    be shorter), each group answered by ``answers`` (S, C, G, ...) with ``rewards`` (S, C, G);
    ``keep`` (S, C) says which groups pass the method's filter and ``row_order`` (S, C, G) the place
    of each row in its generation batch's reordered rows (0 .. B G - 1). ``carried_in`` holds the
    previous step's excess rows (None: none); ``sampled_by`` the parameters that sampled
    ``answers``, which rows carried out of this step keep. The rows are the carried ones first,
    then generation batch by generation batch the rows of the kept groups in their reordered order,
    up to the first batch that brings the count to B G; the first B G are trained, split in order
    into ``minibatches`` parts, and the rest are carried.
    """
    num_seeds, num_drawn, group_size = rewards.shape
    wanted = prompts_per_batch * group_size
    generation_batch = np.arange(num_drawn) // prompts_per_batch
    num_batches = int(generation_batch[-1]) + 1
    carried_count = (np.zeros(num_seeds, dtype=np.int64) if carried_in is None
                     else carried_in.count)
    kept_rows = np.stack([keep[:, generation_batch == b].sum(axis=1) for b in range(num_batches)],
                         axis=1) * group_size
    before = carried_count[:, None] + np.cumsum(kept_rows, axis=1) - kept_rows
    examined = (before < wanted)[:, generation_batch]
    collected = keep & examined
    # Each collected row's place in the step's sequence of rows: after the carried ones, generation
    # batch by generation batch, in the batch's reordered order.
    key = np.where(collected[..., None], generation_batch[:, None] * wanted + row_order,
                   num_batches * wanted).reshape(num_seeds, -1)
    rank = np.empty_like(key)
    np.put_along_axis(rank, np.argsort(key, axis=1, kind="stable"),
                      np.arange(key.shape[1])[None, :], axis=1)
    position = np.where(collected[..., None],
                        carried_count[:, None, None] + rank.reshape(rewards.shape), -1)
    trained_count = np.minimum(carried_count + collected.sum(axis=1) * group_size, wanted)

    if carried_in is not None:
        position = np.concatenate([np.where(carried_in.rows, carried_in.order, -1), position],
                                  axis=1)
        prompts = np.concatenate([carried_in.prompts, prompts], axis=1)
        answers = np.concatenate([carried_in.answers, answers], axis=1)
        rewards = np.concatenate([carried_in.rewards, rewards], axis=1)
    num_carried_in = position.shape[1] - num_drawn
    stale = np.broadcast_to(np.arange(position.shape[1]) < num_carried_in, position.shape[:2])
    trained = (position >= 0) & (position < wanted)
    carried_out = position >= wanted
    groups_cut = np.sum(trained.any(axis=-1) & carried_out.any(axis=-1), axis=1)

    rows, t_prompts, t_answers, t_rewards, t_position, t_stale = _compact(
        trained.any(axis=-1), prompts, answers, rewards, position, stale)
    rows = rows[..., None] & (t_position >= 0) & (t_position < wanted)
    per_seed = np.maximum(trained_count, 1)[:, None, None]
    minibatch = np.where(rows, t_position * minibatches // per_seed, -1)
    present = rows.sum(axis=-1)
    statistics = {
        "kept_groups": collected.sum(axis=1).astype(np.float64),
        "groups_cut": groups_cut.astype(np.float64),
        "batch_groups": np.sum(present > 0, axis=1).astype(np.float64),
        "partial_groups": np.sum((present > 0) & (present < group_size), axis=1).astype(
            np.float64),
        "single_groups": np.sum(present == 1, axis=1).astype(np.float64),
        "carried_rows": carried_count.astype(np.float64),
        "trained_rows": trained_count.astype(np.float64),
    }
    carried_next = None
    if carried_out.any():
        has, c_prompts, c_answers, c_rewards, c_position = _compact(
            carried_out.any(axis=-1), prompts, answers, rewards, position)
        c_rows = has[..., None] & (c_position >= wanted)
        carried_next = CarriedRows(c_prompts, c_answers, c_rewards, c_rows,
                                   np.where(c_rows, c_position - wanted, -1), sampled_by)
    return ReleaseBatch(t_prompts, t_answers, t_rewards, rows, minibatch, t_stale, examined,
                        carried_next, statistics)

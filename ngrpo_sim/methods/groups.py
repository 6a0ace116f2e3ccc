"""NGRPO on a flat batch: one reward per answer, a group id per answer, groups of any size.

``ngrpo_sim``'s estimators take rewards shaped ``(..., G)``: every group in one call has the same
size G. verl hands over something else: a flat batch of answers, each with the id of the prompt it
answers (its ``uid``), and groups that can differ in size (verl keeps the groups whose rollouts
partly failed). ``group_advantages`` sorts the answers into groups, stacks all groups of one size
into a ``(k, G)`` array, calls the ``ngrpo_sim`` definition once per size and puts each result back
in its answer's place. The math stays in ``ngrpo_sim``; this module only moves numbers around, in
numpy, without either engine. (TRL's groups are always whole, so its plugin reshapes its batch to
``(groups, G)`` and marks the answers no reward function could score as unknown instead.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ngrpo_sim.base import checks
from ngrpo_sim.methods.advantages import AdvantageEstimator


def _answers_by_group_size(group_ids: np.ndarray) -> Iterator[np.ndarray]:
    """For each group size G in the batch, the positions of the answers of all groups of that size.

    Each yielded array is shaped ``(k, G)``: row j lists, in batch order, the positions of the G
    answers of the j-th group of that size.
    """
    _, group_of_answer, group_sizes = np.unique(group_ids, return_inverse=True, return_counts=True)
    # The answers of group 0 first, then those of group 1, ...; a stable sort keeps batch order
    # inside a group.
    answers_in_group_order = np.argsort(group_of_answer, kind="stable")
    first_answer_of_group = np.cumsum(group_sizes) - group_sizes
    for size in np.unique(group_sizes):
        groups = np.flatnonzero(group_sizes == size)
        yield answers_in_group_order[first_answer_of_group[groups, None] + np.arange(size)]


def _flat_batch(rewards, group_ids) -> tuple[np.ndarray, np.ndarray]:
    rewards = checks.finite_array("rewards", rewards)
    group_ids = np.asarray(group_ids)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be flat (one reward per answer), got shape {rewards.shape}")
    if group_ids.shape != rewards.shape:
        raise ValueError(f"group_ids has shape {group_ids.shape} but rewards has shape "
                         f"{rewards.shape}; give one group id per answer")
    return rewards, group_ids


def group_advantages(rewards, group_ids, estimator: AdvantageEstimator) -> np.ndarray:
    """The advantage of every answer under ``estimator``, each computed against the answers of its
    own group.

    A group smaller than ``estimator.min_group_size`` gets advantage 0: the estimator is not defined
    for it, and an answer without a defined advantage must not move the policy.
    """
    rewards, group_ids = _flat_batch(rewards, group_ids)
    advantages = np.zeros_like(rewards)
    for answers in _answers_by_group_size(group_ids):
        if answers.shape[1] >= estimator.min_group_size:
            advantages[answers] = estimator(rewards[answers])
    return advantages


"""NGRPO on a flat batch: one reward per answer, a group id per answer, groups of any size.

``ngrpo_sim``'s estimators and group filters take rewards shaped ``(..., G)``: every group in one call has the same
size G. Engines hand over something else: a flat batch of answers, each with the id of the prompt it answers
(verl's ``uid``, TRL's position in its batch), and groups that can differ in size (verl keeps the groups whose
rollouts partly failed; TRL leaves out the answers that no reward function could score). The two functions here
sort the answers into groups, stack all groups of one size into a ``(k, G)`` array, call the ``ngrpo_sim``
definition once per size and put each result back in its answer's place. The math stays in ``ngrpo_sim``; this
module only moves numbers around, in numpy, without either engine.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ngrpo_sim import _checks
from ngrpo_sim.advantages import AdvantageEstimator
from ngrpo_sim.methods import GroupFilter


def _answers_by_group_size(group_ids: np.ndarray) -> Iterator[np.ndarray]:
    """For each group size G in the batch, the positions of the answers of all groups of that size.

    Each yielded array is shaped ``(k, G)``: row j lists, in batch order, the positions of the G answers of the
    j-th group of that size.
    """
    _, group_of_answer, group_sizes = np.unique(group_ids, return_inverse=True, return_counts=True)
    # The answers of group 0 first, then those of group 1, ...; a stable sort keeps batch order inside a group.
    answers_in_group_order = np.argsort(group_of_answer, kind="stable")
    first_answer_of_group = np.cumsum(group_sizes) - group_sizes
    for size in np.unique(group_sizes):
        groups = np.flatnonzero(group_sizes == size)
        yield answers_in_group_order[first_answer_of_group[groups, None] + np.arange(size)]


def _flat_batch(rewards, group_ids) -> tuple[np.ndarray, np.ndarray]:
    rewards = _checks.finite_array("rewards", rewards)
    group_ids = np.asarray(group_ids)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be flat (one reward per answer), got shape {rewards.shape}")
    if group_ids.shape != rewards.shape:
        raise ValueError(f"group_ids has shape {group_ids.shape} but rewards has shape {rewards.shape}; "
                         "give one group id per answer")
    return rewards, group_ids


def group_advantages(rewards, group_ids, estimator: AdvantageEstimator) -> np.ndarray:
    """The advantage of every answer under ``estimator``, each computed against the answers of its own group.

    A group smaller than ``estimator.min_group_size`` gets advantage 0: the estimator is not defined for it, and
    an answer without a defined advantage must not move the policy.
    """
    rewards, group_ids = _flat_batch(rewards, group_ids)
    advantages = np.zeros_like(rewards)
    for answers in _answers_by_group_size(group_ids):
        if answers.shape[1] >= estimator.min_group_size:
            advantages[answers] = estimator(rewards[answers])
    return advantages


def answers_kept(rewards, group_ids, group_filter: GroupFilter) -> np.ndarray:
    """True for every answer whose group ``group_filter`` keeps in the update, False for the dropped groups."""
    rewards, group_ids = _flat_batch(rewards, group_ids)
    kept = np.ones(rewards.shape, dtype=bool)
    for answers in _answers_by_group_size(group_ids):
        kept[answers] = group_filter.keep(rewards[answers])[:, None]
    return kept

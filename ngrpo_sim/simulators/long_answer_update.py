"""The token-level update of the long-answer task (``long_answers.LongAnswerTask``): one rollout's
answers, each token carrying the index of its summary state (position, work) and of its position,
and the clipped loss of a minibatch over their real token masks, scattered onto those indices with
``np.bincount`` and chained to the one parameter vector once, so a step never builds a (tokens x
features) array.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from ngrpo_sim.methods.presets import Method
from ngrpo_sim.methods.surrogate import clipped_surrogate
from ngrpo_sim.simulators.long_answer_exact import END, STEP, log_probabilities
from ngrpo_sim.simulators.task_parts import (Coefficients, approx_kl,
                                             regulariser_grads_from_log_probs)

if TYPE_CHECKING:
    from ngrpo_sim.simulators.long_answers import LongAnswerTask


class LongAnswerUpdate:
    """One rollout's used answers (B slots per seed; the loop marks the valid ones), for the
    minibatch updates of ``training_loop.apply_rollout``.

    Each token carries two indices: its state (seed, prompt, work), into the (S, P, W) step and end
    logits' state part, and its position (seed, t), into their (S, L) position part. A minibatch's
    gradient is the clipped loss's push on each token's log-probability, d log pi(token) / d z_c =
    1(c = token) - pi_c, scattered with ``np.bincount`` onto the states and the positions (the
    sufficient statistics of the summary state) and chained to theta once, instead of a (tokens x
    D) array of features. The tokens are kept in (seed, slot, answer, position) order."""

    def __init__(self, task: LongAnswerTask, prompts: np.ndarray, tokens: np.ndarray,
                 reference: np.ndarray, params: np.ndarray):
        self.task, self.shape = task, tokens.shape
        num_seeds, batch, group_size, max_length = tokens.shape
        written = tokens >= 0
        flat = np.flatnonzero(written)
        self.flat, self.answer = flat, flat // max_length
        choice = tokens.ravel()[flat]
        self.is_step, self.is_end = choice == STEP, choice >= END
        steps_before = np.cumsum(tokens == STEP, axis=-1, dtype=np.int32)
        work = np.minimum(steps_before.ravel()[flat] - self.is_step, task.work_cap - 1)
        self.group = self.answer // group_size
        self.seed = self.group // batch
        prompt = prompts.ravel()[self.group]
        self.state_index = (self.seed * task.num_prompts + prompt) * task.work_cap + work
        self.time_index = self.seed * max_length + flat % max_length
        self.lengths = written.sum(axis=-1)
        truncated = ~np.any(tokens >= END, axis=-1)
        self.loss_lengths = (np.where(truncated, 0, self.lengths) if task.overlong_filter
                             else self.lengths)
        self.in_loss = (self.loss_lengths > 0).ravel()[self.answer]
        self.reference = reference
        self.old_log_probs = self.log_probs(params, slice(None))
        self.old_logp = self.chosen_log_prob(self.old_log_probs, slice(None))

    def log_probs(self, params: np.ndarray, tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(log pi_text, log pi_step, log pi_end) at the states of ``tokens`` (an index or slice)
        under theta ``params``."""
        state = np.moveaxis(self.task.state_logits(params), -1, 0).reshape(2, -1)
        time = np.moveaxis(self.task.time_logits(params), -1, 0).reshape(2, -1)
        states, times = self.state_index[tokens], self.time_index[tokens]
        return log_probabilities(state[0][states] + time[0][times],
                                 state[1][states] + time[1][times])

    @functools.cached_property
    def reference_log_probs(self) -> np.ndarray:
        """(tokens, 3) log-probabilities of the reference policy at every token's state, for the
        KL term (computed once per rollout, and freed with the update)."""
        return np.stack(self.log_probs(self.reference, slice(None)), axis=-1)

    def chosen_log_prob(self, log_probs: tuple, tokens) -> np.ndarray:
        """log pi of the token each of ``tokens`` chose, from its ``log_probs``."""
        log_text, log_step, log_end = log_probs
        return np.where(self.is_step[tokens], log_step,
                        np.where(self.is_end[tokens], log_end, log_text))

    def answer_weights(self, in_part: np.ndarray, aggregation: str) -> np.ndarray:
        """(S, B, G): the weight of each token of each answer of the minibatch ``in_part`` (S, B) in
        its loss, as ``methods.token_weights`` gives it (an answer's tokens share one weight); 0
        for answers outside the minibatch or out of the loss."""
        group_size = self.shape[2]
        counted = np.where(in_part[..., None], self.loss_lengths, 0)
        answers = np.maximum(in_part.sum(axis=1) * group_size, 1)[:, None, None]
        if aggregation == "token-mean":
            weight = 1.0 / np.maximum(counted.sum(axis=(1, 2)), 1)[:, None, None]
        elif aggregation == "seq-mean-token-mean":
            weight = 1.0 / np.maximum(counted, 1) / answers
        else:
            weight = 1.0 / self.task.max_length / answers
        return np.where(counted > 0, weight, 0.0)

    def policy_inputs(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The rollout policy's quantities an estimator declares (``advantages.POLICY_INPUTS``):
        ``log_prob``, each answer's mean token log-probability (S, B, G), and ``entropy``, the
        next-token entropy at each of its tokens (S, B, G, L), 0 after the end."""
        inputs = {}
        if "log_prob" in names:
            total = np.bincount(self.answer, self.old_logp, minlength=self.lengths.size)
            inputs["log_prob"] = total.reshape(self.lengths.shape) / np.maximum(self.lengths, 1)
        if "entropy" in names:
            entropy = np.zeros(self.shape)
            entropy.ravel()[self.flat] = -sum(np.exp(log_p) * log_p
                                              for log_p in self.old_log_probs)
            inputs["entropy"] = entropy
        return inputs

    def gradient(self, params: np.ndarray, advantages: np.ndarray, in_part: np.ndarray,
                 method: Method, coefficients: Coefficients
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The parameter gradient (S, D) of the clipped token-level loss of the groups ``in_part``
        (S, B) under the task's aggregation of ``method``, plus per seed the tokens clipped at the
        low and at the high bound and the tokens trained on. Each token's loss is max(-A rho,
        -A clip(rho)) with its answer's advantage A (``advantages`` (S, B, G), or (S, B, G, L) per
        token); the KL to the starting policy and the entropy bonus are the exact per-token terms at
        each token's state, aggregated like the loss."""
        task = self.task
        here = np.flatnonzero(in_part.ravel()[self.group] & self.in_loss)
        answer = self.answer[here]
        log_probs = self.log_probs(params, here)
        ratio = np.exp(self.chosen_log_prob(log_probs, here) - self.old_logp[here])
        if advantages.ndim == len(self.shape):
            advantage = advantages.ravel()[self.flat[here]]
        else:
            advantage = advantages.ravel()[answer]
        surrogate = clipped_surrogate(ratio, advantage, method.clip_low, method.clip_high)
        weight = self.answer_weights(in_part, task.aggregation(method)).ravel()[answer]
        push = surrogate.grad_logp * weight
        pushes = [push * (self.is_step[here] - np.exp(log_probs[STEP])),
                  push * (self.is_end[here] - np.exp(log_probs[END]))]
        if coefficients.kl or coefficients.entropy:
            reference = self.reference_log_probs[here] if coefficients.kl else None
            regulariser = regulariser_grads_from_log_probs(np.stack(log_probs, axis=-1),
                                                           reference, coefficients)
            pushes = [p + weight * regulariser[:, token] for p, token in zip(pushes, (STEP, END))]
        num_seeds, max_length = self.shape[0], self.shape[3]
        states, times = self.state_index[here], self.time_index[here]
        state_size, time_size = num_seeds * task.num_prompts * task.work_cap, num_seeds * max_length
        state_grads = np.stack([np.bincount(states, p, minlength=state_size) for p in pushes], -1)
        time_grads = np.stack([np.bincount(times, p, minlength=time_size) for p in pushes], -1)
        grads = (np.einsum("spwk,pwkd->sd", state_grads.reshape((num_seeds,)
                                                                + task.state_offsets.shape),
                           task.state_features)
                 + np.einsum("stk,tkd->sd", time_grads.reshape(num_seeds, max_length, 2),
                             task.time_features))
        seed = self.seed[here]
        return (grads,
                np.bincount(seed, surrogate.clipped_low, minlength=num_seeds).astype(np.float64),
                np.bincount(seed, surrogate.clipped_high, minlength=num_seeds).astype(np.float64),
                np.bincount(seed, minlength=num_seeds).astype(np.float64))

    def statistics(self, params: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """After the updates: verl's approx_kl over the loss tokens of the ``valid`` groups
        (S, B), seed by seed on the tokens (which come in seed order)."""
        log_ratio = (self.chosen_log_prob(self.log_probs(params, slice(None)), slice(None))
                     - self.old_logp)
        mask = self.in_loss & valid.ravel()[self.group]
        ends = np.cumsum(np.bincount(self.seed, minlength=self.shape[0]))
        starts = ends - np.bincount(self.seed, minlength=self.shape[0])
        return {"approx_kl": np.array([approx_kl(log_ratio[None, start:end],
                                                 mask[None, start:end])[0]
                                       for start, end in zip(starts, ends)])}

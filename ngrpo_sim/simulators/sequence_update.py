"""The token-level update of the token task (``sequences.SequenceTask``): one rollout's answers,
grouped by the prefixes they share, and the clipped loss of a minibatch over their real token
masks, with the three loss aggregations and the per-token KL and entropy terms, turned into a
parameter gradient for ``training_loop.apply_rollout``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ngrpo_sim.methods.metrics import as_probability, log_softmax
from ngrpo_sim.methods.presets import Method, token_weights
from ngrpo_sim.methods.surrogate import clipped_surrogate
from ngrpo_sim.simulators.task_parts import (Coefficients, answer_mask, approx_kl,
                                             regulariser_grads_from_log_probs)

if TYPE_CHECKING:
    from ngrpo_sim.simulators.sequences import SequenceTask


class SequenceUpdate:
    """One rollout's used answers (B slots per seed; the loop marks the valid ones), for the
    minibatch updates of ``training_loop.apply_rollout``.

    The answers of a group share prefixes (all G share the empty one), so the work is done once per
    distinct (seed, prompt, prefix), a *node*: its logits, softmax, KL and entropy terms and its
    share of the chain rule. The tokens, each with its node, carry the ratios, the clip and the
    loss weights, and meet their node's softmax through d log pi(token) / d logits =
    e_token - pi: per node, the sum of the tokens' weighted gradients at their tokens minus pi
    times their sum. A node can hold the tokens of two groups of the same prompt (a
    release-assembled batch's carried group and a new one); the tokens of the groups marked
    ``stale`` (S, B) keep the log-probabilities of ``stale_params``, the policy that sampled them,
    while the node's own statistics (entropy, unsampled mass) are the rollout policy's.
    """

    def __init__(self, task: SequenceTask, prompts: np.ndarray, tokens: np.ndarray,
                 reference: np.ndarray, params: np.ndarray, stale: np.ndarray | None = None,
                 stale_params: np.ndarray | None = None):
        self.task, self.tokens = task, tokens
        num_seeds, batch, group_size, length = tokens.shape
        choices = task.num_choices
        self.mask = tokens >= 0
        seeds, slots, answers, depths = np.nonzero(self.mask)
        prefixes = task.prefixes(tokens)[self.mask]
        # A node's key: its row in the (S P N, C) table of every seed's logits at every prefix.
        keys = (seeds * task.num_prompts + prompts[seeds, slots]) * task.num_nodes + prefixes
        self.keys, self.node_of_token = np.unique(keys, return_inverse=True)
        self.token_seed, self.token_slot, self.token_answer = seeds, slots, answers
        self.token_depth, self.token = depths, tokens[self.mask]
        self.node_seed = self.keys // (task.num_prompts * task.num_nodes)
        rows = self.keys % (task.num_prompts * task.num_nodes)
        if task.features is not None:
            self.features = task.features.reshape(-1, choices, task.features.shape[-1])[rows]
            self.offsets = task.offsets.reshape(-1, choices)[rows]
        self.reference_log_pi = log_softmax(reference.reshape(-1, choices)[self.keys])
        old_log_pi = log_softmax(self.node_logits(params, slice(None)))
        self.old_logp = old_log_pi[self.node_of_token, self.token]
        if stale is not None:
            stale_log_pi = log_softmax(self.node_logits(stale_params, slice(None)))
            self.old_logp = np.where(stale[seeds, slots],
                                     stale_log_pi[self.node_of_token, self.token], self.old_logp)
        self.old_entropy = -np.sum(np.exp(old_log_pi) * old_log_pi, axis=-1)
        # The tokens some answer of the group chose at each node; the others are "unsampled".
        chosen = np.bincount(self.node_of_token * choices + self.token,
                             minlength=self.keys.size * choices).reshape(-1, choices)
        self.unsampled = chosen == 0
        self.old_unsampled_mass = as_probability(np.sum(np.exp(old_log_pi) * self.unsampled,
                                                        axis=-1))

    def node_logits(self, params: np.ndarray, nodes) -> np.ndarray:
        """(nodes, C) logits at the ``nodes`` (an index or mask into ``keys``)."""
        if self.task.features is None:
            return params.reshape(-1, self.task.num_choices)[self.keys[nodes]]
        return self.offsets[nodes] + np.einsum("ucd,ud->uc", self.features[nodes],
                                               params[self.node_seed[nodes]])

    def backprop(self, params: np.ndarray, nodes: np.ndarray, node_grads: np.ndarray
                 ) -> np.ndarray:
        """Parameter gradient from gradients (nodes, C) with respect to the logits at ``nodes``."""
        if self.task.features is None:
            grads = np.zeros((params.size // self.task.num_choices, self.task.num_choices))
            grads[self.keys[nodes]] = node_grads
            return grads.reshape(params.shape)
        per_node = np.einsum("uc,ucd->ud", node_grads, self.features[nodes])
        grads = np.zeros(params.shape)
        np.add.at(grads, self.node_seed[nodes], per_node)
        return grads

    def token_weights(self, in_part: np.ndarray, aggregation: str) -> np.ndarray:
        """(S, B, G, L) weight of each token of the minibatch ``in_part`` (groups (S, B) or
        answers (S, B, G)) in its loss."""
        num_seeds, batch, group_size, length = self.tokens.shape
        in_part = answer_mask(in_part, self.tokens.shape[:3])
        mask = (self.mask & in_part[..., None]).reshape(num_seeds, batch * group_size, length)
        weights = token_weights(mask.astype(np.float64), aggregation, normaliser=float(length))
        if aggregation != "token-mean":
            # token_weights averages over all B G rows; the minibatch holds only its own answers.
            answers_in_part = np.maximum(in_part.sum(axis=(1, 2)), 1)
            weights *= (batch * group_size / answers_in_part)[:, None, None]
        return weights.reshape(self.tokens.shape)

    def policy_inputs(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The rollout policy's quantities an estimator declares (``advantages.POLICY_INPUTS``):
        ``log_prob``, each answer's mean token log-probability (S, B, G), and ``entropy``, the
        next-token entropy at each of its tokens (S, B, G, L), 0 after the end."""
        log_prob = np.zeros(self.tokens.shape)
        log_prob[self.mask] = self.old_logp
        entropy = np.zeros(self.tokens.shape)
        entropy[self.mask] = self.old_entropy[self.node_of_token]
        lengths = np.maximum(self.mask.sum(axis=-1), 1)
        inputs = {"log_prob": log_prob.sum(axis=-1) / lengths, "entropy": entropy}
        return {name: inputs[name] for name in names}

    def gradient(self, params: np.ndarray, advantages: np.ndarray, in_part: np.ndarray,
                 method: Method, coefficients: Coefficients
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The parameter gradient of the clipped token-level loss of the groups ``in_part`` (S, B)
        (or answers, (S, B, G)) under the task's aggregation of ``method``, plus per seed the
        tokens clipped at the low and at the high bound and the tokens trained on. Each token's
        loss is max(-A rho, -A clip(rho)) with its answer's advantage A (``advantages`` (S, B, G),
        or (S, B, G, L) per token); the KL to the starting policy and the entropy bonus are the
        exact per-token terms at each token's prefix, aggregated like the loss (verl's kl_loss
        and entropy_loss with the full next-token distribution in place of an estimate)."""
        choices = self.task.num_choices
        in_part = answer_mask(in_part, self.tokens.shape[:3])
        here = in_part[self.token_seed, self.token_slot, self.token_answer]
        nodes = np.bincount(self.node_of_token[here], minlength=self.keys.size) > 0
        node = (np.cumsum(nodes) - 1)[self.node_of_token[here]]  # among the minibatch's nodes
        seed, slot, answer = self.token_seed[here], self.token_slot[here], self.token_answer[here]
        log_pi = log_softmax(self.node_logits(params, nodes))
        logp = log_pi[node, self.token[here]]
        if advantages.ndim == self.tokens.ndim:
            advantage = advantages[seed, slot, answer, self.token_depth[here]]
        else:
            advantage = advantages[seed, slot, answer]
        surrogate = clipped_surrogate(np.exp(logp - self.old_logp[here]), advantage,
                                      method.clip_low, method.clip_high)
        weight = self.token_weights(in_part, self.task.aggregation(method))[self.mask][here]
        grad_logp = surrogate.grad_logp * weight
        size = int(nodes.sum())
        at_token = np.bincount(node * choices + self.token[here], grad_logp,
                               minlength=size * choices)
        node_grads = (at_token.reshape(size, choices)
                      - np.exp(log_pi) * np.bincount(node, grad_logp, minlength=size)[:, None])
        if coefficients.kl or coefficients.entropy:
            node_weight = np.bincount(node, weight, minlength=size)
            node_grads += node_weight[:, None] * regulariser_grads_from_log_probs(
                log_pi, self.reference_log_pi[nodes], coefficients)
        num_seeds = self.tokens.shape[0]
        return (self.backprop(params, nodes, node_grads),
                np.bincount(seed, surrogate.clipped_low.astype(np.float64), minlength=num_seeds),
                np.bincount(seed, surrogate.clipped_high.astype(np.float64), minlength=num_seeds),
                np.bincount(seed, minlength=num_seeds))

    def statistics(self, params: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """After the updates: verl's approx_kl and the unsampled-token mass
        (``TOKEN_ROLLOUT_METRICS``) over the tokens of the ``valid`` groups (S, B) or answers (S,
        B, G)."""
        valid = answer_mask(valid, self.tokens.shape[:3])
        log_pi = log_softmax(self.node_logits(params, slice(None)))
        unsampled_mass = as_probability(np.sum(np.exp(log_pi) * self.unsampled, axis=-1))
        gain = unsampled_mass - self.old_unsampled_mass
        here = valid[self.token_seed, self.token_slot, self.token_answer]
        seed, node = self.token_seed[here], self.node_of_token[here]
        num_seeds = self.tokens.shape[0]
        count = np.maximum(np.bincount(seed, minlength=num_seeds), 1)
        log_ratio = np.zeros(self.tokens.shape)
        log_ratio[self.mask] = log_pi[self.node_of_token, self.token] - self.old_logp
        return {"approx_kl": approx_kl(log_ratio, self.mask & valid[..., None]),
                "unsampled_mass": np.bincount(seed, unsampled_mass[node], minlength=num_seeds)
                / count,
                "unsampled_mass_gain": np.bincount(seed, gain[node], minlength=num_seeds) / count}

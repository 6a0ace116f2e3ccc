"""The gain identity for answers made of tokens, and the term that length normalisation adds.

``ngrpo_sim.analysis.landscape`` proves that for one-token answers every count-based method's
expected update is c(p) pi (r - p). Here an answer o is a token sequence with probability
pi(o) = prod_t pi(o_t | o_<t), under any parameterisation theta (the tabular logits at every
prefix or the shared log-linear policy of ``ngrpo_sim.simulators.sequences``), and
grad log pi(o) = sum_t grad log pi(o_t | o_<t). A group's loss gives token t of answer i the weight
w_it (``methods.token_weights``), so its ascent direction is

    g = sum_i A_i sum_t w_it grad log pi(o_it | o_i,<t).

**Per-answer weights.** When w_it = w(o_i) / G depends only on the answer itself
(seq-mean-token-sum-norm: w = 1 / L; seq-mean-token-mean: w = 1 / |o|; the plain sum over
tokens: w = 1), the symmetry argument of the single-action proof goes through unchanged: with
A_i = f(r_i, k),

    E[g] = sum_o pi(o) w(o) (alpha r(o) + beta (1 - r(o))) grad log pi(o),
    alpha = E f(1, 1 + B), beta = E f(0, B), B ~ Bin(G - 1, p)       (``outcome_advantages``)

and since sum_o pi(o) grad log pi(o) = 0 and sum_o pi(o) r(o) grad log pi(o) = grad p:

1. **Constant weight** (plain sum, seq-mean-token-sum-norm): E[g] = w c(p) grad p, with
   c = alpha - beta the gain of the single-action identity. The direction is still exactly the
   gradient of the success rate, in any parameterisation: the methods differ only in step size
   and noise, never in direction.
2. **Length-normalised** (seq-mean-token-mean, the original GRPO's): with
   m_R = E[r / |o|] = p h_R and m_W = E[(1 - r) / |o|] = (1 - p) h_W, where h_R and h_W are the
   mean inverse lengths of correct and of wrong answers,

       E[g] = alpha grad m_R + beta grad m_W
            = (alpha h_R - beta h_W) grad p  +  alpha p grad h_R  +  beta (1 - p) grad h_W.

   The first term is along grad p. The other two are the *length bias* (Liu et al. 2025,
   Dr. GRPO, arXiv 2503.20783, section 3.1): with alpha > 0 the update raises h_R, shortening
   correct answers, and with beta < 0 it lowers h_W, lengthening wrong answers (a long wrong answer
   spreads its penalty over more tokens). Both vanish when every answer has the same length.

**Token-mean** couples the answers of a minibatch: w_it = 1 / (tokens in the minibatch). Within
one group ``expected_group_update`` computes its expectation exactly from the joint law of the
other G - 1 answers' count of correct answers and total length; over a large minibatch the token
count concentrates at its mean, w -> 1 / (n E|o|), and token-mean behaves as a constant weight:
no length bias in expectation, as DAPO and Dr. GRPO argue.

The identity is per sampled group, before a filter's refill renormalises the batch, on the first
update after a rollout (ratio 1, no clipping), and leaves out the KL and entropy terms.
"""

from __future__ import annotations

import numpy as np

from ngrpo_sim.analysis.landscape import binomial_pmf, count_advantages
from ngrpo_sim.base import checks
from ngrpo_sim.methods.presets import LOSS_AGGREGATIONS, Method


def outcome_advantages(method: Method, group_size: int, success: np.ndarray,
                       values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta), each shaped like ``success``: the expected advantage of an answer given that
    it is correct, E f(1, 1 + B), and given that it is wrong, E f(0, B), with B ~ Bin(G - 1, p)
    correct answers among the others.

    For PPO's r - V (``values`` the per-prompt V): 1 - V and -V. alpha - beta is the gain c(p) of
    ``landscape.expected_gain``.
    """
    success = np.asarray(success, dtype=np.float64)
    if method.advantage.uses_values:
        if values is None:
            raise ValueError(f"method {method.name!r} needs values (the critic's V), got None")
        return 1.0 - values, -np.asarray(values, dtype=np.float64)
    right, wrong = count_advantages(method, group_size)
    pmf = binomial_pmf(group_size - 1, success)
    return pmf @ right[1:], pmf @ wrong[:-1]


def _others_count_and_length(answer_law: np.ndarray, others: int) -> np.ndarray:
    """Joint law of (correct answers, total length) of ``others`` independent answers, from the law
    (..., 2, L) of one answer's (correct, length in 1..L): (..., others + 1, others L + 1), indexed
    [count, total length]."""
    max_length = answer_law.shape[-1]
    joint = np.zeros(answer_law.shape[:-2] + (others + 1, others * max_length + 1))
    joint[..., 0, 0] = 1.0
    for _ in range(others):
        grown = np.zeros_like(joint)
        for right in (0, 1):
            for length in range(1, max_length + 1):
                shifted = joint[..., :joint.shape[-2] - right, :joint.shape[-1] - length]
                law = answer_law[..., right, length - 1, None, None]
                grown[..., right:, length:] += shifted * law
        joint = grown
    return joint


def _token_mean_outcome_values(task, probs, reach, method, group_size, values) -> np.ndarray:
    """G E[A_1 / (|o_1| + T') | o_1 = o] per terminal choice (..., P, N, C), where T' counts the
    other answers' tokens."""
    max_length = task.max_length
    ending = reach[..., None] * probs * task.terminal
    lengths = task.answer_length.astype(int)
    answer_law = np.zeros(ending.shape[:-2] + (2, max_length))
    for length in range(1, max_length + 1):
        at_length = ending * (lengths == length)
        answer_law[..., 1, length - 1] = np.sum(at_length * task.outcome_correct, axis=(-2, -1))
        answer_law[..., 0, length - 1] = np.sum(at_length * ~task.outcome_correct, axis=(-2, -1))
    joint = _others_count_and_length(answer_law, group_size - 1)
    totals = np.arange(joint.shape[-1])
    # value[r, l] = E[f(r, r + K') / (l + T')] over the joint law of the others' (K', T').
    value = np.zeros(answer_law.shape)
    inverse = 1.0 / (np.arange(1, max_length + 1)[:, None] + totals)  # (L, totals)
    if method.advantage.uses_values:
        length_law = joint.sum(axis=-2)
        expected_inverse = np.einsum("...t,lt->...l", length_law, inverse)
        value[..., 1, :] = (1.0 - values)[..., None] * expected_inverse
        value[..., 0, :] = -values[..., None] * expected_inverse
    else:
        right, wrong = count_advantages(method, group_size)
        counts = np.arange(group_size)
        value[..., 1, :] = np.einsum("...kt,k,lt->...l", joint, right[counts + 1], inverse)
        value[..., 0, :] = np.einsum("...kt,k,lt->...l", joint, wrong[counts], inverse)
    index = np.clip(lengths - 1, 0, max_length - 1)
    correct_value, wrong_value = value[..., 1, :][..., index], value[..., 0, :][..., index]
    return group_size * np.where(task.outcome_correct, correct_value, wrong_value)


def expected_group_update(task, logits, method: Method, group_size: int, aggregation: str,
                          values: np.ndarray | None = None) -> np.ndarray:
    """The exact expected ascent E[g] of one group's loss, aggregated over its G answers' tokens
    with ``aggregation``, with respect to the logits (..., P, N, C) of a
    ``sequences.SequenceTask``'s prefixes.

    Binary rewards, count-based methods (or PPO's r - V with per-prompt ``values``), ratio 1. For
    any other parameterisation chain the result through d logits / d theta
    (``SequenceTask.backprop``).
    """
    group_size = checks.integer("group_size", group_size, low=2)
    checks.choice("aggregation", aggregation, LOSS_AGGREGATIONS)
    logits = checks.finite_array("logits", logits)
    if not np.all((task.rewards == 0) | (task.rewards == 1)):
        raise ValueError("the task's rewards must be binary (0 or 1) for the gain identity")
    statistics = task.answer_statistics(logits)
    if aggregation == "token-mean":
        outcome = _token_mean_outcome_values(task, statistics.probs, statistics.reach, method,
                                             group_size, values)
    else:
        alpha, beta = outcome_advantages(method, group_size, statistics.success, values)
        length_normalised = aggregation == "seq-mean-token-mean"
        weight = 1.0 / task.answer_length if length_normalised else 1.0 / task.max_length
        outcome = weight * np.where(task.outcome_correct, alpha[..., None, None],
                                    beta[..., None, None])
    return task.gradient_of_expectation(logits, outcome)


def length_decomposition(task, logits, method: Method, group_size: int,
                         values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The three terms of the seq-mean-token-mean update (module docstring, 2.), exactly.

    Returns ``gain`` (..., P): alpha h_R - beta h_W; ``success_gradient`` (..., P, N, C): grad p
    with respect to the logits; ``correct_length_term``: alpha p grad h_R; ``wrong_length_term``:
    beta (1 - p) grad h_W; and ``mean_inverse_length_correct`` h_R and ``..._wrong`` h_W.
    gain * success_gradient + both terms equals
    ``expected_group_update(..., "seq-mean-token-mean")``.
    """
    logits = checks.finite_array("logits", logits)
    statistics = task.answer_statistics(logits)
    success = statistics.success
    alpha, beta = outcome_advantages(method, group_size, success, values)
    inverse = 1.0 / task.answer_length
    right = task.outcome_correct
    ending = statistics.reach[..., None] * statistics.probs * task.terminal
    inverse_correct = np.sum(ending * right * inverse, axis=(-2, -1)) / success
    inverse_wrong = np.sum(ending * ~right * inverse, axis=(-2, -1)) / (1.0 - success)
    grad_success = task.gradient_of_expectation(logits, right * 1.0)
    grad_inverse_correct = task.gradient_of_expectation(logits, right * inverse)
    grad_inverse_wrong = task.gradient_of_expectation(logits, ~right * inverse)

    def per_prompt(x):
        return x[..., None, None]

    # h_R = m_R / p, so grad h_R = (grad m_R - h_R grad p) / p; h_W likewise with 1 - p and -grad p.
    correct_term = grad_inverse_correct - per_prompt(inverse_correct) * grad_success
    wrong_term = grad_inverse_wrong + per_prompt(inverse_wrong) * grad_success
    return {"gain": alpha * inverse_correct - beta * inverse_wrong,
            "success_gradient": grad_success,
            "correct_length_term": per_prompt(alpha) * correct_term,
            "wrong_length_term": per_prompt(beta) * wrong_term,
            "mean_inverse_length_correct": inverse_correct,
            "mean_inverse_length_wrong": inverse_wrong}

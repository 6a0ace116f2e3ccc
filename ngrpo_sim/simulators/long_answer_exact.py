"""Exact recursions over the summary state (position, work) of a long-answer policy.

The policy of ``ngrpo_sim.simulators.long_answers`` writes an answer token by token. At position t
(the tokens written so far, 0 <= t < L) with w steps of work done (0 <= w < W; a step at w = W - 1
leaves w there) it chooses among three tokens:

* **text** (0): no progress;
* **step** (1): one more step of work, w -> min(w + 1, W - 1);
* **end** (2): the answer stops, with length t + 1 tokens, and the verifier's verdict is correct
  with probability q(w), the prompt's ``correct`` row.

An answer that reaches L tokens without the end token is truncated and wrong. The text token's
logit is 0; the step and end logits are the sum of a *state part* A[s, p, w, k] and a *position
part* B[s, t, k] (k = 0 step, 1 end): the policy reads the prefix only through (t, w).

So every quantity of the answer distribution follows from one pass over the L positions that
carries m_t(w), the probability of being at position t with work w (m_0 = [1, 0, ..., 0]):

    m_{t+1}(w) = m_t(w) pi_text(t, w) + m_t(w - 1) pi_step(t, w - 1)   (plus the cap's self-loop),

and the answer ends at (t, w) with probability m_t(w) pi_end(t, w). Success rates, length
distributions of correct and of wrong answers, truncation, token entropies and the gradient of any
expectation over answers are then exact, at O(L W) per prompt and never a sum over prefixes (3^L of
them). The gradient of E[value(answer)] with respect to the logits is the adjoint form of the
policy-gradient theorem: with V_t(w) the expected value from (t, w) on (a backward pass) and Q_c the
value after choosing c there,

    d E[value] / d z_c(t, w) = m_t(w) pi_c(t, w) (Q_c(t, w) - V_t(w)).

Arrays are float64; S seeds and P prompts are vectorised, the positions are a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXT, STEP, END, END_WRONG = 0, 1, 2, 3
"""Token codes in sampled answers: the policy chooses text, step or end; an ended answer carries
its verdict in its last token (END: correct, END_WRONG: wrong), so that the answers decide their
rewards. -1 pads the positions after the end."""

CHUNK = 64
"""Positions whose ends, steps and entropies ``answer_statistics`` sums at once."""
LOGIT_BOUND = 300.0
"""The forward pass of the metrics clips each part of a logit (A and B) to +-LOGIT_BOUND before it
exponentiates it once: beyond, a token's probability is below e^-300 against one of logit 0, and the
clip changes probabilities by less than 1e-130."""


def log_probabilities(step_logits: np.ndarray, end_logits: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log pi_text, log pi_step, log pi_end) for step and end logits against the text token's 0.
    The logits are clipped to +-2 ``LOGIT_BOUND`` first (so that their exponentials cannot
    overflow): beyond, a token's probability is below e^-600 against text's."""
    bound = 2 * LOGIT_BOUND
    step_logits = np.clip(step_logits, -bound, bound)
    end_logits = np.clip(end_logits, -bound, bound)
    log_total = np.log(1.0 + np.exp(step_logits) + np.exp(end_logits))
    return -log_total, step_logits - log_total, end_logits - log_total


def advance(mass: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Add the step flow ``flow`` (..., W) out of each work level to the mass one level up (the cap
    W - 1 keeps its own), in place; returns ``mass``."""
    mass[..., 1:] += flow[..., :-1]
    mass[..., -1] += flow[..., -1]
    return mass


def shifted_up(values: np.ndarray) -> np.ndarray:
    """values at w + 1 (at the cap: at W - 1), the value of choosing a step at w."""
    return np.concatenate([values[..., 1:], values[..., -1:]], axis=-1)


@dataclass(frozen=True)
class ExactStatistics:
    """Exact quantities of the answer distribution of every (seed, prompt); each (S, P) unless said
    otherwise. An answer's length counts its tokens, the end token included."""

    success: np.ndarray
    """Probability of a correct answer."""
    length: np.ndarray
    """Expected length in tokens."""
    correct_length: np.ndarray
    """E[length 1(correct)]."""
    truncation: np.ndarray
    """Probability that the answer is truncated (L tokens without an end)."""
    work: np.ndarray
    """Expected steps of work when the answer stops (ended or truncated)."""
    entropy: np.ndarray
    """Expected sum over the answer's positions of the next-token entropy (nats): the entropy of
    the policy's answer distribution, the verifier's verdict not included."""
    end_mass: np.ndarray
    """Expected sum over the answer's positions of the end token's probability."""
    correct_pmf: np.ndarray
    """(S, P, L) probability that the answer is correct and has length l + 1."""
    wrong_pmf: np.ndarray
    """(S, P, L) probability that the answer is wrong and has length l + 1 (truncated ones at L)."""
    end_work: np.ndarray
    """(S, P, W) probability that the answer ends (not truncated) with work w."""


def answer_statistics(state_logits: np.ndarray, time_logits: np.ndarray, correct: np.ndarray
                      ) -> ExactStatistics:
    """The ``ExactStatistics`` of the policy with logits A = ``state_logits`` (S, P, W, 2) and
    B = ``time_logits`` (S, L, 2), for correct-answer probabilities ``correct`` (P, W), by one
    forward pass over the positions.

    The metrics' hot loop, so each position costs about ten in-place operations on (S, P, W)
    arrays: the exponentials of A and B are taken once, pi = (1, e^A e^B) / Z, and what ends,
    steps and stays at each position is written to buffers of ``CHUNK`` positions whose sums are
    taken once per chunk. The entropy at a state is log Z - pi_step z_step - pi_end z_end."""
    num_seeds, num_prompts, work_cap, _ = state_logits.shape
    max_length = time_logits.shape[1]
    state = np.clip(state_logits, -LOGIT_BOUND, LOGIT_BOUND)
    time = np.clip(time_logits, -LOGIT_BOUND, LOGIT_BOUND)
    step_part, end_part = np.ascontiguousarray(state[..., 0]), np.ascontiguousarray(state[..., 1])
    exp_step, exp_end = np.exp(step_part), np.exp(end_part)
    exp_time = np.exp(time)
    shape = (num_seeds, num_prompts, work_cap)
    mass = np.zeros(shape)
    mass[..., 0] = 1.0
    scaled, total = np.empty(shape), np.empty(shape)
    chunk = min(CHUNK, max_length)
    ends, flows, log_totals, masses = (np.empty((chunk,) + shape) for _ in range(4))
    correct_pmf = np.empty((num_seeds, num_prompts, max_length))
    ended_pmf = np.empty((num_seeds, num_prompts, max_length))
    entropy = np.zeros((num_seeds, num_prompts))
    end_mass = np.zeros((num_seeds, num_prompts))
    work_levels = np.arange(work_cap, dtype=np.float64)
    for first in range(0, max_length, chunk):
        size = min(chunk, max_length - first)
        for offset in range(size):
            position = first + offset
            step_odds, end_odds = flows[offset], ends[offset]
            np.multiply(exp_step, exp_time[:, position, 0][:, None, None], out=step_odds)
            np.multiply(exp_end, exp_time[:, position, 1][:, None, None], out=end_odds)
            np.add(step_odds, end_odds, out=total)
            total += 1.0
            np.divide(mass, total, out=scaled)  # the mass that chooses text
            end_odds *= scaled
            step_odds *= scaled
            np.log(total, out=log_totals[offset])
            masses[offset] = mass
            mass, scaled = scaled, mass
            advance(mass, step_odds)
        part = slice(first, first + size)
        done, flow, log_total, before = ends[:size], flows[:size], log_totals[:size], masses[:size]
        ended = done.sum(axis=-1)
        ended_pmf[..., part] = np.moveaxis(ended, 0, -1)
        correct_pmf[..., part] = np.einsum("cspw,pw->spc", done, correct)
        end_mass += ended.sum(axis=0)
        # sum_w m H = sum_w m log Z - sum_w flow z_step - sum_w ends z_end, z = A + B(t).
        entropy += (np.einsum("cspw,cspw->sp", before, log_total)
                    - np.einsum("cspw,spw->sp", flow, step_part)
                    - np.einsum("csp,sc->sp", flow.sum(axis=-1), time[:, part, 0])
                    - np.einsum("cspw,spw->sp", done, end_part)
                    - np.einsum("csp,sc->sp", ended, time[:, part, 1]))
        if first == 0:
            end_work = done.sum(axis=0)
        else:
            end_work += done.sum(axis=0)
    truncation = mass.sum(axis=-1)
    wrong_pmf = ended_pmf - correct_pmf
    wrong_pmf[..., -1] += truncation
    lengths = np.arange(1, max_length + 1, dtype=np.float64)
    return ExactStatistics(
        success=correct_pmf.sum(axis=-1), length=(correct_pmf + wrong_pmf) @ lengths,
        correct_length=correct_pmf @ lengths, truncation=truncation,
        work=(end_work + mass) @ work_levels, entropy=entropy, end_mass=end_mass,
        correct_pmf=correct_pmf, wrong_pmf=wrong_pmf, end_work=end_work)


def _end_value(correct: np.ndarray, if_correct: np.ndarray, if_wrong: np.ndarray,
               position: int) -> np.ndarray:
    """(S, P, W) value of ending at ``position`` with each work level: q(w) times the value of a
    correct answer of that length plus (1 - q(w)) times that of a wrong one."""
    return (if_wrong[..., position, None]
            + (if_correct[..., position] - if_wrong[..., position])[..., None] * correct)


def values_to_go(state_logits: np.ndarray, time_logits: np.ndarray, correct: np.ndarray,
                 if_correct: np.ndarray, if_wrong: np.ndarray, if_truncated: np.ndarray
                 ) -> np.ndarray:
    """V (L + 1, S, P, W): V[t][..., w] is the expected value of the answer given that it is at
    position t with work w, by a backward pass. An answer that ends at position t has the value
    ``if_correct`` or ``if_wrong`` (S, P, L) at [..., t], by its verdict; one that is truncated has
    ``if_truncated`` (S, P)."""
    max_length = time_logits.shape[1]
    values = np.empty((max_length + 1,) + state_logits.shape[:-1])
    values[max_length] = if_truncated[..., None]
    for position in reversed(range(max_length)):
        log_text, log_step, log_end = log_probabilities(
            state_logits[..., 0] + time_logits[:, position, 0][:, None, None],
            state_logits[..., 1] + time_logits[:, position, 1][:, None, None])
        after = values[position + 1]
        values[position] = (np.exp(log_text) * after + np.exp(log_step) * shifted_up(after)
                            + np.exp(log_end) * _end_value(correct, if_correct, if_wrong,
                                                           position))
    return values


@dataclass(frozen=True)
class LogitGradient:
    """A gradient with respect to the policy's logits, per prompt: ``state`` (S, P, W, 2) with
    respect to A and ``time`` (S, P, L, 2) with respect to B (the position part is shared by the
    prompts; its gradient is kept per prompt so that a caller can weigh prompts)."""

    state: np.ndarray
    time: np.ndarray


def expectation_gradient(state_logits: np.ndarray, time_logits: np.ndarray, correct: np.ndarray,
                         if_correct: np.ndarray, if_wrong: np.ndarray, if_truncated: np.ndarray
                         ) -> LogitGradient:
    """d E[value(answer)] / d logits for the values of ``values_to_go``: a backward pass for V,
    then a forward pass that accumulates m_t(w) pi_c (Q_c - V_t(w)) (module docstring)."""
    values = values_to_go(state_logits, time_logits, correct, if_correct, if_wrong, if_truncated)
    state = np.zeros(state_logits.shape)
    time = np.zeros(state_logits.shape[:2] + time_logits.shape[1:])
    mass = np.zeros(state_logits.shape[:-1])
    mass[..., 0] = 1.0
    for position in range(time_logits.shape[1]):
        log_text, log_step, log_end = log_probabilities(
            state_logits[..., 0] + time_logits[:, position, 0][:, None, None],
            state_logits[..., 1] + time_logits[:, position, 1][:, None, None])
        p_text, p_step, p_end = np.exp(log_text), np.exp(log_step), np.exp(log_end)
        here, after = values[position], values[position + 1]
        choices = ((p_step, shifted_up(after)),
                   (p_end, _end_value(correct, if_correct, if_wrong, position)))
        for token, (p, value) in enumerate(choices):
            push = mass * p * (value - here)
            state[..., token] += push
            time[:, :, position, token] = push.sum(axis=-1)
        flow = mass * p_step
        mass *= p_text
        advance(mass, flow)
    return LogitGradient(state, time)


def visit_weighted_gradient(state_logits: np.ndarray, time_logits: np.ndarray,
                            weights_to_go: np.ndarray, state_gradient) -> LogitGradient:
    """sum over positions and work levels of m_t(w) U_t(w) g(t, w), where U = ``weights_to_go``
    (L + 1, S, P, W) (``values_to_go`` of an answer's loss weight) and g = ``state_gradient``
    (position, log_probs (S, P, W, 3)) -> a gradient (S, P, W, 3) with respect to the three logits
    at each state (its text column is dropped: the text logit is fixed at 0)."""
    state = np.zeros(state_logits.shape)
    time = np.zeros(state_logits.shape[:2] + time_logits.shape[1:])
    mass = np.zeros(state_logits.shape[:-1])
    mass[..., 0] = 1.0
    for position in range(time_logits.shape[1]):
        log_probs = np.stack(log_probabilities(
            state_logits[..., 0] + time_logits[:, position, 0][:, None, None],
            state_logits[..., 1] + time_logits[:, position, 1][:, None, None]), axis=-1)
        push = (mass * weights_to_go[position])[..., None] * state_gradient(position,
                                                                           log_probs)[..., 1:]
        state += push
        time[:, :, position] = push.sum(axis=-2)
        flow = mass * np.exp(log_probs[..., 1])
        mass *= np.exp(log_probs[..., 0])
        advance(mass, flow)
    return LogitGradient(state, time)


def expected_token_kl(state_logits: np.ndarray, time_logits: np.ndarray,
                      new_state_logits: np.ndarray, new_time_logits: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(S, P) each: the expected sum over the positions of an answer of the old policy of
    KL(pi_old || pi_new) at each position's state, and its expected length (the positions an answer
    visits)."""
    mass = np.zeros(state_logits.shape[:-1])
    mass[..., 0] = 1.0
    total, length = np.zeros(state_logits.shape[:2]), np.zeros(state_logits.shape[:2])
    for position in range(time_logits.shape[1]):
        old = log_probabilities(state_logits[..., 0] + time_logits[:, position, 0][:, None, None],
                                state_logits[..., 1] + time_logits[:, position, 1][:, None, None])
        new = log_probabilities(
            new_state_logits[..., 0] + new_time_logits[:, position, 0][:, None, None],
            new_state_logits[..., 1] + new_time_logits[:, position, 1][:, None, None])
        kl = sum(np.exp(o) * (o - n) for o, n in zip(old, new))
        total += np.sum(mass * kl, axis=-1)
        length += mass.sum(axis=-1)
        flow = mass * np.exp(old[1])
        mass *= np.exp(old[0])
        advance(mass, flow)
    return total, length

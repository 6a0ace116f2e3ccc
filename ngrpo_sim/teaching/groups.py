"""Notebooks 1 and 2: one prompt of the bandit, one sampled group, and the step each method takes
on it (the training loop's own gradient, ``bandit.BanditUpdate.gradient``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ngrpo_sim.base import checks
from ngrpo_sim.base.plotting import method_colour
from ngrpo_sim.methods.metrics import log_softmax, softmax_entropy
from ngrpo_sim.methods.presets import Method, get_method
from ngrpo_sim.simulators.bandit import BanditTask, make_task, sample_answers
from ngrpo_sim.simulators.dynamics import predicted_entropy_change
from ngrpo_sim.simulators.task_parts import Coefficients

# --------------------------------------------------------------------------------------------------
# Notebook 2: one sampled group, and the step each method takes on it
# --------------------------------------------------------------------------------------------------


def one_prompt(success_rate: float, num_answers: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(logits, rewards) of one bandit prompt with K answers, one of them correct, solved with
    probability p.

    The wrong answers' logits are the simulator's N(0, 1) draws for its first prompt, the same for
    every p, so moving p changes only how much the policy likes the correct answer.
    """
    success_rate = checks.number("success_rate", success_rate, low=0.0, high=1.0, low_open=True,
                                  high_open=True)
    task = make_task(num_prompts=1, num_answers=num_answers, profile=[success_rate])
    return task.offsets[0], task.rewards[0]


def group_logit_step(method: Method, logits, answers, group_rewards,
                     learning_rate: float = 1.0) -> np.ndarray:
    """The change of the logits (K,) when one SGD step on ``method``'s loss trains on one sampled
    group of ``answers`` (G,) of a prompt with ``logits`` (K,).

    The step is the training loop's (``bandit.BanditUpdate.gradient``) on a one-prompt tabular task,
    the first update after the rollout: every ratio is 1, so clipping is inactive (notebook 4 shows
    when it acts). Each answer is one token, so the three loss aggregations weigh every answer 1/G.
    Only the policy-gradient term is taken: the KL term is zero while the policy equals the
    reference, and the presets' entropy bonus (0.001) is left out so that what is shown is the
    advantage's doing. Raises ``ValueError`` for logits that are not one prompt's, answers outside
    [0, K) and rewards whose shape is not the answers'.
    """
    logits = checks.finite_array("logits", logits)
    if logits.ndim != 1 or logits.size < 2:
        raise ValueError("logits must be one prompt's K >= 2 answer logits, got shape "
                         f"{logits.shape}")
    answers = np.asarray(answers)
    if (answers.ndim != 1 or not np.issubdtype(answers.dtype, np.integer) or np.any(answers < 0)
            or np.any(answers >= logits.size)):
        raise ValueError(f"answers must be a 1-d array of answer indices in [0, {logits.size}), "
                         f"got {answers!r}")
    learning_rate = checks.number("learning_rate", learning_rate, low=0.0, low_open=True)
    advantages = method.advantages(group_rewards)
    if advantages.shape != answers.shape:
        raise ValueError(f"group_rewards has shape {np.shape(group_rewards)} but answers has shape "
                         f"{answers.shape}")
    # The gradient reads the sampled answers' advantages, never the task's reward table.
    task = BanditTask(rewards=np.zeros((1, logits.size)), offsets=logits[None], features=None)
    params, prompt = logits[None, None], np.zeros((1, 1), dtype=np.int64)
    update = task.update_batch(params, prompt, answers[None, None], params)
    grads = update.gradient(params, advantages[None, None], np.ones((1, 1), dtype=bool), method,
                            Coefficients(0.0, 0.0))[0]
    return -learning_rate * grads[0, 0]


@dataclass(frozen=True)
class GroupStep:
    """What one method does with one sampled group."""

    advantages: np.ndarray
    """(G,) advantage of each sampled answer, after the method's group filter."""
    logit_change: np.ndarray
    """(K,) change of every candidate answer's logit."""
    probability_change: np.ndarray
    """(K,) change of every candidate answer's probability."""
    entropy_change: float
    """Exact change of the prompt's entropy (nats)."""
    entropy_change_predicted: float
    """First-order prediction -Cov(log pi, dz) of the same change."""


@dataclass(frozen=True)
class SampledGroup:
    """One prompt, one group of G answers sampled from it, and each method's step on that group."""

    logits: np.ndarray
    """(K,) the prompt's logits before the step."""
    rewards: np.ndarray
    """(K,) reward of every candidate answer."""
    answers: np.ndarray
    """(G,) indices of the sampled answers."""
    steps: dict[str, GroupStep]

    @property
    def group_rewards(self) -> np.ndarray:
        return self.rewards[self.answers]

    @property
    def success_rate(self) -> float:
        return float(np.exp(log_softmax(self.logits)) @ (self.rewards == 1.0))


def sample_one_group(method_names, success_rate: float, *, group_size: int = 8,
                     num_answers: int = 16, learning_rate: float = 1.0,
                     rng: np.random.Generator | None = None) -> SampledGroup:
    """Sample G answers for a prompt solved with probability p and take each method's step on
    them."""
    group_size = checks.integer("group_size", group_size, low=2)
    logits, rewards = one_prompt(success_rate, num_answers)
    rng = np.random.default_rng() if rng is None else rng
    answers = sample_answers(logits[None, None], group_size, rng)[0, 0]
    probability_before, entropy_before = np.exp(log_softmax(logits)), softmax_entropy(logits)
    steps = {}
    for name in ([method_names] if isinstance(method_names, str) else method_names):
        method = get_method(name)
        change = group_logit_step(method, logits, answers, rewards[answers], learning_rate)
        new_logits = logits + change
        steps[name] = GroupStep(
            advantages=method.advantages(rewards[answers]), logit_change=change,
            probability_change=np.exp(log_softmax(new_logits)) - probability_before,
            entropy_change=float(softmax_entropy(new_logits) - entropy_before),
            entropy_change_predicted=float(predicted_entropy_change(logits, change)))
    return SampledGroup(logits, rewards, answers, steps)


def format_sampled_group(sample: SampledGroup) -> str:
    """The group, each answer's advantage under each method, and what each step did to the
    prompt."""
    names = list(sample.steps)
    width = max(9, *(len(n) + 1 for n in names))
    right = int(sample.group_rewards.sum())
    lines = [f"prompt solved with p = {sample.success_rate:.3f}; "
             f"sampled group of G = {sample.answers.size}: "
             f"{right} correct, {sample.answers.size - right} wrong", "",
             "advantage of each sampled answer",
             f"{'answer':>7}{'reward':>7}" + "".join(f"{n:>{width}}" for n in names)]
    for i, (answer, reward) in enumerate(zip(sample.answers, sample.group_rewards)):
        lines.append(f"{answer:>7}{reward:>7.0f}"
                     + "".join(f"{sample.steps[n].advantages[i]:>{width}.3f}" for n in names))
    correct_answer = sample.rewards == 1.0
    lines += ["", "what one step does to the prompt",
              f"{'':<28}" + "".join(f"{n:>{width}}" for n in names)]
    rows = (("change of P(correct)", lambda s: s.probability_change[correct_answer].sum()),
            ("entropy change (exact)", lambda s: s.entropy_change),
            ("entropy change (1st order)", lambda s: s.entropy_change_predicted))
    for title, value in rows:
        lines.append(f"{title:<28}"
                     + "".join(f"{value(sample.steps[n]):>{width}.4f}" for n in names))
    return "\n".join(lines)


def plot_sampled_group(axes, sample: SampledGroup) -> None:
    """Left: each sampled answer's advantage per method. Right: each candidate answer's probability
    change."""
    from matplotlib.ticker import MaxNLocator

    names = list(sample.steps)
    bar = 0.8 / len(names)
    left, right = axes
    for i, name in enumerate(names):
        offset = (i - (len(names) - 1) / 2) * bar
        # A method that gives the group nothing draws no bar: the legend says so.
        label = name + ("" if np.any(sample.steps[name].advantages) else " (all 0: no bars)")
        left.bar(np.arange(sample.answers.size) + offset, sample.steps[name].advantages, bar,
                 color=method_colour(name), label=label)
        right.bar(np.arange(sample.rewards.size) + offset, sample.steps[name].probability_change,
                  bar, color=method_colour(name), label=label)
    left.set_xticks(np.arange(sample.answers.size),
                    [f"{a}\n{'correct' if r == 1 else 'wrong'}"
                     for a, r in zip(sample.answers, sample.group_rewards)],
                    fontsize=7)
    left.set_xlabel("sampled answer (index, outcome)")
    left.set_ylabel("advantage")
    left.set_title("Advantages of the sampled group")
    for answer in np.flatnonzero(sample.rewards == 1.0):
        right.axvspan(answer - 0.5, answer + 0.5, color="gold", alpha=0.3, linewidth=0)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("candidate answer (correct answer shaded)")
    right.set_ylabel("change of probability after one step")
    right.set_title("Where the probability goes")
    # The starting probabilities explain the changes: an answer sampled less often than its
    # probability predicts rises even with a negative advantage (the -pi term of d log pi / dz).
    before = right.twinx()
    before.plot(np.arange(sample.rewards.size), np.exp(log_softmax(sample.logits)), "k.",
                markersize=5)
    before.set_ylim(bottom=0.0)
    before.set_ylabel("probability before the step (dots)")
    for ax in axes:
        ax.axhline(0.0, color="0.6", linewidth=0.8)
    left.legend(fontsize=7)

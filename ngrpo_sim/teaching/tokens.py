"""Notebook 6: answers made of tokens: an answer table of one prompt, what each loss
aggregation does to lengths, and where an all-wrong group's penalty goes."""

from __future__ import annotations

import numpy as np

from ngrpo_sim.analysis.sequence_gain import expected_group_update
from ngrpo_sim.base import checks
from ngrpo_sim.base.plotting import axis_label, method_colour
from ngrpo_sim.methods.metrics import log_softmax
from ngrpo_sim.methods.presets import LOSS_AGGREGATIONS, get_method
from ngrpo_sim.simulators.sequence_config import make_sequence_task
from ngrpo_sim.simulators.sequences import SequenceTask
from ngrpo_sim.simulators.task_parts import Coefficients

# --------------------------------------------------------------------------------------------------
# Notebook 6: answers made of tokens
# --------------------------------------------------------------------------------------------------

TOKEN_NAMES = "abcdefgh"
"""How the notebook writes content tokens (the end token is written "<end>")."""


def token_text(task: SequenceTask, tokens) -> str:
    """An answer's tokens as text, "b a <end>"; -1 (padding after the end) is left out."""
    return " ".join("<end>" if token == task.vocab_size else TOKEN_NAMES[token]
                    for token in tokens if token >= 0)


def answer_table(task: SequenceTask, logits: np.ndarray) -> list[tuple[str, float, float, int]]:
    """Every answer of one prompt under its prefix logits (N, C), most likely first:
    (text, probability, reward, length in tokens). For tasks small enough to list (V^L answers)."""
    logits = checks.finite_array("logits", logits)
    if logits.shape != task.offsets.shape[1:]:
        raise ValueError(f"logits must be one prompt's prefix logits of shape "
                         f"{task.offsets.shape[1:]}, got {logits.shape}")
    if task.vocab_size ** task.max_length > 4096:
        raise ValueError(f"a task with V^L = {task.vocab_size ** task.max_length} answers is too "
                         "large to list; lower vocab_size or max_length")
    probs = np.exp(log_softmax(logits))
    rows = []

    def walk(content: list[int], probability: float) -> None:
        padded = content + [0] * (task.max_length - len(content))
        node = task.prefixes(np.array(padded))[len(content)]
        for token in range(task.num_choices):
            chosen = probability * probs[node, token]
            if task.terminal[node, token]:
                answer = content + [token]
                reward = task.outcome_rewards[0, node, token]
                rows.append((token_text(task, answer), chosen, reward, len(answer)))
            else:
                walk(content + [token], chosen)

    walk([], 1.0)
    return sorted(rows, key=lambda row: -row[1])


def one_prompt_task(success_rate: float, end_probability: float = 0.35, *, vocab_size: int = 3,
                    max_length: int = 4, policy: str = "tabular", seed: int = 0) -> SequenceTask:
    """A token task with one prompt, solved with probability ``success_rate`` (one key)."""
    success_rate = checks.number("success_rate", success_rate, low=0.0, high=1.0, low_open=True,
                                  high_open=True)
    return make_sequence_task(1, vocab_size, max_length, profile=str(success_rate), policy=policy,
                              feature_dim=8, end_probability=end_probability, seed=seed)


def aggregation_effects(method_name: str, task: SequenceTask, step: float = 0.5
                        ) -> dict[str, dict[str, float]]:
    """What one expected step does to a one-prompt ``task`` under each loss aggregation.

    The step moves the prefix logits along the exact expected update of one group
    (``sequence_gain.expected_group_update``), scaled to the same length ``step`` for every
    aggregation so that only directions are compared. Returns, per aggregation, the changes of the
    success rate, of the mean length of correct answers and of wrong answers (tokens).
    """
    method = get_method(method_name)
    step = checks.number("step", step, low=0.0, low_open=True)
    logits = task.offsets[None]
    before = task.answer_statistics(logits)
    def mean_lengths(statistics):
        wrong = (statistics.length - statistics.correct_length) / (1 - statistics.success)
        return (statistics.correct_length / statistics.success).item(), wrong.item()

    effects = {}
    for aggregation in LOSS_AGGREGATIONS:
        update = expected_group_update(task, logits, method, 8, aggregation,
                                       np.zeros((1, 1)) if method.advantage.uses_values else None)
        norm = np.linalg.norm(update)
        after = task.answer_statistics(logits + step * update / norm) if norm else before
        (correct_after, wrong_after), (correct_before, wrong_before) = (mean_lengths(after),
                                                                    mean_lengths(before))
        effects[aggregation] = {"success": (after.success - before.success).item(),
                                "length of correct answers": correct_after - correct_before,
                                "length of wrong answers": wrong_after - wrong_before}
    return effects


def plot_aggregation_effects(ax, effects: dict[str, dict[str, float]]) -> None:
    """The changes of ``aggregation_effects``: bars per quantity, one per aggregation."""
    quantities = list(next(iter(effects.values())))
    width = 0.8 / len(effects)
    # Greys and hatches, not colours: in this project a colour stands for a method.
    for i, (aggregation, changes) in enumerate(effects.items()):
        offset = (i - (len(effects) - 1) / 2) * width
        ax.bar(np.arange(len(quantities)) + offset, [changes[q] for q in quantities], width,
               label=aggregation, color=("0.85", "0.6", "0.35")[i % 3],
               hatch=("", "//", "..")[i % 3], edgecolor="black")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    # One word a line: three panels side by side leave each group of bars about an inch.
    ax.set_xticks(np.arange(len(quantities)),
                  [q.replace(" of ", " of\n").replace(" answers", "\nanswers") for q in quantities],
                  fontsize=8)
    # The success rate changes by a probability, the lengths by tokens.
    ax.set_ylabel(axis_label("change after one expected step (probability or tokens)"))
    ax.legend(fontsize=7)


def all_wrong_step(method_name: str, policy: str, learning_rate: float = 1.0,
                   group_size: int = 4) -> dict[str, np.ndarray]:
    """One SGD step of ``method`` on one all-wrong group, without KL or entropy terms.

    The task has one prompt (V = 3, L = 3, success 20%); every answer of the group is "w <end>"
    with w a wrong token. Returns the next-token probabilities before and after the step at the
    empty prefix (which the group visited: it chose w there) and at the prefix "u" of another wrong
    token u (which no answer visited), and the advantages the method gave.
    """
    method = get_method(method_name)
    task = one_prompt_task(0.2, vocab_size=3, max_length=3, policy=policy)
    wrong = [token for token in range(task.vocab_size) if task.rewards[0, token] != 1.0]
    tokens = np.full((1, 1, group_size, task.max_length), -1)
    tokens[..., 0], tokens[..., 1] = wrong[0], task.vocab_size
    prompts = np.zeros((1, 1), dtype=np.int64)
    advantages = method.advantages(task.score(prompts, tokens))
    params = task.initial_params(1)
    update = task.update_batch(params, prompts, tokens, task.logits(params))
    grads = update.gradient(params, advantages, np.ones((1, 1), dtype=bool), method,
                            Coefficients(0.0, 0.0))[0]
    after = task.logits(params - learning_rate * grads)[0, 0]
    before = task.logits(params)[0, 0]
    unvisited = task.prefixes(np.array([wrong[1]] + [0] * (task.max_length - 1)))[1]
    return {"method": method.name, "advantages": advantages[0, 0], "sampled": wrong[0],
            "unvisited": wrong[1], "root_before": np.exp(log_softmax(before[0])),
            "root_after": np.exp(log_softmax(after[0])),
            "unvisited_before": np.exp(log_softmax(before[unvisited])),
            "unvisited_after": np.exp(log_softmax(after[unvisited])), "task": task}


def plot_all_wrong_step(axes, result: dict) -> None:
    """Probabilities before (grey) and after (the method's colour) at the two prefixes of
    ``all_wrong_step``; the sampled token is hatched."""
    task = result["task"]
    names = [TOKEN_NAMES[token] for token in range(task.vocab_size)] + ["<end>"]
    sampled, unvisited = TOKEN_NAMES[result["sampled"]], TOKEN_NAMES[result["unvisited"]]
    prefixes = (("root", f"empty prefix (the group chose {sampled} here)"),
                ("unvisited", f"prefix \"{unvisited}\" (no answer went there)"))
    for ax, (key, title) in zip(axes, prefixes):
        positions = np.arange(len(names))
        ax.bar(positions - 0.2, result[f"{key}_before"], 0.4, color="0.7", label="before")
        bars = ax.bar(positions + 0.2, result[f"{key}_after"], 0.4,
                      color=method_colour(result["method"]), label="after one step")
        if key == "root":
            bars[result["sampled"]].set_hatch("//")
        ax.set_xticks(positions, names)
        ax.set_ylabel("next-token probability")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)

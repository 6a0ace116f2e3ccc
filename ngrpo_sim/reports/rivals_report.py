"""NGRPO against its rivals in ``ngrpo-sim report``: which method solves the most hard prompts, at
equal steps and at equal sampled answers, and which keeps entropy and pass@256 highest.

The rivals published for the same problem (``RIVALS``: MaxRL, QAE, RL-ZVP, LENS, AsymRE and NGRPO's
baseline without its std) train beside the headline's methods (GRPO, NGRPO, DAPO, PSR-NSR, PPO) in
the headline setting of the bandit: one-token answers on the shared policy with Adam and 4
minibatches (``report.HEADLINE``). On answers made of tokens (the token section's shared policy,
``token_report.TOKEN_HEADLINE``) the ``TOKEN_RIVALS`` train beside the token section's presets:
RL-ZVP, which reads the entropy of every token there, LENS, which reads each answer's
length-normalised probability, as in an LLM, and MaxRL, which pushes hardest on hard prompts (the
others' token runs would add a fifth of ``make demo``; ``ngrpo-sim tokens`` runs them).

Two budgets, because methods that drop groups and refill the batch (DAPO and QAE drop every group
whose answers all earn the same; NGRPO and its baseline drop the all-correct ones) sample more
answers per policy update:

* **equal steps**: after the same number of policy updates, what a training curve shows;
* **equal sampled answers**: once every method has sampled as many answers as the method that
  sampled fewest did in its whole run (``answer_budget``), read off each seed's curve against its
  cumulative ``sampled_answers`` by linear interpolation between steps.

A hard prompt starts below 5% success; it is solved once its success reaches 0.5 (``solved_hard``).
Every value is a mean with its 95% interval over seeds; a question's answer is the method with the
highest mean and every method whose Welch difference from it has an interval that reaches 0
("cannot be told apart").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ngrpo_sim.base.plotting import (RIVAL_METHODS, axis_label, family_subplots, figure_legend,
                                     method_colour, method_families, metric_label, save)
from ngrpo_sim.experiments.runs import difference_interval, interval, mean_band, write_run
from ngrpo_sim.experiments.sweep import Task, sweep_tasks
from ngrpo_sim.methods.presets import get_method
from ngrpo_sim.reports.claims import RIVAL_LEAD, Finding, figure_lines, word_of
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.loop_config import PASS_AT_K_MAX
from ngrpo_sim.simulators.profile import difficulty_masks
from ngrpo_sim.simulators.sequence_config import SequenceConfig
from ngrpo_sim.simulators.training_loop import RunRecord

RIVALS = ("maxrl", "qae", "rl_zvp", "lens", "asymre", "shifted_baseline")
"""The rivals' presets, trained in the bandit's headline setting."""
TOKEN_RIVALS = ("maxrl", "rl_zvp", "lens")
"""The rivals trained on answers made of tokens."""
SUMMARY = ("accuracy", "accuracy_hard", "solved_hard", "entropy", "pass_auc", "sampled_answers")
"""The final values each run folder of the section summarises."""


def rival_tasks(bandit: DynamicsConfig, tokens: SequenceConfig) -> list[Task]:
    """The section's own runs: the ``RIVALS`` under the bandit's setting, then the
    ``TOKEN_RIVALS`` under the token task's (the other methods' runs come from the headline and
    the token section)."""
    return (sweep_tasks([get_method(name) for name in RIVALS], [bandit])
            + sweep_tasks([get_method(name) for name in TOKEN_RIVALS], [tokens]))


def cumulative_answers(run_record: RunRecord) -> np.ndarray:
    """(steps + 1, S): the answers each seed sampled before each row (0 before training)."""
    sampled = run_record.metrics["sampled_answers"][1:]
    return np.concatenate([np.zeros((1, sampled.shape[1])), np.cumsum(sampled, axis=0)])


def answer_budget(run_records: list[RunRecord]) -> float:
    """The fewest answers any seed of any of the runs sampled in its whole run."""
    return float(min(cumulative_answers(t)[-1].min() for t in run_records))


def at_answers(run_record: RunRecord, name: str, budget: float) -> np.ndarray:
    """(S,): a policy metric of each seed once it had sampled ``budget`` answers, interpolated
    linearly between the steps around it."""
    answers, values = cumulative_answers(run_record), run_record.metrics[name]
    return np.array([np.interp(budget, answers[:, seed], values[:, seed])
                     for seed in range(values.shape[1])])


def final_pass_at(run_record: RunRecord, k: int = PASS_AT_K_MAX) -> np.ndarray:
    """(S,): exact pass@k after training, averaged over prompts."""
    return run_record.pass_at_k[-1, :, list(run_record.ks).index(k)]


def leaders(values: dict[str, np.ndarray]) -> tuple[str, list[str]]:
    """(the method with the highest mean, the others whose 95% Welch difference from it reaches
    0)."""
    best = max(values, key=lambda name: interval(values[name])[0])
    tied = []
    for name in values:
        gap, half = difference_interval(values[best], values[name])
        if name != best and gap - half <= 0:
            tied.append(name)
    return best, tied


def questions(run_records: list[RunRecord], budget: float
              ) -> list[tuple[str, int, dict[str, np.ndarray]]]:
    """(question, decimals to print, {method: one value per seed}) for every compared quantity,
    higher better."""
    def per_method(values):
        return {t.method: values(t) for t in run_records}

    return [
        ("hard prompts solved, equal steps", 1, per_method(lambda t: t.final("solved_hard"))),
        ("hard prompts solved, equal sampled answers", 1,
         per_method(lambda t: at_answers(t, "solved_hard", budget))),
        ("hard-prompt success, equal steps", 3, per_method(lambda t: t.final("accuracy_hard"))),
        ("hard-prompt success, equal sampled answers", 3,
         per_method(lambda t: at_answers(t, "accuracy_hard", budget))),
        ("entropy after training", 3, per_method(lambda t: t.final("entropy"))),
        (f"pass@{PASS_AT_K_MAX} after training", 3, per_method(final_pass_at)),
    ]


def _cell(values: np.ndarray, digits: int) -> str:
    mean, half = interval(values)
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if np.isfinite(half) else f"{mean:.{digits}f}"


def comparison_table(run_records: list[RunRecord], budget: float) -> str:
    """One row per method: answers sampled per step and every quantity of ``questions``."""
    asked = questions(run_records, budget)
    lines = ["| method | answers sampled per step | " + " | ".join(q for q, _, _ in asked) + " |",
             "|---" * (2 + len(asked)) + "|"]
    for run_record in run_records:
        per_step = np.nanmean(run_record.metrics["sampled_answers"])
        cells = [_cell(values[run_record.method], digits) for _, digits, values in asked]
        lines.append(f"| {run_record.method} | {per_step:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(run_records: list[RunRecord], budget: float) -> list[str]:
    """One line per question: the leader, and who cannot be told apart from it."""
    lines = []
    for question, digits, values in questions(run_records, budget):
        best, tied = leaders(values)
        line = f"- Highest {question}: **{best}** ({_cell(values[best], digits)})"
        if tied:
            line += "; cannot be told apart from it: " + ", ".join(tied)
        else:
            runner = max((name for name in values if name != best),
                         key=lambda name: interval(values[name])[0])
            gap, half = difference_interval(values[best], values[runner])
            line += (f"; ahead of every other method (of {runner} by {gap:+.{digits}f} ± "
                     f"{half:.{digits}f})")
        lines.append(line + ".")
    return lines


ENTROPY_LABELS = {"one-token answers (bandit)": "mean entropy (nats)",
                  "answers made of tokens": "mean token entropy (nats per token)"}
"""Each simulator's entropy, as its runs record it."""


def plot_rivals(groups: dict[str, list[RunRecord]], path: Path) -> Path:
    """Per simulator (titled by the keys of ``ENTROPY_LABELS``) a row of the baselines and a row of
    NGRPO's rivals, each beside GRPO and NGRPO (``plotting.method_families``; dashed among the
    rivals), so that every curve can be told apart: hard prompts solved against steps and against
    sampled answers (seed means, dotted: the simulator's equal budget), and entropy against
    steps."""
    rows = {}
    for title, run_records in groups.items():
        by_name = {run_record.method: run_record for run_record in run_records}
        for family, names in method_families(by_name, most=0).items():
            rows[f"{title}: {family}" if family else title] = (title, names)
    figure, panels = family_subplots({row: names for row, (_, names) in rows.items()}, ncols=3,
                                     width=4.6, height=3.2)
    for (title, names), (_, axes, row) in zip(rows.values(), panels):
        by_name = {run_record.method: run_record for run_record in groups[title]}
        by_steps, by_answers, entropy = axes
        rivals = RIVAL_METHODS.intersection(names)
        for run_record in (by_name[name] for name in names):
            # Beside the rivals, GRPO and NGRPO are dashed: there for reference.
            style = dict(color=method_colour(run_record.method), linewidth=1.4,
                         linestyle="--" if rivals and run_record.method not in rivals else "-")
            for ax, name in ((by_steps, "solved_hard"), (entropy, "entropy")):
                steps, mean, _ = mean_band(run_record.metrics[name])
                ax.plot(steps, mean, label=run_record.method, **style)
            answers = cumulative_answers(run_record).mean(axis=1) / 1000
            by_answers.plot(answers, np.nanmean(run_record.metrics["solved_hard"], axis=1),
                            **style)
        by_answers.axvline(answer_budget(groups[title]) / 1000, color="0.5", linestyle=":",
                           linewidth=1.0)
        labels = (("training step", metric_label("solved_hard")),
                  ("answers sampled per seed, thousands\n(dotted: the equal budget)",
                   metric_label("solved_hard")),
                  ("training step", ENTROPY_LABELS[title]))
        for ax, (xlabel, ylabel) in zip((by_steps, by_answers, entropy), labels):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(axis_label(ylabel))
        figure_legend(row, where="right")
    figure.suptitle("NGRPO against its rivals (mean over seeds)", fontsize=11)
    return save(figure, path)


def hard_prompt_count(run_record: RunRecord) -> int:
    """How many prompts of the run's task start below 5% success."""
    return int(difficulty_masks(run_record.initial_success)["hard"].sum())


def rivals_section(out: Path, bandit: list[RunRecord], tokens: list[RunRecord]) -> list[str]:
    """Write the section's run folders and figure under ``out`` and return its report lines;
    ``bandit`` and ``tokens`` hold every compared method's run in each simulator."""
    out = Path(out)
    groups = dict(zip(ENTROPY_LABELS, (bandit, tokens)))
    for folder, run_records in zip(("bandit", "tokens"), groups.values()):
        write_run(out / folder, run_records, SUMMARY)
    figure = plot_rivals(groups, out / "rivals.png")
    lines = ["## NGRPO against its rivals", ""]
    for title, run_records in groups.items():
        config, budget = run_records[0].config, answer_budget(run_records)
        fewest = min(run_records, key=lambda t: cumulative_answers(t)[-1].min()).method
        lines += [
            f"{title[0].upper() + title[1:]}: {config.policy} policy, {config.optimizer} (lr "
            f"{config.learning_rate}), {config.minibatches} minibatches, {config.steps} steps, "
            f"{config.seeds} seeds; {hard_prompt_count(run_records[0])} of "
            f"{config.num_prompts} prompts start below 5% success. Equal sampled answers: "
            f"{budget:,.0f} per seed, what {fewest} sampled in its run. Mean ± 95% interval "
            "over seeds:", "", comparison_table(run_records, budget), "",
            *verdicts(run_records, budget), ""]
    return lines + figure_lines(figure, out, "NGRPO against its rivals: hard prompts solved "
                                             "against steps and sampled answers, and entropy")


def rival_findings(bandit: list[RunRecord], tokens: list[RunRecord]) -> list[Finding]:
    """Per simulator (the runs ``rivals_section`` takes): whether NGRPO solves the most hard
    prompts, or cannot be told apart from the method that does ("tied"), at equal steps and at
    equal sampled answers."""
    findings = []
    for where, run_records in (("bandit (1 token)", bandit),
                               (f"tokens (L = {tokens[0].config.max_length})", tokens)):
        asked = {question: (digits, values) for question, digits, values
                 in questions(run_records, answer_budget(run_records))}
        holds, parts = [], []
        for budget in ("equal steps", "equal sampled answers"):
            digits, values = asked[f"hard prompts solved, {budget}"]
            best, tied = leaders(values)
            holds.append("ngrpo" == best or "ngrpo" in tied)
            part = f"{budget}: {best} {_cell(values[best], digits)} leads"
            if best != "ngrpo":
                part += (f", ngrpo {_cell(values['ngrpo'], digits)}"
                         + (" (tied)" if "ngrpo" in tied else ""))
            parts.append(part)
        findings.append(Finding(RIVAL_LEAD, where, word_of(holds), "; ".join(parts)))
    return findings

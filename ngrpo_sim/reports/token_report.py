"""The token-level section of ``ngrpo-sim report``: the paper's claims on answers made of tokens.

The bandit's answers are single actions, so it cannot show what the paper's claims are about in a
language model: entropy per token, losses averaged over tokens, answers that grow or shrink, and a
penalty on a whole answer that moves probability at every position towards tokens nobody sampled.
This section trains on the token task of ``ngrpo_sim.simulators.sequences`` (V = 4 content tokens
and an end token, answers of at most L = 4 tokens, the "base" difficulty profile) with both
policies, shared (one parameter vector for every prompt, prefix and token) and tabular (free logits
at every prefix),
and asks:

1. does NGRPO keep the token entropy higher than GRPO (at the end, and at equal accuracy)?
2. does it learn the hard prompts?
3. is PSR-NSR unstable?
4. does seq-mean-token-mean make wrong answers longer (Dr. GRPO, Liu et al. 2025)?
5. does NGRPO's penalty on all-wrong groups leak probability into tokens that nobody sampled?

Every answer is a difference between methods (or aggregations) with a 95% Welch interval over seeds,
reported whichever way it comes out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ngrpo_sim.base.plotting import axis_label, figure_legend, metric_label, save, subplots
from ngrpo_sim.experiments.runs import (difference_interval, final_values, interval, plot_band,
                                        write_run)
from ngrpo_sim.experiments.sweep import Task, run_tasks, sweep_tasks
from ngrpo_sim.methods.presets import get_method
from ngrpo_sim.reports.claims import (ENTROPY, HARD_PROMPTS, INSTABILITY, LENGTHENING,
                                      TOKEN_HEADLINE, TOKEN_LEARNING_RATES, Finding, difference,
                                      entropy_at_matched_accuracy, figure_lines, judged)
from ngrpo_sim.simulators.sequence_config import SequenceConfig
from ngrpo_sim.simulators.training_loop import RunRecord

TOKEN_METHODS = ("grpo", "ngrpo", "dapo", "psr_nsr", "ppo")
LENGTH_METHODS = ("grpo", "ngrpo")
"""The methods trained again under the per-answer aggregations, for the length claim."""
AGGREGATION_RUNS = (("shared", "seq-mean-token-mean"), ("shared", "seq-mean-token-sum-norm"),
                    ("tabular", "seq-mean-token-mean"))
"""(policy, aggregation) in which ``LENGTH_METHODS`` train again (Dr. GRPO's seq-mean-token-sum-norm
on the shared policy only, to keep ``make demo`` short)."""
POLICY_ORDER = ("shared", "tabular")
SUMMARY = ("accuracy", "accuracy_hard", "entropy", "sequence_entropy", "length_correct",
           "length_wrong", "truncation", "end_probability", "regressed", "max_drawdown")


@dataclasses.dataclass
class TokenRuns:
    """Every run of the section: per policy, the presets, and GRPO and NGRPO under each imposed
    aggregation."""

    presets: dict[str, list[RunRecord]]
    aggregations: dict[tuple[str, str], list[RunRecord]]

    def preset(self, policy: str, method: str) -> RunRecord:
        return next(t for t in self.presets[policy] if t.method == method)

    def aggregated(self, policy: str, aggregation: str, method: str) -> RunRecord | None:
        """The run of ``method`` under ``aggregation``; None where it was not run."""
        if aggregation == "token-mean":  # the presets of these methods train with token-mean
            return self.preset(policy, method)
        runs = self.aggregations.get((policy, aggregation), [])
        return next((t for t in runs if t.method == method), None)


def token_config(policy: str, base: SequenceConfig) -> SequenceConfig:
    """``base`` on ``policy`` with that policy's learning rate."""
    return dataclasses.replace(base, policy=policy, learning_rate=TOKEN_LEARNING_RATES[policy])


def token_tasks(base: SequenceConfig) -> list[Task]:
    """The section's runs: the presets on both policies, then GRPO and NGRPO under the
    ``AGGREGATION_RUNS``."""
    presets = sweep_tasks([get_method(name) for name in TOKEN_METHODS],
                          [token_config(policy, base) for policy in POLICY_ORDER])
    configs = [dataclasses.replace(token_config(policy, base), loss_aggregation=aggregation)
               for policy, aggregation in AGGREGATION_RUNS]
    return presets + sweep_tasks([get_method(name) for name in LENGTH_METHODS], configs)


def token_runs(run_records: list[RunRecord]) -> TokenRuns:
    """The runs of ``token_tasks``, in its order, by policy and aggregation."""
    count, length_count = len(TOKEN_METHODS), len(LENGTH_METHODS)
    presets = {policy: run_records[i * count:(i + 1) * count]
               for i, policy in enumerate(POLICY_ORDER)}
    rest = run_records[len(POLICY_ORDER) * count:]
    aggregations = {key: rest[i * length_count:(i + 1) * length_count]
                    for i, key in enumerate(AGGREGATION_RUNS)}
    return TokenRuns(presets, aggregations)


def run_token_experiments(base: SequenceConfig, workers: int = 1, ray_address: str | None = None
                          ) -> TokenRuns:
    """Train the presets on both policies, then GRPO and NGRPO under the ``AGGREGATION_RUNS``, where
    ``sweep.run_tasks`` runs them (here, in ``workers`` processes or on Ray)."""
    return token_runs(run_tasks(token_tasks(base), workers=workers, ray_address=ray_address,
                                description="tokens"))


def mean_over_steps(run_record: RunRecord, name: str) -> np.ndarray:
    """A rollout metric averaged over the training steps, one value per seed."""
    return np.nanmean(run_record.metrics[name][1:], axis=0)


def _mean(run_record: RunRecord, name: str) -> float:
    return interval(final_values(run_record, name))[0]


def claims_rows(runs: TokenRuns) -> list[tuple[str, dict[str, str]]]:
    """(claim, {policy: measured answer}) for every row of the section's table."""

    def final(policy, method, name):
        return final_values(runs.preset(policy, method), name)

    def mean(policy, method, name):
        return _mean(runs.preset(policy, method), name)

    def ngrpo_minus_grpo(name, above, below):
        return lambda p: difference(final(p, "ngrpo", name), final(p, "grpo", name), above, below)

    def matched(policy):
        grpo, ngrpo = runs.preset(policy, "grpo"), runs.preset(policy, "ngrpo")
        level = 0.999 * min(_mean(t, "accuracy") for t in (grpo, ngrpo))
        return (f"{entropy_at_matched_accuracy(ngrpo, level):.3f} / "
                f"{entropy_at_matched_accuracy(grpo, level):.3f} at accuracy {level:.3f}")

    def worst_drops(policy):
        others = max(mean(policy, m, "max_drawdown") for m in TOKEN_METHODS if m != "psr_nsr")
        return f"{mean(policy, 'psr_nsr', 'max_drawdown'):.3f} / {others:.3f}"

    def longer(method, aggregation):
        def cell(policy):
            run = runs.aggregated(policy, aggregation, method)
            if run is None:
                return "not run"
            return difference(final_values(run, "length_wrong"),
                               final_values(runs.aggregated(policy, "token-mean", method),
                                            "length_wrong"), "longer", "shorter")
        return cell

    def leaked(policy):
        return [mean_over_steps(runs.preset(policy, m), "unsampled_mass_gain")
                for m in ("ngrpo", "grpo")]

    rows = [
        ("1. token entropy, NGRPO − GRPO (final, nats per token)",
         ngrpo_minus_grpo("entropy", "higher", "lower")),
        ("1. token entropy at equal accuracy, NGRPO / GRPO", matched),
        ("2. success on prompts starting below 5%, NGRPO − GRPO",
         ngrpo_minus_grpo("accuracy_hard", "NGRPO better", "GRPO better")),
        ("2. abandoned prompts (success < 0.1%), NGRPO / GRPO",
         lambda p: f"{mean(p, 'ngrpo', 'abandoned'):.2f} / {mean(p, 'grpo', 'abandoned'):.2f}"),
        ("3. regressed prompts, PSR-NSR / GRPO / NGRPO",
         lambda p: " / ".join(f"{mean(p, m, 'regressed'):.2f}"
                              for m in ("psr_nsr", "grpo", "ngrpo"))),
        ("3. worst accuracy drop during training, PSR-NSR / largest of the others", worst_drops),
    ]
    for method, name in (("grpo", "GRPO"), ("ngrpo", "NGRPO")):
        for aggregation in ("seq-mean-token-mean", "seq-mean-token-sum-norm"):
            title = f"4. length of wrong answers, {name}: {aggregation} − token-mean (tokens)"
            rows.append((title, longer(method, aggregation)))
    rows += [
        ("5. unsampled-token mass gained per step, NGRPO − GRPO (mean over steps)",
         lambda p: difference(*leaked(p), "NGRPO gains more", "GRPO gains more", digits=4)),
        ("5. unsampled-token mass gained per step, NGRPO / GRPO",
         lambda p: " / ".join(f"{np.mean(values):+.4f}" for values in leaked(p))),
        ("5. probability of the end token, NGRPO − GRPO (final)",
         ngrpo_minus_grpo("end_probability", "higher", "lower")),
    ]
    return [(title, {policy: cell(policy) for policy in POLICY_ORDER}) for title, cell in rows]


def claims_table(runs: TokenRuns) -> str:
    lines = ["| claim (token level) | " + " | ".join(f"{p} policy" for p in POLICY_ORDER) + " |",
             "|---" * (1 + len(POLICY_ORDER)) + "|"]
    for title, cells in claims_rows(runs):
        lines.append(f"| {title} | " + " | ".join(cells[p] for p in POLICY_ORDER) + " |")
    return "\n".join(lines)


def summary_table(run_records: list[RunRecord]) -> str:
    """Final values, mean ± 95% interval over seeds, as a markdown table."""
    lines = ["| method | " + " | ".join(SUMMARY) + " |", "|---" * (1 + len(SUMMARY)) + "|"]
    for run_record in run_records:
        cells = []
        for name in SUMMARY:
            mean, half = interval(final_values(run_record, name))
            cells.append(f"{mean:.3f} ± {half:.3f}" if np.isfinite(half) else f"{mean:.3f}")
        lines.append(f"| {run_record.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TOKEN_PANELS = tuple((name, metric_label(name)) for name in (
    "length_correct", "length_wrong", "truncation", "end_probability", "unsampled_mass_gain"))
"""The token-level metrics ``ngrpo-sim tokens`` draws against steps (``tokens.png``)."""


def plot_tokens(runs: TokenRuns, path: Path) -> Path:
    """The section's figure: token entropy and hard-prompt success (shared policy, every preset),
    the length of wrong answers under each aggregation (shared, GRPO and NGRPO), and the
    probability the steps moved to tokens no answer chose (tabular); one legend below."""
    figure, axes = subplots(ncols=2, nrows=2, width=5.0, height=3.5)
    for run_record in runs.presets["shared"]:
        plot_band(axes[0], run_record, "entropy")
        plot_band(axes[1], run_record, "accuracy_hard")
    for method in LENGTH_METHODS:
        for aggregation in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
            plot_band(axes[2], runs.aggregated("shared", aggregation, method), "length_wrong")
    for method in LENGTH_METHODS:
        run_record = runs.preset("tabular", method)
        gained = np.nancumsum(run_record.metrics["unsampled_mass_gain"], axis=0)
        plot_band(axes[3], dataclasses.replace(run_record, metrics={"gained": gained}), "gained")
    titles = (("mean token entropy (nats per token)", "Token entropy (shared policy)"),
              (metric_label("accuracy_hard"), "Hard prompts (shared policy)"),
              (metric_label("length_wrong"),
               "Loss aggregation (shared policy)\ndotted: seq-mean-token-mean, "
               "dash-dot: seq-mean-token-sum-norm"),
              ("probability moved to tokens no answer chose, summed over the steps",
               "The leak (tabular policy)"))
    for ax, (ylabel, title) in zip(axes, titles):
        ax.set_xlabel("training step")
        ax.set_ylabel(axis_label(ylabel))
        ax.set_title(title, fontsize=9)
    figure_legend(figure, ncols=len(runs.presets["shared"]))
    config = runs.presets["shared"][0].config
    figure.suptitle(f"Token level: V = {config.vocab_size} tokens + end, L = {config.max_length}, "
                    f"{config.num_prompts} prompts, Adam, {config.minibatches} minibatches, "
                    f"{config.seeds} seeds (bands: 95% interval of the mean)", fontsize=9)
    return save(figure, path)


def token_section(out: Path, base: SequenceConfig | None = None, workers: int = 1,
                  ray_address: str | None = None, runs: TokenRuns | None = None) -> list[str]:
    """Run the section's experiments (unless given their ``runs``), write their run folders and
    figure under ``out``, return the report lines."""
    runs = runs or run_token_experiments(base or TOKEN_HEADLINE, workers, ray_address)
    for policy, run_records in runs.presets.items():
        write_run(out / f"{policy}-presets", run_records, SUMMARY)
    for (policy, aggregation), run_records in runs.aggregations.items():
        write_run(out / f"{policy}-{aggregation}", run_records, SUMMARY)
    figure = plot_tokens(runs, out / "tokens.png")
    config = runs.presets["shared"][0].config
    lines = [
        "## Token level", "",
        f"Answers of at most L = {config.max_length} tokens from V = {config.vocab_size} content "
        "tokens and an end token; correct when the final token before the end is the prompt's key. "
        f"P = {config.num_prompts} prompts ({config.profile} profile), "
        f"B = {config.prompts_per_step}, "
        f"G = {config.group_size}, Adam, {config.minibatches} minibatches, {config.steps} steps, "
        f"{config.seeds} seeds; shared policy lr {TOKEN_LEARNING_RATES['shared']}, tabular lr "
        f"{TOKEN_LEARNING_RATES['tabular']}. Final values, mean ± 95% "
        "interval over seeds:", ""]
    for policy in POLICY_ORDER:
        lines += [f"{policy} policy, each preset with its own loss aggregation:", "",
                  summary_table(runs.presets[policy]), ""]
    lines += ["The claims (differences with 95% Welch intervals):", "", claims_table(runs), "",
              *figure_lines(figure, out, "Token entropy, hard prompts, lengths and the leak")]
    return lines


def token_findings(runs: TokenRuns) -> list[Finding]:
    """What answers made of tokens say about the paper's three claims (each policy, the shared
    one, the headline, first) and about seq-mean-token-mean's longer wrong answers (GRPO and
    NGRPO, where that aggregation was run)."""
    def differences(first, second, name):
        return [(f"{policy} policy", *difference_interval(
                    final_values(runs.preset(policy, first), name),
                    final_values(runs.preset(policy, second), name)))
                for policy in POLICY_ORDER]

    lengthened = [(f"{method}, {policy}", *difference_interval(
                      final_values(run, "length_wrong"),
                      final_values(runs.preset(policy, method), "length_wrong")))
                  for policy in POLICY_ORDER for method in LENGTH_METHODS
                  if (run := runs.aggregated(policy, "seq-mean-token-mean", method)) is not None]
    where = f"tokens (L = {runs.presets[POLICY_ORDER[0]][0].config.max_length})"
    return [judged(ENTROPY, where, differences("ngrpo", "grpo", "entropy"), "higher", "higher",
                   "lower", " nats per token", "policies"),
            judged(HARD_PROMPTS, where, differences("ngrpo", "grpo", "accuracy_hard"), "higher",
                   "higher", "lower", " success rate", "policies"),
            judged(INSTABILITY, where, differences("psr_nsr", "grpo", "regressed"), "more", "more",
                   "fewer", " prompts regressed", "policies", digits=2),
            judged(LENGTHENING, where, lengthened, "longer", "longer", "shorter", " tokens",
                   "runs")]

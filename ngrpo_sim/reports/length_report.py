"""The long-answer section of ``ngrpo-sim report``: what the methods do to answers of realistic
length, at the length cap.

The token section's answers have at most four tokens, so the length effects it reports are a
fraction of a token. This section trains on ``ngrpo_sim.simulators.long_answers`` (answers that need
work before they are correct, hundreds of tokens at L = 1024; truncated answers earn 0; every metric
exact) in two settings (``STUDIES``):

* **calibrated**: the task as ``long_answers`` calibrates it (starting answers at about a fifth of
  the cap, 2-4% truncated); the policy reads its position and can change how many tokens it spends
  per step of work, so it has two ways to stay under the cap;
* **cap binds** (``cap_bound``): the same task with twice the natural length under the same cap
  (about a tenth of the answers start truncated), and a policy that cannot read its position and
  spends fixed tokens per step: it can stay under the cap only by working less. Exploring the
  simulator, this was the only kind of setting in which a collapse at the cap appeared.

It answers five questions, each with 95% intervals over seeds, whichever way they come out:

1. which methods and loss aggregations make answers grow, and do any reach the cap and collapse
   (accuracy falls while truncation rises: ``collapse_drop``)?
2. what NGRPO's penalty on all-wrong groups does to the lengths of correct and of wrong answers and
   to truncation, against GRPO, Dr. GRPO, DAPO, MaxRL and PSR-NSR (and GRPO with NGRPO's
   calibrated advantage alone, the paper's ablation, which isolates the penalty from the clip and
   the filter)?
3. does NGRPO keep the token entropy higher than GRPO at realistic lengths?
4. does DAPO's overlong filtering or soft overlong punishment prevent a collapse or lower the
   truncation, and at what cost in accuracy (where the cap binds)?
5. where do the verdicts of one-token answers (the bandit) and of short answers (the token
   section) hold at realistic lengths, and where do they change?

The section's runs use ``LENGTH_HEADLINE`` (L = 128, so that ``make demo`` stays short: the task's
lengths scale with L); ``docs/lengths_study.py`` runs the same study at L = 1024 for
docs/lengths.md.

Over 500 lines, kept as one module: the studies, the five answers' tables, the figure and the
verdicts read one set of runs with one set of measures (``collapse_drop``, ``change``), and a cut
would split a question from the measure that answers it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ngrpo_sim.base.plotting import save, subplots
from ngrpo_sim.experiments.runs import (difference_interval, final_values, interval, label,
                                        plot_band, write_run)
from ngrpo_sim.experiments.sweep import Task, run_tasks, sweep_tasks
from ngrpo_sim.methods.presets import get_method
from ngrpo_sim.reports.claims import (COLLAPSE, ENTROPY, HARD_PROMPTS, INSTABILITY, LENGTHENING,
                                      OVERLONG, Finding, difference, entropy_at_matched_accuracy,
                                      figure_lines, judged, verdict, word_of)
from ngrpo_sim.simulators.long_answer_config import LongAnswerConfig
from ngrpo_sim.simulators.training_loop import RunRecord

PRESETS = ("grpo", "ngrpo", "dapo", "dr_grpo", "maxrl", "psr_nsr", "grpo_calibrated")
"""The presets, each with its own loss aggregation (token-mean; Dr. GRPO: seq-mean-token-sum-norm);
``grpo_calibrated`` is GRPO with NGRPO's advantage (the virtual answer) and nothing else."""
AGGREGATION_METHODS = ("grpo", "ngrpo")
"""The methods trained again under imposed aggregations (their presets use token-mean)."""
REMEDIES = ("overlong filtering", "soft punishment")
OVERLONG_BUFFER_SHARE = 0.2
"""DAPO's soft punishment buffer as a share of L (DAPO: 4096 of 20480 tokens)."""
COLLAPSE_DROP = 0.05
"""A seed collapses when its accuracy falls this far below its best so far ..."""
COLLAPSE_TRUNCATION = 0.05
"""... at a step where the share of truncated answers is this much above its value at the best."""
LENGTH_HEADLINE = LongAnswerConfig(max_length=128, num_prompts=64, prompts_per_step=16, seeds=6,
                                   steps=60, learning_rate=0.05)
"""The calibrated task: starting answers at about a fifth of the cap; the policy reads its
position and can change its tokens per step."""


def cap_bound(config: LongAnswerConfig) -> LongAnswerConfig:
    """The setting where the cap binds: the same task with twice the natural length (so a tenth of
    the answers start truncated), a policy that cannot read its position and spends fixed tokens
    per step of work, so that it can avoid the cap only by working less."""
    return dataclasses.replace(config, natural_length=2 * config.max_length,
                               position_features=False, step_plasticity=0.0)


@dataclasses.dataclass(frozen=True)
class Study:
    """One setting of the section and the runs it trains in it."""

    name: str
    """Its folder and its name in the tables."""
    presets: tuple[str, ...]
    aggregations: tuple[str, ...]
    """The aggregations ``AGGREGATION_METHODS`` train under again."""
    remedy_methods: tuple[str, ...] = ()
    """The methods trained again with each of ``REMEDIES`` ..."""
    remedy_aggregation: str = "token-mean"
    """... under this aggregation (one of ``aggregations`` or token-mean)."""


STUDIES = (Study("calibrated", PRESETS, ("seq-mean-token-mean",)),
           Study("cap binds", PRESETS[:-1], ("seq-mean-token-mean",), ("grpo", "ngrpo"),
                 "seq-mean-token-mean"))
"""The section's settings. Where the cap binds, the remedies train under seq-mean-token-mean, the
aggregation under which collapses appeared while exploring the simulator (section docstring)."""
SUMMARY = ("accuracy", "accuracy_hard", "length", "length_correct", "length_wrong", "length_q90",
           "truncation", "wrong_truncated", "entropy", "max_drawdown")
"""The final values each run folder of the section summarises."""
LENGTH_PANELS = (("length", "mean answer length (tokens)"),
                 ("truncation", "share of truncated answers"),
                 ("length_wrong", "mean length of wrong answers (tokens)"),
                 ("entropy", "token entropy (nats per token)"))
"""The metrics ``ngrpo-sim lengths`` draws against steps (``lengths.png``)."""


def study_folder(out: Path, study: Study) -> Path:
    """The folder of a study's run folders in the section's folder ``out``: its presets' run
    folder is ``presets`` in it (where the interactive page reads it)."""
    return Path(out) / study.name.replace(" ", "-")


def study_config(study: Study, base: LongAnswerConfig) -> LongAnswerConfig:
    return cap_bound(base) if study.name == "cap binds" else base


def remedy_config(base: LongAnswerConfig, remedy: str) -> LongAnswerConfig:
    """``base`` with DAPO's overlong filtering, or its soft punishment over the last
    ``OVERLONG_BUFFER_SHARE`` of L."""
    if remedy == "overlong filtering":
        return dataclasses.replace(base, overlong_filter=True)
    buffer = max(1, round(OVERLONG_BUFFER_SHARE * base.max_length))
    return dataclasses.replace(base, overlong_buffer=buffer)


@dataclasses.dataclass
class LengthRuns:
    """The runs of one ``Study``: its presets, ``AGGREGATION_METHODS`` under each of its
    aggregations, and its remedy methods under each remedy."""

    study: Study
    presets: list[RunRecord]
    aggregations: dict[str, list[RunRecord]]
    remedies: dict[str, list[RunRecord]]

    def preset(self, method: str) -> RunRecord | None:
        return next((run for run in self.presets if run.method == method), None)

    def aggregated(self, aggregation: str, method: str) -> RunRecord | None:
        """The run of ``method`` under ``aggregation`` (token-mean: its preset)."""
        if aggregation == "token-mean":
            return self.preset(method)
        return next((run for run in self.aggregations.get(aggregation, ())
                     if run.method == method), None)

    def remedied(self, remedy: str, method: str) -> RunRecord:
        return next(run for run in self.remedies[remedy] if run.method == method)

    def all(self) -> list[RunRecord]:
        return ([*self.presets] + [run for runs in self.aggregations.values() for run in runs]
                + [run for runs in self.remedies.values() for run in runs])


def length_tasks(base: LongAnswerConfig) -> list[Task]:
    """The section's runs in ``length_runs``'s order: study by study, its presets, its
    aggregations, its remedies."""
    tasks = []
    for study in STUDIES:
        config = study_config(study, base)
        tasks += sweep_tasks([get_method(name) for name in study.presets], [config])
        tasks += sweep_tasks([get_method(name) for name in AGGREGATION_METHODS],
                             [dataclasses.replace(config, loss_aggregation=aggregation)
                              for aggregation in study.aggregations])
        remedied = dataclasses.replace(config, loss_aggregation=None
                                       if study.remedy_aggregation == "token-mean"
                                       else study.remedy_aggregation)
        tasks += sweep_tasks([get_method(name) for name in study.remedy_methods],
                             [remedy_config(remedied, remedy) for remedy in REMEDIES])
    return tasks


def length_runs(run_records: list[RunRecord]) -> list[LengthRuns]:
    """The runs of ``length_tasks``, in its order, by study, aggregation and remedy."""
    studies = []
    for study in STUDIES:
        presets, run_records = (run_records[:len(study.presets)],
                                run_records[len(study.presets):])
        aggregations, remedies = {}, {}
        for aggregation in study.aggregations:
            aggregations[aggregation] = run_records[:len(AGGREGATION_METHODS)]
            run_records = run_records[len(AGGREGATION_METHODS):]
        for remedy in REMEDIES if study.remedy_methods else ():
            remedies[remedy] = run_records[:len(study.remedy_methods)]
            run_records = run_records[len(study.remedy_methods):]
        studies.append(LengthRuns(study, presets, aggregations, remedies))
    return studies


def run_length_experiments(base: LongAnswerConfig, workers: int = 1,
                           ray_address: str | None = None, store: Path | None = None
                           ) -> list[LengthRuns]:
    """Train every run of ``length_tasks`` where ``sweep.run_tasks`` runs them (keeping each
    finished run in ``store``, to resume)."""
    return length_runs(run_tasks(length_tasks(base), workers=workers, ray_address=ray_address,
                                 store=store, description="long answers"))


# -- measures ------------------------------------------------------------------------------------


def run_label(run_record: RunRecord) -> str:
    """The method, its imposed aggregation and its remedy."""
    config = run_record.config
    remedy = ", overlong filtering" if config.overlong_filter else ""
    if config.overlong_buffer:
        remedy += f", soft punishment (buffer {config.overlong_buffer})"
    return label(run_record) + remedy


def collapse_drop(run_record: RunRecord) -> np.ndarray:
    """(S,): the largest fall of accuracy below its best so far at a step where the share of
    truncated answers is at least ``COLLAPSE_TRUNCATION`` above its value at that best (0 when
    there is none): a collapse at the cap when at least ``COLLAPSE_DROP``."""
    accuracy, truncation = run_record.metrics["accuracy"], run_record.metrics["truncation"]
    seeds = np.arange(accuracy.shape[1])
    best = np.zeros(accuracy.shape[1], dtype=int)
    drop = np.zeros(accuracy.shape[1])
    for step in range(accuracy.shape[0]):
        best = np.where(accuracy[step] > accuracy[best, seeds], step, best)
        rising = truncation[step] - truncation[best, seeds] >= COLLAPSE_TRUNCATION
        drop = np.maximum(drop, np.where(rising, accuracy[best, seeds] - accuracy[step], 0.0))
    return drop


def largest(run_record: RunRecord, name: str) -> np.ndarray:
    """(S,): the largest value of a metric during training."""
    return np.nanmax(run_record.metrics[name], axis=0)


def change(run_record: RunRecord, name: str) -> np.ndarray:
    """(S,): the final value of a metric minus its starting value."""
    return run_record.metrics[name][-1] - run_record.metrics[name][0]


def _mean(values: np.ndarray, digits: int = 3) -> str:
    mean, half = interval(values)
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if np.isfinite(half) else f"{mean:.{digits}f}"


def _change(run_record: RunRecord, name: str, above: str, below: str, digits: int = 3) -> str:
    """The change of a metric over training, its 95% interval over seeds and the verdict."""
    mean, half = interval(change(run_record, name))
    return f"{mean:+.{digits}f} ± {half:.{digits}f}: {verdict(mean, half, above, below)}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# -- the five questions --------------------------------------------------------------------------


def growth_table(studies: list[LengthRuns]) -> str:
    """Question 1, one row per run."""
    rows = []
    for runs in studies:
        for run in runs.all():
            drops = collapse_drop(run)
            start = float(np.mean(run.metrics["length"][0]))
            rows.append([
                runs.study.name, run_label(run),
                f"{start:.1f} → {_mean(final_values(run, 'length'), 1)}",
                _change(run, "length", "grows", "shrinks", 1),
                _mean(largest(run, "truncation")), _mean(final_values(run, "truncation")),
                _mean(final_values(run, "accuracy")),
                f"{int(np.sum(drops >= COLLAPSE_DROP))} of {drops.size} ({drops.max():.3f})"])
    header = ["setting", "run", "mean length, start → final (tokens)",
              "change of the mean length", "largest truncation", "final truncation",
              "final accuracy", "seeds that collapse (largest drop)"]
    return _table(header, rows)


COMPARED_WITH_NGRPO = ("grpo", "dr_grpo", "dapo", "maxrl", "psr_nsr")
PENALTY_MEASURES = (("length_correct", "length of correct answers", 1),
                    ("length_wrong", "length of wrong answers", 1),
                    ("truncation", "truncation", 3),
                    ("wrong_truncated", "share of wrong answers truncated", 3))


def penalty_table(studies: list[LengthRuns]) -> str:
    """Question 2: NGRPO against each method, and GRPO with the calibrated advantage alone against
    GRPO, final values."""
    rows = []
    for runs in studies:
        pairs = [("ngrpo", other) for other in COMPARED_WITH_NGRPO]
        pairs.append(("grpo_calibrated", "grpo"))
        for first, second in pairs:
            if runs.preset(first) is None or runs.preset(second) is None:
                continue
            rows.append([runs.study.name, f"{first} − {second}"] + [
                difference(final_values(runs.preset(first), name),
                            final_values(runs.preset(second), name), "higher", "lower", digits)
                for name, _, digits in PENALTY_MEASURES])
    return _table(["setting", "final values"] + [title for _, title, _ in PENALTY_MEASURES],
                  rows)


def entropy_table(studies: list[LengthRuns]) -> str:
    """Question 3."""
    rows = []
    for runs in studies:
        grpo, ngrpo = runs.preset("grpo"), runs.preset("ngrpo")
        level = 0.999 * min(interval(final_values(run, "accuracy"))[0] for run in (grpo, ngrpo))
        rows += [[runs.study.name, "token entropy, NGRPO − GRPO (final, nats per token)",
                  difference(final_values(ngrpo, "entropy"), final_values(grpo, "entropy"),
                              "higher", "lower")],
                 [runs.study.name, "token entropy at equal accuracy, NGRPO / GRPO",
                  f"{entropy_at_matched_accuracy(ngrpo, level):.3f} / "
                  f"{entropy_at_matched_accuracy(grpo, level):.3f} at accuracy {level:.3f}"]]
        rows += [[runs.study.name, f"change of the token entropy over training, {run.method}",
                  _change(run, "entropy", "rises", "falls")] for run in runs.presets]
    return _table(["setting", "question", "answer"], rows)


def remedy_table(studies: list[LengthRuns]) -> str:
    """Question 4: each remedy against the same method without it."""
    rows = []
    for runs in studies:
        for remedy in runs.remedies:
            for method in runs.study.remedy_methods:
                treated = runs.remedied(remedy, method)
                plain = runs.aggregated(runs.study.remedy_aggregation, method)
                drops = collapse_drop(treated)
                rows.append([
                    runs.study.name, f"{run_label(plain)} + {remedy}",
                    difference(largest(treated, "truncation"), largest(plain, "truncation"),
                                "higher", "lower"),
                    difference(final_values(treated, "truncation"),
                                final_values(plain, "truncation"), "higher", "lower"),
                    difference(final_values(treated, "length"), final_values(plain, "length"),
                                "longer", "shorter", 1),
                    difference(final_values(treated, "accuracy"),
                                final_values(plain, "accuracy"), "gains", "costs"),
                    f"{int(np.sum(drops >= COLLAPSE_DROP))} of {drops.size} "
                    f"(without: {int(np.sum(collapse_drop(plain) >= COLLAPSE_DROP))})"])
    header = ["setting", "run − the same without the remedy", "largest truncation",
              "final truncation", "final mean length (tokens)", "final accuracy",
              "seeds that collapse"]
    return _table(header, rows)


def _pairverdict(first: RunRecord | None, second: RunRecord | None, name: str, above: str,
                  below: str) -> str:
    if first is None or second is None:
        return "not run"
    return difference(final_values(first, name), final_values(second, name), above, below)


CLAIMS = (("token entropy, NGRPO − GRPO (final)", "ngrpo", "grpo", "entropy", "higher", "lower"),
          ("success on prompts starting below 5%, NGRPO − GRPO", "ngrpo", "grpo",
           "accuracy_hard", "NGRPO better", "GRPO better"),
          ("largest accuracy drop during training, PSR-NSR − GRPO", "psr_nsr", "grpo",
           "max_drawdown", "PSR-NSR less stable", "PSR-NSR more stable"))
"""The claims of question 5 that every simulator can test: (title, method, other method, final
metric, verdict above 0, verdict below 0)."""


def verdict_table(studies: list[LengthRuns], one_token: list[RunRecord] | None = None,
                  short_answers=None) -> str:
    """Question 5: the same claims on one-token answers (``one_token``: the bandit's headline
    runs), on short answers (``short_answers``: the token section's ``TokenRuns``, shared
    policy) and here in each setting."""
    def by_name(run_records):
        return {run.method: run for run in run_records or ()}

    length = studies[0].presets[0].config.max_length
    columns = {"one token (bandit)": by_name(one_token),
               "short answers (L = 4)": by_name(short_answers.presets["shared"]
                                                if short_answers else None)}
    columns.update({f"L = {length}, {runs.study.name}": by_name(runs.presets)
                    for runs in studies})
    rows = [[title] + [_pairverdict(column.get(first), column.get(second), name, above, below)
                       for column in columns.values()]
            for title, first, second, name, above, below in CLAIMS]
    short = ((None, None) if short_answers is None
             else (short_answers.aggregated("shared", "seq-mean-token-mean", "grpo"),
                   short_answers.preset("shared", "grpo")))
    rows.append(["length of wrong answers, GRPO: seq-mean-token-mean − token-mean (final)",
                 "no lengths (one token)",
                 _pairverdict(*short, "length_wrong", "longer", "shorter")]
                + [_pairverdict(runs.aggregated("seq-mean-token-mean", "grpo"),
                                 runs.preset("grpo"), "length_wrong", "longer", "shorter")
                   for runs in studies])
    return _table(["claim"] + list(columns), rows)


# -- the figure and the section ------------------------------------------------------------------

REMEDY_LINESTYLES = {"overlong filtering": "--", "soft punishment": (0, (5, 1, 1, 1))}


def plot_lengths(studies: list[LengthRuns], path: Path) -> Path:
    """Lengths and truncation over training per method, one row per setting: the mean length,
    truncation and accuracy (presets, GRPO and NGRPO under the imposed aggregation, and the
    remedies) and the token entropy (presets)."""
    figure, axes = subplots(ncols=4, nrows=len(studies), width=3.9, height=3.1)
    for row, runs in enumerate(studies):
        every = runs.all()
        panels = (("length", "mean answer length (tokens)", every),
                  ("truncation", "share of truncated answers", every),
                  ("accuracy", "mean success rate", every),
                  ("entropy", "token entropy (nats per token)", runs.presets))
        for ax, (name, ylabel, run_records) in zip(axes[4 * row:4 * row + 4], panels):
            for run in run_records:
                plot_band(ax, run, name)
                remedy = ("soft punishment" if run.config.overlong_buffer else
                          "overlong filtering" if run.config.overlong_filter else None)
                if remedy:
                    ax.lines[-1].set_linestyle(REMEDY_LINESTYLES[remedy])
                    ax.lines[-1].set_label(run_label(run))
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabel)
            ax.set_title(runs.study.name, fontsize=8)
        # One legend per row, right of it, for every run the row draws.
        handles, labels = axes[4 * row].get_legend_handles_labels()
        axes[4 * row + 3].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                                 fontsize=6)
    config = studies[0].presets[0].config
    figure.suptitle(f"Long answers: L = {config.max_length} tokens, {config.num_prompts} prompts "
                    f"({config.profile}), B = {config.prompts_per_step}, G = {config.group_size}, "
                    f"Adam lr {config.learning_rate}, {config.minibatches} minibatches, "
                    f"{config.seeds} seeds (bands: 95% interval of the mean); dotted: "
                    "seq-mean-token-mean, dashed: + overlong filtering, dash-dot: + soft "
                    "punishment", fontsize=7)
    return save(figure, path)


def plot_length_distribution(ax, statistics, seed: int = 0, bins: int = 32) -> None:
    """The exact length distribution of correct and of wrong answers (``ExactStatistics`` of a
    policy, one seed, pooled over prompts) in ``bins`` bins of equal width, with the truncated
    answers (all wrong, all of length L) as a bar of their own at L."""
    correct = statistics.correct_pmf[seed].mean(axis=0)
    truncated = statistics.truncation[seed].mean()
    wrong = statistics.wrong_pmf[seed].mean(axis=0)
    wrong[-1] -= truncated
    max_length = correct.size
    edges = np.linspace(0, max_length, bins + 1)
    lengths = np.arange(1, max_length + 1)
    width = edges[1] - edges[0]
    for values, name, colour in ((correct, "correct", "#2ca02c"),
                                 (wrong, "wrong, ended", "#d62728")):
        per_bin = np.histogram(lengths, edges, weights=values)[0]
        ax.stairs(per_bin / width, edges, label=name, color=colour, linewidth=1.5)
    ax.bar(max_length, truncated / width, width=width, color="black", alpha=0.6,
           label=f"truncated ({truncated:.1%})")
    ax.set_xlabel("answer length (tokens)")
    ax.set_ylabel("probability per token of length")


def _start(runs: LengthRuns) -> str:
    config, metrics = runs.presets[0].config, runs.presets[0].metrics
    return (f"**{runs.study.name}** (natural length {config.natural_length or config.max_length}"
            f", position features {'on' if config.position_features else 'off'}, step "
            f"plasticity {config.step_plasticity}): at the start the mean length is "
            f"{np.mean(metrics['length'][0]):.1f} tokens, {np.mean(metrics['truncation'][0]):.1%} "
            f"of answers are truncated, accuracy {np.mean(metrics['accuracy'][0]):.3f}.")


def length_section(out: Path, base: LongAnswerConfig | None = None, workers: int = 1,
                   ray_address: str | None = None, runs: list[LengthRuns] | None = None,
                   one_token: list[RunRecord] | None = None, short_answers=None,
                   store: Path | None = None) -> list[str]:
    """Run the section's experiments (unless given their ``runs``; ``store`` keeps each finished
    run, to resume), write their run folders and figure under ``out``, return the report lines.
    ``one_token`` and ``short_answers`` (the headline's sampled runs and the token section's runs)
    fill question 5's other columns."""
    studies = runs or run_length_experiments(base or LENGTH_HEADLINE, workers, ray_address, store)
    out = Path(out)
    for study in studies:
        folder = study_folder(out, study.study)
        write_run(folder / "presets", study.presets, SUMMARY)
        for name, run_records in (study.aggregations | study.remedies).items():
            write_run(folder / name.replace(" ", "-"), run_records, SUMMARY)
    figure = plot_lengths(studies, out / "lengths.png")
    config = studies[0].presets[0].config
    buffer = remedy_config(config, "soft punishment").overlong_buffer
    return [
        "## Long answers", "",
        f"Answers of up to L = {config.max_length} tokens that need work before they are correct "
        f"(``ngrpo_sim.simulators.long_answers``, W = {config.work_cap} work levels), in two "
        f"settings. P = {config.num_prompts} prompts ({config.profile} profile), B = "
        f"{config.prompts_per_step}, G = {config.group_size}, shared policy, Adam lr "
        f"{config.learning_rate}, {config.minibatches} minibatches, {config.steps} steps, "
        f"{config.seeds} seeds. Every metric is exact (no sampling noise); intervals are 95% over "
        "seeds (Welch for differences).", "",
        *(_start(study) for study in studies), "",
        "1. Which methods and aggregations make answers grow; do any reach the cap and collapse "
        f"(accuracy {COLLAPSE_DROP} below its best while truncation is "
        f"{COLLAPSE_TRUNCATION} above its value there)?", "", growth_table(studies), "",
        "2. NGRPO's penalty on all-wrong groups against the other methods (and GRPO with only "
        "NGRPO's calibrated advantage against GRPO):", "", penalty_table(studies), "",
        "3. The paper's entropy claim, with the token entropy:", "", entropy_table(studies), "",
        f"4. DAPO's overlong filtering and soft overlong punishment (buffer {buffer} tokens):", "",
        remedy_table(studies), "",
        "5. The same claims on one-token answers, short answers and long answers:", "",
        verdict_table(studies, one_token, short_answers), "",
        *figure_lines(figure, out, "Lengths, truncation, accuracy and entropy over training")]


def length_findings(studies: list[LengthRuns]) -> list[Finding]:
    """What answers of realistic length say, per setting (calibrated first): the paper's three
    claims, seq-mean-token-mean's longer wrong answers, collapses at the cap, and DAPO's overlong
    remedies against the same method without them (where they were run)."""
    def differences(first, second, name):
        return [(runs.study.name, *difference_interval(final_values(runs.preset(first), name),
                                                       final_values(runs.preset(second), name)))
                for runs in studies]

    lengthened = [(f"{method}, {runs.study.name}", *difference_interval(
                      final_values(runs.aggregated("seq-mean-token-mean", method),
                                   "length_wrong"),
                      final_values(runs.preset(method), "length_wrong")))
                  for runs in studies for method in AGGREGATION_METHODS
                  if runs.aggregated("seq-mean-token-mean", method) is not None]
    remedied = [(f"{method}, {remedy}", *difference_interval(
                    final_values(runs.remedied(remedy, method), "truncation"),
                    final_values(runs.aggregated(runs.study.remedy_aggregation, method),
                                 "truncation")))
                for runs in studies for remedy in runs.remedies
                for method in runs.study.remedy_methods]
    drops = {f"{run_label(run)} ({runs.study.name})": collapse_drop(run)
             for runs in studies for run in runs.all()}
    collapsed = {name: int(np.sum(drop >= COLLAPSE_DROP)) for name, drop in drops.items()
                 if np.any(drop >= COLLAPSE_DROP)}
    largest_drop = max(float(drop.max()) for drop in drops.values())
    named = "; ".join(f"{name}, {seeds} of {drops[name].size} seeds"
                      for name, seeds in collapsed.items())
    evidence = (f"{len(collapsed)} of {len(drops)} runs collapse (a seed loses {COLLAPSE_DROP} "
                f"accuracy as truncation rises); largest drop {largest_drop:.3f}"
                + (f": {named}" if 0 < len(collapsed) <= 2 else ""))
    where = f"long (L = {studies[0].presets[0].config.max_length})"
    findings = [
        judged(ENTROPY, where, differences("ngrpo", "grpo", "entropy"), "higher", "higher",
               "lower", " nats per token"),
        judged(HARD_PROMPTS, where, differences("ngrpo", "grpo", "accuracy_hard"), "higher",
               "higher", "lower", " success rate"),
        judged(INSTABILITY, where, differences("psr_nsr", "grpo", "max_drawdown"), "larger",
               "larger", "smaller", " in the largest accuracy drop"),
        judged(LENGTHENING, where, lengthened, "longer", "longer", "shorter", " tokens", "runs",
               digits=1),
        Finding(COLLAPSE, where, word_of([name in collapsed for name in drops]), evidence)]
    if remedied:
        findings.append(judged(OVERLONG, where, remedied, "lower", "higher", "lower",
                               " final truncation", "runs"))
    return findings

"""Does it matter? NGRPO trained as the authors' release assembles its batches, against NGRPO as
the paper defines it, in the bandit simulator.

The release splits groups at its batch cut before it computes advantages, gives a group of one row
A = r, trains the carried rows one step late, and reorders every generation batch's rows so that
each minibatch holds a few answers of many groups (docs/method_reference.md, "What the release
computes"; measured at the recipe's sizes in batch_assembly.md). ``batch_assembly="release"``
(``ngrpo_sim.simulators.release_assembly``) makes the simulators assemble batches that way. This
script trains on the report's headline setting (``ngrpo_sim.reports.report.HEADLINE``: shared
log-linear policy, the "base" profile, Adam, 4 minibatches, 200 steps), on the same setting with the
tabular policy, and on both with SGD (the report's sweep step sizes), since the optimiser turns out
to decide the direction:

* GRPO on whole groups and as the release trains it (no filter: nothing is cut or carried, and
  every group keeps its advantages; what remains is the reordering of rows across minibatches);
* NGRPO as the paper defines it (``whole_groups``) and as the release trains it (``release``);
* two variants of NGRPO (release) that take one part of the release away each, to see which part
  moves it: *paper advantages* (every row gets its whole group's advantage and its ratio against
  the current rollout policy: no split statistics, no A = r, no stale rows) and *rows in drawn
  order* (no reordering: a generation batch's rows keep their groups together, so the cut splits
  at most one group and each minibatch holds whole groups).

The variants swap a function of ``ngrpo_sim.simulators.training_loop`` for the run
(``unittest.mock.patch``,
see ``VARIANTS``); nothing else changes. Each setting's runs share their sampling seeds, so the
differences are paired by seed: mean and 95% Student-t interval (Welch's interval of the two
means is in the JSON). Measured: the final accuracy, accuracy on the hard prompts (those that
start below 5% success; final and averaged over the steps, which shows a difference in speed) and
how many of them end solved, the entropy (final, averaged over steps, on hard prompts), the area
under pass@k, and what the updates looked like (clip fraction, approx_kl). The headline's
differences are repeated on other tasks (``--tasks``: task seeds 1, 2, ...), and the shares of
split groups, groups of one and carried rows the simulator produced are set beside the release's
own (batch_assembly.json).

    PYTHONPATH=$PWD .venv/bin/python docs/release/does_it_matter.py [--seeds 24] [--steps 200]
        [--tasks 2]

writes ``docs/release/does_it_matter.json``, ``.md`` and ``.png`` (about 4 minutes on two shared
CPU cores with the defaults).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import numpy as np

from ngrpo_sim.base.files import write_atomically
from ngrpo_sim.base.plotting import method_colour, pyplot, subplots
from ngrpo_sim.experiments.runs import difference_interval, interval
from ngrpo_sim.reports.claims import HEADLINE, LEARNING_RATES
from ngrpo_sim.simulators import training_loop

HERE = Path(__file__).resolve().parent
SETTINGS = {f"{policy} policy, {'Adam' if optimizer == 'adam' else 'SGD'}"
            + (" (the headline)" if (policy, optimizer) == ("shared", "adam") else ""):
            dataclasses.replace(HEADLINE, policy=policy, optimizer=optimizer,
                                learning_rate=LEARNING_RATES[policy, optimizer])
            for optimizer in ("adam", "sgd") for policy in ("shared", "tabular")}
"""The headline setting, the tabular policy, and both with SGD at the report's sweep step sizes
(``ngrpo_sim.reports.report.LEARNING_RATES``)."""
RUNS = {"GRPO": ("grpo", "whole_groups", None),
        "GRPO (release)": ("grpo", "release", None),
        "NGRPO (paper)": ("ngrpo", "whole_groups", None),
        "NGRPO (release)": ("ngrpo", "release", None),
        "NGRPO (release, paper advantages)": ("ngrpo", "release", "paper_advantages"),
        "NGRPO (release, rows in drawn order)": ("ngrpo", "release", "drawn_order")}
"""name -> (method, batch_assembly, variant)."""
MAIN_RUNS = ("GRPO", "GRPO (release)", "NGRPO (paper)", "NGRPO (release)")
CONTRASTS = {
    "NGRPO: release - paper": {"NGRPO (release)": 1, "NGRPO (paper)": -1},
    "GRPO: release - paper": {"GRPO (release)": 1, "GRPO": -1},
    "NGRPO - GRPO: release - paper": {"NGRPO (release)": 1, "GRPO (release)": -1,
                                      "NGRPO (paper)": -1, "GRPO": 1},
    "NGRPO with paper advantages: release - paper": {"NGRPO (release, paper advantages)": 1,
                                                     "NGRPO (paper)": -1},
    "NGRPO with rows in drawn order: release - paper": {
        "NGRPO (release, rows in drawn order)": 1, "NGRPO (paper)": -1},
    "NGRPO: release - release with paper advantages": {
        "NGRPO (release)": 1, "NGRPO (release, paper advantages)": -1}}
"""The paired differences reported: per seed, the sum of each run's value times its coefficient.
``NGRPO - GRPO`` is how the release changes NGRPO's edge over GRPO; the last is what the split
statistics, the A = r fallback and the stale rows add to the rest of the release."""
ABLATIONS = tuple(name for name in CONTRASTS if name.startswith("NGRPO"))


def _final(name):
    return lambda record: record.final(name)


def _over_steps(name):
    return lambda record: record.metrics[name][1:].mean(axis=0)


METRICS = {"accuracy": ("accuracy", _final("accuracy")),
           "accuracy_hard": ("accuracy on hard prompts", _final("accuracy_hard")),
           "accuracy_hard_over_steps": ("accuracy on hard prompts, mean over steps",
                                        _over_steps("accuracy_hard")),
           "solved_hard": ("hard prompts solved", _final("solved_hard")),
           "entropy": ("entropy (nats)", _final("entropy")),
           "entropy_over_steps": ("entropy, mean over steps (nats)", _over_steps("entropy")),
           "entropy_hard": ("entropy on hard prompts (nats)", _final("entropy_hard")),
           "pass_auc": ("pass@k AUC", _final("pass_auc"))}
"""key -> (label, per-seed value of a run)."""
KEY_METRICS = ("accuracy", "accuracy_hard_over_steps", "entropy", "pass_auc")
TASK_SEEDS = 16
"""Sampling seeds per run on the other tasks."""
SHARES = {"split": "groups split over two steps", "partial": "partial groups in a step's batch",
          "single": "groups of one (A = r)", "carried": "trained rows carried (1 step stale)",
          "all_correct": "all-correct groups"}


# --------------------------------------------------------------------------------------------
# The variants: one part of the release taken away.
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def paper_advantages():
    """Every trained row gets its whole group's advantage (the estimator over the group's G
    rewards, which the assembled batch keeps) and its ratio against the current rollout policy
    (no group is marked stale)."""
    assemble, assembled = training_loop.assemble, []

    def remembering(*args, **kwargs):
        batch = assemble(*args, **kwargs)
        batch.stale = np.zeros_like(batch.stale)
        assembled.append(batch)
        return batch

    def whole_group_advantages(rewards, group_ids, estimator):
        batch = assembled.pop()
        return estimator(batch.rewards)[batch.rows]

    with mock.patch.object(training_loop, "assemble", remembering), \
            mock.patch.object(training_loop, "release_advantages", whole_group_advantages):
        yield


@contextlib.contextmanager
def drawn_order():
    """Each generation batch's rows in the order they were drawn (group by group) instead of a
    random order."""
    draw = training_loop.draw_rollout

    def in_order(task, method, params, config, *args, **kwargs):
        rollout = draw(task, method, params, config, *args, **kwargs)
        drawn, group_size = rollout.row_order.shape[1:]
        place = (np.arange(drawn) % config.prompts_per_step)[:, None] * group_size
        rollout.row_order = np.broadcast_to(place + np.arange(group_size),
                                            rollout.row_order.shape).copy()
        return rollout

    with mock.patch.object(training_loop, "draw_rollout", in_order):
        yield


VARIANTS = {None: contextlib.nullcontext, "paper_advantages": paper_advantages,
            "drawn_order": drawn_order}


# --------------------------------------------------------------------------------------------
# Summaries.
# --------------------------------------------------------------------------------------------

def assembly_shares(metrics: dict[str, np.ndarray]) -> dict[str, float]:
    """The release_assembly.RELEASE_METRICS shares over all steps and seeds of a run."""
    total = {name: float(np.nansum(values)) for name, values in metrics.items()}
    return {"split": total["groups_cut"] / total["kept_groups"],
            "partial": total["partial_groups"] / total["batch_groups"],
            "single": total["single_groups"] / total["batch_groups"],
            "carried": total["carried_rows"] / total["trained_rows"],
            "all_correct": float(np.nanmean(metrics["share_all_correct"]))}


def release_measurements() -> dict[str, dict[str, float]]:
    """The same shares measured with the release's partitioner (batch_assembly.json)."""
    scenarios = json.loads((HERE / "batch_assembly.json").read_text())["scenarios"]
    return {name: {"split": s["groups"]["groups_split_over_two_steps_share"],
                   "partial": s["groups"]["partial_groups_per_batch_share"],
                   "single": s["groups"]["groups_of_one_per_batch_share"],
                   "carried": s["carried_rows"]["share_of_trained_rows"],
                   "all_correct": s["all_correct_group_share"]}
            for name, s in scenarios.items()}


def contrast(values: dict[str, np.ndarray], coefficients: dict[str, int]) -> dict:
    """The contrast's mean over seeds and its paired 95% half-width; for two runs also Welch's
    half-width of the difference of their means (treating their seeds as independent)."""
    mean, half = interval(sum(c * values[run] for run, c in coefficients.items()))
    result = {"mean": mean, "half_width": half}
    if len(coefficients) == 2:
        first, second = sorted(coefficients, key=coefficients.get, reverse=True)
        result["welch_half_width"] = difference_interval(values[first], values[second])[1]
    return result


def compare(records: dict, metrics=METRICS) -> dict:
    """Per metric: each run's mean and interval, its values per seed, and the ``CONTRASTS``
    among the runs in ``records``."""
    result = {}
    for metric, (_, value_of) in metrics.items():
        values = {run: value_of(record) for run, record in records.items()}
        result[metric] = {
            "runs": {run: dict(zip(("mean", "half_width"), interval(v)))
                     for run, v in values.items()},
            "per_seed": {run: v.tolist() for run, v in values.items()},
            "differences": {name: contrast(values, coefficients)
                            for name, coefficients in CONTRASTS.items()
                            if set(coefficients) <= set(values)}}
    return result


def updates(run_record) -> dict[str, float]:
    """What the run's updates looked like, means over steps and seeds: the share of answers whose
    ratio the clip stopped, and verl's approx_kl between the rollout policy and the updated one."""
    metrics = run_record.metrics
    return {"clipfrac": float(np.nanmean(metrics["clipfrac_low"] + metrics["clipfrac_high"])),
            "approx_kl": float(np.nanmean(metrics["approx_kl"]))}


def verdict(mean: float, half: float) -> str:
    if mean - half > 0:
        return "higher"
    if mean + half < 0:
        return "lower"
    return "no clear difference"


def figure(all_records: dict) -> bytes:
    fig, axes = subplots(ncols=3, nrows=len(all_records), width=4.6, height=3.3)
    panels = (("accuracy", "accuracy (mean success rate)"),
              ("accuracy_hard", "accuracy on hard prompts"), ("entropy", "entropy (nats)"))
    for row, (setting, records) in enumerate(all_records.items()):
        for column, (metric, axis_label) in enumerate(panels):
            ax = axes[row * len(panels) + column]
            for run in MAIN_RUNS:
                method, assembly, _ = RUNS[run]
                values = records[run].metrics[metric]
                steps = np.arange(values.shape[0])
                mean = values.mean(axis=1)
                half = np.array([interval(v)[1] for v in values])
                style = "--" if assembly == "release" else "-"
                ax.plot(steps, mean, style, color=method_colour(method), linewidth=1.8, label=run)
                ax.fill_between(steps, mean - half, mean + half, color=method_colour(method),
                                alpha=0.15, linewidth=0)
            ax.set_xlabel("training step")
            ax.set_ylabel(axis_label)
            ax.set_title(setting, fontsize=10)
            if row == 0 and column == 0:
                ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    pyplot().close(fig)
    return buffer.getvalue()


def _cell(stat: dict, signed: bool = False) -> str:
    return f"{stat['mean']:{'+' if signed else ''}.3f} ± {stat['half_width']:.3f}"


def markdown(result: dict) -> str:
    def paragraph(text):
        return textwrap.fill(text, width=100)

    lines = ["# Does the release's batch assembly change what NGRPO learns? (bandit simulator)", "",
             paragraph(f"Written by `docs/release/does_it_matter.py` ({result['seeds']} seeds, "
                       f"{result['steps']} steps, {result['seconds']} s; every number is in "
                       f"`does_it_matter.json`, the curves in `does_it_matter.png`). *Paper*: the "
                       f"method on whole groups. *Release*: the same method on batches assembled "
                       f"as the release assembles them (`batch_assembly=\"release\"`: rows "
                       f"reordered, groups split at the cut, a group of one row gets A = r, "
                       f"carried rows trained a step late against the policy that sampled them). "
                       f"Values: mean ± 95% interval over seeds. Differences: paired by seed; "
                       f"*verdict* says whether the interval of NGRPO's difference excludes 0.")]
    for setting, block in result["settings"].items():
        metrics = block["metrics"]
        lines += ["", f"## {setting}", "",
                  "| value | " + " | ".join(MAIN_RUNS) + " | NGRPO: release - paper | verdict "
                  "| GRPO: release - paper |", "|---|" + "---|" * (len(MAIN_RUNS) + 3)]
        for metric, (name, _) in METRICS.items():
            c = metrics[metric]
            ngrpo = c["differences"]["NGRPO: release - paper"]
            grpo = c["differences"]["GRPO: release - paper"]
            lines.append(f"| {name} | " + " | ".join(_cell(c["runs"][run]) for run in MAIN_RUNS)
                         + f" | {_cell(ngrpo, True)} | "
                         f"{verdict(ngrpo['mean'], ngrpo['half_width'])} | {_cell(grpo, True)} |")
        lines += ["", "What moves NGRPO (paired differences):", "",
                  "| difference | " + " | ".join(METRICS[m][0] for m in KEY_METRICS) + " |",
                  "|---|" + "---|" * len(KEY_METRICS)]
        for name in ABLATIONS:
            lines.append(f"| {name} | " + " | ".join(
                _cell(metrics[m]["differences"][name], True) for m in KEY_METRICS) + " |")
        lines += ["", "| updates, mean over steps | " + " | ".join(RUNS) + " |",
                  "|---|" + "---|" * len(RUNS)]
        for key, name in (("clipfrac", "clip fraction"), ("approx_kl", "approx_kl")):
            lines.append(f"| {name} | " + " | ".join(
                f"{block['updates'][run][key]:.2e}" for run in RUNS) + " |")
    if result["other_tasks"]:
        lines += ["", "## Other tasks of the headline setting", "",
                  paragraph(f"Task seeds 1..{len(result['other_tasks'])} (other prompts, starting "
                            f"rates and features), {result['task_seeds']} sampling seeds each; "
                            f"release - paper, paired."), "",
                  "| task seed, method | " + " | ".join(METRICS[m][0] for m in KEY_METRICS)
                  + " |", "|---|" + "---|" * len(KEY_METRICS)]
        for seed, metrics in result["other_tasks"].items():
            for name in ("NGRPO: release - paper", "GRPO: release - paper",
                         "NGRPO - GRPO: release - paper"):
                lines.append(f"| {seed}, {name.split(':')[0]} | " + " | ".join(
                    _cell(metrics[m]["differences"][name], True) for m in KEY_METRICS) + " |")
    measured = result["release_measurements"]
    lines += ["", "## What the simulated assembly did, beside the release's measurements", "",
              "| | " + " | ".join(f"simulator, {s}" for s in result["settings"])
              + " | " + " | ".join(f"release, {name}" for name in measured) + " |",
              "|---|" + "---|" * (len(result["settings"]) + len(measured))]
    for key, name in SHARES.items():
        cells = [f"{block['assembly_shares'][key]:.1%}" for block in result["settings"].values()]
        cells += [f"{scenario[key]:.1%}" for scenario in measured.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", paragraph(
        "Release columns: docs/release/batch_assembly.md (synthetic rollouts at the recipe's "
        "sizes, the release's partitioner). Simulator columns: NGRPO (release), B = 64 prompts x "
        "G = 8 answers per step, the rows of each generation batch in a random order (one-token "
        "answers give the length balancing nothing to go on), shares over all steps."), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--steps", type=int, default=HEADLINE.steps)
    parser.add_argument("--tasks", type=int, default=2,
                        help="other tasks (task seeds 1..N) of the headline setting on which to "
                             "repeat the main runs, with 16 sampling seeds each (0: none)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds must be at least 2 (an interval needs two), got {args.seeds}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.tasks < 0:
        parser.error(f"--tasks must be 0 or more, got {args.tasks}")
    started = time.time()
    options = "".join(f" --{name} {value}" for name, value, default in (
        ("seeds", args.seeds, 24), ("steps", args.steps, HEADLINE.steps),
        ("tasks", args.tasks, 2)) if value != default)
    result = {"command": "PYTHONPATH=$PWD .venv/bin/python docs/release/does_it_matter.py"
                         + options,
              "seeds": args.seeds, "steps": args.steps, "task_seeds": TASK_SEEDS,
              "settings": {}, "other_tasks": {},
              "release_measurements": release_measurements()}

    def train(run, config):
        method, assembly, variant = RUNS[run]
        with VARIANTS[variant]():
            record = training_loop.simulate(
                method, dataclasses.replace(config, batch_assembly=assembly), progress=False)
        print(f"{run}, {config.policy} policy, task seed {config.seed}: "
              f"{time.time() - started:.0f} s", file=sys.stderr)
        return record

    all_records = {}
    for setting, base in SETTINGS.items():
        base = dataclasses.replace(base, seeds=args.seeds, steps=args.steps)
        records = {run: train(run, base) for run in RUNS}
        all_records[setting] = records
        result["settings"][setting] = {
            "config": dataclasses.asdict(base),
            "metrics": compare(records),
            "updates": {run: updates(record) for run, record in records.items()},
            "assembly_shares": assembly_shares(records["NGRPO (release)"].metrics)}
    for task in range(1, args.tasks + 1):
        config = dataclasses.replace(HEADLINE, seed=task, seeds=TASK_SEEDS, steps=args.steps)
        records = {run: train(run, config) for run in MAIN_RUNS}
        result["other_tasks"][str(task)] = compare(
            records, {metric: METRICS[metric] for metric in KEY_METRICS})
    result["seconds"] = round(time.time() - started)
    write_atomically(args.out / "does_it_matter.json", json.dumps(result, indent=1) + "\n")
    write_atomically(args.out / "does_it_matter.md", markdown(result))
    write_atomically(args.out / "does_it_matter.png", figure(all_records))
    print(markdown(result))


if __name__ == "__main__":
    main()

"""Running several methods on one task, summarising over seeds, and writing a run folder.

A run folder holds ``config.json``, ``metrics.csv`` (one row per method, mode, step and seed),
``pass_at_k.csv`` (pass@k against k after training), ``summary.csv`` (final values, mean and 95%
interval over seeds) and the figures ``dynamics.png`` and ``pass_at_k.png``. A sweep folder
(``ngrpo-sim sweep``) holds ``sweep.json`` (what was asked for), ``tasks/`` (each finished run, for
resuming), a run folder per setting and ``summary.csv`` (final values per setting, method and
metric).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
from scipy.stats import t as student_t

from ngrpo_sim import __version__
from ngrpo_sim._files import write_atomically
from ngrpo_sim.dynamics import METRICS, DynamicsConfig, RunRecord
from ngrpo_sim.methods import METHODS, Method
from ngrpo_sim.plotting import (axis_label, figure_legend, method_colour, metric_label, save,
                                subplots)
from ngrpo_sim.sweep import run_sweep
from ngrpo_sim.training_loop import LoopConfig

SUMMARY_METRICS = ("accuracy", "accuracy_hard", "pass_auc", "entropy", "entropy_hard", "abandoned",
                   "newly_solved", "regressed", "max_drawdown")
"""Final values reported per method. ``max_drawdown`` is the largest fall of accuracy from its
running maximum during training (0 for a run that never loses accuracy), our measure of
instability."""


AGGREGATION_LINESTYLES = {"seq-mean-token-mean": ":", "seq-mean-token-sum-norm": "-."}
"""How a token-level run whose config imposes a loss aggregation is drawn (token-mean: solid)."""


def label(run_record: RunRecord) -> str:
    """The method's name, with the loss aggregation a token-level config imposes, marked when the
    run is the expected (deterministic) counterpart."""
    aggregation = getattr(run_record.config, "loss_aggregation", None)
    return (run_record.method + (f" [{aggregation}]" if aggregation else "")
            + (" (expected)" if run_record.config.mode == "expected" else ""))


def linestyle(run_record: RunRecord) -> str:
    """Sampled runs solid, their expected (deterministic) counterparts dashed, in every figure; a
    token-level run with an imposed loss aggregation in its ``AGGREGATION_LINESTYLES``."""
    if run_record.config.mode == "expected":
        return "--"
    return AGGREGATION_LINESTYLES.get(getattr(run_record.config, "loss_aggregation", None), "-")


def run_methods(methods: list[Method], configs: list[LoopConfig], description: str = "simulating"
                ) -> list[RunRecord]:
    """Every method under every config in this process, with one progress bar over all their steps
    (``ngrpo_sim.sweep.run_sweep`` runs them in other processes or on Ray)."""
    return run_sweep(methods, configs, description=description)


def max_drawdown(accuracy: np.ndarray) -> np.ndarray:
    """(steps + 1, S) -> (S,): the largest drop of accuracy below its running maximum."""
    return np.max(np.maximum.accumulate(accuracy, axis=0) - accuracy, axis=0)


def final_values(run_record: RunRecord, name: str) -> np.ndarray:
    """One value per seed after training."""
    if name == "max_drawdown":
        return max_drawdown(run_record.metrics["accuracy"])
    return run_record.final(name)


def _half_width(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Half-width of the 95% Student-t interval of the mean of ``values`` (at least two) along
    ``axis``: t_{0.975, n-1} s / sqrt(n), with s the std with Bessel's correction."""
    count = values.size if axis is None else values.shape[axis]
    return student_t.ppf(0.975, count - 1) * values.std(axis=axis, ddof=1) / np.sqrt(count)


def interval(values: np.ndarray) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval of the mean) of the finite ``values`` (any shape),
    over seeds: the project's one 95% interval. The half-width is NaN for a single value, both are
    NaN for none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), float("nan")
    return float(values.mean()), float(_half_width(values))


def difference_interval(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """(mean of first - mean of second, 95% Welch half-width) for two independent sets of seeds."""
    a, b = np.asarray(first, float), np.asarray(second, float)
    variance_a, variance_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    total = variance_a + variance_b
    if total == 0:
        return float(a.mean() - b.mean()), 0.0
    dof = total ** 2 / (variance_a ** 2 / (a.size - 1) + variance_b ** 2 / (b.size - 1))
    return float(a.mean() - b.mean()), float(student_t.ppf(0.975, dof) * np.sqrt(total))


def format_summary(run_records: list[RunRecord], metrics=SUMMARY_METRICS) -> str:
    """A plain-text table of final values, mean ± 95% interval over seeds."""
    width = max(len(label(t)) for t in run_records) + 2
    header = f"{'method':<{width}}" + "".join(f"{name:>17}" for name in metrics)
    lines = [header]
    for run_record in run_records:
        cells = []
        for name in metrics:
            mean, half = interval(final_values(run_record, name))
            cells.append(f"{mean:>9.3f}" + (f" ±{half:6.3f}" if np.isfinite(half) else " " * 8))
        lines.append(f"{label(run_record):<{width}}" + "".join(cells))
    return "\n".join(lines)


def write_run(folder: Path, run_records: list[RunRecord],
              summary_metrics=SUMMARY_METRICS, figures: bool = True,
              method_knobs: dict | None = None) -> list[Path]:
    """Write the run folder described in the module docstring; returns the files written.
    ``metrics.csv`` holds every metric the runs recorded (the token simulator records more than the
    bandit). Without ``figures`` the folder holds the data only (for runs that a figure of their
    own draws). ``method_knobs``, the knobs that retuned the presets (``Method.retuned``), go to
    ``config.json`` beside the runs: the methods keep their presets' names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    configs = {label(t): dataclasses.asdict(t.config) for t in run_records}
    record = {"runs": configs} | ({"method_knobs": method_knobs} if method_knobs else {})
    (folder / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    names = list(run_records[0].metrics)
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "mode", "step", "seed", *names])
        for run_record in run_records:
            table = np.stack([run_record.metrics[name] for name in names], axis=-1)
            for step in range(table.shape[0]):
                for seed in range(table.shape[1]):
                    writer.writerow([run_record.method, run_record.config.mode, step, seed,
                                     *(f"{v:.6g}" for v in table[step, seed])])
    with (folder / "pass_at_k.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "mode", "seed", "k", "pass_at_k_start", "pass_at_k_end"])
        for run_record in run_records:
            for seed in range(run_record.pass_at_k.shape[1]):
                for i, k in enumerate(run_record.ks):
                    writer.writerow([run_record.method, run_record.config.mode, seed, int(k),
                                     f"{run_record.pass_at_k[0, seed, i]:.6g}",
                                     f"{run_record.pass_at_k[-1, seed, i]:.6g}"])
    with (folder / "summary.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "mode", "metric", "mean", "ci95_half_width", "seeds"])
        for run_record in run_records:
            for name in summary_metrics:
                mean, half = interval(final_values(run_record, name))
                writer.writerow([run_record.method, run_record.config.mode, name, f"{mean:.6g}",
                                 f"{half:.6g}",
                                 run_record.config.seeds])
    written = [folder / name
               for name in ("config.json", "metrics.csv", "pass_at_k.csv", "summary.csv")]
    if not figures:
        return written
    return written + [plot_dynamics(run_records, folder / "dynamics.png"),
                      plot_pass_at_k(run_records, folder / "pass_at_k.png")]


OLD_NAMES = {"share_all_right": "share_all_correct", "length_right": "length_correct",
             "lr": "learning_rate", "value_lr": "value_learning_rate",
             "batch_prompts": "prompts_per_step", "right_answers": "correct_answers"}
"""The config fields and metric columns of run folders written before the names were made one
vocabulary (issue 16), under their names now: the one place that knows them (``read_run``)."""


def _current_names(record: dict) -> dict:
    return {OLD_NAMES.get(key, key): value for key, value in record.items()}


def read_run(folder: Path) -> list[RunRecord]:
    """The run records of a run folder written by ``write_run``, from ``config.json`` and
    ``metrics.csv`` (values as written, to 6 significant digits; pass@k and per-prompt success are
    not restored; a metric that an older version did not record is NaN). A folder written before
    issue 16 is read with its old names mapped to the new (``OLD_NAMES``)."""
    folder = Path(folder)
    for name in ("config.json", "metrics.csv"):
        if not (folder / name).is_file():
            raise ValueError(f"folder={str(folder)!r} holds no {name}; give a run folder of "
                             "`ngrpo-sim dynamics` or the headline folder of `ngrpo-sim report`")
    configs = json.loads((folder / "config.json").read_text())["runs"]
    rows: dict[tuple[str, str], list[dict]] = {}
    with (folder / "metrics.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault((row["method"], row["mode"]), []).append(_current_names(row))
    run_records = []
    for (method, mode), run_rows in rows.items():
        config = DynamicsConfig(**_current_names(
            configs[method + (" (expected)" if mode == "expected" else "")]))
        shape = tuple(1 + max(int(row[column]) for row in run_rows) for column in ("step", "seed"))
        metrics = {name: np.full(shape, np.nan) for name in METRICS}
        for row in run_rows:
            for name in METRICS:
                metrics[name][int(row["step"]), int(row["seed"])] = float(row.get(name, "nan"))
        run_records.append(RunRecord(method, config, metrics))
    return run_records


def mean_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, half-width of the 95% t-interval) over seeds of a (steps + 1, S) metric.
    Steps where the metric is undefined (rollout metrics before the first step, an empty difficulty
    bucket) are left out; the half-width is NaN for a single seed."""
    steps = np.flatnonzero(np.isfinite(values).all(axis=1))
    values = values[steps]
    half = np.full(len(steps), np.nan)
    if values.shape[1] > 1:
        half = _half_width(values, axis=1)
    return steps, values.mean(axis=1), half


def plot_band(ax, run_record: RunRecord, name: str) -> None:
    """One metric against training steps: the mean over seeds, its 95% interval a shaded band."""
    steps, mean, half = mean_band(run_record.metrics[name])
    colour = method_colour(run_record.method)
    ax.plot(steps, mean, color=colour, linestyle=linestyle(run_record), label=label(run_record),
            linewidth=1.6)
    if run_record.metrics[name].shape[1] > 1:
        ax.fill_between(steps, mean - half, mean + half, color=colour, alpha=0.2, linewidth=0)


DYNAMICS_PANELS = tuple((name, metric_label(name))
                        for name in ("accuracy", "pass_auc", "entropy", "accuracy_hard"))


def plot_dynamics(run_records: list[RunRecord], path: Path, panels=DYNAMICS_PANELS) -> Path:
    """Metrics against training steps, mean and 95% band over seeds; expected-mode runs dashed.
    ``panels`` holds (metric, axis label) pairs, one panel each; the legend is below them."""
    figure, axes = subplots(ncols=len(panels), width=4.2, height=3.3)
    # Each method's runs in turn: the legend, filled column by column, then holds a method's
    # sampled run above its expected counterpart.
    methods = list(dict.fromkeys(run_record.method for run_record in run_records))
    in_turn = sorted(run_records, key=lambda run_record: methods.index(run_record.method))
    for ax, (name, title) in zip(axes, panels):
        for run_record in in_turn:
            plot_band(ax, run_record, name)
        ax.set_xlabel("training step")
        ax.set_ylabel(axis_label(title))
    figure_legend(figure, ncols=min(len(methods), 6))
    config = run_records[0].config
    figure.suptitle(f"{config.policy} policy, {config.optimizer} lr {config.learning_rate}, "
                    f"{config.minibatches} minibatches, "
                    f"{config.seeds} seeds (bands: 95% interval of the mean)", fontsize=9)
    return save(figure, path)


def plot_pass_at_k(run_records: list[RunRecord], path: Path) -> Path:
    """pass@k against k after training (mean over seeds), with the starting policy in black; the
    legend on the right."""
    figure, (ax,) = subplots(width=5.0, height=3.6)
    first = run_records[0]
    ax.plot(first.ks, first.pass_at_k[0].mean(axis=0), color="black", linestyle=":", label="start")
    for run_record in run_records:
        ax.plot(run_record.ks, run_record.pass_at_k[-1].mean(axis=0),
                color=method_colour(run_record.method),
                linestyle=linestyle(run_record), marker="o", markersize=3, label=label(run_record))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (answers sampled per prompt)")
    ax.set_ylabel("pass@k after training (mean over prompts)")
    figure_legend(figure, where="right")
    return save(figure, path)


def with_mode(config: LoopConfig, mode: str) -> LoopConfig:
    """The same config in another mode; an expected run needs one seed only (it is
    deterministic)."""
    return dataclasses.replace(config, mode=mode, seeds=1 if mode == "expected" else config.seeds)


def claim_sweep_folder(folder: Path, methods: list[Method], configs: list[DynamicsConfig]) -> Path:
    """Make ``folder`` the home of this sweep, or find it there already (to resume it): writes
    ``sweep.json`` with the request. Refuses, with ``ValueError``, a folder that holds another."""
    folder = Path(folder)
    # A preset by its name (as sweeps have always recorded it), a retuned one whole.
    names = [method.name if METHODS.get(method.name) == method else repr(method)
             for method in methods]
    request = json.dumps({"ngrpo_sim": __version__, "methods": names,
                          "configs": [dataclasses.asdict(config) for config in configs]}, indent=2)
    record = folder / "sweep.json"
    if record.is_file() and record.read_text() != request + "\n":
        raise ValueError(f"out={str(folder)!r} holds another sweep (its sweep.json differs): give "
                         "another --out, or repeat that sweep's options to resume it")
    if not record.is_file() and folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"out={str(folder)!r} holds files but no sweep: give a new or empty "
                         "folder for the sweep")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(record, request + "\n")
    return folder / "tasks"


def varying_fields(configs: list[DynamicsConfig]) -> list[str]:
    """The config fields that take more than one value in the sweep, in field order."""
    return [item.name for item in dataclasses.fields(DynamicsConfig)
            if len({getattr(config, item.name) for config in configs}) > 1]


def setting_name(index: int, config: DynamicsConfig, fields: list[str]) -> str:
    """A folder name for one setting of a sweep: its number and the values that vary."""
    parts = [f"{index:03d}"] + [f"{name}={getattr(config, name)}" for name in fields]
    return re.sub(r"[^\w.=-]", "_", "-".join(parts))


def write_sweep(folder: Path, configs: list[DynamicsConfig], run_records: list[RunRecord]
                ) -> list[Path]:
    """A run folder per config (``run_records`` in ``run_sweep``'s order) and ``summary.csv``: one
    row per setting, method and metric, with the values of the fields that vary."""
    folder = Path(folder)
    fields = varying_fields(configs)
    per_config = len(run_records) // len(configs)
    rows, written = [], []
    for index, config in enumerate(configs):
        name = setting_name(index, config, fields)
        group = run_records[index * per_config:(index + 1) * per_config]
        written.append(write_run(folder / name, group)[0].parent)
        for run_record in group:
            for metric in SUMMARY_METRICS:
                mean, half = interval(final_values(run_record, metric))
                rows.append([name, *(getattr(config, field) for field in fields), run_record.method,
                             config.mode, metric, f"{mean:.6g}", f"{half:.6g}", config.seeds])
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["setting", *fields, "method", "mode", "metric", "mean", "ci95_half_width",
                     "seeds"])
    writer.writerows(rows)
    write_atomically(folder / "summary.csv", table.getvalue())
    return written + [folder / "summary.csv"]

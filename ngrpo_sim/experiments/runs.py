"""Running several methods on one task, summarising over seeds, and writing a run folder.

A run folder holds ``config.json``, ``metrics.csv`` (one row per method, mode, step and seed),
``pass_at_k.csv`` (pass@k against k after training), ``summary.csv`` (final values, mean and 95%
interval over seeds) and the figures ``dynamics.png`` and ``pass_at_k.png``. A sweep folder
(``ngrpo-sim sweep``) holds a run folder per setting and ``summary.csv`` (final values per setting,
method and metric).

The folder of every command that simulates (dynamics, tokens, sweep, report) also holds
``request.json``, what was asked of it, and ``tasks/``, each finished simulation, stored as soon as
it finishes (``claim_folder``): the same command run again, after a stop or a failure, reuses them
and runs only the rest; other settings are refused without --overwrite.
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

from ngrpo_sim.base import checks
from ngrpo_sim.base.files import missing_folders, remove_if_empty, write_atomically
from ngrpo_sim.base.plotting import (axis_label, family_subplots, figure_legend, method_colour,
                                     method_families, metric_label, save)
from ngrpo_sim.experiments.sweep import VERSION, Task, run_sweep, task_file
from ngrpo_sim.methods.presets import METHODS, Method
from ngrpo_sim.simulators import long_answers, sequences
from ngrpo_sim.simulators.dynamics import METRICS, DynamicsConfig, RunRecord
from ngrpo_sim.simulators.long_answer_config import LongAnswerConfig
from ngrpo_sim.simulators.loop_config import LoopConfig
from ngrpo_sim.simulators.sequence_config import SequenceConfig

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
    return label_of_task(run_record.method, run_record.config)


def label_of_task(method: Method | str, config: LoopConfig) -> str:
    """``label`` of the run that a method (or its name) trains under ``config``."""
    aggregation = getattr(config, "loss_aggregation", None)
    return (getattr(method, "name", method) + (f" [{aggregation}]" if aggregation else "")
            + (" (expected)" if config.mode == "expected" else ""))


def linestyle(run_record: RunRecord) -> str:
    """Sampled runs solid, their expected (deterministic) counterparts dashed, in every figure; a
    token-level run with an imposed loss aggregation in its ``AGGREGATION_LINESTYLES``."""
    if run_record.config.mode == "expected":
        return "--"
    return AGGREGATION_LINESTYLES.get(getattr(run_record.config, "loss_aggregation", None), "-")


def run_methods(methods: list[Method], configs: list[LoopConfig], description: str = "simulating"
                ) -> list[RunRecord]:
    """Every method under every config in this process, with one progress bar over all their steps
    (``ngrpo_sim.experiments.sweep.run_sweep`` runs them in other processes or on Ray)."""
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
    configs = {label(t): dataclasses.asdict(t.config) for t in run_records}
    record = {"runs": configs} | ({"method_knobs": method_knobs} if method_knobs else {})
    write_atomically(folder / "config.json", json.dumps(record, indent=2) + "\n")
    names = list(run_records[0].metrics)
    rows = []
    for run_record in run_records:
        table = np.stack([run_record.metrics[name] for name in names], axis=-1)
        rows += [[run_record.method, run_record.config.mode, step, seed,
                  *(f"{v:.6g}" for v in table[step, seed])]
                 for step in range(table.shape[0]) for seed in range(table.shape[1])]
    _write_csv(folder / "metrics.csv", ["method", "mode", "step", "seed", *names], rows)
    rows = [[run_record.method, run_record.config.mode, seed, int(k),
             f"{run_record.pass_at_k[0, seed, i]:.6g}", f"{run_record.pass_at_k[-1, seed, i]:.6g}"]
            for run_record in run_records for seed in range(run_record.pass_at_k.shape[1])
            for i, k in enumerate(run_record.ks)]
    _write_csv(folder / "pass_at_k.csv",
               ["method", "mode", "seed", "k", "pass_at_k_start", "pass_at_k_end"], rows)
    rows = []
    for run_record in run_records:
        for name in summary_metrics:
            mean, half = interval(final_values(run_record, name))
            rows.append([run_record.method, run_record.config.mode, name, f"{mean:.6g}",
                         f"{half:.6g}", run_record.config.seeds])
    _write_csv(folder / "summary.csv",
               ["method", "mode", "metric", "mean", "ci95_half_width", "seeds"], rows)
    written = [folder / name
               for name in ("config.json", "metrics.csv", "pass_at_k.csv", "summary.csv")]
    if not figures:
        return written
    return written + [plot_dynamics(run_records, folder / "dynamics.png"),
                      plot_pass_at_k(run_records, folder / "pass_at_k.png")]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(header)
    writer.writerows(rows)
    return write_atomically(path, table.getvalue())


OLD_NAMES = {"share_all_right": "share_all_correct", "length_right": "length_correct",
             "lr": "learning_rate", "value_lr": "value_learning_rate",
             "batch_prompts": "prompts_per_step", "right_answers": "correct_answers"}
"""The config fields and metric columns of run folders written before the names were made one
vocabulary (issue 16), under their names now: the one place that knows them (``read_run``)."""


def _current_names(record: dict) -> dict:
    return {OLD_NAMES.get(key, key): value for key, value in record.items()}


SIMULATORS = ((DynamicsConfig, METRICS), (SequenceConfig, sequences.METRICS),
              (LongAnswerConfig, long_answers.METRICS))
"""Each simulator's config and the metrics it records: ``read_run`` knows a run's simulator by
the config whose fields hold every key of the run's record."""


def _simulator(folder: Path, record: dict) -> tuple[type, tuple[str, ...]]:
    for config_class, metrics in SIMULATORS:
        if set(record) <= {field.name for field in dataclasses.fields(config_class)}:
            return config_class, metrics
    raise ValueError(f"folder={str(folder)!r} holds a config.json that no simulator's config "
                     f"reads (keys {sorted(record)}); give a run folder written by ngrpo-sim")


def read_run(folder: Path) -> list[RunRecord]:
    """The run records of a run folder written by ``write_run`` for any simulator (the bandit's,
    the token task's or the long answers'), from ``config.json`` and ``metrics.csv`` (values as
    written, to 6 significant digits; pass@k and per-prompt success are not restored; a metric
    that an older version did not record is NaN). A folder written before issue 16 is read with
    its old names mapped to the new (``OLD_NAMES``). Raises ``ValueError`` for a folder without
    those files or with a config no simulator reads."""
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
        record = _current_names(configs[method + (" (expected)" if mode == "expected" else "")])
        config_class, names = _simulator(folder, record)
        config = config_class(**record)
        shape = tuple(1 + max(int(row[column]) for row in run_rows) for column in ("step", "seed"))
        metrics = {name: np.full(shape, np.nan) for name in names}
        for row in run_rows:
            for name in names:
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
    ``panels`` holds (metric, axis label) pairs, one panel each; a row of them per family of
    methods (``method_families``: more than ``MAX_METHODS_PER_PANEL`` methods are split), each
    row's legend below it."""
    # Each method's runs in turn: the legend, filled column by column, then holds a method's
    # sampled run above its expected counterpart.
    methods = list(dict.fromkeys(run_record.method for run_record in run_records))
    in_turn = sorted(run_records, key=lambda run_record: methods.index(run_record.method))
    figure, rows = family_subplots(method_families(methods), ncols=len(panels), width=4.2,
                                   height=3.3)
    for names, axes, row in rows:
        for ax, (name, title) in zip(axes, panels):
            for run_record in in_turn:
                if run_record.method in names:
                    plot_band(ax, run_record, name)
            ax.set_xlabel("training step")
            ax.set_ylabel(axis_label(title))
        figure_legend(row, ncols=min(len(names), 6))
    config = run_records[0].config
    figure.suptitle(f"{config.policy} policy, {config.optimizer} lr {config.learning_rate}, "
                    f"{config.minibatches} minibatches, "
                    f"{config.seeds} seeds (bands: 95% interval of the mean)", fontsize=9)
    return save(figure, path)


def plot_pass_at_k(run_records: list[RunRecord], path: Path) -> Path:
    """pass@k against k after training (mean over seeds), with the starting policy in black; a
    panel per family of methods (``method_families``), each with its legend below it."""
    methods = list(dict.fromkeys(run_record.method for run_record in run_records))
    figure, rows = family_subplots(method_families(methods), width=5.0, height=4.2)
    first = run_records[0]
    for names, (ax,), row in rows:
        ax.plot(first.ks, first.pass_at_k[0].mean(axis=0), color="black", linestyle=":",
                label="start")
        for run_record in run_records:
            if run_record.method in names:
                ax.plot(run_record.ks, run_record.pass_at_k[-1].mean(axis=0),
                        color=method_colour(run_record.method), linestyle=linestyle(run_record),
                        marker="o", markersize=3, label=label(run_record))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (answers sampled per prompt)")
        ax.set_ylabel(axis_label("pass@k after training (mean over prompts)"))
        figure_legend(row, ncols=2)
    return save(figure, path)


def with_mode(config: LoopConfig, mode: str) -> LoopConfig:
    """The same config in another mode; an expected run needs one seed only (it is
    deterministic)."""
    return dataclasses.replace(config, mode=mode, seeds=1 if mode == "expected" else config.seeds)


REQUEST_FILE = "request.json"
"""Where an output folder records what was asked of it (``claim_folder``)."""
STORE_FOLDER = "tasks"
"""Where an output folder keeps each finished simulation (``sweep.save_task``)."""


@dataclasses.dataclass
class Claim:
    """An output folder a command has made its own: ``REQUEST_FILE`` holds the command and its
    settings, ``STORE_FOLDER`` each of its ``tasks`` that finished."""

    folder: Path
    tasks: list[Task]
    fresh: bool
    """The request was written by this claim (a new folder, or --overwrite)."""
    created: list[Path]
    """The folders the claim made, outermost first."""
    result: str | None = None
    """The file the command writes last, when it has written everything else."""

    @property
    def store(self) -> Path:
        return self.folder / STORE_FOLDER

    def kept(self) -> list[int]:
        """The indices of the tasks whose runs the store holds."""
        return [index for index, task in enumerate(self.tasks)
                if task_file(self.store, task).is_file()]

    def finished(self) -> bool:
        """Whether the folder holds the command's whole output for these settings already."""
        return not self.fresh and self.result is not None and (self.folder / self.result).is_file()

    def release(self) -> bool:
        """Undo a fresh claim that kept nothing: remove the request, and the folders the claim made
        where they are empty. Returns whether the folder itself was removed."""
        if not self.fresh or self.kept():
            return False
        (self.folder / REQUEST_FILE).unlink(missing_ok=True)
        remove_if_empty([self.store])
        return remove_if_empty(self.created)


class FolderTaken(ValueError):
    """An output folder holds another run, or files of no run: ``claim_folder`` refuses it."""


def claim_folder(flag: str, folder: Path, command: str, settings: dict, tasks: list[Task], *,
                 overwrite: bool = False, result: str | None = None) -> Claim:
    """Make ``folder`` the home of one run of ``command`` with ``settings`` (JSON-able) and
    ``tasks``, or find it there already, to reuse what it holds.

    A folder that holds a run with other settings, or files of no run, is refused with
    ``FolderTaken`` (a ``ValueError``) naming ``flag``, unless ``overwrite``; then the stored tasks
    that these settings do not ask for are removed and the rest is written anew. Everything is
    checked before the first write: the folder is created (and proved writable,
    ``checks.output_folder``) only after.
    """
    folder = Path(folder).expanduser()
    request = json.dumps({"ngrpo_sim": VERSION, "command": command, **settings},
                         indent=2) + "\n"
    record = folder / REQUEST_FILE
    if folder.is_dir():
        held = record.read_text() if record.is_file() else None
        if held is None and not overwrite and any(not entry.name.startswith(".")
                                                  for entry in folder.iterdir()):
            raise FolderTaken(f"{flag} {str(folder)!r} holds files but no {REQUEST_FILE} of an "
                             f"ngrpo-sim {command}; give a new or empty folder, or pass "
                             "--overwrite to write among its files")
        if held is not None and held != request and not overwrite:
            raise FolderTaken(f"{flag} {str(folder)!r} holds {_other_request(held, request)}; give "
                             f"another {flag}, repeat that run's options to continue it, or pass "
                             "--overwrite to replace it")
    else:
        held = None
    created = missing_folders(folder)
    checks.output_folder(flag, folder)
    fresh = held != request or overwrite
    if fresh:
        wanted = {task_file(folder / STORE_FOLDER, task) for task in tasks}
        for stored in (folder / STORE_FOLDER).glob("*.npz"):
            if stored not in wanted:
                stored.unlink()
        if result is not None:
            (folder / result).unlink(missing_ok=True)  # it belongs to the settings replaced
        write_atomically(record, request)
    return Claim(folder, list(tasks), fresh, created, result)


def _other_request(held: str, request: str) -> str:
    """What an output folder holds instead of ``request``: its command and the settings that
    differ."""
    try:
        held, wanted = json.loads(held), json.loads(request)
    except json.JSONDecodeError:
        return f"a {REQUEST_FILE} that is not JSON"
    if not isinstance(held, dict):
        return f"a {REQUEST_FILE} that is not a request"
    if held.get("command") != wanted["command"]:
        return f"an ngrpo-sim {held.get('command')}, not a {wanted['command']}"
    changed = [key for key in {**wanted, **held} if held.get(key) != wanted.get(key)]
    return (f"an ngrpo-sim {wanted['command']} with other settings (its {REQUEST_FILE} differs in "
            f"{', '.join(changed)})")


def grid_settings(methods: list[Method], configs: list[LoopConfig]) -> dict:
    """The settings of a grid of methods x configs, for ``claim_folder``: each preset by its name,
    a retuned method whole."""
    names = [method.name if METHODS.get(method.name) == method else repr(method)
             for method in methods]
    return {"methods": names, "configs": [dataclasses.asdict(config) for config in configs]}


def varying_fields(configs: list[DynamicsConfig]) -> list[str]:
    """The config fields that take more than one value in the sweep, in field order."""
    return [item.name for item in dataclasses.fields(DynamicsConfig)
            if len({getattr(config, item.name) for config in configs}) > 1]


def setting_name(index: int, config: DynamicsConfig, fields: list[str]) -> str:
    """A folder name for one setting of a sweep: its number and the values that vary."""
    parts = [f"{index:03d}"] + [f"{name}={getattr(config, name)}" for name in fields]
    return re.sub(r"[^\w.=-]", "_", "-".join(parts))


def write_sweep(folder: Path, configs: list[DynamicsConfig], run_records: list[RunRecord | None]
                ) -> list[Path]:
    """A run folder per config (``run_records`` in ``run_sweep``'s order, None for a run that did
    not finish: a setting's folder holds its finished runs, and a setting without any has none) and
    ``summary.csv``: one row per finished run of a setting and metric, with the values of the
    fields that vary."""
    folder = Path(folder)
    fields = varying_fields(configs)
    per_config = len(run_records) // len(configs)
    rows, written = [], []
    for index, config in enumerate(configs):
        name = setting_name(index, config, fields)
        group = [run_record for run_record in run_records[index * per_config:
                                                          (index + 1) * per_config]
                 if run_record is not None]
        if not group:
            continue
        written.append(write_run(folder / name, group)[0].parent)
        for run_record in group:
            for metric in SUMMARY_METRICS:
                mean, half = interval(final_values(run_record, metric))
                rows.append([name, *(getattr(config, field) for field in fields), run_record.method,
                             config.mode, metric, f"{mean:.6g}", f"{half:.6g}", config.seeds])
    _write_csv(folder / "summary.csv", ["setting", *fields, "method", "mode", "metric", "mean",
                                        "ci95_half_width", "seeds"], rows)
    return written + [folder / "summary.csv"]

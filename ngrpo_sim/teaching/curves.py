"""Notebooks 3 and 5: training curves of simulated runs against steps, the first-order entropy
prediction, and the run folders of ``minimal/ngrpo_train.py`` (read through ``trainer_runs``)."""

from __future__ import annotations

import numpy as np

from ngrpo_sim.base import checks
from ngrpo_sim.base.plotting import axis_label, method_colour, metric_label
from ngrpo_sim.experiments.runs import label, linestyle, plot_band
from ngrpo_sim.experiments.trainer_runs import final_pass_at_k, run_curve
from ngrpo_sim.simulators.dynamics import RunRecord

# --------------------------------------------------------------------------------------------------
# Notebook 3: run records against steps, and the first-order entropy prediction
# --------------------------------------------------------------------------------------------------


def plot_metric(ax, run_records: list[RunRecord], name: str, ylabel: str | None = None) -> None:
    """One metric against training steps: mean over seeds with its 95% band; expected-mode runs
    dashed."""
    for run_record in run_records:
        if name not in run_record.metrics:
            raise ValueError(f"name must be a recorded metric ({', '.join(run_record.metrics)}), "
                             f"got {name!r}")
        plot_band(ax, run_record, name)
    ax.set_xlabel("training step")
    ax.set_ylabel(axis_label(ylabel or metric_label(name)))
    ax.legend(fontsize=7)


def plot_metric_pair(ax, run_records: list[RunRecord], x_name: str, y_name: str,
                     xlabel: str | None = None,
                     ylabel: str | None = None) -> None:
    """One metric against another along training (seed means), so runs are compared at equal ``x``
    rather than at equal steps: a method that learns faster also loses entropy sooner. Rows where a
    metric is undefined (the rollout metrics before the first step) stay NaN and are not drawn."""
    for run_record in run_records:
        missing = [name for name in (x_name, y_name) if name not in run_record.metrics]
        if missing:
            raise ValueError(f"x_name and y_name must be recorded metrics "
                             f"({', '.join(run_record.metrics)}), got "
                             f"{missing[0]!r}")
        ax.plot(np.mean(run_record.metrics[x_name], axis=1),
                np.mean(run_record.metrics[y_name], axis=1),
                color=method_colour(run_record.method), label=label(run_record), linewidth=1.6,
                linestyle=linestyle(run_record))
    ax.set_xlabel(xlabel or metric_label(x_name))
    ax.set_ylabel(axis_label(ylabel or metric_label(y_name)))
    ax.legend(fontsize=7)


def entropy_prediction_error(run_record: RunRecord) -> float:
    """sum |predicted - measured| / sum |measured| over all steps and seeds: the first-order
    prediction's relative error (0 when -Cov(log pi, dz) predicts every step's entropy change
    exactly)."""
    measured = run_record.metrics["entropy_change"][1:]
    predicted = run_record.metrics["entropy_change_predicted"][1:]
    scale = np.sum(np.abs(measured))
    if scale == 0:
        raise ValueError(f"the run of {run_record.method!r} never changed its entropy; there is "
                         f"nothing to predict")
    return float(np.sum(np.abs(predicted - measured)) / scale)


def plot_entropy_prediction(ax, run_records: list[RunRecord]) -> None:
    """Measured entropy change of every step and seed against the first-order prediction; the
    diagonal is exact."""
    low, high = np.inf, -np.inf
    for run_record in run_records:
        measured = run_record.metrics["entropy_change"][1:].ravel()
        predicted = run_record.metrics["entropy_change_predicted"][1:].ravel()
        ax.scatter(predicted, measured, s=6, alpha=0.5, color=method_colour(run_record.method),
                   marker="x" if run_record.config.mode == "expected" else "o",
                   label=f"{label(run_record)} (error {entropy_prediction_error(run_record):.1%})")
        low, high = (min(low, predicted.min(), measured.min()),
                     max(high, predicted.max(), measured.max()))
    ax.plot([low, high], [low, high], color="0.4", linewidth=0.8, linestyle=":")
    ax.set_xlabel(r"predicted: $-\mathrm{Cov}(\log\pi, \Delta z)$ per step (nats)")
    ax.set_ylabel("measured entropy change per step (nats)")
    ax.set_title("First-order entropy prediction")
    ax.legend(fontsize=7)


# --------------------------------------------------------------------------------------------------
# Notebook 5: the run folders of minimal/ngrpo_train.py
# --------------------------------------------------------------------------------------------------

def plot_run_metric(ax, runs: dict[str, list[list[dict]]], key: str, ylabel: str | None = None,
                    window: int = 1) -> None:
    """``key`` against steps for each method: thin lines per seed, the mean over seeds bold.

    ``window`` > 1 draws running means over that many logged points: a step's rollout statistics
    come from a few prompts and are noisy, and the trend is what the eye should follow.
    """
    window = checks.integer("window", window, low=1)
    for method, seeds in runs.items():
        curves = []
        for records in seeds:
            steps, values = run_curve(records, key)
            if len(values) >= window:
                curves.append((steps[window - 1:],
                               np.convolve(values, np.ones(window) / window, mode="valid")))
        if not curves:
            raise ValueError(f"window={window} is longer than every {method} run's {len(steps)} "
                             f"points of {key!r}")
        colour = method_colour(method)
        for steps, values in curves:
            ax.plot(steps, values, color=colour, alpha=0.3, linewidth=0.8)
        shortest = min(len(steps) for steps, _ in curves)
        mean = np.mean([values[:shortest] for _, values in curves], axis=0)
        seeds_text = f"{len(curves)} seed" + ("s" if len(curves) > 1 else "")
        ax.plot(curves[0][0][:shortest], mean, color=colour, linewidth=2,
                label=f"{method} ({seeds_text})", marker="o" if shortest < 20 else None,
                markersize=3)
    ax.set_xlabel("training step")
    ax.set_ylabel(axis_label(ylabel or metric_label(key)
                             + (f" (running mean of {window} steps)" if window > 1 else "")))
    ax.legend(fontsize=7)


def plot_final_pass_at_k(ax, runs: dict[str, list[list[dict]]]) -> None:
    """pass@k against k after training, mean over seeds, with the first run's starting curve dotted
    in black."""
    first = next(iter(runs.values()))[0]
    start = [record for record in first if record["step"] == 0]
    if start:
        ax.plot(*final_pass_at_k(start), color="black", linestyle=":", label="start")
    for method, seeds in runs.items():
        curves = [final_pass_at_k(records) for records in seeds]
        ax.plot(curves[0][0], np.mean([values for _, values in curves], axis=0),
                color=method_colour(method), marker="o", markersize=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples per held-out prompt)")
    ax.set_ylabel("pass@k after training")
    ax.legend(fontsize=7)

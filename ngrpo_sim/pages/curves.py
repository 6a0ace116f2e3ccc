"""The page's training curves, read from the run folders of an ``ngrpo-sim report``: the headline
run (``headline/``) and the long-answer runs (``lengths/<setting>/presets``), each metric against
training steps with its mean and 95% band over seeds, one colour per method. A report without
those folders gets a sentence on how to make them instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ngrpo_sim.base.escaping import escape
from ngrpo_sim.base.plotting import method_colour, metric_label
from ngrpo_sim.experiments.runs import DYNAMICS_PANELS, label, mean_band, read_run
from ngrpo_sim.pages.layout import div, new_figure, plot_grid

LENGTH_CURVES = tuple((name, metric_label(name))
                      for name in ("length_correct", "length_wrong", "truncation", "accuracy"))
"""The long-answer metrics the page draws, one panel each, with their axis labels."""
LENGTH_RUNS = Path("lengths") / "{setting}" / "presets"
"""Where in a report folder each long-answer setting keeps its presets' runs
(``reports/length_report.py`` writes them)."""
MIN_PLOT_WIDTH = 490
"""Pixels: a curve panel's narrowest width before the grid wraps it to the next row."""


def curve_grid(run_records, panels, legend_name: str):
    """A plot per (metric, axis label) of ``panels``, the ``run_records``' mean over seeds against
    training steps with its 95% band (none for a single seed), expected-mode runs dashed, sharing
    one toolbar; the first plot's legend, right of it and named ``legend_name`` (for readers of
    the page's models: the tests), hides a run on a click."""
    plots = []
    for name, title in panels:
        plot = new_figure(x_axis_label="training step", y_axis_label=title)
        for run_record in run_records:
            steps, mean, half = mean_band(run_record.metrics[name])
            colour, legend = method_colour(run_record.method), label(run_record)
            if np.isfinite(half).all():
                plot.varea(steps, mean - half, mean + half, fill_color=colour, fill_alpha=0.2,
                           legend_label=legend)
            plot.line(steps, mean, color=colour, line_width=2, legend_label=legend,
                      line_dash="dashed" if run_record.config.mode == "expected" else "solid")
        plot.legend.click_policy = "hide"
        plot.legend.label_text_font_size = "7pt"
        if plots:
            plot.legend.visible = False
        else:
            plot.legend[0].name = legend_name
            plot.add_layout(plot.legend[0], "right")
        plots.append(plot)
    return plot_grid(plots, min_width=MIN_PLOT_WIDTH)


def dynamics_section(headline_folder: Path | None):
    """The headline run's curves (``DYNAMICS_PANELS``), or, for None, a word on how to get them.
    Reads ``headline_folder`` with ``read_run``, which raises ``ValueError`` for a folder that is
    not a run folder."""
    from bokeh.layouts import column

    if headline_folder is None:
        return div("<h2>Training dynamics</h2><p>No report was found, so this page shows no "
                   "training curves. Run <code>ngrpo-sim report</code>: it writes this page "
                   "again with the headline run's curves.</p>", sizing_mode="stretch_width")
    run_records = read_run(headline_folder)
    config = next(t.config for t in run_records if t.config.mode == "sampled")
    intro = (
        f"<h2>Training dynamics: the report's headline run</h2><p>{escape(config.policy)} policy, "
        f"{escape(config.optimizer)} (lr {escape(config.learning_rate)}), "
        f"{escape(config.minibatches)} minibatch updates per rollout, "
        f"P = {escape(config.num_prompts)} prompts ({escape(config.profile)} profile), "
        f"K = {escape(config.num_answers)} answers, G = {escape(config.group_size)}, "
        f"{escape(config.seeds)} seeds: the mean over seeds with its 95% interval (bands), sampled "
        "runs solid and their expected (noise-free) counterparts dashed. "
        f"Read from <code>{escape(headline_folder)}</code>; click a legend entry to hide a run."
        "</p>")
    return column(div(intro, sizing_mode="stretch_width"),
                  curve_grid(run_records, DYNAMICS_PANELS, "legend-dynamics"),
                  sizing_mode="stretch_width")


def length_settings(report_folder: Path | None) -> dict[str, Path]:
    """Each long-answer setting's name (its folder's, hyphens as spaces) and its presets' run
    folder (``LENGTH_RUNS``) that ``report_folder`` holds, in the order of the names; none for
    None or a report written before the long answers."""
    if report_folder is None:
        return {}
    pattern = str(LENGTH_RUNS / "metrics.csv").format(setting="*")
    return {path.parent.parent.name.replace("-", " "): path.parent
            for path in sorted(Path(report_folder).glob(pattern))}


def _setting_intro(name: str, run_records, folder: Path) -> str:
    config = run_records[0].config
    methods = ", ".join(escape(label(run_record)) for run_record in run_records)
    natural = config.natural_length or config.max_length
    return (f"<p><em>{escape(name)}</em>: L = {escape(config.max_length)} tokens, natural "
            f"length {escape(natural)} tokens, position features "
            f"{'on' if config.position_features else 'off'}, step plasticity "
            f"{escape(config.step_plasticity)}; P = {escape(config.num_prompts)} prompts "
            f"({escape(config.profile)} profile), B = {escape(config.prompts_per_step)}, "
            f"G = {escape(config.group_size)}, {escape(config.steps)} steps, "
            f"{escape(config.seeds)} seeds; methods {methods}. Read from "
            f"<code>{escape(folder)}</code>.</p>")


def length_section(report_folder: Path | None):
    """The long-answer runs' lengths, truncation and accuracy (``LENGTH_CURVES``), one grid per
    setting of ``length_settings``, or a sentence on how to get them. Raises ``ValueError``
    (``read_run``) for a setting's folder that is not a run folder."""
    from bokeh.layouts import column

    folders = length_settings(report_folder)
    if not folders:
        found = ("No report was found" if report_folder is None
                 else f"The report in <code>{escape(report_folder)}</code> has no long-answer runs")
        return div(f"<h2>Long answers: lengths and truncation</h2><p>{found}, so this page shows "
                   "no answer lengths; run <code>ngrpo-sim report</code> to write this page again "
                   "with them.</p>", sizing_mode="stretch_width")
    settings = {name: read_run(folder) for name, folder in folders.items()}
    caps = " or ".join(escape(cap) for cap in sorted(
        {run_records[0].config.max_length for run_records in settings.values()}))
    parts = [div(
        f"<h2>Answers of up to {caps} tokens: lengths and truncation</h2><p>The report's "
        "long-answer runs (<code>ngrpo_sim.simulators.long_answers</code>): an answer needs work "
        "before it is correct, and one cut at the length limit L earns 0. Each method's preset "
        "in each setting, the mean over seeds with its 95% interval (bands): every metric is "
        "computed exactly, so a band shows how training differs between seeds. Click a legend "
        "entry to hide a run.</p>", sizing_mode="stretch_width")]
    for name, run_records in settings.items():
        parts += [div(_setting_intro(name, run_records, folders[name]),
                      sizing_mode="stretch_width"),
                  curve_grid(run_records, LENGTH_CURVES, f"legend-lengths-{name}")]
    return column(*parts, sizing_mode="stretch_width")

"""Every figure of ``ngrpo-sim report`` can be read, as a student would look at it: no legend over
a curve or a bar, no tick labels over each other, no text cut off at the figure's edge, axes in
words (no name from the code), and no panel of more methods than their colours can tell apart.

``readability_problems`` measures a drawn matplotlib figure; the report of the ``made_report``
fixture (tests/conftest.py) applies it to each of its figures as it saves them, and
tests/test_teaching.py to the notebooks' figures.
"""

import re
from pathlib import Path

import numpy as np

from ngrpo_sim.analysis import landscape
from ngrpo_sim.base import plotting
from ngrpo_sim.methods.presets import get_method

CODE_NAME = re.compile(r"\b[a-z]+_[a-z_]+\b")
"""A word with an underscore, such as unsampled_mass_gain: a name from the code, not a word (a
method's name, such as psr_nsr, is how every legend writes the method)."""


def _covered(box, artist, renderer) -> bool:
    """Whether ``artist`` (a line, bar or band of a panel) has a point inside ``box``."""
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    if not artist.get_visible():
        return False
    if isinstance(artist, Rectangle):  # a bar
        extent = artist.get_window_extent(renderer)
        return extent.width > 0 and extent.height > 0 and box.overlaps(extent)
    if isinstance(artist, Line2D):
        # Points along each segment, so that a sparse line crossing the box is caught.
        path = artist.get_transform().transform_path(artist.get_path().interpolated(50))
        points = path.vertices
    elif isinstance(artist, Collection):  # a band
        points = np.concatenate([artist.get_transform().transform_path(path).vertices
                                 for path in artist.get_paths()] or [np.empty((0, 2))])
    else:
        return False
    points = points[np.isfinite(points).all(axis=1)]
    return bool(np.any((points[:, 0] > box.x0) & (points[:, 0] < box.x1)
                       & (points[:, 1] > box.y0) & (points[:, 1] < box.y1)))


def _tick_labels(axis) -> list:
    """The tick labels an axis draws: those of ticks inside its view (matplotlib keeps labels for
    ticks beyond it, which it does not draw)."""
    low, high = sorted(axis.get_view_interval())
    return [label for location, label in zip(axis.get_ticklocs(), axis.get_ticklabels())
            if low <= location <= high and label.get_visible() and label.get_text()]


def figure_legends(figure, axes=None) -> list:
    """Every legend of ``figure``: its own, its subfigures' and those of ``axes`` (all its axes
    unless given)."""
    axes = figure.axes if axes is None else axes
    return [*figure.legends, *(legend for row in figure.subfigs for legend in row.legends),
            *(ax.get_legend() for ax in axes if ax.get_legend())]


def readability_problems(figure) -> list[str]:
    """What keeps a reader from reading ``figure``, one sentence each; [] when nothing does."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    page = figure.bbox
    problems = []
    axes = [ax for ax in figure.axes if ax.get_visible()]
    legends = figure_legends(figure, axes)
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in axes:
            artists = ax.lines + ax.patches + ax.collections
            if any(_covered(box, artist, renderer) for artist in artists):
                problems.append(f"a legend covers a curve or bar of the panel "
                                f"{ax.get_title()!r} ({ax.get_ylabel()!r})")
    for ax in axes:
        name = f"{ax.get_title() or ax.get_ylabel()!r}"
        for axis in (ax.xaxis, ax.yaxis):
            labels = [label.get_window_extent(renderer) for label in _tick_labels(axis)]
            for first, second in zip(labels, labels[1:]):
                if first.overlaps(second):
                    problems.append(f"tick labels overlap on an axis of {name}")
        for text in (ax.xaxis.label, ax.yaxis.label):
            names = set(CODE_NAME.findall(text.get_text())) - set(plotting.METHOD_COLOURS)
            if names:
                problems.append(f"the axis label {text.get_text()!r} holds names from the code")
        # A method's sampled and expected runs share its colour (one solid, one dashed).
        colours = {line.get_color() for line in ax.lines if not line.get_label().startswith("_")}
        if len(colours) > plotting.MAX_METHODS_PER_PANEL + 1:  # the starting curve, say
            problems.append(f"{len(colours)} colours of curves in the panel {name}")
    texts = [text for ax in axes for text in (ax.xaxis.label, ax.yaxis.label, ax.title,
                                              *_tick_labels(ax.xaxis), *_tick_labels(ax.yaxis))]
    texts += [text for legend in legends for text in legend.get_texts()]
    texts += [figure._suptitle] if figure._suptitle is not None else []
    for text in texts:
        if not text.get_visible() or not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        if (box.x0 < page.x0 - 1 or box.x1 > page.x1 + 1 or box.y0 < page.y0 - 1
                or box.y1 > page.y1 + 1):
            problems.append(f"the text {text.get_text()!r} runs past the figure's edge")
    return problems


def test_the_checks_find_what_a_reader_would_trip_over():
    figure, (ax,) = plotting.subplots()
    ax.plot([0, 1], [0, 1], label="grpo")
    ax.legend(loc="center")  # on the diagonal
    ax.set_ylabel("unsampled_mass_gain")
    ax.set_xticks([0.5, 0.51], ["a long tick label", "another long one"])
    problems = readability_problems(figure)
    plotting.pyplot().close(figure)
    assert problems == ["a legend covers a curve or bar of the panel '' ('unsampled_mass_gain')",
                        "tick labels overlap on an axis of 'unsampled_mass_gain'",
                        "the axis label 'unsampled_mass_gain' holds names from the code"]
    # Ten methods in one panel are too many colours; five, each solid and dashed, are not.
    for names, linestyles, expected in ((list(plotting.METHOD_COLOURS)[:10], ["-"], 10),
                                        (list(plotting.METHOD_COLOURS)[:5], ["-", "--"], None)):
        figure, (ax,) = plotting.subplots()
        for name in names:
            for style in linestyles:
                ax.plot([0, 1], [0, 1], color=plotting.method_colour(name), linestyle=style,
                        label=f"{name} {style}")
        problems = readability_problems(figure)
        plotting.pyplot().close(figure)
        assert problems == ([f"{expected} colours of curves in the panel ''"] if expected else [])


def test_every_figure_of_the_report_can_be_read(made_report):
    names = {Path(path).name for path in made_report.problems}
    assert {"landscape.png", "advantages.png", "dynamics.png", "pass_at_k.png", "tokens.png",
            "lengths.png", "rivals.png", "clipping.png"} <= names
    assert {"headline/dynamics.png", "rivals/bandit/dynamics.png"} <= set(made_report.problems)
    assert {name: problems for name, problems in made_report.problems.items() if problems} == {}


def test_a_figure_of_many_methods_splits_them_into_families():
    names = list(landscape.DEFAULT_METHODS)
    families = plotting.method_families(names)
    assert families == {
        "baselines (with grpo and ngrpo)": ["grpo", "ngrpo", "dapo", "psr_nsr", "dr_grpo", "rloo"],
        "NGRPO's rivals (with grpo and ngrpo)": ["grpo", "ngrpo", "maxrl", "qae", "asymre",
                                                 "shifted_baseline"]}
    assert plotting.method_families(names[:3]) == {"": names[:3]}
    assert plotting.method_families(["maxrl", "qae"], most=0) == {"NGRPO's rivals": ["maxrl",
                                                                                     "qae"]}
    figure = landscape.landscape_figure([get_method(name) for name in names], 8)
    titles = [ax.get_title().replace("\n", " ") for ax in figure.axes]
    plotting.pyplot().close(figure)
    # The panels' titles say which methods share a line, and which have none on a log axis.
    assert titles[:3] == ["Advantage of each answer dapo = grpo",
                          "Silent groups (G = 8) dapo, dr_grpo, rloo = grpo; never silent (no "
                          "line): psr_nsr",
                          "Expected update $c(p)\\,\\pi\\odot(r-p)$ dapo = grpo"]
    assert titles[4] == ("Silent groups (G = 8) maxrl, qae = grpo; shifted_baseline = ngrpo; "
                         "never silent (no line): asymre")
    # AsymRE's gain is Dr. GRPO's, 7/8, but Dr. GRPO is a baseline; NGRPO's baseline's is 8/9.
    assert titles[5] == "Expected update $c(p)\\,\\pi\\odot(r-p)$"


def test_coinciding_names_the_first_earlier_curve_each_equals():
    nan = float("nan")
    curves = {"grpo": [0.0, 1.0, nan], "ngrpo": [0.0, 2.0, nan], "dapo": [0.0, 1.0 + 1e-9, nan],
              "rloo": [0.0, 2.0], "dr_grpo": [0.0, 2.0, nan], "psr_nsr": [0.0, 1.0, 0.0]}
    # By hand: np.allclose with NaN equal to NaN, against each earlier curve of the same shape.
    assert plotting.coinciding(curves) == {"grpo": None, "ngrpo": None, "dapo": "grpo",
                                           "rloo": None, "dr_grpo": "ngrpo", "psr_nsr": None}
    assert plotting.coinciding({}) == {}


def test_every_recorded_metric_has_a_label_in_words():
    from ngrpo_sim.simulators import dynamics, sequences

    for name in set(dynamics.METRICS) | set(sequences.METRICS) | {"max_drawdown"}:
        assert not CODE_NAME.search(plotting.metric_label(name)), name
    assert plotting.metric_label("eval/pass@16") == "held-out pass@16"
    assert plotting.metric_label("my_own_metric") == "my_own_metric"

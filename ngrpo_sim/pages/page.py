"""The interactive page: the advantage landscape with sliders, in one HTML file for any browser.

``ngrpo-sim page`` and ``ngrpo-sim report`` write it. The page embeds BokehJS (the JavaScript half
of Bokeh) and its data, so it opens from disk with no network and nothing installed. Every number on
it is computed here by ``ngrpo_sim`` when the page is written: for each point of a grid of settings
(G, r_max, virtual samples, std convention) and each method, the advantage of a correct and of a
wrong answer for every k (``landscape.count_advantages``), the group's mean and std with and without
NGRPO's virtual answers (the estimators' ``group_statistics``), and, on a grid of the success rate
p, the probability that a group gives no gradient and the gain c(p)
(``landscape.zero_gradient_probability``, ``landscape.expected_gain``). The page's JavaScript only
looks these numbers up for the widgets' values and formats them; it holds no method math. Settings
off the grid are named on the page, with the command that computes them. Which methods' curves
coincide at each setting (``plotting.coinciding``) is computed here too: a legend names each curve
one can see once ("grpo = dapo") and hides the methods drawn under it.

Below the landscape, the training curves of the last report (``curves``: its headline run, and
the lengths and truncation of its long-answer runs). The page fits any screen from 1,024 px wide:
its panels wrap, a row of widgets moves under another where it must, and each group of plots has
one toolbar.

Each distinct array is stored once (GRPO ignores r_max, so one array serves every r_max), in one
float64 pool with offsets.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ngrpo_sim.analysis import landscape
from ngrpo_sim.base.escaping import escape
from ngrpo_sim.base.files import replace_only_own, write_atomically
from ngrpo_sim.base.plotting import coinciding, method_colour
from ngrpo_sim.methods.presets import get_method
from ngrpo_sim.pages.curves import dynamics_section, length_section
from ngrpo_sim.pages.layout import div, new_figure, plot_grid, wrapping_row

GROUP_SIZES = tuple(range(2, 17))
R_MAX_VALUES = (1.0, 1.5, 2.0, 3.0)
VIRTUAL_SAMPLES = (1, 2, 3, 4)
DDOFS = (1, 0)
"""The std conventions, Bessel's (the release's) first."""
SUCCESS_GRID_POINTS = 101
DEFAULT_SETTING = dict(group_size=8, r_max=1.0, virtual_samples=1, ddof=1)
DEFAULT_CORRECT = 0
"""The page opens on an all-wrong group of 8 with the release's settings: the case of NGRPO."""
QUANTITIES = ("right", "wrong", "silent", "mean", "std", "mean_virtual", "std_virtual",
              "zero_gradient", "gain")
"""Per method and setting: by k, the advantage of a correct and of a wrong answer, whether the group
is silent, and the group's mean and std without and with NGRPO's virtual answers (the same for every
method); by p, the zero-gradient probability (0 stored as NaN, for the log axis) and c(p)."""
PANELS = {"advantage": ("right", "wrong"), "zero_gradient": ("zero_gradient",), "gain": ("gain",)}
"""The page's three plots and the quantities each draws per method: methods coincide in a plot when
all of these do."""
NO_LINE = -1
"""The twin of a method whose curve has nothing to draw (a zero-gradient probability of 0
everywhere, which a log axis cannot show)."""
PAGE_FILE = "page.html"
"""The page's name in a report folder."""


def setting_index(group_size: int, r_max: float, virtual_samples: int, ddof: int) -> int:
    """The position of a setting in the precomputed grid (the page's JavaScript does the same)."""
    grids = (("group_size", group_size, GROUP_SIZES), ("r_max", r_max, R_MAX_VALUES),
             ("virtual_samples", virtual_samples, VIRTUAL_SAMPLES), ("ddof", ddof, DDOFS))
    index = 0
    for name, value, grid in grids:
        if value not in grid:
            raise ValueError(f"{name}={value!r} is not on the page's grid {grid}; compute it with "
                             "`ngrpo-sim landscape`")
        index = index * len(grid) + grid.index(value)
    return index


@dataclass
class LandscapeGrid:
    """Every landscape number of the page. Array i is ``pool[offsets[i]:offsets[i + 1]]``, and
    ``index[quantity][method][setting_index(...)]`` is the array of that quantity, method and
    setting."""

    methods: tuple[str, ...]
    success_rates: np.ndarray
    """(SUCCESS_GRID_POINTS,) the grid of p of the zero-gradient and gain curves."""
    pool: np.ndarray
    offsets: np.ndarray
    index: dict[str, dict[str, np.ndarray]]
    twins: dict[str, dict[str, np.ndarray]]
    """``twins[panel][method][setting_index(...)]``: the position in ``methods`` of the first method
    whose curves in that panel of ``PANELS`` equal this method's (its own position when none does),
    or ``NO_LINE``."""

    def lookup(self, quantity: str, method: str, **setting) -> np.ndarray:
        """The array the page shows for one quantity, method and setting (as ``setting_index``)."""
        number = self.index[quantity][method][setting_index(**setting)]
        return self.pool[self.offsets[number]:self.offsets[number + 1]]

    def twin(self, panel: str, method: str, **setting) -> str | None:
        """The method whose curves in ``panel`` this method's equal (itself when none does), or
        None where it has no line (as ``setting_index``)."""
        position = self.twins[panel][method][setting_index(**setting)]
        return None if position == NO_LINE else self.methods[position]


def precompute(methods=landscape.DEFAULT_METHODS) -> LandscapeGrid:
    """The page's numbers for every setting of the grid, each distinct array stored once."""
    methods = tuple(methods)
    if not methods:
        raise ValueError("methods must name at least one count-based preset, got none")
    success_rates = np.linspace(0.0, 1.0, SUCCESS_GRID_POINTS)
    arrays: list[np.ndarray] = []
    seen: dict[bytes, int] = {}

    def store(values) -> int:
        values = np.ascontiguousarray(values, dtype=np.float64)
        key = values.tobytes()
        if key not in seen:
            seen[key] = len(arrays)
            arrays.append(values)
        return seen[key]

    settings = [(group_size, r_max, virtual, ddof) for group_size in GROUP_SIZES
                for r_max in R_MAX_VALUES for virtual in VIRTUAL_SAMPLES for ddof in DDOFS]
    index = {quantity: {name: np.zeros(len(settings), dtype=np.int32) for name in methods}
             for quantity in QUANTITIES}
    twins = {panel: {name: np.zeros(len(settings), dtype=np.int32) for name in methods}
             for panel in PANELS}
    for number, (group_size, r_max, virtual, ddof) in enumerate(settings):
        options = dict(r_max=r_max, virtual_samples=virtual, ddof=ddof)
        groups = landscape.canonical_groups(group_size)
        statistics = {}
        for suffix, name in (("", "grpo"), ("_virtual", "ngrpo")):
            estimator = get_method(name).retuned(**options).advantage
            statistics["mean" + suffix], statistics["std" + suffix] = estimator.group_statistics(
                groups)
        for name in methods:
            values = landscape.count_landscape(get_method(name).retuned(**options), group_size,
                                               success_rates)
            zero_gradient = values["zero_gradient"]
            values.update(zero_gradient=np.where(zero_gradient > 0, zero_gradient, np.nan),
                          **statistics)
            for quantity in QUANTITIES:
                index[quantity][name][number] = store(values[quantity])
        for panel, quantities in PANELS.items():
            curves = {name: np.concatenate([arrays[index[quantity][name][number]]
                                            for quantity in quantities]) for name in methods}
            for name, twin in coinciding(curves).items():
                twins[panel][name][number] = (NO_LINE if np.isnan(curves[name]).all()
                                              else methods.index(twin or name))
    offsets = np.cumsum([0] + [len(values) for values in arrays]).astype(np.int32)
    return LandscapeGrid(methods, success_rates, np.concatenate(arrays), offsets, index, twins)


# -------------------------------------------------------------------------------------------------
# The page
# -------------------------------------------------------------------------------------------------

# Looks up the precomputed arrays for the widgets' values and formats them: no method math here.
# Text enters the Divs' HTML only as `names` (method names escaped by
# ngrpo_sim.base.escaping.escape) and `colours` (hex colours); everything else is a number.
UPDATE_JS = """
const G = group_size.value;
if (right.end !== G) { right.end = G; }
const k = Math.min(right.value, G);
const s = (((G - group_sizes[0]) * r_max_labels.length + r_max.active) * virtual_labels.length
           + virtual.active) * ddof_labels.length + ddof.active;
const take = (quantity, method) => {
  const i = index[quantity][method][s];
  return Array.from(pool.slice(offsets[i], offsets[i + 1]));
};
const counts = Array.from({length: G + 1}, (_, j) => j);
const cell = (x, role, method) => {
  const text = Number.isNaN(x) ? "&mdash;" : x.toFixed(4);
  return `<td data-method="${names[method]}" data-role="${role}" data-value="${x}">${text}</td>`;
};
let rows = "";
for (const method of methods) {
  const right_k = take("right", method), wrong_k = take("wrong", method);
  advantage_sources[method].data = {k: counts, right: right_k, wrong: wrong_k};
  zero_gradient_sources[method].data = {p: success_rates, y: take("zero_gradient", method)};
  gain_sources[method].data = {p: success_rates, y: take("gain", method)};
  const teaches = take("silent", method)[k] ? "no: all advantages 0" : "yes";
  rows += `<tr><th style="color:${colours[method]}">${names[method]}</th>`
    + cell(right_k[k], "right", method) + cell(wrong_k[k], "wrong", method)
    + `<td data-method="${names[method]}" data-role="teaches">${teaches}</td></tr>`;
}
// Each curve one can see is named once in its legend ("grpo = dapo"); the methods drawn under it
// are hidden, with their legend entries. A curve the reader hid by a click stays hidden.
for (const [panel, legend] of Object.entries(legends)) {
  const missing = [];
  methods.forEach((method, i) => {
    const item = legend.items[i], twin = twins[panel][method][s], first = twin === i;
    const hidden_by_reader = item.visible && !item.renderers[0].visible;
    item.visible = first;
    for (const renderer of item.renderers) { renderer.visible = first && !hidden_by_reader; }
    if (twin === no_line) { missing.push(method); }
    if (!first) { return; }
    const lines = [method];
    for (const [j, other] of methods.entries()) {
      if (j === i || twins[panel][other][s] !== i) { continue; }
      const line = lines[lines.length - 1];
      if (line.length + other.length > 20) { lines.push(`= ${other}`); }
      else { lines[lines.length - 1] = `${line} = ${other}`; }
    }
    item.label = {value: lines.join("\\n")};
  });
  legend.title = missing.length ? `no line (never silent):\\n${missing.join(", ")}` : "";
}
marker.location = k;
const stats = ["mean", "std", "mean_virtual", "std_virtual"].map(q => take(q, methods[0])[k]);
const chip = (text, kind) => `<span class="chip ${kind}">${text}</span>`;
const answers = counts.slice(1).map(j => j <= k ? chip("1", "right") : chip("0", "wrong"));
const r = r_max_labels[r_max.active], v = Number(virtual_labels[virtual.active]);
const virtuals = Array.from({length: v}, () => chip(r, "virtual")).join("");
const value = (x, name) => `<b data-stat="${name}" data-value="${x}">${x.toFixed(4)}</b>`;
group.text = `<div>${answers.join("")}<span class="plus">+</span>${virtuals}</div>`
  + `<p>G = ${G} answers, k = ${k} right. GRPO's statistics: mean ${value(stats[0], "mean")}, `
  + `std ${value(stats[1], "std")}. With NGRPO's ${v} virtual answer${v > 1 ? "s" : ""} `
  + `of reward ${r}: mean ${value(stats[2], "mean_virtual")}, `
  + `std ${value(stats[3], "std_virtual")}.</p>`;
table.text = `<table class="advantages"><tr><th>method</th><th>each correct answer</th>`
  + `<th>each wrong answer</th><th>does the group teach?</th></tr>${rows}</table>`;
"""

def _controls():
    from bokeh.models import RadioButtonGroup, Slider

    # The css classes name the widgets for readers of the page's markup (the browser tests). A
    # slider's handle reaches half its width beyond the track: the margins keep it on the page.
    return dict(
        group_size=Slider(start=GROUP_SIZES[0], end=GROUP_SIZES[-1], step=1,
                          value=DEFAULT_SETTING["group_size"], title="G, answers per prompt",
                          css_classes=["ngrpo-group-size"], width=300, margin=(5, 10, 5, 15)),
        right=Slider(start=0, end=DEFAULT_SETTING["group_size"], step=1, value=DEFAULT_CORRECT,
                     title="k, correct answers in the group", css_classes=["ngrpo-right"],
                     width=300, margin=(5, 10, 5, 15)),
        r_max=RadioButtonGroup(labels=[f"{value:g}" for value in R_MAX_VALUES],
                               active=R_MAX_VALUES.index(DEFAULT_SETTING["r_max"]),
                               css_classes=["ngrpo-r-max"]),
        virtual=RadioButtonGroup(labels=[str(value) for value in VIRTUAL_SAMPLES],
                                 active=VIRTUAL_SAMPLES.index(DEFAULT_SETTING["virtual_samples"]),
                                 css_classes=["ngrpo-virtual"]),
        ddof=RadioButtonGroup(labels=["Bessel (ddof 1, release)", "population (ddof 0)"],
                              active=DDOFS.index(DEFAULT_SETTING["ddof"]),
                              css_classes=["ngrpo-ddof"]))


def _landscape_section(grid: LandscapeGrid):
    """The widgets, the group and its table, the three panels, and the callback updating them."""
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, CustomJS, Span

    controls = _controls()
    advantage_plot = new_figure(
        title="Advantage against k (solid: correct answer, dashed: wrong)",
        x_axis_label="correct answers k in the group", y_axis_label="advantage")
    zero_plot = new_figure(y_axis_type="log", y_range=(1e-6, 1.5),
                           title="Probability that a sampled group gives no gradient",
                           x_axis_label="success rate p of the prompt",
                           y_axis_label="probability of no gradient (log scale)")
    gain_plot = new_figure(title="Gain c(p) of the expected update c(p) π⊙(r − p)",
                           x_axis_label="success rate p of the prompt",
                           y_axis_label="gain c(p) (per unit learning rate)")
    sources = {kind: {} for kind in ("advantage", "zero_gradient", "gain")}
    for name in grid.methods:
        colour = method_colour(name)
        source = ColumnDataSource(dict(
            k=list(range(DEFAULT_SETTING["group_size"] + 1)),
            right=grid.lookup("right", name, **DEFAULT_SETTING),
            wrong=grid.lookup("wrong", name, **DEFAULT_SETTING)))
        sources["advantage"][name] = source
        for column_name, dash, marker in (("right", "solid", "circle"),
                                          ("wrong", "dashed", "square")):
            advantage_plot.line("k", column_name, source=source, color=colour, line_width=2,
                                line_dash=dash, legend_label=name)
            advantage_plot.scatter("k", column_name, source=source, color=colour, size=6,
                                   marker=marker, legend_label=name)
        for kind, plot in (("zero_gradient", zero_plot), ("gain", gain_plot)):
            sources[kind][name] = ColumnDataSource(dict(
                p=grid.success_rates, y=grid.lookup(kind, name, **DEFAULT_SETTING)))
            plot.line("p", "y", source=sources[kind][name], color=colour, line_width=2,
                      legend_label=name)
    marker = Span(location=DEFAULT_CORRECT, dimension="height", line_color="#555555",
                  line_dash="dotted", line_width=2)
    advantage_plot.add_layout(marker)
    plots = {"advantage": advantage_plot, "zero_gradient": zero_plot, "gain": gain_plot}
    for panel, plot in plots.items():
        plot.legend.click_policy = "hide"
        plot.legend.label_text_font_size = "8pt"
        plot.legend.title_text_font_size = "8pt"
        plot.legend[0].name = f"legend-{panel}"  # for readers of the page's models (the tests)
        plot.add_layout(plot.legend[0], "right")  # beside the plot: ten methods would hide curves
    group, table = div(width=560), div(width=560)
    callback = CustomJS(code=UPDATE_JS, args=dict(
        **controls, marker=marker, group=group, table=table, methods=list(grid.methods),
        colours={name: method_colour(name) for name in grid.methods},
        names={name: escape(name) for name in grid.methods},
        group_sizes=list(GROUP_SIZES), r_max_labels=controls["r_max"].labels,
        virtual_labels=controls["virtual"].labels, ddof_labels=controls["ddof"].labels,
        success_rates=grid.success_rates, pool=grid.pool, offsets=grid.offsets, index=grid.index,
        twins=grid.twins, no_line=NO_LINE,
        legends={panel: plot.legend[0] for panel, plot in plots.items()},
        advantage_sources=sources["advantage"], zero_gradient_sources=sources["zero_gradient"],
        gain_sources=sources["gain"]))
    for name, widget in controls.items():
        widget.js_on_change("value" if name in ("group_size", "right") else "active", callback)
    widgets = column(controls["group_size"], controls["right"],
                     div("r_max, the virtual answer's reward (NGRPO)"), controls["r_max"],
                     div("virtual answers per group (NGRPO)"), controls["virtual"],
                     div("std convention (GRPO and NGRPO)"), controls["ddof"], width=330)
    section = column(wrapping_row(widgets, column(group, table)),
                     plot_grid(list(plots.values()), min_width=440),
                     sizing_mode="stretch_width")
    return section, callback


INTRO = """<h1>GRPO, NGRPO and their peers: what a group of answers teaches</h1>
<p>A prompt is answered G times; each answer is correct (reward 1) or wrong (0). GRPO scores an
answer by its z-score inside its group, so a group whose answers are <em>all wrong</em> has no
spread and teaches nothing: every advantage is 0. NGRPO (Nan et al. 2025, arXiv 2509.18851) adds a
<em>virtual</em> answer with the best reward r_max to each group's mean and std, never to the batch:
an all-wrong group of 8 now gives each answer −1/3. The page opens on that group; move the sliders.
With k = 1 the one correct answer of a hard group gets less under NGRPO (+1.76) than under GRPO
(+2.47), and each wrong answer more blame (−0.50 instead of −0.35).</p>"""

NOT_PRECOMPUTED = """<h2>What this page holds, and what it does not</h2>
<p>Every number was computed by <code>ngrpo_sim</code> when the page was written ({written}), for
G = {g_low} to {g_high}, r_max in {{{r_max}}}, {v_low} to {v_high} virtual answers and both std
conventions, and on a grid of {points} values of the success rate p; the page only looks them up.
Other settings (a larger G, another r_max, more virtual answers, graded rewards) are not on it:
<code>ngrpo-sim landscape --group-size 32 --r-max 1.25 --virtual-samples 6</code> prints and plots
them. The log axis of the zero-gradient panel cannot show a probability of 0, so it has no line for
PSR-NSR, whose groups always teach. The gain identity E[update] = c(p) π⊙(r − p) holds for the first
update after a rollout (ratio 1), binary rewards and count-based methods
(<code>ngrpo_sim/analysis/landscape.py</code>); PPO's critic has no landscape. Training curves
cannot be recomputed in a browser: they are those of the last <code>ngrpo-sim report</code> (its
headline run and its long-answer runs); other runs come from <code>ngrpo-sim dynamics</code> and
<code>ngrpo-sim lengths</code>.</p>"""


TITLE = "GRPO, NGRPO and their peers"


def write_page(path, report_folder=None, methods=landscape.DEFAULT_METHODS) -> Path:
    """Write the self-contained page to ``path`` (atomically) and return the path.

    ``report_folder`` is the folder of an ``ngrpo-sim report``: the page shows the curves of its
    ``headline`` run folder and of its long-answer run folders (``curves.length_settings``; a
    report without them gets a sentence on how to make them); None leaves every curve out and
    says how to get them. Raises ``ValueError`` for a path that is not .html or a file there that
    is not a page of this project (``replace_only_own``), or a report folder
    whose ``headline`` (or a long-answer folder) is not a run folder (``read_run``).
    """
    from bokeh.document import Document
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.resources import INLINE

    path, report = Path(path), None if report_folder is None else Path(report_folder)
    if path.suffix != ".html":
        raise ValueError(f"path must end in .html, got {str(path)!r}")
    replace_only_own(path, f"<title>{TITLE}</title>")
    landscape_section, update = _landscape_section(precompute(methods))
    notes = NOT_PRECOMPUTED.format(
        written=datetime.date.today().isoformat(), g_low=GROUP_SIZES[0], g_high=GROUP_SIZES[-1],
        r_max=", ".join(f"{value:g}" for value in R_MAX_VALUES), v_low=VIRTUAL_SAMPLES[0],
        v_high=VIRTUAL_SAMPLES[-1], points=SUCCESS_GRID_POINTS)
    document = Document()
    document.add_root(column(
        div(INTRO, sizing_mode="stretch_width"), landscape_section,
        dynamics_section(None if report is None else report / "headline"),
        length_section(report),
        div(notes, sizing_mode="stretch_width"), sizing_mode="stretch_width"))
    # The group and its table are drawn by the same lookup as every later change.
    document.js_on_event("document_ready", update)
    page = file_html(document, resources=INLINE, title=TITLE)
    return write_atomically(path, page)

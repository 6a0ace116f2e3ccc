"""The page's Bokeh building blocks: a Div with the page's style, a row that wraps, a plot, and a
grid of plots with one toolbar that wraps on a narrow screen. ``page`` and ``curves`` build their
sections from them."""

from __future__ import annotations

STYLE = """
:host { font-family: system-ui, sans-serif; line-height: 1.45; font-size: 14px; }
.chip { display: inline-block; min-width: 1.6em; padding: 0.1em 0.3em; margin: 0.1em;
        border-radius: 0.3em; text-align: center; font-family: monospace; }
.chip.right { background: #b7e1a1; } .chip.wrong { background: #f4b6c2; }
.chip.virtual { background: #fff3b0; border: 2px dashed #b08d00; }
.plus { margin: 0 0.4em; font-weight: bold; }
table.advantages { border-collapse: collapse; }
table.advantages td, table.advantages th { border-bottom: 1px solid #ddd; padding: 0.2em 0.8em;
                                           text-align: right; }
table.advantages td[data-value] { font-family: monospace; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""
"""Bokeh draws each Div in a shadow root of its own, so every Div carries this style sheet."""

TOOLS = "pan,wheel_zoom,reset,save,hover"
PLOT_HEIGHT = 340
"""Pixels; a plot's width follows the page's (``plot_grid``)."""
WRAP = ":host { flex-wrap: wrap; }"
"""A row whose children move under each other where the page is too narrow for them side by
side."""


def div(text: str = "", **options):
    """A Div showing ``text``, HTML whose strings the caller has escaped, in the page's style."""
    from bokeh.models import Div, InlineStyleSheet

    return Div(text=f'<div style="max-width: 75em">{text}</div>' if text else "",
               stylesheets=[InlineStyleSheet(css=STYLE)], **options)


def wrapping_row(*children):
    """The children side by side, as wide as the page, moving under each other where it is too
    narrow."""
    from bokeh.layouts import row
    from bokeh.models import InlineStyleSheet

    return row(*children, sizing_mode="stretch_width", stylesheets=[InlineStyleSheet(css=WRAP)])


def new_figure(**options):
    """A Bokeh figure of the page's height and tools, as wide as its place; ``options`` go to
    ``bokeh.plotting.figure``."""
    from bokeh.plotting import figure

    return figure(height=PLOT_HEIGHT, sizing_mode="stretch_width", tools=TOOLS, **options)


def plot_grid(plots, min_width: int):
    """The plots with one toolbar above them (``gridplot``'s merged tools), as many to a row as fit
    ``min_width`` pixels each, stretched to the page's width: on a narrow screen they wrap.

    ``gridplot`` fixes every plot's row and column; two style rules hand the placing to the
    browser's grid instead: the grid's columns fit the page (a rule in the grid plot's shadow root,
    where its grid box lives) and each plot takes the next free cell (a rule in the plot's own
    shadow root, which reaches its host). ``tests/test_browser.py`` checks the result at 1,024 and
    1,440 px."""
    from bokeh.layouts import gridplot
    from bokeh.models import InlineStyleSheet

    for plot in plots:
        plot.stylesheets = [*plot.stylesheets, InlineStyleSheet(
            css=":host { grid-row: auto !important; grid-column: auto !important; }")]
    grid = gridplot(plots, ncols=len(plots), merge_tools=True, toolbar_location="above",
                    sizing_mode="stretch_width")
    grid.stylesheets = [InlineStyleSheet(css=(
        ".bk-GridBox { grid-template-columns: "
        f"repeat(auto-fill, minmax({min_width}px, 1fr)) !important; "
        "grid-template-rows: none !important; }"))]
    return grid

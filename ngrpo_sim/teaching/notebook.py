"""What every notebook stands on: the fast mode in which the test suite runs them, and views
that a widget's callback redraws in place."""

from __future__ import annotations

import html
import io
import os

from ngrpo_sim.base.plotting import pyplot

# --------------------------------------------------------------------------------------------------
# Fast mode: the test suite runs every notebook with NGRPO_FAST=1
# --------------------------------------------------------------------------------------------------

FAST_MODE_VARIABLE = "NGRPO_FAST"


def fast_mode() -> bool:
    """True when ``NGRPO_FAST=1``: the notebooks shrink steps, seeds and prompts so that each runs
    in seconds."""
    value = os.environ.get(FAST_MODE_VARIABLE, "").strip()
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise ValueError(f"{FAST_MODE_VARIABLE} must be 1 (fast) or 0 or unset (full size), got "
                     f"{value!r}")


def sized(full, fast):
    """``fast`` in fast mode, ``full`` otherwise: one line per size in a notebook, both values in
    view."""
    return fast if fast_mode() else full


# --------------------------------------------------------------------------------------------------
# Every notebook: views that widgets redraw in place
# --------------------------------------------------------------------------------------------------


class LiveView:
    """A figure and a text that a widget's callback replaces in place; ``widget`` is what a notebook
    displays.

    Both live in widgets' state (an Image and an HTML widget), and the figure is drawn on a figure
    that pyplot does not hold (``subplots``). Figures that callbacks drew with pyplot landed in
    JupyterLab's log console now and then, instead of the notebook (seen with
    notebooks/check_in_jupyterlab.py, JupyterLab 4.6, ipykernel 7, ipywidgets 8.1): ipykernel runs
    the inline backend's post-execute hook around every widget message, and that hook shows every
    figure pyplot holds at that moment, outside any view. A widget's state always reaches its view,
    and the kernel can read what is shown (``shown_text``), so a test can compare two settings.
    """

    def __init__(self):
        import ipywidgets as widgets

        self.image = widgets.Image(format="png")
        self.text = widgets.HTML()
        self.widget = widgets.VBox([self.image, self.text])

    @staticmethod
    def subplots(ncols: int = 1, nrows: int = 1, width: float = 4.8, height: float = 3.6):
        """``plotting.subplots`` on a figure that pyplot does not hold, so that only ``show``
        shows it; returns (figure, flat list of axes)."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
        return figure, list(figure.subplots(nrows, ncols, squeeze=False).ravel())

    def show(self, figure=None, text: str | None = None) -> None:
        """Replace the figure (as the inline backend draws it: 100 dpi, cropped to its content)
        and the text (preformatted, as ``print`` would show it)."""
        if figure is not None:
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", bbox_inches="tight")
            pyplot().close(figure)  # if pyplot holds it after all
            self.image.value = buffer.getvalue()
        if text is not None:
            self.text.value = f"<pre>{html.escape(text)}</pre>"

    def refuse(self, reason: str) -> None:
        """Show why these settings draw nothing, in place of the figure and the text: a figure left
        from other settings would pass for theirs."""
        self.image.value = b""
        self.text.value = f"<b>{html.escape(reason)}</b>"

    @property
    def shown_text(self) -> str:
        """The text as shown, without its markup."""
        return html.unescape(self.text.value.removeprefix("<pre>").removesuffix("</pre>"))

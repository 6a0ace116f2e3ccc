"""One look for every figure of the project: a fixed colour per method, labelled axes, PNG output.

Matplotlib is imported lazily with the Agg backend, so importing ``ngrpo_sim`` stays fast and works
without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

METHOD_COLOURS = {
    "ppo": "#7f7f7f",
    "grpo": "#1f77b4",
    "dapo": "#2ca02c",
    "psr_nsr": "#9467bd",
    "ngrpo": "#d62728",
    "dr_grpo": "#17becf",
    "rloo": "#bcbd22",
    "psr": "#e377c2",
    "nsr": "#8c564b",
    "grpo_asym_clip": "#6baed6",
    "grpo_calibrated": "#fc9272",
    "ngrpo_no_filter": "#ff7f0e",
    "maxrl": "#393b79",
    "qae": "#637939",
    "rl_zvp": "#8c6d31",
    "lens": "#7b4173",
    "asymre": "#e7ba52",
    "shifted_baseline": "#6b6ecf",
}
"""The colour of each method in every figure of the project (the notebooks and the trainer's plots
included)."""

FALLBACK_COLOUR = "#000000"


def method_colour(name: str) -> str:
    """The method's fixed colour; black for a name outside the registry (a user's own variant)."""
    return METHOD_COLOURS.get(name, FALLBACK_COLOUR)


def plot_method_curves(ax, x, curves: dict, linestyle: str = "-", marker: str | None = None,
                       label: bool = True) -> None:
    """One line per method in its colour. A curve equal to an earlier one is drawn dotted on top of
    it and labelled "name = earlier", so methods that coincide (DAPO and GRPO share an advantage)
    stay visible."""
    drawn: dict[str, np.ndarray] = {}
    for name, y in curves.items():
        y = np.asarray(y, dtype=float)
        twin = next((other for other, seen in drawn.items()
                     if np.allclose(seen, y, equal_nan=True)), None)
        style = dict(color=method_colour(name), marker=marker, markersize=3.5)
        if twin is None:
            ax.plot(x, y, linestyle=linestyle, linewidth=1.8, label=name if label else None,
                    **style)
            drawn[name] = y
        else:
            ax.plot(x, y, linestyle=":", linewidth=2.2,
                    label=f"{name} = {twin}" if label else None, **style)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend unless a notebook already chose
    one."""
    import matplotlib

    if "inline" not in matplotlib.get_backend() and "widget" not in matplotlib.get_backend():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplots(ncols: int = 1, nrows: int = 1, width: float = 4.8, height: float = 3.6):
    """A figure with ``nrows x ncols`` axes of the given size each; returns (figure, flat list of
    axes)."""
    plt = pyplot()
    figure, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                                squeeze=False, constrained_layout=True)
    return figure, list(axes.ravel())


def save(figure, path: Path) -> Path:
    """Write ``figure`` as a PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    pyplot().close(figure)
    return path

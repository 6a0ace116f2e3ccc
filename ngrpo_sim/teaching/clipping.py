"""Notebook 4: where the clipped surrogate removes the gradient, and how often it does in
training."""

from __future__ import annotations

import dataclasses

import numpy as np
from tqdm.auto import tqdm

from ngrpo_sim.base import checks
from ngrpo_sim.base.plotting import method_colour
from ngrpo_sim.methods.surrogate import clipped_surrogate
from ngrpo_sim.simulators.dynamics import DynamicsConfig, simulate

# --------------------------------------------------------------------------------------------------
# Notebook 4: where clipping removes the gradient, and how often it does in training
# --------------------------------------------------------------------------------------------------


def vanishing_gradient(ratio, advantages, clip_low: float, clip_high: float) -> np.ndarray:
    """True where the clipped surrogate gives a token no gradient (either bound binds)."""
    surrogate = clipped_surrogate(ratio, advantages, clip_low, clip_high)
    return surrogate.clipped_low | surrogate.clipped_high


CLIP_PUSH_LABEL = r"push on $\log\pi$ per token: $A\rho$"
"""The colour scale of ``plot_clip_plane``."""


def plot_clip_plane(ax, clip_low: float, clip_high: float, ratio_range=(0.6, 1.4),
                    advantage_limit: float = 2.0, points: int = 201, colorbar: bool = True):
    """The ratio-advantage plane: the gradient -A rho where it flows, grey where clipping removes
    it. Returns the image, so that panels drawn with ``colorbar=False`` can share one colour bar."""
    low, high = checks.finite_array("ratio_range", ratio_range)
    if not 0 < low < 1 < high:
        raise ValueError("ratio_range must bracket 1 with a positive lower end, got "
                         f"{tuple(ratio_range)}")
    advantage_limit = checks.number("advantage_limit", advantage_limit, low=0.0, low_open=True)
    points = checks.integer("points", points, low=3)
    ratio, advantages = np.meshgrid(np.linspace(low, high, points),
                                    np.linspace(-advantage_limit, advantage_limit, points))
    surrogate = clipped_surrogate(ratio, advantages, clip_low, clip_high)
    ascent = np.ma.masked_where(surrogate.clipped_low | surrogate.clipped_high,
                                -surrogate.grad_logp)
    extent = (low, high, -advantage_limit, advantage_limit)
    ax.imshow(np.ones_like(ratio), extent=extent, origin="lower", aspect="auto", cmap="Greys",
              vmin=0, vmax=4)
    image = ax.imshow(ascent, extent=extent, origin="lower", aspect="auto", cmap="RdBu",
                      vmin=-advantage_limit * high, vmax=advantage_limit * high)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=CLIP_PUSH_LABEL)
    for bound in (1 - clip_low, 1 + clip_high):
        ax.axvline(bound, color="black", linewidth=0.8, linestyle="--")
    ax.axhline(0.0, color="0.4", linewidth=0.6)
    ax.set_xlabel(r"ratio $\rho = \pi_\theta / \pi_{old}$")
    ax.set_ylabel("advantage A")
    ax.set_title(f"clip {clip_low:g} / {clip_high:g} (grey: no gradient)", fontsize=9)
    return image


def clip_fraction_sweep(method_names, config: DynamicsConfig, minibatch_counts,
                        progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """For each method and number of minibatch updates per rollout, the share of answers clipped at
    each bound, averaged over the run's steps and seeds:
    {method: {"minibatches", "clipfrac_low", "clipfrac_high"}}. ``progress`` shows one bar over
    every run's steps."""
    counts = [checks.integer("minibatch_counts", count, low=1) for count in minibatch_counts]
    if not counts:
        raise ValueError("minibatch_counts must hold at least one count, got none")
    names = [method_names] if isinstance(method_names, str) else list(method_names)
    sweep = {}
    total = len(names) * len(counts) * config.steps
    with tqdm(total=total, desc="clip-fraction sweep", unit="step", disable=not progress) as bar:
        for name in names:
            runs = [simulate(name, dataclasses.replace(config, minibatches=count), progress=bar)
                    for count in counts]
            sweep[name] = {"minibatches": np.array(counts)} | {
                bound: np.array([np.nanmean(run.metrics[bound]) for run in runs])
                for bound in ("clipfrac_low", "clipfrac_high")}
    return sweep


def plot_clip_fraction_sweep(ax, sweep: dict[str, dict[str, np.ndarray]]) -> None:
    """Clip fractions against minibatch updates per rollout: solid for the high bound, dashed for
    the low bound."""
    for name, row in sweep.items():
        colour = method_colour(name)
        ax.plot(row["minibatches"], row["clipfrac_high"], color=colour, marker="o",
                label=f"{name}: high (A > 0)")
        ax.plot(row["minibatches"], row["clipfrac_low"], color=colour, marker="s", linestyle="--",
                label=f"{name}: low (A < 0)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("minibatch updates per rollout (μ)")
    ax.set_ylabel("share of answers clipped")
    ax.set_title("Clipping acts once ratios leave 1")
    ax.legend(fontsize=7)

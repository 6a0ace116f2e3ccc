"""One look for every figure of the project: a fixed colour per method, axes in words with units,
curves a reader can tell apart, legends that cover no curve, PNG output.

A figure of more than ``MAX_METHODS_PER_PANEL`` methods splits them into families
(``method_families``: the baselines, and NGRPO's rivals), each in panels of its own beside GRPO and
NGRPO; methods whose curves coincide share one line and one legend entry (``coinciding``); the
legend sits outside the panels (``figure_legend``); a metric's axis is labelled in words
(``metric_label``), never with its name in the code.

Matplotlib is imported lazily with the Agg backend, so importing ``ngrpo_sim`` stays fast and works
without a display.
"""

from __future__ import annotations

import re
import textwrap
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


RIVAL_METHODS = frozenset({"maxrl", "qae", "rl_zvp", "lens", "asymre", "shifted_baseline"})
"""NGRPO's rivals, published for the same problem (``methods.py``): a figure of many methods draws
them in panels of their own."""
REFERENCE_METHODS = ("grpo", "ngrpo")
"""Drawn in every family's panels, so that each panel compares with them."""
MAX_METHODS_PER_PANEL = 8
"""Beyond this many methods in one panel their colours can no longer be told apart."""


def method_families(names, most: int = MAX_METHODS_PER_PANEL) -> dict[str, list[str]]:
    """The methods of a figure, split into panels whose curves a reader can tell apart: ``{title:
    names}`` in the order given.

    Up to ``most`` methods stay together (one panel, title ""). More are split
    into the baselines (every method that is not one of ``RIVAL_METHODS``) and NGRPO's rivals, each
    with the ``REFERENCE_METHODS`` among ``names`` for comparison; a family with nothing of its own
    is left out.
    """
    names = list(names)
    if len(names) <= most:
        return {"": names}
    references = [name for name in names if name in REFERENCE_METHODS]
    rivals = [name for name in names if name in RIVAL_METHODS]
    others = [name for name in names if name not in RIVAL_METHODS and name not in references]
    families = {}
    beside = f" (with {' and '.join(references)})" if references else ""
    families = {}
    if others or not rivals:
        families["baselines" + beside] = [name for name in names if name not in RIVAL_METHODS]
    if rivals:
        families["NGRPO's rivals" + beside] = references + rivals
    return families


def coinciding(curves: dict) -> dict[str, str | None]:
    """For each named curve, the first earlier curve it equals (``np.allclose``, NaN equal to NaN),
    or None: methods whose curves coincide (DAPO's advantage is GRPO's) share one line and one
    legend entry. Curves of different shapes never coincide."""
    drawn: dict[tuple, list[tuple[str, np.ndarray]]] = {}  # by shape, in order
    twins: dict[str, str | None] = {}
    for name, values in curves.items():
        values = np.asarray(values, dtype=float)
        earlier = drawn.setdefault(values.shape, [])
        twins[name] = None
        if earlier:  # one comparison with every earlier curve of this shape at once
            close = np.isclose(np.stack([seen for _, seen in earlier]), values, equal_nan=True)
            matches = np.flatnonzero(close.reshape(len(earlier), -1).all(axis=1))
            twins[name] = earlier[matches[0]][0] if matches.size else None
        if twins[name] is None:
            earlier.append((name, values))
    return twins


def plot_method_curves(ax, x, curves: dict, linestyle: str = "-", marker: str | None = None,
                       label: bool = True, twins: dict | None = None) -> dict[str, str | None]:
    """One line per method in its colour, labelled with its name. A curve equal to an earlier one
    (``twins``, by default ``coinciding(curves)``) is drawn dotted on top of it, so methods that
    coincide (DAPO and GRPO share an advantage) stay visible; ``coincidence_note`` says which.
    Returns the twins."""
    twins = coinciding(curves) if twins is None else twins
    for name, values in curves.items():
        dotted = twins.get(name) is not None
        ax.plot(x, values, linestyle=":" if dotted else linestyle, linewidth=2.2 if dotted else 1.8,
                color=method_colour(name), marker=marker, markersize=3.5,
                label=name if label else None)
    return twins


def coincidence_note(twins: dict, never_drawn=(), width: int = 60) -> str:
    """Which methods' curves coincide ("dapo, rloo = grpo"), and which have none
    (``never_drawn``, with why), in lines of at most ``width`` characters: for a panel's title."""
    groups: dict[str, list[str]] = {}
    for name, twin in twins.items():
        if twin is not None:
            groups.setdefault(twin, []).append(name)
    parts = [f"{', '.join(names)} = {twin}" for twin, names in groups.items()]
    parts += [str(item) for item in never_drawn]
    return "\n".join(textwrap.wrap("; ".join(parts), width))


METRIC_LABELS = {
    # What every simulator records of its policy (training_loop.SUCCESS_METRICS).
    "accuracy": "success rate (pass@1, mean over prompts)",
    "accuracy_hard": "success rate, prompts starting below 5%",
    "accuracy_mid": "success rate, prompts starting at 5% to 50%",
    "accuracy_easy": "success rate, prompts starting at 50% or more",
    "pass_auc": "pass@k AUC, k = 1 to 256 (0 to 100)",
    "abandoned": "prompts abandoned (success below 0.001)",
    "newly_solved": "prompts newly solved (success reached 0.5)",
    "regressed": "prompts regressed (below half their start)",
    "solved_hard": "hard prompts solved (success at least 0.5)",
    "max_drawdown": "largest fall of the success rate",
    "entropy": "mean entropy (nats)",
    "entropy_hard": "mean entropy, prompts starting below 5% (nats)",
    "entropy_mid": "mean entropy, prompts starting at 5% to 50% (nats)",
    "entropy_easy": "mean entropy, prompts starting at 50% or more (nats)",
    "entropy_change": "entropy change per step (nats)",
    "entropy_change_predicted": "predicted entropy change per step (nats)",
    "entropy_change_positional": "entropy change per step at fixed prefixes (nats)",
    # Answers made of tokens (sequences.METRICS).
    "sequence_entropy": "entropy of the whole answer (nats per answer)",
    "length": "mean answer length (tokens)",
    "length_correct": "mean length of correct answers (tokens)",
    "length_wrong": "mean length of wrong answers (tokens)",
    "truncation": "share of answers cut at the length limit",
    "end_probability": "probability of the end token",
    "unsampled_mass": "probability of tokens that no answer chose",
    "unsampled_mass_gain": "probability gained per step by tokens no answer chose",
    # What every rollout records (training_loop.ROLLOUT_METRICS) and the trainer logs.
    "share_all_wrong": "share of groups with every answer wrong",
    "share_all_correct": "share of groups with every answer correct",
    "share_mixed": "share of groups with correct and wrong answers",
    "share_zero_advantage": "share of groups whose advantages are all 0",
    "kept_groups": "groups kept per step",
    "clipfrac_low": "share of tokens clipped at the low bound (A < 0)",
    "clipfrac_high": "share of tokens clipped at the high bound (A > 0)",
    "approx_kl": "approx. KL of the update to the sampling policy (nats)",
    "sampled_answers": "answers sampled per step",
    # Only the trainer (minimal/ngrpo_train.py; its run folders: trainer_runs).
    "reward": "mean reward of the rollouts",
    "sampled_accuracy": "share of sampled answers that are correct",
    "share_all_wrong_learned": "share of groups all wrong and learned from",
    "groups_trained": "groups trained per step",
    "refill_rounds": "refill rounds per step",
    "response_length": "mean answer length (tokens)",
    "truncated_share": "share of answers cut at max_new_tokens",
    "loss": "loss per token",
    "pg_loss": "policy-gradient loss per token",
    "kl_ref": "KL to the initial policy per token (nats)",
    "grad_norm": "gradient norm before clipping",
    "eval/pass_auc": "held-out pass@k AUC (0 to 100)",
    "eval/response_length": "held-out mean answer length (tokens)",
    "eval/truncated_share": "held-out answers cut at max_new_tokens (share)",
    "eval/unknown_rewards": "held-out answers with an unknown reward",
}
"""An axis label in words, with its unit, for every metric a simulator or the trainer records."""


AXIS_LABEL_WIDTH = 34
"""Characters a line of an axis label may hold: a longer label runs past a panel 3.3 inches high."""


def axis_label(text: str) -> str:
    """``text`` broken into lines of at most ``AXIS_LABEL_WIDTH`` characters, for a panel's axis."""
    if len(text) <= AXIS_LABEL_WIDTH:
        return text
    return "\n".join(textwrap.wrap(text, AXIS_LABEL_WIDTH))


def metric_label(name: str) -> str:
    """The axis label of a recorded metric (``METRIC_LABELS``; the trainer's ``eval/pass@k`` for
    any k); a name it does not know, such as a user's own, as it is."""
    match = re.fullmatch(r"eval/pass@(\d+)", name)
    if match:
        return f"held-out pass@{match[1]}"
    return METRIC_LABELS.get(name, name)


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


def family_subplots(families: dict, ncols: int = 1, width: float = 4.8, height: float = 3.6):
    """A figure with a row of ``ncols`` axes per family of ``method_families`` (titled by the
    family's name where it has one); returns (figure, [(names, axes, row) per family]), where
    ``row`` is the family's subfigure, for ``figure_legend``."""
    figure = pyplot().figure(figsize=(width * ncols, height * len(families)),
                             layout="constrained")
    rows = figure.subfigures(len(families), 1, squeeze=False).ravel()
    panels = []
    for row, (title, names) in zip(rows, families.items()):
        if title:
            row.suptitle(title, fontsize=10)
        panels.append((names, list(row.subplots(1, ncols, squeeze=False).ravel()), row))
    return figure, panels


LEGEND_LABEL_WIDTH = 32
"""Characters a line of a legend's label may hold."""


def figure_legend(figure, ncols: int | None = None, where: str = "below",
                  title: str | None = None):
    """One legend for the whole figure (or subfigure), outside its panels, instead of each panel's
    own: it covers no curve or bar (a legend inside the panel covered the crossing of GRPO's and
    NGRPO's gains that notebook 2 discusses). ``where`` is "below" (``ncols`` columns, at most 4
    unless told) or "right" (one column unless told). A label that several panels share appears
    once; a label longer than ``LEGEND_LABEL_WIDTH`` characters is wrapped, so that a long name
    cannot squeeze the panels. Needs constrained layout (``subplots``, ``family_subplots``)."""
    if where not in ("below", "right"):
        raise ValueError(f"where must be 'below' or 'right', got {where!r}")
    entries = {}
    for ax in figure.axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(text, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if not entries:
        raise ValueError("the figure holds no labelled curve, band or bar to put in a legend")
    place = dict(below=("outside lower center", min(len(entries), 4)),
                 right=("outside right upper", 1))
    location, columns = place[where]
    labels = [text if len(text) <= LEGEND_LABEL_WIDTH
              else "\n".join(textwrap.wrap(text, LEGEND_LABEL_WIDTH)) for text in entries]
    return figure.legend(list(entries.values()), labels, loc=location, ncols=ncols or columns,
                         fontsize=8, title=title, title_fontsize=8)

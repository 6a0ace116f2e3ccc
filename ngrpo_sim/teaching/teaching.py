"""Widget glue for the teaching notebooks (``notebooks/``): no method and no training step is
defined here.

The notebooks' widgets call these functions, and these call the tested parts of ``ngrpo_sim``
(a group's step is the training loop's own gradient, ``bandit.BanditUpdate.gradient``). What is
here is what a notebook would otherwise repeat: sizes for the fast mode the test suite uses, one
sampled group and the step each method takes on it, the ratio-advantage plane of the clipped
surrogate, sweeps of clip fractions, plotting the run folders that ``minimal/ngrpo_train.py``
writes (``trainer_runs`` reads them), views that widgets redraw in place and one legend per
figure (``base.plotting.figure_legend``). Running a notebook headless is
``ngrpo_sim.teaching.notebook_runner``'s.
"""

from __future__ import annotations

import dataclasses
import html
import io
import os
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ngrpo_sim.analysis.sequence_gain import expected_group_update
from ngrpo_sim.base import checks
# figure_legend: the notebooks' one legend per figure, as every figure of the project has it.
from ngrpo_sim.base.plotting import (axis_label, figure_legend, method_colour,  # noqa: F401
                                     metric_label, pyplot)
from ngrpo_sim.experiments.runs import label, linestyle, plot_band
# The notebooks read the trainer's run folders through these; only trainer_runs knows the format.
from ngrpo_sim.experiments.trainer_runs import (COMPARE, TRAINER, final_pass_at_k,  # noqa: F401
                                                find_trainer, read_comparison, read_run,
                                                repository_root, run_curve, run_trainer)
from ngrpo_sim.methods.metrics import log_softmax, softmax_entropy
from ngrpo_sim.methods.presets import LOSS_AGGREGATIONS, Method, get_method
from ngrpo_sim.methods.surrogate import clipped_surrogate
from ngrpo_sim.simulators.bandit import BanditTask, make_task, sample_answers
from ngrpo_sim.simulators.dynamics import (DynamicsConfig, RunRecord, predicted_entropy_change,
                                           simulate)
from ngrpo_sim.simulators.sequences import SequenceTask, make_sequence_task
from ngrpo_sim.simulators.training_loop import Coefficients

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


# --------------------------------------------------------------------------------------------------
# Notebook 2: one sampled group, and the step each method takes on it
# --------------------------------------------------------------------------------------------------


def one_prompt(success_rate: float, num_answers: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(logits, rewards) of one bandit prompt with K answers, one of them correct, solved with
    probability p.

    The wrong answers' logits are the simulator's N(0, 1) draws for its first prompt, the same for
    every p, so moving p changes only how much the policy likes the correct answer.
    """
    success_rate = checks.number("success_rate", success_rate, low=0.0, high=1.0, low_open=True,
                                  high_open=True)
    task = make_task(num_prompts=1, num_answers=num_answers, profile=[success_rate])
    return task.offsets[0], task.rewards[0]


def group_logit_step(method: Method, logits, answers, group_rewards,
                     learning_rate: float = 1.0) -> np.ndarray:
    """The change of the logits (K,) when one SGD step on ``method``'s loss trains on one sampled
    group of ``answers`` (G,) of a prompt with ``logits`` (K,).

    The step is the training loop's (``bandit.BanditUpdate.gradient``) on a one-prompt tabular task,
    the first update after the rollout: every ratio is 1, so clipping is inactive (notebook 4 shows
    when it acts). Each answer is one token, so the three loss aggregations weigh every answer 1/G.
    Only the policy-gradient term is taken: the KL term is zero while the policy equals the
    reference, and the presets' entropy bonus (0.001) is left out so that what is shown is the
    advantage's doing. Raises ``ValueError`` for logits that are not one prompt's, answers outside
    [0, K) and rewards whose shape is not the answers'.
    """
    logits = checks.finite_array("logits", logits)
    if logits.ndim != 1 or logits.size < 2:
        raise ValueError("logits must be one prompt's K >= 2 answer logits, got shape "
                         f"{logits.shape}")
    answers = np.asarray(answers)
    if (answers.ndim != 1 or not np.issubdtype(answers.dtype, np.integer) or np.any(answers < 0)
            or np.any(answers >= logits.size)):
        raise ValueError(f"answers must be a 1-d array of answer indices in [0, {logits.size}), "
                         f"got {answers!r}")
    learning_rate = checks.number("learning_rate", learning_rate, low=0.0, low_open=True)
    advantages = method.advantages(group_rewards)
    if advantages.shape != answers.shape:
        raise ValueError(f"group_rewards has shape {np.shape(group_rewards)} but answers has shape "
                         f"{answers.shape}")
    # The gradient reads the sampled answers' advantages, never the task's reward table.
    task = BanditTask(rewards=np.zeros((1, logits.size)), offsets=logits[None], features=None)
    params, prompt = logits[None, None], np.zeros((1, 1), dtype=np.int64)
    update = task.update_batch(params, prompt, answers[None, None], params)
    grads = update.gradient(params, advantages[None, None], np.ones((1, 1), dtype=bool), method,
                            Coefficients(0.0, 0.0))[0]
    return -learning_rate * grads[0, 0]


@dataclass(frozen=True)
class GroupStep:
    """What one method does with one sampled group."""

    advantages: np.ndarray
    """(G,) advantage of each sampled answer, after the method's group filter."""
    logit_change: np.ndarray
    """(K,) change of every candidate answer's logit."""
    probability_change: np.ndarray
    """(K,) change of every candidate answer's probability."""
    entropy_change: float
    """Exact change of the prompt's entropy (nats)."""
    entropy_change_predicted: float
    """First-order prediction -Cov(log pi, dz) of the same change."""


@dataclass(frozen=True)
class SampledGroup:
    """One prompt, one group of G answers sampled from it, and each method's step on that group."""

    logits: np.ndarray
    """(K,) the prompt's logits before the step."""
    rewards: np.ndarray
    """(K,) reward of every candidate answer."""
    answers: np.ndarray
    """(G,) indices of the sampled answers."""
    steps: dict[str, GroupStep]

    @property
    def group_rewards(self) -> np.ndarray:
        return self.rewards[self.answers]

    @property
    def success_rate(self) -> float:
        return float(np.exp(log_softmax(self.logits)) @ (self.rewards == 1.0))


def sample_one_group(method_names, success_rate: float, *, group_size: int = 8,
                     num_answers: int = 16, learning_rate: float = 1.0,
                     rng: np.random.Generator | None = None) -> SampledGroup:
    """Sample G answers for a prompt solved with probability p and take each method's step on
    them."""
    group_size = checks.integer("group_size", group_size, low=2)
    logits, rewards = one_prompt(success_rate, num_answers)
    rng = np.random.default_rng() if rng is None else rng
    answers = sample_answers(logits[None, None], group_size, rng)[0, 0]
    probability_before, entropy_before = np.exp(log_softmax(logits)), softmax_entropy(logits)
    steps = {}
    for name in ([method_names] if isinstance(method_names, str) else method_names):
        method = get_method(name)
        change = group_logit_step(method, logits, answers, rewards[answers], learning_rate)
        new_logits = logits + change
        steps[name] = GroupStep(
            advantages=method.advantages(rewards[answers]), logit_change=change,
            probability_change=np.exp(log_softmax(new_logits)) - probability_before,
            entropy_change=float(softmax_entropy(new_logits) - entropy_before),
            entropy_change_predicted=float(predicted_entropy_change(logits, change)))
    return SampledGroup(logits, rewards, answers, steps)


def format_sampled_group(sample: SampledGroup) -> str:
    """The group, each answer's advantage under each method, and what each step did to the
    prompt."""
    names = list(sample.steps)
    width = max(9, *(len(n) + 1 for n in names))
    right = int(sample.group_rewards.sum())
    lines = [f"prompt solved with p = {sample.success_rate:.3f}; "
             f"sampled group of G = {sample.answers.size}: "
             f"{right} correct, {sample.answers.size - right} wrong", "",
             "advantage of each sampled answer",
             f"{'answer':>7}{'reward':>7}" + "".join(f"{n:>{width}}" for n in names)]
    for i, (answer, reward) in enumerate(zip(sample.answers, sample.group_rewards)):
        lines.append(f"{answer:>7}{reward:>7.0f}"
                     + "".join(f"{sample.steps[n].advantages[i]:>{width}.3f}" for n in names))
    correct_answer = sample.rewards == 1.0
    lines += ["", "what one step does to the prompt",
              f"{'':<28}" + "".join(f"{n:>{width}}" for n in names)]
    rows = (("change of P(correct)", lambda s: s.probability_change[correct_answer].sum()),
            ("entropy change (exact)", lambda s: s.entropy_change),
            ("entropy change (1st order)", lambda s: s.entropy_change_predicted))
    for title, value in rows:
        lines.append(f"{title:<28}"
                     + "".join(f"{value(sample.steps[n]):>{width}.4f}" for n in names))
    return "\n".join(lines)


def plot_sampled_group(axes, sample: SampledGroup) -> None:
    """Left: each sampled answer's advantage per method. Right: each candidate answer's probability
    change."""
    from matplotlib.ticker import MaxNLocator

    names = list(sample.steps)
    bar = 0.8 / len(names)
    left, right = axes
    for i, name in enumerate(names):
        offset = (i - (len(names) - 1) / 2) * bar
        # A method that gives the group nothing draws no bar: the legend says so.
        label = name + ("" if np.any(sample.steps[name].advantages) else " (all 0: no bars)")
        left.bar(np.arange(sample.answers.size) + offset, sample.steps[name].advantages, bar,
                 color=method_colour(name), label=label)
        right.bar(np.arange(sample.rewards.size) + offset, sample.steps[name].probability_change,
                  bar, color=method_colour(name), label=label)
    left.set_xticks(np.arange(sample.answers.size),
                    [f"{a}\n{'correct' if r == 1 else 'wrong'}"
                     for a, r in zip(sample.answers, sample.group_rewards)],
                    fontsize=7)
    left.set_xlabel("sampled answer (index, outcome)")
    left.set_ylabel("advantage")
    left.set_title("Advantages of the sampled group")
    for answer in np.flatnonzero(sample.rewards == 1.0):
        right.axvspan(answer - 0.5, answer + 0.5, color="gold", alpha=0.3, linewidth=0)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("candidate answer (correct answer shaded)")
    right.set_ylabel("change of probability after one step")
    right.set_title("Where the probability goes")
    # The starting probabilities explain the changes: an answer sampled less often than its
    # probability predicts rises even with a negative advantage (the -pi term of d log pi / dz).
    before = right.twinx()
    before.plot(np.arange(sample.rewards.size), np.exp(log_softmax(sample.logits)), "k.",
                markersize=5)
    before.set_ylim(bottom=0.0)
    before.set_ylabel("probability before the step (dots)")
    for ax in axes:
        ax.axhline(0.0, color="0.6", linewidth=0.8)
    left.legend(fontsize=7)


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


# ------------------------------------------------------------------------------------------------
# Notebook 6: answers made of tokens
# ------------------------------------------------------------------------------------------------

TOKEN_NAMES = "abcdefgh"
"""How the notebook writes content tokens (the end token is written "<end>")."""


def token_text(task: SequenceTask, tokens) -> str:
    """An answer's tokens as text, "b a <end>"; -1 (padding after the end) is left out."""
    return " ".join("<end>" if token == task.vocab_size else TOKEN_NAMES[token]
                    for token in tokens if token >= 0)


def answer_table(task: SequenceTask, logits: np.ndarray) -> list[tuple[str, float, float, int]]:
    """Every answer of one prompt under its prefix logits (N, C), most likely first:
    (text, probability, reward, length in tokens). For tasks small enough to list (V^L answers)."""
    logits = checks.finite_array("logits", logits)
    if logits.shape != task.offsets.shape[1:]:
        raise ValueError(f"logits must be one prompt's prefix logits of shape "
                         f"{task.offsets.shape[1:]}, got {logits.shape}")
    if task.vocab_size ** task.max_length > 4096:
        raise ValueError(f"a task with V^L = {task.vocab_size ** task.max_length} answers is too "
                         "large to list; lower vocab_size or max_length")
    probs = np.exp(log_softmax(logits))
    rows = []

    def walk(content: list[int], probability: float) -> None:
        padded = content + [0] * (task.max_length - len(content))
        node = task.prefixes(np.array(padded))[len(content)]
        for token in range(task.num_choices):
            chosen = probability * probs[node, token]
            if task.terminal[node, token]:
                answer = content + [token]
                reward = task.outcome_rewards[0, node, token]
                rows.append((token_text(task, answer), chosen, reward, len(answer)))
            else:
                walk(content + [token], chosen)

    walk([], 1.0)
    return sorted(rows, key=lambda row: -row[1])


def one_prompt_task(success_rate: float, end_probability: float = 0.35, *, vocab_size: int = 3,
                    max_length: int = 4, policy: str = "tabular", seed: int = 0) -> SequenceTask:
    """A token task with one prompt, solved with probability ``success_rate`` (one key)."""
    success_rate = checks.number("success_rate", success_rate, low=0.0, high=1.0, low_open=True,
                                  high_open=True)
    return make_sequence_task(1, vocab_size, max_length, profile=str(success_rate), policy=policy,
                              feature_dim=8, end_probability=end_probability, seed=seed)


def aggregation_effects(method_name: str, task: SequenceTask, step: float = 0.5
                        ) -> dict[str, dict[str, float]]:
    """What one expected step does to a one-prompt ``task`` under each loss aggregation.

    The step moves the prefix logits along the exact expected update of one group
    (``sequence_gain.expected_group_update``), scaled to the same length ``step`` for every
    aggregation so that only directions are compared. Returns, per aggregation, the changes of the
    success rate, of the mean length of correct answers and of wrong answers (tokens).
    """
    method = get_method(method_name)
    step = checks.number("step", step, low=0.0, low_open=True)
    logits = task.offsets[None]
    before = task.answer_statistics(logits)
    def mean_lengths(statistics):
        wrong = (statistics.length - statistics.correct_length) / (1 - statistics.success)
        return (statistics.correct_length / statistics.success).item(), wrong.item()

    effects = {}
    for aggregation in LOSS_AGGREGATIONS:
        update = expected_group_update(task, logits, method, 8, aggregation,
                                       np.zeros((1, 1)) if method.advantage.uses_values else None)
        norm = np.linalg.norm(update)
        after = task.answer_statistics(logits + step * update / norm) if norm else before
        (correct_after, wrong_after), (correct_before, wrong_before) = (mean_lengths(after),
                                                                    mean_lengths(before))
        effects[aggregation] = {"success": (after.success - before.success).item(),
                                "length of correct answers": correct_after - correct_before,
                                "length of wrong answers": wrong_after - wrong_before}
    return effects


def plot_aggregation_effects(ax, effects: dict[str, dict[str, float]]) -> None:
    """The changes of ``aggregation_effects``: bars per quantity, one per aggregation."""
    quantities = list(next(iter(effects.values())))
    width = 0.8 / len(effects)
    # Greys and hatches, not colours: in this project a colour stands for a method.
    for i, (aggregation, changes) in enumerate(effects.items()):
        offset = (i - (len(effects) - 1) / 2) * width
        ax.bar(np.arange(len(quantities)) + offset, [changes[q] for q in quantities], width,
               label=aggregation, color=("0.85", "0.6", "0.35")[i % 3],
               hatch=("", "//", "..")[i % 3], edgecolor="black")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    # One word a line: three panels side by side leave each group of bars about an inch.
    ax.set_xticks(np.arange(len(quantities)),
                  [q.replace(" of ", " of\n").replace(" answers", "\nanswers") for q in quantities],
                  fontsize=8)
    # The success rate changes by a probability, the lengths by tokens.
    ax.set_ylabel(axis_label("change after one expected step (probability or tokens)"))
    ax.legend(fontsize=7)


def all_wrong_step(method_name: str, policy: str, learning_rate: float = 1.0,
                   group_size: int = 4) -> dict[str, np.ndarray]:
    """One SGD step of ``method`` on one all-wrong group, without KL or entropy terms.

    The task has one prompt (V = 3, L = 3, success 20%); every answer of the group is "w <end>"
    with w a wrong token. Returns the next-token probabilities before and after the step at the
    empty prefix (which the group visited: it chose w there) and at the prefix "u" of another wrong
    token u (which no answer visited), and the advantages the method gave.
    """
    method = get_method(method_name)
    task = one_prompt_task(0.2, vocab_size=3, max_length=3, policy=policy)
    wrong = [token for token in range(task.vocab_size) if task.rewards[0, token] != 1.0]
    tokens = np.full((1, 1, group_size, task.max_length), -1)
    tokens[..., 0], tokens[..., 1] = wrong[0], task.vocab_size
    prompts = np.zeros((1, 1), dtype=np.int64)
    advantages = method.advantages(task.score(prompts, tokens))
    params = task.initial_params(1)
    update = task.update_batch(params, prompts, tokens, task.logits(params))
    grads = update.gradient(params, advantages, np.ones((1, 1), dtype=bool), method,
                            Coefficients(0.0, 0.0))[0]
    after = task.logits(params - learning_rate * grads)[0, 0]
    before = task.logits(params)[0, 0]
    unvisited = task.prefixes(np.array([wrong[1]] + [0] * (task.max_length - 1)))[1]
    return {"method": method.name, "advantages": advantages[0, 0], "sampled": wrong[0],
            "unvisited": wrong[1], "root_before": np.exp(log_softmax(before[0])),
            "root_after": np.exp(log_softmax(after[0])),
            "unvisited_before": np.exp(log_softmax(before[unvisited])),
            "unvisited_after": np.exp(log_softmax(after[unvisited])), "task": task}


def plot_all_wrong_step(axes, result: dict) -> None:
    """Probabilities before (grey) and after (the method's colour) at the two prefixes of
    ``all_wrong_step``; the sampled token is hatched."""
    task = result["task"]
    names = [TOKEN_NAMES[token] for token in range(task.vocab_size)] + ["<end>"]
    sampled, unvisited = TOKEN_NAMES[result["sampled"]], TOKEN_NAMES[result["unvisited"]]
    prefixes = (("root", f"empty prefix (the group chose {sampled} here)"),
                ("unvisited", f"prefix \"{unvisited}\" (no answer went there)"))
    for ax, (key, title) in zip(axes, prefixes):
        positions = np.arange(len(names))
        ax.bar(positions - 0.2, result[f"{key}_before"], 0.4, color="0.7", label="before")
        bars = ax.bar(positions + 0.2, result[f"{key}_after"], 0.4,
                      color=method_colour(result["method"]), label="after one step")
        if key == "root":
            bars[result["sampled"]].set_hatch("//")
        ax.set_xticks(positions, names)
        ax.set_ylabel("next-token probability")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)

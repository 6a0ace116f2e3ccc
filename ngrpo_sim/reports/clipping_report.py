"""What the clip bounds do to entropy, apart from what the rewards teach: under pure-noise rewards
(Park et al. 2025, arXiv 2509.26114) and behind the entropy that NSR keeps (Zhu et al. 2025,
arXiv 2506.01347; a question its users raised: does the gain appear only with clipping and several
minibatch updates per rollout?). A section of ``ngrpo-sim report``.

1. **Pure noise.** Each sampled answer earns 1 with probability 1/2 whatever it is
   (``rewards="noise"``), so the expected first update of every advantage that reads only rewards
   is 0. GRPO's advantage (no KL, no entropy bonus, no group filter) trains under each of
   ``CLIP_VARIANTS``: the bounds 0.2/0.2 (GRPO, PPO), 0.2/0.28 (DAPO), 0.16/0.24 (NGRPO), each
   bound alone, and no clip (bounds that no ratio reaches). The entropy against the unclipped run
   is what the bounds alone do. Park et al. prove that clip-low raises entropy and clip-high lowers
   it, and find that with the standard bounds clip-high wins in LLMs: entropy falls even under
   random rewards. A bound acts only on a ratio that has left 1, on a rollout's later minibatch
   updates, so ``NOISE_SETTINGS`` are settings where the bounds bind: tabular logits with SGD and
   2 epochs of 4 minibatches (each prompt's ratio leaves 1 only in the second epoch), the shared
   policy with Adam at a step size of 0.2 (its clip fractions, below 1%, are an LLM run's), and
   the token task's tabular policy with SGD and 2 epochs. At the headline's step size (Adam, lr
   0.05) the bounds bind on fewer than 0.1% of answers.
2. **NSR.** NSR (-1 on every wrong answer, nothing on correct ones), PSR (+1 on correct answers
   only) and GRPO, all without KL and entropy bonus, train on binary rewards in three ways
   (``NSR_CELLS``): one minibatch update per rollout (on policy: the ratio is 1, no bound can act),
   4 minibatch updates with the clip 0.2/0.2, and the same without a clip; in two settings
   (``NSR_SETTINGS``). NSR's entropy gain is its final entropy minus GRPO's (and PSR's).

Every value is a mean with its 95% interval over seeds; differences have 95% Welch intervals.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ngrpo_sim.base.plotting import METHOD_COLOURS, figure_legend, save, subplots
from ngrpo_sim.experiments.runs import difference_interval, interval, mean_band, write_run
from ngrpo_sim.experiments.sweep import Task, sweep_tasks
from ngrpo_sim.methods.presets import Method, get_method
from ngrpo_sim.reports.claims import (CLIP_HIGH, CLIP_LOW, HEADLINE, LEARNING_RATES, NSR_CLIP,
                                      TOKEN_HEADLINE, Finding, difference,
                                      entropy_at_matched_accuracy, figure_lines, judged, verdict,
                                      word_of)
from ngrpo_sim.simulators.loop_config import LoopConfig
from ngrpo_sim.simulators.training_loop import RunRecord

UNCLIPPED_LOW, UNCLIPPED_HIGH = 1.0 - 1e-9, 1e9
"""Clip bounds that no ratio reaches: a ratio would have to fall below 1e-9 or rise above 1e9."""
CLIP_VARIANTS = (("unclipped", UNCLIPPED_LOW, UNCLIPPED_HIGH), ("0.2/0.2", 0.2, 0.2),
                 ("0.2/0.28", 0.2, 0.28), ("0.16/0.24", 0.16, 0.24),
                 ("0.2 below only", 0.2, UNCLIPPED_HIGH), ("0.2 above only", UNCLIPPED_LOW, 0.2))
"""(label, clip_low, clip_high) of each run under pure noise."""
CLIP_COLOURS = {"unclipped": "#000000", "0.2/0.2": METHOD_COLOURS["grpo"],
                "0.2/0.28": METHOD_COLOURS["dapo"], "0.16/0.24": METHOD_COLOURS["ngrpo"],
                "0.2 below only": "#8c8c8c", "0.2 above only": "#e6a000"}
"""One colour per clip variant: the bounds of a preset in that preset's colour."""
NOISE_SETTINGS = {
    "bandit, tabular, SGD, 2 epochs": dataclasses.replace(
        HEADLINE, policy="tabular", optimizer="sgd", learning_rate=LEARNING_RATES["tabular", "sgd"],
        epochs=2, steps=100, seeds=12, rewards="noise"),
    "bandit, shared, Adam lr 0.2": dataclasses.replace(HEADLINE, learning_rate=0.2, steps=100,
                                                       seeds=24,
                                                       rewards="noise"),
    "tokens, tabular, SGD, 2 epochs": dataclasses.replace(
        TOKEN_HEADLINE, policy="tabular", optimizer="sgd", learning_rate=20.0, epochs=2, steps=60,
        seeds=6, rewards="noise"),
}
"""Where the pure-noise runs train (sizes of each simulator's headline)."""
NSR_METHODS = ("nsr", "psr", "grpo")
NSR_SETTINGS = {
    "bandit, shared, Adam (headline)": dataclasses.replace(HEADLINE, steps=100, seeds=12),
    "bandit, tabular, SGD": dataclasses.replace(
        HEADLINE, policy="tabular", optimizer="sgd", learning_rate=LEARNING_RATES["tabular", "sgd"],
        steps=100, seeds=12),
}
"""Where NSR, PSR and GRPO train (binary rewards; KL and entropy bonus set to 0)."""
NSR_CELLS = (("on policy (1 minibatch)", 1, True), ("4 minibatches clipped at 0.2/0.2", 4, True),
             ("4 minibatches unclipped", 4, False))
"""(label, minibatch updates per rollout, clipped) of each way NSR trains. With several
minibatches the tabular policy with SGD takes 2 epochs: a prompt's ratio leaves 1 only when the
rollout trains on it twice."""


def clip_variant(label: str, clip_low: float, clip_high: float) -> Method:
    """GRPO's advantage with these bounds, without KL, entropy bonus or group filter."""
    return get_method("grpo").replace(name=f"grpo, clip {label}", clip_low=clip_low,
                                      clip_high=clip_high, kl_coef=0.0, entropy_coef=0.0)


def nsr_config(setting: LoopConfig, minibatches: int) -> LoopConfig:
    """``setting`` with ``minibatches`` updates per rollout (2 epochs for tabular SGD with
    several), and no KL or entropy bonus."""
    epochs = 2 if minibatches > 1 and (setting.policy, setting.optimizer) == ("tabular",
                                                                             "sgd") else 1
    return dataclasses.replace(setting, minibatches=minibatches, epochs=epochs, kl_coef=0.0,
                               entropy_coef=0.0)


def nsr_methods(clipped: bool) -> list[Method]:
    methods = [get_method(name) for name in NSR_METHODS]
    if clipped:
        return methods
    return [method.replace(clip_low=UNCLIPPED_LOW, clip_high=UNCLIPPED_HIGH) for method in methods]


def noise_tasks() -> list[Task]:
    """Every clip variant under every pure-noise setting."""
    variants = [clip_variant(*variant) for variant in CLIP_VARIANTS]
    return sweep_tasks(variants, list(NOISE_SETTINGS.values()))


def nsr_tasks() -> list[Task]:
    """NSR, PSR and GRPO in every cell of every NSR setting."""
    return [task for setting in NSR_SETTINGS.values() for _, minibatches, clipped in NSR_CELLS
            for task in sweep_tasks(nsr_methods(clipped), [nsr_config(setting, minibatches)])]


def entropy_change(run_record: RunRecord) -> np.ndarray:
    """(S,): final entropy minus the starting one."""
    entropy = run_record.metrics["entropy"]
    return entropy[-1] - entropy[0]


def _shares(run_record: RunRecord) -> str:
    """The mean shares of answers (tokens) clipped at the low and at the high bound."""
    return " / ".join(f"{np.nanmean(run_record.metrics[name]):.4f}"
                      for name in ("clipfrac_low", "clipfrac_high"))


def _split(runs: list[RunRecord], size: int) -> list[list[RunRecord]]:
    return [runs[start:start + size] for start in range(0, len(runs), size)]


def noise_table(groups: dict[str, list[RunRecord]]) -> str:
    """One row per setting and clip variant: entropy change, its difference from the unclipped
    run's, and the clipped shares."""
    lines = ["| setting | clip (low/high) | entropy change (final − start) | minus unclipped | "
             "clipped low / high |", "|---|---|---|---|---|"]
    for setting, runs in groups.items():
        unclipped = entropy_change(runs[0])
        for (label, _, _), run in zip(CLIP_VARIANTS, runs):
            mean, half = interval(entropy_change(run))
            against = ("(reference)" if run is runs[0] else
                       difference(entropy_change(run), unclipped, "raises entropy",
                                   "lowers entropy"))
            lines.append(f"| {setting} | {label} | {mean:+.3f} ± {half:.3f} | {against} | "
                         f"{_shares(run)} |")
    return "\n".join(lines)


def _effect(change: np.ndarray, unclipped: np.ndarray) -> str:
    mean, half = difference_interval(change, unclipped)
    said = verdict(mean, half, "raises", "lowers")
    word = {"no clear difference": "does not clearly move", "n/a": "moves"}.get(said, said)
    return f"{word} it ({mean:+.3f} ± {half:.3f})"


def noise_verdicts(groups: dict[str, list[RunRecord]]) -> list[str]:
    """Per setting: what each bound alone and each pair of standard bounds does to entropy against
    no clip, what DAPO's and NGRPO's bounds do against GRPO's, and how far entropy falls without a
    clip."""
    lines = []
    for setting, runs in groups.items():
        change = {label: entropy_change(run) for (label, _, _), run in zip(CLIP_VARIANTS, runs)}
        unclipped = change["unclipped"]
        pairs = "; ".join(f"{label} {_effect(change[label], unclipped)}"
                          for label in ("0.2/0.2", "0.2/0.28", "0.16/0.24"))
        against_grpo = "; ".join(f"{label} {_effect(change[label], change['0.2/0.2'])}"
                                 for label in ("0.2/0.28", "0.16/0.24"))
        fall = interval(unclipped)
        lines.append(
            f"- {setting}: against no clip, the low bound alone "
            f"{_effect(change['0.2 below only'], unclipped)}, the high bound alone "
            f"{_effect(change['0.2 above only'], unclipped)}; the standard bounds: {pairs}. "
            f"Against 0.2/0.2: {against_grpo}. Without a clip entropy changes by "
            f"{fall[0]:+.3f} ± {fall[1]:.3f}.")
    return lines


def nsr_table(groups: dict[tuple[str, str], list[RunRecord]]) -> str:
    """One row per setting and cell: NSR's entropy, its gain over GRPO and PSR, entropy at equal
    accuracy, and NSR's clipped shares."""
    lines = ["| setting | updates per rollout | NSR entropy (final) | NSR − GRPO | NSR − PSR | "
             "entropy at equal accuracy, NSR / GRPO | NSR clipped low / high |",
             "|---|---|---|---|---|---|---|"]
    for (setting, cell), runs in groups.items():
        nsr, psr, grpo = (next(t for t in runs if t.method == name) for name in NSR_METHODS)
        final = {name: run.final("entropy") for name, run in zip(NSR_METHODS, (nsr, psr, grpo))}
        level = 0.999 * min(interval(t.final("accuracy"))[0] for t in (nsr, grpo))
        mean, half = interval(final["nsr"])
        lines.append(
            f"| {setting} | {cell} | {mean:.3f} ± {half:.3f} "
            f"| {difference(final['nsr'], final['grpo'], 'NSR higher', 'NSR lower')} "
            f"| {difference(final['nsr'], final['psr'], 'NSR higher', 'NSR lower')} "
            f"| {entropy_at_matched_accuracy(nsr, level):.3f} / "
            f"{entropy_at_matched_accuracy(grpo, level):.3f} at accuracy {level:.3f} "
            f"| {_shares(nsr)} |")
    return "\n".join(lines)


def nsr_gain(runs: list[RunRecord]) -> tuple[float, float]:
    """NSR's final entropy minus GRPO's: (mean, 95% Welch half-width)."""
    nsr, grpo = (next(t for t in runs if t.method == name).final("entropy")
                 for name in ("nsr", "grpo"))
    return difference_interval(nsr, grpo)


def nsr_higher(gains: dict[str, tuple[float, float]]) -> list[str]:
    """The cells (of ``NSR_CELLS``) in which NSR's entropy gain over GRPO (mean, 95% half-width)
    lies above 0."""
    return [cell for cell, (mean, half) in gains.items() if mean - half > 0]


def nsr_verdicts(groups: dict[tuple[str, str], list[RunRecord]]) -> list[str]:
    """Per setting: in which cells NSR keeps more entropy than GRPO, and whether that is only the
    clipped cell with several minibatches."""
    lines = []
    for setting in NSR_SETTINGS:
        gains = {cell: nsr_gain(groups[setting, cell]) for cell, _, _ in NSR_CELLS}
        higher = nsr_higher(gains)
        answer = "yes" if higher == [NSR_CELLS[1][0]] else "no"
        listed = "; ".join(f"{cell} {mean:+.3f} ± {half:.3f}" for cell, (mean, half)
                           in gains.items())
        where = "; ".join(higher) if higher else "no cell"
        lines.append(f"- {setting}: only with clipping and several minibatches? **{answer}**. "
                     f"NSR − GRPO: {listed}; NSR higher in: {where}.")
    return lines


def plot_clipping(noise: dict[str, list[RunRecord]],
                  nsr: dict[tuple[str, str], list[RunRecord]], path: Path) -> Path:
    """Entropy change against steps under pure noise (a panel per setting, a line per clip
    variant, one legend below the panels), and NSR's final entropy minus GRPO's in every cell
    (bars with 95% intervals)."""
    figure, axes = subplots(ncols=2, nrows=(len(noise) + 2) // 2, width=5.0, height=3.6)
    for ax, (setting, runs) in zip(axes, noise.items()):
        for (label, _, _), run in zip(CLIP_VARIANTS, runs):
            entropy = run.metrics["entropy"]
            steps, mean, half = mean_band(entropy - entropy[0])
            ax.plot(steps, mean, color=CLIP_COLOURS[label], label=label, linewidth=1.4)
            ax.fill_between(steps, mean - half, mean + half, color=CLIP_COLOURS[label],
                            alpha=0.15, linewidth=0)
        ax.set_xlabel("training step")
        ax.set_ylabel("entropy change from the start (nats)")
        ax.set_title(f"Pure-noise rewards: {setting}", fontsize=9)
    figure_legend(figure, ncols=len(CLIP_VARIANTS), title="clip bounds, low/high")
    ax = axes[len(noise)]
    width = 0.8 / len(NSR_SETTINGS)
    for number, setting in enumerate(NSR_SETTINGS):
        gains = [nsr_gain(nsr[setting, cell]) for cell, _, _ in NSR_CELLS]
        positions = np.arange(len(NSR_CELLS)) + (number - (len(NSR_SETTINGS) - 1) / 2) * width
        ax.bar(positions, [g[0] for g in gains], width, yerr=[g[1] for g in gains],
               color=METHOD_COLOURS["nsr"], alpha=1.0 - 0.45 * number, label=setting,
               capsize=3)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xticks(np.arange(len(NSR_CELLS)), [cell.replace(" (", "\n(").replace(" at ", "\nat ")
                                              for cell, _, _ in NSR_CELLS], fontsize=8)
    ax.set_ylabel("final entropy, NSR − GRPO (nats)")
    ax.set_title("NSR's entropy gain over GRPO (95% intervals)", fontsize=9)
    ax.legend(fontsize=7)
    return save(figure, path)


def _grouped(noise_runs: list[RunRecord], nsr_runs: list[RunRecord]
             ) -> tuple[dict[str, list[RunRecord]], dict[tuple[str, str], list[RunRecord]]]:
    """The runs of ``noise_tasks`` by setting and those of ``nsr_tasks`` by (setting, cell)."""
    noise = dict(zip(NOISE_SETTINGS, _split(noise_runs, len(CLIP_VARIANTS))))
    cells = [(setting, cell) for setting in NSR_SETTINGS for cell, _, _ in NSR_CELLS]
    return noise, dict(zip(cells, _split(nsr_runs, len(NSR_METHODS))))


def clipping_section(out: Path, noise_runs: list[RunRecord], nsr_runs: list[RunRecord]
                     ) -> list[str]:
    """Write the section's run folders and figure under ``out`` from the runs of ``noise_tasks``
    and ``nsr_tasks`` (in their order) and return its report lines."""
    out = Path(out)
    noise, nsr = _grouped(noise_runs, nsr_runs)
    for number, (setting, runs) in enumerate(noise.items()):
        write_run(out / f"noise-{number}", runs, figures=False)
    for number, runs in enumerate(nsr.values()):
        write_run(out / f"nsr-{number}", runs, figures=False)
    figure = plot_clipping(noise, nsr, out / "clipping.png")
    return [
        "## The clip bounds and entropy", "",
        "Pure-noise rewards (each answer earns 1 with probability 1/2 whatever it is), GRPO's "
        "advantage without KL, entropy bonus or filter, under each clip; the difference from the "
        "unclipped run is what the bounds alone do to entropy:", "",
        noise_table(noise), "", *noise_verdicts(noise), "",
        "NSR, PSR and GRPO (no KL, no entropy bonus) on binary rewards, on policy (one update per "
        "rollout), with 4 clipped minibatch updates, and with 4 unclipped ones:", "",
        nsr_table(nsr), "", *nsr_verdicts(nsr), "",
        *figure_lines(figure, out, "Entropy under pure noise per clip, and NSR's entropy gain"),
        "", "(noise-N: the pure-noise settings above in order, nsr-N: the rows of the NSR "
        "table.)"]


def clipping_findings(noise_runs: list[RunRecord], nsr_runs: list[RunRecord]) -> list[Finding]:
    """From the runs of ``noise_tasks`` and ``nsr_tasks`` (in their order): what each clip bound
    alone does to entropy under pure noise against no clip (Park et al.), and whether NSR keeps
    entropy higher than GRPO only with the clip and several minibatches (Zhu et al.)."""
    noise, nsr = _grouped(noise_runs, nsr_runs)

    def against_unclipped(label):
        index = [variant[0] for variant in CLIP_VARIANTS].index(label)
        return [(setting, *difference_interval(entropy_change(runs[index]),
                                               entropy_change(runs[0])))
                for setting, runs in noise.items()]

    gains = {setting: {cell: nsr_gain(nsr[setting, cell]) for cell, _, _ in NSR_CELLS}
             for setting in NSR_SETTINGS}
    only_clipped = [nsr_higher(cells) == [NSR_CELLS[1][0]] for cells in gains.values()]
    setting, first = next(iter(gains.items()))
    short = {cell: "on policy" if minibatches == 1 else
             f"{minibatches} mb {'clipped' if clipped else 'unclipped'}"
             for cell, minibatches, clipped in NSR_CELLS}
    evidence = ("NSR − GRPO, final entropy: " + ", ".join(
        f"{short[cell]} {mean:+.3f} ± {half:.3f}" for cell, (mean, half) in first.items())
        + f" ({setting}); holds in {sum(only_clipped)} of {len(only_clipped)} settings")
    return [judged(CLIP_LOW, "pure noise", against_unclipped("0.2 below only"), "raises",
                   "raises", "lowers", " nats"),
            judged(CLIP_HIGH, "pure noise", against_unclipped("0.2 above only"), "lowers",
                   "raises", "lowers", " nats"),
            Finding(NSR_CLIP, "bandit (1 token)", word_of(only_clipped), evidence)]

"""The clip section of the report: what it computes from the runs, on made-up runs."""

import numpy as np
from scipy import stats

from ngrpo_sim.reports import clipping_report
from ngrpo_sim.reports.clipping_report import (CLIP_VARIANTS, NSR_CELLS, NSR_METHODS,
                                               UNCLIPPED_HIGH, UNCLIPPED_LOW, clip_variant,
                                               noise_table, noise_verdicts, nsr_config, nsr_methods,
                                               nsr_verdicts)
from ngrpo_sim.simulators.dynamics import DynamicsConfig, RunRecord


def made_up_run(method, entropy_start, entropy_end, accuracy_end=0.5):
    """A run of 2 steps and 3 seeds ending at the given entropies (one per seed)."""
    entropy = np.array([[entropy_start] * 3, [entropy_start] * 3, entropy_end], dtype=float)
    accuracy = np.array([[0.1] * 3, [0.3] * 3, accuracy_end * np.ones(3)])
    metrics = {"entropy": entropy, "accuracy": accuracy,
               "clipfrac_low": np.array([[np.nan] * 3, [0.1] * 3, [0.3] * 3]),
               "clipfrac_high": np.zeros((3, 3))}
    return RunRecord(method, DynamicsConfig(steps=2, seeds=3), metrics)


def welch(first, second):
    a, b = np.asarray(first), np.asarray(second)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return a.mean() - b.mean(), stats.t.ppf(0.975, dof) * np.sqrt(va + vb)


def test_the_clip_variants_differ_only_in_their_bounds():
    variants = [clip_variant(*variant) for variant in CLIP_VARIANTS]
    assert [(m.clip_low, m.clip_high) for m in variants] == [(low, high) for _, low, high
                                                             in CLIP_VARIANTS]
    for method in variants:
        assert method.advantage == variants[0].advantage and method.kl_coef == 0
        assert method.entropy_coef == 0 and method.group_filter.name == "none"
    unclipped = nsr_methods(clipped=False)
    assert [m.name for m in unclipped] == list(NSR_METHODS)
    assert all((m.clip_low, m.clip_high) == (UNCLIPPED_LOW, UNCLIPPED_HIGH) for m in unclipped)


def test_tabular_sgd_trains_two_epochs_where_several_minibatches_must_clip():
    tabular_sgd = DynamicsConfig(policy="tabular", optimizer="sgd", learning_rate=32.0)
    assert (nsr_config(tabular_sgd, 4).epochs, nsr_config(tabular_sgd, 1).epochs) == (2, 1)
    assert nsr_config(DynamicsConfig(policy="shared"), 4).epochs == 1
    assert nsr_config(tabular_sgd, 4).kl_coef == 0 and nsr_config(tabular_sgd, 4).entropy_coef == 0


def test_the_noise_table_measures_against_the_unclipped_run():
    # Unclipped: entropy falls by 0.5 on average; clip-low only falls by 0.2, clip-high by 0.9.
    ends = {"unclipped": [1.4, 1.5, 1.6], "0.2/0.2": [1.7, 1.8, 1.9], "0.2/0.28": [1.5, 1.5, 1.6],
            "0.16/0.24": [1.5, 1.6, 1.5], "0.2 below only": [1.75, 1.8, 1.85],
            "0.2 above only": [1.05, 1.1, 1.15]}
    runs = [made_up_run(label, 2.0, ends[label]) for label, _, _ in CLIP_VARIANTS]
    rows = noise_table({"made up": runs}).splitlines()[2:]
    assert len(rows) == len(CLIP_VARIANTS)
    for row, (label, _, _) in zip(rows[1:], CLIP_VARIANTS[1:]):
        mean, half = welch(np.array(ends[label]) - 2.0, np.array(ends["unclipped"]) - 2.0)
        word = ("raises entropy" if mean - half > 0 else "lowers entropy" if mean + half < 0
                else "no clear difference")
        assert f"| {label} |" in row and f"| {mean:+.3f} ± {half:.3f}: {word} |" in row
    assert "raises entropy" in rows[4] and "lowers entropy" in rows[5]
    assert rows[0].endswith("| 0.2000 / 0.0000 |")  # the clip fractions, mean over steps
    verdict, = noise_verdicts({"made up": runs})
    low, high = welch([-0.25, -0.2, -0.15], [-0.6, -0.5, -0.4]), welch([-0.95, -0.9, -0.85],
                                                                      [-0.6, -0.5, -0.4])
    assert f"the low bound alone raises it ({low[0]:+.3f} ± {low[1]:.3f})" in verdict
    assert f"the high bound alone lowers it ({high[0]:+.3f} ± {high[1]:.3f})" in verdict
    ngrpo = welch([-0.5, -0.4, -0.5], [-0.3, -0.2, -0.1])
    assert "Against 0.2/0.2: 0.2/0.28 lowers it" in verdict
    assert f"0.16/0.24 lowers it ({ngrpo[0]:+.3f} ± {ngrpo[1]:.3f}). Without" in verdict
    assert verdict.endswith("Without a clip entropy changes by -0.500 ± "
                            f"{stats.t.ppf(0.975, 2) * 0.1 / 3 ** 0.5:.3f}.")


def nsr_runs(gains):
    """Made-up NSR, PSR and GRPO runs for each cell of each NSR setting, NSR's entropy above
    GRPO's by ``gains[cell]`` (seeds spread by 0.01)."""
    runs = {}
    for setting in clipping_report.NSR_SETTINGS:
        for cell, _, _ in NSR_CELLS:
            base = np.array([1.0, 1.01, 0.99])
            runs[setting, cell] = [made_up_run("nsr", 2.0, base + gains[cell]),
                                   made_up_run("psr", 2.0, base),
                                   made_up_run("grpo", 2.0, base)]
    return runs


def test_nsrs_gain_only_with_clipping_and_several_minibatches_reads_yes():
    cells = [cell for cell, _, _ in NSR_CELLS]
    only_clipped = nsr_verdicts(nsr_runs({cells[0]: 0.0, cells[1]: 0.2, cells[2]: 0.0}))
    assert all("several minibatches? **yes**" in line for line in only_clipped)
    everywhere = nsr_verdicts(nsr_runs({cells[0]: 0.2, cells[1]: 0.2, cells[2]: 0.2}))
    assert all("several minibatches? **no**" in line for line in everywhere)
    assert everywhere[0].endswith("NSR higher in: " + "; ".join(cells) + ".")

"""The rivals' section of the report: budgets of sampled answers, interpolation, leaders, tables."""

import numpy as np
from scipy import stats

from ngrpo_sim.reports.rivals_report import (answer_budget, at_answers, comparison_table,
                                             cumulative_answers, leaders, verdicts)
from ngrpo_sim.simulators.dynamics import DynamicsConfig, RunRecord
from ngrpo_sim.simulators.loop_config import PASS_AT_K_MAX


def made_up_run(method, per_step, solved, entropy_end=1.0, pass_end=0.9):
    """A run of 3 steps and 2 seeds: ``per_step`` answers sampled per step, ``solved`` the hard
    prompts solved in rows 0..3 (one list per seed)."""
    solved = np.array(solved, dtype=float).T  # (steps + 1, S)
    metrics = {"sampled_answers": np.vstack([np.full(2, np.nan), np.full((3, 2), per_step)]),
               "solved_hard": solved, "accuracy_hard": solved / 10,
               "entropy": np.vstack([np.full((3, 2), 2.0), [entropy_end, entropy_end + 0.1]])}
    ks = np.array([1, PASS_AT_K_MAX])
    pass_at_k = np.zeros((4, 2, 2))
    pass_at_k[-1, :, -1] = [pass_end, pass_end + 0.02]
    return RunRecord(method, DynamicsConfig(steps=3, seeds=2), metrics, pass_at_k, ks,
                      initial_success=np.array([0.01, 0.5]))


def test_equal_sampled_answers_by_hand():
    # grpo samples 100 answers per step, dapo 200: the budget is grpo's whole run, 300, which dapo
    # reached half-way between its steps 1 (200 answers) and 2 (400).
    grpo = made_up_run("grpo", 100, [[0, 1, 2, 3], [0, 1, 1, 2]])
    dapo = made_up_run("dapo", 200, [[0, 2, 4, 6], [0, 1, 3, 5]])
    np.testing.assert_array_equal(cumulative_answers(dapo)[:, 0], [0, 200, 400, 600])
    assert answer_budget([grpo, dapo]) == 300
    np.testing.assert_allclose(at_answers(dapo, "solved_hard", 300), [3.0, 2.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(at_answers(grpo, "solved_hard", 300), [3.0, 2.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(at_answers(grpo, "solved_hard", 150), [1.5, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(at_answers(dapo, "solved_hard", 0), [0.0, 0.0])


def test_leaders_by_welch_interval():
    values = {"a": np.array([1.0, 1.1, 0.9]), "b": np.array([0.95, 1.05, 1.0]),
              "c": np.array([0.0, 0.1, -0.1])}
    # a - b = 0: tied; a - c = 1 with a half-width of t(0.975, 4) * sqrt(0.01/3 + 0.01/3) < 1.
    assert stats.t.ppf(0.975, 4) * np.sqrt(2 * 0.01 / 3) < 1
    assert leaders(values) == ("a", ["b"])
    assert leaders({"a": values["a"], "c": values["c"]}) == ("a", [])


def test_the_table_and_verdicts_by_hand():
    grpo = made_up_run("grpo", 100, [[0, 1, 2, 3], [0, 1, 1, 2]], entropy_end=1.0, pass_end=0.9)
    dapo = made_up_run("dapo", 200, [[0, 2, 4, 6], [0, 1, 3, 5]], entropy_end=0.5, pass_end=0.8)
    table = comparison_table([grpo, dapo], 300).splitlines()
    assert len(table) == 4 and table[0].count("|") == 9

    def cell(values, digits):
        half = stats.t.ppf(0.975, 1) * np.std(values, ddof=1) / np.sqrt(2)
        return f"{np.mean(values):.{digits}f} ± {half:.{digits}f}"

    # dapo: 200 per step, 5.5 solved after 3 steps, 2.5 at 300 answers, entropy 0.55, pass 0.81.
    assert table[3] == (f"| dapo | 200 | {cell([6, 5], 1)} | {cell([3, 2], 1)} | "
                        f"{cell([0.6, 0.5], 3)} | {cell([0.3, 0.2], 3)} | {cell([0.5, 0.6], 3)} | "
                        f"{cell([0.8, 0.82], 3)} |")
    lines = verdicts([grpo, dapo], 300)
    assert lines[0].startswith("- Highest hard prompts solved, equal steps: **dapo** "
                               f"({cell([6, 5], 1)})")
    # At equal answers both solved 2.5 on average, with the same spread: tied.
    assert "cannot be told apart from it: " in lines[1]
    assert lines[4].startswith("- Highest entropy after training: **grpo** (1.050 ±")
    assert lines[5].startswith(f"- Highest pass@{PASS_AT_K_MAX} after training: **grpo**")

"""The notebooks' helpers (ngrpo_sim.teaching) against independent numbers: closed forms
computed with the statistics module, finite differences of a hand-written loss, exhaustive
enumeration of groups, and hand-made run folders."""

import io
import itertools
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from ngrpo_sim import teaching
from ngrpo_sim.analysis.landscape import expected_logit_update
from ngrpo_sim.base.plotting import pyplot, subplots
from ngrpo_sim.methods.presets import get_method
from ngrpo_sim.simulators.dynamics import DynamicsConfig, RunRecord

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------------
# Fast mode
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, fast",
                         [(None, False), ("", False), ("0", False), ("1", True), (" 1 ", True)])
def test_fast_mode_reads_the_environment(monkeypatch, value, fast):
    if value is None:
        monkeypatch.delenv("NGRPO_FAST", raising=False)
    else:
        monkeypatch.setenv("NGRPO_FAST", value)
    assert teaching.fast_mode() is fast
    assert teaching.sized("full", "fast") == ("fast" if fast else "full")


def test_a_bad_fast_mode_value_is_named(monkeypatch):
    monkeypatch.setenv("NGRPO_FAST", "yes")
    with pytest.raises(ValueError, match="NGRPO_FAST must be 1.*got 'yes'"):
        teaching.fast_mode()


def z_scores(group, reference, ddof):
    """(r - mean) / std of the reference sample, with the statistics module's std."""
    spread = statistics.stdev(reference) if ddof else statistics.pstdev(reference)
    centre = statistics.fmean(reference)
    return [(r - centre) / (spread + 1e-6) for r in group]


# --------------------------------------------------------------------------------------------------
# Notebook 2: one group and one step
# --------------------------------------------------------------------------------------------------


def softmax_list(logits):
    top = max(logits)
    weights = [math.exp(z - top) for z in logits]
    return [w / sum(weights) for w in weights]


def entropy_by_hand(logits):
    return -sum(p * math.log(p) for p in softmax_list(logits))


@pytest.mark.parametrize("success_rate", [0.001, 0.3, 0.97])
def test_one_prompt_has_one_right_answer_solved_at_the_requested_rate(success_rate):
    logits, rewards = teaching.one_prompt(success_rate, num_answers=6)
    assert sorted(rewards.tolist()) == [0.0] * 5 + [1.0]
    probs = softmax_list(logits.tolist())
    assert math.isclose(sum(p for p, r in zip(probs, rewards) if r == 1), success_rate,
                        rel_tol=1e-10)


def hand_loss(logits, old_logits, answers, advantages):
    """The unclipped surrogate near ratio 1: -(1/G) sum_i A_i pi(a_i) / pi_old(a_i)."""
    probs, old = softmax_list(logits), softmax_list(old_logits)
    return -sum(a * probs[i] / old[i] for i, a in zip(answers, advantages)) / len(answers)


@pytest.mark.parametrize("name, advantages_by_hand", [
    ("grpo", lambda g: z_scores(g, g, 1)),
    ("ngrpo", lambda g: z_scores(g, g + [1.0], 1)),
    ("dr_grpo", lambda g: [r - statistics.fmean(g) for r in g]),
    ("psr_nsr", lambda g: [0.1 if r == 1 else -1.0 for r in g]),
])
def test_the_logit_step_is_minus_the_gradient_of_the_loss(name, advantages_by_hand):
    logits = [0.3, -1.2, 0.8, 0.0, -0.4]
    rewards = [0.0, 1.0, 0.0, 0.0, 1.0]
    answers = [2, 1, 2, 0, 4, 3]
    group = [rewards[a] for a in answers]
    advantages = advantages_by_hand(group)
    step = teaching.group_logit_step(get_method(name), np.array(logits), np.array(answers),
                                     np.array(group), learning_rate=0.7)
    h = 1e-6
    gradient = []
    for j in range(len(logits)):
        up, down = list(logits), list(logits)
        up[j] += h
        down[j] -= h
        gradient.append((hand_loss(up, logits, answers, advantages)
                         - hand_loss(down, logits, answers, advantages))
                        / (2 * h))
    np.testing.assert_allclose(step, -0.7 * np.array(gradient), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["grpo", "ngrpo", "rloo", "psr_nsr"])
def test_the_mean_step_over_all_groups_is_the_gain_identity(name):
    method, group_size, learning_rate = get_method(name), 3, 0.5
    logits, rewards = np.array([0.4, -0.3, 1.1]), np.array([0.0, 1.0, 0.0])
    probs = softmax_list(logits.tolist())
    mean_step = np.zeros(3)
    for answers in itertools.product(range(3), repeat=group_size):
        answers = np.array(answers)
        chance = math.prod(probs[a] for a in answers)
        mean_step += chance * teaching.group_logit_step(method, logits, answers, rewards[answers],
                                                        learning_rate)
    np.testing.assert_allclose(mean_step,
                               learning_rate * expected_logit_update(method, group_size, logits,
                                                                     rewards),
                               atol=1e-12)


def test_an_all_wrong_group_moves_only_ngrpo_and_pushes_its_answers_down():
    logits, rewards = teaching.one_prompt(0.02, num_answers=8)
    wrong = np.flatnonzero(rewards == 0.0)[:4]
    answers = np.repeat(wrong, 2)
    grpo = teaching.group_logit_step(get_method("grpo"), logits, answers, rewards[answers])
    ngrpo = teaching.group_logit_step(get_method("ngrpo"), logits, answers, rewards[answers])
    assert np.all(grpo == 0.0)
    probs = np.array(softmax_list(logits.tolist()))
    # With the virtual 1 the group's mean is 1/9 and its std 1/3, so each answer gets
    # -(1/9) / (1/3 + eps) (about -1/3) and weighs 1/8; the loss gradient is the sum over sampled
    # answers of -advantage / 8 * (e_a - pi).
    advantage = -(1 / 9) / (1 / 3 + 1e-6)
    by_hand = (advantage / 8) * (np.bincount(answers, minlength=8) - 8 * probs)
    np.testing.assert_allclose(ngrpo, by_hand, atol=1e-12)
    # The step descends the summed log-probability of the failed answers (where that freed mass goes
    # depends on which answers were sampled: it can even lower the right answer, the notebook's
    # exercise).
    after = np.array(softmax_list((logits + ngrpo).tolist()))
    assert np.log(after[answers]).sum() < np.log(probs[answers]).sum()


def test_sample_one_group_reports_consistent_changes():
    sample = teaching.sample_one_group(["grpo", "ngrpo", "psr_nsr"], 0.3, group_size=8,
                                       num_answers=10, learning_rate=0.5,
                                       rng=np.random.default_rng(4))
    again = teaching.sample_one_group(["grpo"], 0.3, group_size=8, num_answers=10,
                                      learning_rate=0.5, rng=np.random.default_rng(4))
    assert sample.answers.tolist() == again.answers.tolist()
    assert math.isclose(sample.success_rate, 0.3, rel_tol=1e-10)
    assert sample.group_rewards.tolist() == [sample.rewards[a] for a in sample.answers]
    for name, step in sample.steps.items():
        after = (sample.logits + step.logit_change).tolist()
        np.testing.assert_allclose(step.probability_change,
                                   np.array(softmax_list(after))
                                   - softmax_list(sample.logits.tolist()), atol=1e-15)
        assert math.isclose(step.entropy_change,
                            entropy_by_hand(after) - entropy_by_hand(sample.logits.tolist()),
                            abs_tol=1e-12)
        np.testing.assert_array_equal(step.advantages,
                                      get_method(name).advantages(sample.group_rewards))
    text = teaching.format_sampled_group(sample)
    assert "G = 8" in text and "entropy change (exact)" in text and "psr_nsr" in text


def test_the_first_order_entropy_change_is_exact_in_the_small_step_limit():
    errors = []
    for learning_rate in (1e-2, 1e-3, 1e-4):
        step = teaching.sample_one_group("ngrpo", 0.2, learning_rate=learning_rate,
                                         rng=np.random.default_rng(11)).steps["ngrpo"]
        errors.append(abs(step.entropy_change_predicted
                          - step.entropy_change) / abs(step.entropy_change))
    # The error of a first-order prediction shrinks in proportion to the step.
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5 and errors[2] < 1e-3


@pytest.mark.parametrize("call, message", [
    (lambda: teaching.one_prompt(1.0), "success_rate must be < 1.0, got 1.0"),
    (lambda: teaching.one_prompt(0.0), "success_rate must be > 0.0, got 0.0"),
    (lambda: teaching.sample_one_group("grpo", 0.5, group_size=1),
     "group_size must be >= 2, got 1"),
    (lambda: teaching.sample_one_group("grpo", 0.5, learning_rate=0.0),
     "learning_rate must be > 0.0, got 0.0"),
    (lambda: teaching.sample_one_group("ppo", 0.5), "needs values"),
    (lambda: teaching.group_logit_step(get_method("grpo"), [0.0, 1.0], [0, 2], [1.0, 0.0]),
     r"answers must be .* in \[0, 2\)"),
    (lambda: teaching.group_logit_step(get_method("grpo"), [0.0, 1.0], [0, 1], [1.0, 0.0, 0.0]),
     "group_rewards has shape"),
])
def test_group_helpers_name_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------------------------------
# Notebook 3: run records
# --------------------------------------------------------------------------------------------------


def hand_run_record(method, measured, predicted, mode="sampled"):
    config = DynamicsConfig(steps=len(measured) - 1, seeds=1, mode=mode)
    metrics = {"entropy_change": np.array(measured, float)[:, None],
               "entropy_change_predicted": np.array(predicted, float)[:, None],
               "accuracy": np.linspace(0.1, 0.2, len(measured))[:, None]}
    return RunRecord(method, config, metrics=metrics)


def test_entropy_prediction_error_by_hand():
    run_record = hand_run_record("grpo", [np.nan, 1.0, -2.0, 0.5], [np.nan, 1.5, -2.0, 0.0])
    assert math.isclose(teaching.entropy_prediction_error(run_record), (0.5 + 0.0 + 0.5) / 3.5)
    with pytest.raises(ValueError, match="never changed its entropy"):
        teaching.entropy_prediction_error(hand_run_record("grpo", [np.nan, 0.0], [np.nan, 0.1]))


def test_run_record_plots_draw_and_name_an_unknown_metric():
    run_records = [hand_run_record("grpo", [np.nan, 1.0, -2.0], [np.nan, 1.1, -1.9]),
                    hand_run_record("ngrpo", [np.nan, 0.5, -1.0], [np.nan, 0.4, -1.0],
                                    mode="expected")]
    figure, (left, right) = subplots(ncols=2)
    teaching.plot_metric(left, run_records, "accuracy", "accuracy")
    teaching.plot_entropy_prediction(right, run_records)
    assert [line.get_linestyle() for line in left.get_lines()] == ["-", "--"]
    with pytest.raises(ValueError, match="name must be a recorded metric .* got 'nope'"):
        teaching.plot_metric(left, run_records, "nope")
    figure.clear()
    ax = figure.add_subplot()
    teaching.plot_metric_pair(ax, run_records, "accuracy", "entropy_change")
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [np.nan, 0.5, -1.0])
    with pytest.raises(ValueError,
                       match="x_name and y_name must be recorded metrics .* got 'nope'"):
        teaching.plot_metric_pair(ax, run_records, "accuracy", "nope")
    pyplot().close(figure)


# --------------------------------------------------------------------------------------------------
# Notebook 4: clipping
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip_low, clip_high", [(0.2, 0.2), (0.2, 0.28), (0.16, 0.24)])
def test_the_vanishing_region_has_the_area_of_two_rectangles(clip_low, clip_high):
    # Cell centres of a fine grid over ratio [0.5, 1.5] x advantage [-1, 1].
    points = 2000
    ratio = 0.5 + (np.arange(points) + 0.5) / points
    advantages = -1 + 2 * (np.arange(points) + 0.5) / points
    share = teaching.vanishing_gradient(ratio[None, :], advantages[:, None], clip_low,
                                        clip_high).mean()
    # Positive half: ratio above 1 + eps_high; negative half: ratio below 1 - eps_low.
    expected = 0.5 * (1.5 - (1 + clip_high)) + 0.5 * ((1 - clip_low) - 0.5)
    assert abs(share - expected) < 2e-3


def test_the_clip_plane_draws_and_names_bad_ranges():
    figure, (ax,) = subplots()
    teaching.plot_clip_plane(ax, 0.16, 0.24, points=21)
    assert [line.get_xdata()[0] for line in ax.get_lines()[:2]] == [0.84, 1.24]
    with pytest.raises(ValueError, match=r"ratio_range must bracket 1 .* got \(1.1, 1.4\)"):
        teaching.plot_clip_plane(ax, 0.2, 0.2, ratio_range=(1.1, 1.4))
    with pytest.raises(ValueError, match="clip_low must be < 1.0, got 1.0"):
        teaching.plot_clip_plane(ax, 1.0, 0.2)
    pyplot().close(figure)


SMALL = DynamicsConfig(num_prompts=32, prompts_per_step=8, steps=6, seeds=2)


def test_clip_fractions_vanish_where_every_ratio_is_one():
    # One update per rollout: the ratio is 1 when the only update's gradient is taken.
    single = teaching.clip_fraction_sweep(["grpo", "ngrpo"], SMALL, [1])
    # Tabular SGD: a prompt's logits move only in its own minibatch, after its ratios were taken.
    tabular_sgd = teaching.clip_fraction_sweep(
        "ngrpo", DynamicsConfig(**{**SMALL.__dict__, "optimizer": "sgd", "learning_rate": 30.0}),
        [1, 2, 4, 8])
    for row in (*single.values(), tabular_sgd["ngrpo"]):
        assert np.all(row["clipfrac_low"] == 0) and np.all(row["clipfrac_high"] == 0)
    assert tabular_sgd["ngrpo"]["minibatches"].tolist() == [1, 2, 4, 8]


def test_clip_fractions_appear_with_several_updates_of_a_shared_policy():
    config = DynamicsConfig(**{**SMALL.__dict__, "policy": "shared", "learning_rate": 0.3})
    sweep = teaching.clip_fraction_sweep("ngrpo", config, [8])
    assert sweep["ngrpo"]["clipfrac_low"][0] + sweep["ngrpo"]["clipfrac_high"][0] > 0
    figure, (ax,) = subplots()
    teaching.plot_clip_fraction_sweep(ax, sweep)
    assert len(ax.get_lines()) == 2
    pyplot().close(figure)
    with pytest.raises(ValueError, match="minibatch_counts must hold at least one count"):
        teaching.clip_fraction_sweep("ngrpo", config, [])
    with pytest.raises(ValueError, match="minibatch_counts must be >= 1, got 0"):
        teaching.clip_fraction_sweep("ngrpo", config, [0])


# --------------------------------------------------------------------------------------------------
# Notebook 5: the trainer's run folders
# --------------------------------------------------------------------------------------------------


def write_run(folder, records):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))


def fake_records(final_pass):
    def evaluation(values):
        return {"eval/pass@1": values[0], "eval/pass@2": values[1], "eval/pass@4": values[2],
                "eval/pass_auc": 50.0}

    return [{"step": 0, **evaluation([0.1, 0.2, 0.3])},
            {"step": 1, "reward": 0.2, "entropy": 0.7, "share_all_wrong": 0.5},
            {"step": 2, "reward": 0.4, "entropy": 0.6, "share_all_wrong": 0.25,
             **evaluation(final_pass)}]


def test_a_comparison_folder_is_read_by_method_and_seed(tmp_path):
    write_run(tmp_path / "ngrpo-seed2", fake_records([0.5, 0.6, 0.7]))
    write_run(tmp_path / "ngrpo-seed10", fake_records([0.3, 0.4, 0.5]))
    write_run(tmp_path / "grpo-seed1", fake_records([0.2, 0.3, 0.4]))
    (tmp_path / "notes").mkdir()
    (tmp_path / "table.md").write_text("| method |\n")
    runs = teaching.read_comparison(tmp_path)
    assert list(runs) == ["grpo", "ngrpo"]
    # seed 2 before seed 10
    assert [records[-1]["eval/pass@1"] for records in runs["ngrpo"]] == [0.5, 0.3]
    assert {method: len(seeds)
            for method, seeds in teaching.read_comparison(tmp_path, seeds=2).items()} == {
        "grpo": 1, "ngrpo": 1}
    steps, rewards = teaching.run_curve(runs["grpo"][0], "reward")
    assert steps.tolist() == [1, 2] and rewards.tolist() == [0.2, 0.4]
    assert teaching.run_curve(runs["grpo"][0], "eval/pass@1")[0].tolist() == [0, 2]
    ks, values = teaching.final_pass_at_k(runs["ngrpo"][0])
    assert ks.tolist() == [1, 2, 4] and values.tolist() == [0.5, 0.6, 0.7]
    figure, (left, right) = subplots(ncols=2)
    teaching.plot_run_metric(left, runs, "entropy")
    teaching.plot_final_pass_at_k(right, runs)
    ngrpo_mean = [line for line in left.get_lines() if line.get_label() == "ngrpo (2 seeds)"][0]
    assert ngrpo_mean.get_ydata().tolist() == [0.7, 0.6]
    left.clear()
    teaching.plot_run_metric(left, runs, "reward", window=2)
    grpo_mean = [line for line in left.get_lines() if line.get_label() == "grpo (1 seed)"][0]
    assert grpo_mean.get_xdata().tolist() == [2] and np.allclose(grpo_mean.get_ydata(), [0.3])
    with pytest.raises(ValueError,
                       match="window=3 is longer than every grpo run's 2 points of 'reward'"):
        teaching.plot_run_metric(left, runs, "reward", window=3)
    final_ngrpo = [line for line in right.get_lines() if line.get_label() == "ngrpo"][0]
    np.testing.assert_allclose(final_ngrpo.get_ydata(), [0.4, 0.5, 0.6])
    pyplot().close(figure)


def test_run_folder_errors_name_the_folder_and_key(tmp_path):
    with pytest.raises(ValueError, match="holds no METHOD-seedSEED run folders"):
        teaching.read_comparison(tmp_path)
    with pytest.raises(ValueError, match="seeds must be >= 1, got 0"):
        teaching.read_comparison(tmp_path, seeds=0)
    with pytest.raises(ValueError, match="holds no metrics.jsonl"):
        teaching.read_run(tmp_path)
    with pytest.raises(ValueError,
                       match="key='kl' was never logged; the run logged entropy, "
                             ".*share_all_wrong"):
        teaching.run_curve(fake_records([0.1, 0.2, 0.3]), "kl")
    with pytest.raises(ValueError, match="holds no evaluation"):
        teaching.final_pass_at_k(fake_records([0.1, 0.2, 0.3])[1:2])


def test_the_trainer_is_found_from_inside_the_repository_only(tmp_path):
    assert teaching.repository_root(ROOT / "tests") == ROOT
    assert teaching.find_trainer(ROOT / "tests") == ROOT / "minimal" / "ngrpo_train.py"
    with pytest.raises(ValueError, match="is not inside the ngrpo repository"):
        teaching.find_trainer(tmp_path)


def test_run_trainer_returns_the_output_or_raises_with_the_error(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text("import sys\nprint('args', sys.argv[1:])\nif '--fail' in sys.argv: "
                      "sys.exit('error: bad flag')\n")
    assert teaching.run_trainer(["--steps", 2], trainer=script).strip() == "args ['--steps', '2']"
    with pytest.raises(RuntimeError,
                       match="trainer.py --fail failed with exit code 1:\n(.|\n)*error: bad flag"):
        teaching.run_trainer(["--fail"], trainer=script)


def test_run_trainer_passes_progress_on_while_the_trainer_runs(tmp_path, capsys):
    # The script waits for a file that this test writes once it has seen the first progress line:
    # the line must reach the caller while the trainer still runs, not when it ends (then the script
    # gives up after 30 s).
    gate = tmp_path / "gate"
    script = tmp_path / "trainer.py"
    script.write_text(
        "import os, sys, time\n"
        "sys.stderr.write('step 1/2\\r'); sys.stderr.flush()\n"
        "deadline = time.monotonic() + 30\n"
        f"while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        f"if not os.path.exists({str(gate)!r}):\n"
        "    sys.exit('nobody saw the progress line while it ran')\n"
        "print('done in', os.getcwd())\n")
    seen_while_running = []

    class Watch:
        def write(self, text):
            seen_while_running.append(text)
            if "step 1/2" in text:
                gate.write_text("go")
            return len(text)

        def flush(self):
            pass

    import sys

    real = sys.stdout
    sys.stdout = Watch()
    try:
        output = teaching.run_trainer([], trainer=script, cwd=tmp_path)
    finally:
        sys.stdout = real
    assert output == f"step 1/2\rdone in {tmp_path}\n" and "".join(seen_while_running) == output


def test_a_live_view_shows_its_figure_and_text_in_widget_state():
    pytest.importorskip("ipywidgets")
    from PIL import Image

    view = teaching.LiveView()
    figure, (ax,) = subplots(width=3.0, height=2.0)
    ax.plot([0, 1], [0, 1])
    view.show(figure, "a < b & c")
    assert Image.open(io.BytesIO(view.image.value)).format == "PNG"
    assert view.text.value == "<pre>a &lt; b &amp; c</pre>" and view.shown_text == "a < b & c"
    assert not pyplot().fignum_exists(figure.number), "the view closes the figure it shows"
    view.refuse("pick a method")
    assert view.image.value == b"" and "pick a method" in view.text.value


def test_one_legend_below_the_panels_covers_none_of_them():
    # Notebook 2's gain figure: inside the axes, matplotlib's "best" place was the GRPO/NGRPO
    # crossing.
    from ngrpo_sim.analysis import landscape

    figure, axes = subplots(ncols=2, width=4.25, height=3.4)
    methods = [get_method(name) for name in ("grpo", "ngrpo", "psr_nsr")]
    landscape.plot_gain(axes[0], methods, 8)
    landscape.plot_zero_gradient(axes[1], methods, 8)
    legend = teaching.figure_legend(figure)
    figure.canvas.draw()
    box = legend.get_window_extent()
    assert [text.get_text() for text in legend.get_texts()] == ["grpo", "ngrpo", "psr_nsr"]
    assert all(ax.get_legend() is None for ax in axes)
    for ax in axes:
        assert not box.overlaps(ax.get_window_extent()), "the legend covers a panel"
    pyplot().close(figure)
    empty, _ = subplots()
    with pytest.raises(ValueError, match="holds no labelled curve"):
        teaching.figure_legend(empty)
    pyplot().close(empty)


def test_the_notebooks_figures_can_be_read():
    from test_figures import readability_problems  # noqa: PLC0415 (the figures' own checks)

    from ngrpo_sim.analysis import landscape

    # Notebook 6's bars in three panels side by side: their tick labels overlapped.
    task = teaching.one_prompt_task(0.2)
    bars, axes = subplots(ncols=3, width=2.8, height=3.4)
    for ax, name in zip(axes, ("grpo", "ngrpo", "psr_nsr")):
        teaching.plot_aggregation_effects(ax, teaching.aggregation_effects(name, task))
    teaching.figure_legend(bars, ncols=3)
    # Notebook 1's ten methods: in one panel their colours could not be told apart.
    advantages = landscape.landscape_figure(
        [get_method(name) for name in landscape.DEFAULT_METHODS], 8,
        panels=[landscape.plot_advantages], width=6.4, height=3.6)
    # Notebook 3's explorer, whose axis showed the metric's name from the code.
    run_records = [RunRecord(name, DynamicsConfig(steps=2, seeds=2),
                             {"share_all_wrong": np.array([[np.nan] * 2, [0.5, 0.4], [0.3, 0.2]])})
                   for name in ("grpo", "ngrpo")]
    metric, (ax,) = subplots(width=6.4, height=3.8)
    teaching.plot_metric(ax, run_records, "share_all_wrong")
    teaching.figure_legend(metric)
    for figure in (bars, advantages, metric):
        assert readability_problems(figure) == []
        pyplot().close(figure)
    assert ax.get_ylabel() == "share of groups with every answer\nwrong"


def test_a_method_that_gives_the_group_nothing_says_so_in_its_legend():
    # p = 1e-6: the 8 answers drawn with this seed are all wrong, so GRPO's advantages are all 0
    # and it draws no bar.
    sample = teaching.sample_one_group(["grpo", "ngrpo"], 1e-6, rng=np.random.default_rng(0))
    assert sample.group_rewards.tolist() == [0.0] * 8
    figure, axes = subplots(ncols=2)
    teaching.plot_sampled_group(axes, sample)
    labels = [text.get_text() for text in teaching.figure_legend(figure).get_texts()]
    pyplot().close(figure)
    assert labels == ["grpo (all 0: no bars)", "ngrpo"]


# ------------------------------------------------------------------------------------------------
# Notebook 6: answers made of tokens
# ------------------------------------------------------------------------------------------------


def test_the_answer_table_lists_every_answer_once():
    task = teaching.one_prompt_task(0.3)
    rows = teaching.answer_table(task, task.offsets[0])
    statistics = task.answer_statistics(task.offsets[None])
    # V = 3, L = 4: one empty answer, 3 + 9 + 27 answers closed by the end token, 81 truncated.
    assert len(rows) == 1 + 3 + 9 + 27 + 81 and len({text for text, *_ in rows}) == len(rows)
    assert sum(p for _, p, _, _ in rows) == pytest.approx(1.0, abs=1e-14)
    assert sum(p for _, p, reward, _ in rows if reward == 1) == pytest.approx(0.3, rel=1e-12)
    assert sum(p * length for _, p, _, length in rows) == pytest.approx(statistics.length.item(),
                                                                          rel=1e-12)
    assert [p for _, p, _, _ in rows] == sorted((p for _, p, _, _ in rows), reverse=True)
    assert all(text.endswith("<end>") or length == 4 for text, _, _, length in rows)


def test_the_answer_table_names_bad_input():
    task = teaching.one_prompt_task(0.3)
    with pytest.raises(ValueError, match="logits must be one prompt's prefix logits of shape"):
        teaching.answer_table(task, task.offsets)
    big = teaching.one_prompt_task(0.3, vocab_size=4, max_length=7)
    with pytest.raises(ValueError, match="answers is too large to list"):
        teaching.answer_table(big, big.offsets[0])


def test_aggregations_agree_when_every_answer_has_the_same_length():
    from ngrpo_sim.simulators.sequence_config import make_sequence_task
    task = make_sequence_task(1, 3, 3, end_token=False, profile="0.2")
    effects = teaching.aggregation_effects("ngrpo", task)
    for name in ("seq-mean-token-mean", "seq-mean-token-sum-norm"):
        for quantity, change in effects[name].items():
            if quantity != "length of correct answers" and quantity != "length of wrong answers":
                assert change == pytest.approx(effects["token-mean"][quantity], rel=1e-9)
    # Without an end token every answer has L = 3 tokens: no step changes a length.
    assert all(abs(change["length of wrong answers"]) < 1e-12 for change in effects.values())


def test_seq_mean_token_mean_lengthens_wrong_answers_most_under_psr_nsr():
    task = teaching.one_prompt_task(0.2)
    effects = teaching.aggregation_effects("psr_nsr", task)
    wrong = {name: change["length of wrong answers"] for name, change in effects.items()}
    assert wrong["seq-mean-token-mean"] > wrong["token-mean"] > 0
    assert wrong["seq-mean-token-mean"] > wrong["seq-mean-token-sum-norm"] > 0


def test_an_all_wrong_group_moves_only_ngrpo_and_reaches_unvisited_prefixes_only_when_shared():
    still = teaching.all_wrong_step("grpo", "tabular")
    np.testing.assert_array_equal(still["advantages"], 0.0)
    np.testing.assert_allclose(still["root_after"], still["root_before"], rtol=1e-15)
    for policy in ("tabular", "shared"):
        moved = teaching.all_wrong_step("ngrpo", policy)
        # G = 4 answers of reward 0 and a virtual 1: mean 1/5, Bessel std sqrt(1/5).
        np.testing.assert_allclose(moved["advantages"], -(1 / 5) / (math.sqrt(1 / 5) + 1e-6),
                                   rtol=1e-12)
        sampled = moved["sampled"]
        change = moved["root_after"] - moved["root_before"]
        assert change[sampled] < 0
        unvisited = moved["unvisited_after"] - moved["unvisited_before"]
        if policy == "tabular":  # every other token gains, and no unvisited prefix moves
            assert np.all(np.delete(change, sampled) > 0)
            np.testing.assert_array_equal(unvisited, 0.0)
        else:  # the end token, sampled after "a", loses probability after "b" too
            assert unvisited[-1] < -1e-3
    figure, axes = subplots(ncols=2)
    teaching.plot_all_wrong_step(axes, moved)
    assert axes[0].get_title().startswith("empty prefix")
    pyplot().close(figure)

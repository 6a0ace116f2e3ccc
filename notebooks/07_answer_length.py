# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. Answers of realistic length: growth, truncation and the cap
#
# **What you will learn.** In RL on reasoning tasks, answers run to hundreds or thousands of
# tokens, they grow during training, and a length cap turns the longest ones into wrong answers
# (a verifier scores a truncated answer 0). You will see how long correct and wrong answers are
# at the start, how their lengths and the share of truncated answers move in training under each
# method and loss aggregation, where NGRPO's penalty on all-wrong groups lands when those groups
# are truncated answers, and what decides whether training collapses at the cap.
#
# **For whom.** You have seen notebook 6 (token-level losses and lengths). About 25 minutes.

# %%
# %matplotlib inline
import dataclasses

import ipywidgets as widgets
import numpy as np
from IPython.display import display

from ngrpo_sim import get_method
from ngrpo_sim.base.plotting import pyplot, subplots
from ngrpo_sim.experiments.runs import format_summary, run_methods
from ngrpo_sim.reports.length_report import cap_bound, plot_length_distribution
from ngrpo_sim.simulators.long_answer_config import LongAnswerConfig
from ngrpo_sim.simulators.long_answers import METRICS
from ngrpo_sim.simulators.training_loop import TrainState, apply_rollout, draw_rollout
from ngrpo_sim import teaching

plt = pyplot()

# %% [markdown]
# ## The task
#
# Each prompt needs some *work* before its answer is likely correct. An answer is written from
# three tokens: *text* (no progress), *step* (one step of work done) and *end* (stop and answer).
# When it ends after w steps, the verifier finds it correct with probability sigmoid(w − r), where
# r is the prompt's required work. An answer that reaches L tokens without ending is truncated and
# earns 0. The policy sees only its position and the work done so far, so everything about its
# answer distribution is computed exactly, without enumerating the 3^L possible answers.
#
# **Predict before you run.** The starting policy wraps up after a habitual amount of work. Are
# its wrong answers shorter or longer than its correct ones?

# %%
config = LongAnswerConfig(max_length=teaching.sized(256, 64), num_prompts=teaching.sized(64, 16),
                          prompts_per_step=teaching.sized(16, 8), seeds=teaching.sized(4, 2),
                          steps=teaching.sized(100, 8), learning_rate=0.05)
task = config.build_task()
start = task.measure(task.initial_params(1))
figure, (ax,) = subplots(width=6.4, height=3.4)
plot_length_distribution(ax, start)
ax.set_title("The starting policy: lengths of correct and of wrong answers", fontsize=9)
ax.legend(fontsize=8)
plt.show()
print(f"accuracy {start.success.mean():.3f}, mean length {start.length.mean():.1f} of "
      f"{config.max_length} tokens, truncated {start.truncation.mean():.1%}")

# %% [markdown]
# Wrong answers are mostly the short ones: the policy stopped before doing the work its prompt
# needed. A few are truncated: they went on to the cap. Hard prompts need more work, so the way to
# solve them is to write longer answers, and the cap is where that stops paying.
#
# ## Training, and the length distributions as they move
#
# Each training step samples groups of 8 answers, computes each method's advantages, and takes
# four clipped minibatch updates (`draw_rollout` and `apply_rollout` of the shared loop). Here the
# loop runs by hand so that we can keep the exact length distributions every few steps.

# %%
RUNS = {"grpo, token-mean": ("grpo", None), "ngrpo, token-mean": ("ngrpo", None),
        "grpo, seq-mean-token-mean": ("grpo", "seq-mean-token-mean"),
        "ngrpo, seq-mean-token-mean": ("ngrpo", "seq-mean-token-mean"),
        "dr_grpo (seq-mean-token-sum-norm)": ("dr_grpo", None)}
EVERY = teaching.sized(10, 2)


def train_with_snapshots(method_name, aggregation, setting):
    """One seed's exact statistics every EVERY steps of training."""
    run_config = dataclasses.replace(setting, seeds=1, loss_aggregation=aggregation)
    run_task, method = run_config.build_task(), get_method(method_name)
    state = TrainState.start(run_task, run_config)
    reference = state.params.copy()
    rng = np.random.default_rng(0)
    snapshots = {0: run_task.measure(state.params)}
    for step in range(1, run_config.steps + 1):
        rollout = draw_rollout(run_task, method, state.params, run_config, rng)
        apply_rollout(run_task, method, run_config, state, rollout, reference)
        if step % EVERY == 0:
            snapshots[step] = run_task.measure(state.params)
    return snapshots


snapshots = {name: train_with_snapshots(method, aggregation, config)
             for name, (method, aggregation) in RUNS.items()}

# %%
run_picker = widgets.Dropdown(options=list(RUNS), value="ngrpo, token-mean", description="run",
                              style={"description_width": "initial"})
step_slider = widgets.IntSlider(value=0, min=0, max=config.steps, step=EVERY,
                                description="training step", continuous_update=False,
                                style={"description_width": "initial"})
distribution_view = teaching.LiveView()


def show_distribution(change=None):
    statistics = snapshots[run_picker.value][step_slider.value]
    figure, (ax,) = distribution_view.subplots(width=6.4, height=3.4)
    plot_length_distribution(ax, statistics)
    ax.set_title(f"{run_picker.value}, step {step_slider.value} (one seed, exact)", fontsize=9)
    teaching.figure_legend(figure, ncols=3)
    correct = statistics.correct_length.sum() / statistics.success.sum()
    wrong = ((statistics.length - statistics.correct_length).sum()
             / (1 - statistics.success).sum())
    distribution_view.show(figure, f"step {step_slider.value}: accuracy "
                           f"{statistics.success.mean():.3f}, mean length of correct answers "
                           f"{correct:.1f}, of wrong answers {wrong:.1f}, truncated "
                           f"{statistics.truncation.mean():.1%}")


run_picker.observe(show_distribution, "value")
step_slider.observe(show_distribution, "value")
display(widgets.HBox([run_picker, step_slider]), distribution_view.widget)
show_distribution()

# %% [markdown]
# Move the slider. Correct answers get longer as the policy learns to do the work hard prompts
# need; the truncated share first grows, then falls as the policy learns to stop before the cap.
# Compare the aggregations: under seq-mean-token-mean every answer weighs the same whatever its
# length, so a long wrong answer spreads its penalty over more tokens (notebook 6): its wrong
# answers stay longer.
#
# ## Many seeds, every method: lengths and truncation with intervals
#
# The report trains each run with several seeds and records every metric exactly at every step.
# Below, the bands are 95% intervals over seeds.

# %% tags=["readme-figure"]
methods = [get_method(name) for name in ("grpo", "ngrpo", "dapo", "dr_grpo", "psr_nsr")]
runs = run_methods(methods, [config])
figure, axes = subplots(ncols=3, width=2.8, height=3.0)
for ax, (name, ylabel) in zip(axes, (("length", "mean answer length (tokens)"),
                                     ("truncation", "share of truncated answers"),
                                     ("accuracy", "mean success rate"))):
    teaching.plot_metric(ax, runs, name, ylabel)
teaching.figure_legend(figure, ncols=5)
plt.show()
print(format_summary(runs, metrics=("accuracy", "length_correct", "length_wrong", "truncation",
                                    "entropy")))

# %%
metric_picker = widgets.Dropdown(options=METRICS, value="wrong_truncated", description="metric")
metric_view = teaching.LiveView()


def show_metric(change=None):
    figure, (ax,) = metric_view.subplots(width=6.4, height=3.8)
    teaching.plot_metric(ax, runs, metric_picker.value)
    teaching.figure_legend(figure, ncols=3)
    lines = [f"{metric_picker.value} at the last step (mean over seeds):"]
    lines += [f"  {run.method:>8}: {np.mean(run.metrics[metric_picker.value][-1]):.4f}"
              for run in runs]
    metric_view.show(figure, "\n".join(lines))


metric_picker.observe(show_metric, "value")
display(metric_picker, metric_view.widget)
show_metric()

# %% [markdown]
# Worth a look: `wrong_truncated` (how many wrong answers are truncated ones: those are what
# NGRPO's penalty on all-wrong groups pushes down once a prompt's answers all run to the cap),
# `length_correct_q90` and `length_wrong_q90` (the long tails), `entropy` (the token entropy, as
# verl and TRL log it) and `end_probability`.
#
# ## When the cap binds
#
# The policy above has two ways to stay under the cap: it can read its position, and it can spend
# fewer tokens per step of work. Take both away, and give the task twice the length it needs
# under the same cap (`cap_bound`): now the only way to avoid truncation is to work less.

# %%
bound = cap_bound(config)
bound_configs = [bound, dataclasses.replace(bound, loss_aggregation="seq-mean-token-mean")]
bound_runs = run_methods([get_method(name) for name in ("grpo", "ngrpo")], bound_configs)
figure, axes = subplots(ncols=2, width=4.2, height=3.2)
for ax, name in zip(axes, ("truncation", "accuracy")):
    teaching.plot_metric(ax, bound_runs, name)
teaching.figure_legend(figure, ncols=2)
plt.show()
print(format_summary(bound_runs, metrics=("accuracy", "truncation", "length", "max_drawdown")))

# %% [markdown]
# Here answers grow into the cap, a large share stays truncated, and accuracy can fall back from
# its best while truncation rises: the collapse that the report's long-answer section measures
# (`collapse_drop`). The report and docs/lengths.md answer, with intervals over seeds, which
# methods and aggregations do this, what NGRPO's penalty does to it, and whether DAPO's overlong
# filtering or soft punishment prevents it.
#
# ## Exercises
#
# 1. **Verbosity.** Rerun the first training cell with `step_plasticity=0.0` in `config`: the
#    policy can no longer spend fewer tokens per step. Do correct answers grow more?
# 2. **A tighter cap.** Set `natural_length=2 * config.max_length`. How much more is truncated at
#    the start, and does training bring it down?
# 3. **DAPO's remedies.** In the last cell, add `overlong_filter=True` to `bound`, then try
#    `overlong_buffer=bound.max_length // 5` with the `dapo` preset instead. Which one lowers
#    truncation, and what does it cost in accuracy?

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
# # 6. Why token-level details matter
#
# **What you will learn.** A language model's answer is a sequence of tokens, not one action. That
# adds three things a one-token bandit cannot show: answers have *lengths*, the loss is *aggregated*
# over tokens in one of three ways, and a penalty on a whole answer moves probability at *every
# position*, towards tokens that nobody sampled. You will see when the methods still move in the
# direction of the success rate (and when the aggregation adds a pull on the lengths), where
# NGRPO's penalty on all-wrong groups goes, and what that does in training.
#
# **For whom.** You have seen notebook 2 (the gain c(p)) or know that GRPO-style methods give one
# advantage per answer. About 25 minutes.

# %%
# %matplotlib inline
import dataclasses

import ipywidgets as widgets
import numpy as np
from IPython.display import display

from ngrpo_sim import get_method, teaching
from ngrpo_sim.base.plotting import pyplot, subplots
from ngrpo_sim.experiments.runs import format_summary, run_methods
from ngrpo_sim.simulators.sequence_config import SequenceConfig
from ngrpo_sim.simulators.sequences import METRICS

plt = pyplot()

# %% [markdown]
# ## The task
#
# Each prompt is answered with at most L tokens from V content tokens (written a, b, c, ...) and an
# end token. The answer is correct when its last token before the end is the prompt's *key*; an
# answer that runs to L tokens without ending is *truncated* (and wrong). The policy chooses the
# next token at every prefix: with V = 3 and L = 4 that is 1 + 3 + 9 + 27 = 40 prefixes, each with
# its own softmax. Here is one prompt, solved 20% of the time, with all of its answers listed.

# %%
task = teaching.one_prompt_task(0.2)
rows = teaching.answer_table(task, task.offsets[0])
print(f"{len(rows)} possible answers; the key is "
      f"{teaching.TOKEN_NAMES[int(np.argmax(task.rewards[0]))]}. The ten most likely:")
print(f"{'answer':<14}{'probability':>12}{'reward':>8}{'tokens':>8}")
for text, probability, reward, length in rows[:10]:
    print(f"{text:<14}{probability:>12.4f}{reward:>8.0f}{length:>8}")
statistics = task.answer_statistics(task.offsets[None])
print(f"\nsuccess {statistics.success.item():.3f}, mean length {statistics.length.item():.2f} "
      f"tokens, truncated {statistics.truncation.item():.1%}")

# %% [markdown]
# ## Direction and length: what each loss aggregation does in expectation
#
# A group's loss gives every token of answer i the weight w_it and the answer's advantage A_i.
# The three aggregations of verl:
#
# * **token-mean** (NGRPO, DAPO): every token of the minibatch weighs the same;
# * **seq-mean-token-mean** (the original GRPO): average within each answer, then over answers, so
#   every answer weighs the same whatever its length;
# * **seq-mean-token-sum-norm** (Dr. GRPO): token sums divided by a constant L.
#
# `ngrpo_sim.analysis.sequence_gain` proves that with a constant weight per answer (the last one)
# the expected update is c(p) ∇p, the gradient of the success rate, as for one-token answers. With
# seq-mean-token-mean it is c'(p) ∇p plus two *length terms*: it shortens correct answers and
# lengthens wrong ones (a long wrong answer spreads its penalty over more tokens). Token-mean
# behaves like a constant weight once the minibatch is large.
#
# **Predict before you run.** Which method's wrong answers does seq-mean-token-mean lengthen most:
# GRPO's, NGRPO's or PSR-NSR's? (Hint: the length term is beta (1 - p) ∇h_W, where beta is the
# expected advantage of a wrong answer.)
#
# The bars show what one expected step of the same length does under each aggregation.

# %% tags=["readme-figure"]
figure, axes = subplots(ncols=3, width=2.8, height=3.4)
for ax, name in zip(axes, ("grpo", "ngrpo", "psr_nsr")):
    teaching.plot_aggregation_effects(ax, teaching.aggregation_effects(name, task))
    ax.set_title(f"{name}: one expected step", fontsize=9)
teaching.figure_legend(figure, ncols=3)
plt.show()

# %% [markdown]
# Now vary the method and the starting lengths (a lower end probability means longer answers).

# %%
method_picker = widgets.Dropdown(options=["grpo", "ngrpo", "psr_nsr", "ppo"], value="ngrpo",
                                 description="method")
end_slider = widgets.FloatSlider(value=0.35, min=0.1, max=0.6, step=0.05,
                                 description="end probability", continuous_update=False,
                                 style={"description_width": "initial"})
aggregation_view = teaching.LiveView()


def show_aggregations(change=None):
    prompt = teaching.one_prompt_task(0.2, end_probability=end_slider.value)
    effects = teaching.aggregation_effects(method_picker.value, prompt)
    figure, (ax,) = aggregation_view.subplots(width=6.4, height=3.6)
    teaching.plot_aggregation_effects(ax, effects)
    ax.set_title(f"{method_picker.value}: one expected step of each aggregation")
    teaching.figure_legend(figure, ncols=3)
    wrong = {name: change["length of wrong answers"] for name, change in effects.items()}
    aggregation_view.show(figure, f"{method_picker.value}: length of wrong answers changes by "
                          + ", ".join(f"{value:+.4f} ({name})" for name, value in wrong.items()))


method_picker.observe(show_aggregations, "value")
end_slider.observe(show_aggregations, "value")
display(widgets.HBox([method_picker, end_slider]), aggregation_view.widget)
show_aggregations()

# %% [markdown]
# All three aggregations raise the success rate by almost the same amount: the direction is nearly
# the same. What differs is the pull on lengths. seq-mean-token-mean lengthens wrong answers more
# than the other two, and most for methods whose wrong answers get large negative advantages
# (PSR-NSR's −1, NGRPO's extra penalty on all-wrong groups).
#
# ## Where an all-wrong group's penalty goes
#
# GRPO gives an all-wrong group nothing. NGRPO gives each of its answers a negative advantage, and
# the loss pushes every token of every answer down. Here all four answers of the group are
# "a <end>", wrong. Where does the probability go?

# %%
policy_picker = widgets.Dropdown(options=["tabular", "shared"], value="tabular",
                                 description="policy")
leak_view = teaching.LiveView()


def show_leak(change=None):
    figure, axes = leak_view.subplots(ncols=2, nrows=2, width=4.25, height=3.0)
    for row, name in enumerate(("grpo", "ngrpo")):
        result = teaching.all_wrong_step(name, policy_picker.value)
        teaching.plot_all_wrong_step(axes[2 * row:2 * row + 2], result)
        axes[2 * row].set_ylabel(f"{name}: next-token probability", fontsize=8)
    teaching.figure_legend(figure)
    leak_view.show(figure, f"{policy_picker.value} policy, ngrpo advantages of the group: "
                   + ", ".join(f"{a:+.3f}" for a in result["advantages"]))


policy_picker.observe(show_leak, "value")
display(policy_picker, leak_view.widget)
show_leak()

# %% [markdown]
# With the **tabular** policy only the prefixes the group visited move: at the empty prefix token a
# loses, and b, c and the end token gain, each by an amount that grows with its probability.
# Nothing pushes those gains back unless another group samples them. With the **shared** policy
# (one parameter vector for all prefixes, as in a network) the push reaches prefixes nobody
# visited: the group sampled the end token after a, so the end token loses probability after b as
# well. That is the mechanism behind the trainer's collapse study
# (`docs/minimal/collapse_study.py`), where NGRPO's penalty leaked into a token that nothing pushed
# back down.
#
# ## Training: lengths, truncation and the leak over time
#
# The simulator trains every method on many prompts, exactly as the release does (groups of 8, group
# filters with refill, clipped token-level loss, 4 minibatch updates per rollout), and records per
# step the token entropy (as verl and TRL log it), the lengths of correct and wrong answers, the
# share of truncated answers, the probability of the end token and the probability the step moved
# into tokens that no answer of the group chose (`unsampled_mass_gain`).

# %%
config = SequenceConfig(policy="tabular", learning_rate=0.05, num_prompts=teaching.sized(64, 16),
                        prompts_per_step=teaching.sized(16, 8), steps=teaching.sized(80, 12),
                        seeds=teaching.sized(6, 2))
runs = run_methods([get_method(name) for name in ("grpo", "ngrpo")],
                   [config, dataclasses.replace(config, loss_aggregation="seq-mean-token-mean")])
print(format_summary(runs, metrics=("accuracy", "entropy", "length_wrong", "truncation")))

# %%
metric_picker = widgets.Dropdown(options=METRICS, value="unsampled_mass_gain",
                                 description="metric")
metric_view = teaching.LiveView()


def show_metric(change=None):
    figure, (ax,) = metric_view.subplots(width=6.4, height=3.8)
    teaching.plot_metric(ax, runs, metric_picker.value)
    teaching.figure_legend(figure, ncols=2)
    lines = [f"{metric_picker.value} at the last step (mean over seeds):"]
    for run_record in runs:
        aggregation = run_record.config.loss_aggregation or "token-mean"
        lines.append(f"  {run_record.method:>6} {aggregation:>20}: "
                     f"{np.mean(run_record.metrics[metric_picker.value][-1]):.4f}")
    metric_view.show(figure, "\n".join(lines))


metric_picker.observe(show_metric, "value")
display(metric_picker, metric_view.widget)
show_metric()

# %% [markdown]
# Things worth a look: `unsampled_mass_gain` (NGRPO's leak is several times GRPO's on the tabular
# policy), `length_wrong` (seq-mean-token-mean, dotted, keeps wrong answers longer), `truncation`
# and `end_probability`, and `entropy` against `sequence_entropy` (per token against per answer:
# a policy can lower one and not the other by changing lengths).
#
# The README's "Answers made of tokens" section and the token-level part of `ngrpo-sim report`
# retest the paper's claims this way, with intervals over seeds, for both policies.
#
# ## Exercises
#
# 1. **The sign of the length term.** In the first widget, pick PPO: its advantage r − V with
#    V = 0 gives beta = 0. Which length term remains, and which way does it push?
# 2. **No lengths, no bias.** Build a task without an end token
#    (`teaching.one_prompt_task` calls `make_sequence_task`; pass `end_token=False` to it) and check
#    that the three aggregations agree.
# 3. **The leak and the learning rate.** Rerun the training cell with `learning_rate=0.2`. Does
#    NGRPO's `unsampled_mass_gain` grow in proportion?
# 4. **Shared parameters.** Switch the training cell to `policy="shared"` (lr 0.01). Does the leak
#    survive when pushes on sampled correct tokens generalise to every prompt?

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
# # 3. Entropy dynamics
#
# **What you will learn.** How to test a claim about training dynamics ("NGRPO keeps entropy higher
# than GRPO") on a simulator instead of believing it; why entropy must be compared at equal
# accuracy, not at equal steps; how well the first-order formula −Cov(log π, Δz) predicts each
# step's entropy change; and what sampling noise does, by comparing sampled runs with their exact
# expectation.
#
# **For whom.** You have seen notebooks 1 and 2, or know that GRPO-style methods give per-answer
# advantages. The simulator is a bandit stand-in for an LLM: P prompts with K = 16 one-token answers
# each (one correct), a shared log-linear policy (one parameter vector for all prompts, so updates
# generalise and interfere, as in a network), and a "base model" in which half the prompts are
# almost never solved. It trains every method exactly as the release does (groups of 8, group
# filters with refill, clipped loss, 4 minibatch updates per rollout, Adam), for many seeds at once.
# About 20 minutes.

# %%
# %matplotlib inline
import dataclasses

import ipywidgets as widgets
import numpy as np
from IPython.display import clear_output, display

from ngrpo_sim import get_method, teaching
from ngrpo_sim.base.plotting import pyplot, subplots
from ngrpo_sim.experiments.runs import format_summary, run_methods, with_mode
from ngrpo_sim.reports.claims import HEADLINE, LEARNING_RATES, entropy_at_matched_accuracy
from ngrpo_sim.simulators.dynamics import METRICS

plt = pyplot()

# %% [markdown]
# ## The experiment
#
# **Predict before you run.** The paper reports that NGRPO avoids the entropy collapse of GRPO.
# After training, which of GRPO, NGRPO and PSR-NSR will have the highest entropy in the simulator?
# Which the highest accuracy?
#
# The configuration is the README's headline run, with 8 seeds instead of 16. In fast mode
# (`NGRPO_FAST=1`, what the test suite uses) it shrinks to a few prompts, steps and seeds; the
# shapes of the curves survive, the intervals do not.

# %%
config = dataclasses.replace(HEADLINE, num_prompts=teaching.sized(256, 64),
                             prompts_per_step=teaching.sized(64, 16),
                             steps=teaching.sized(200, 25), seeds=teaching.sized(8, 2))
methods = [get_method(name) for name in ("grpo", "ngrpo", "psr_nsr")]
print(config)
run_records = run_methods(methods, [config, with_mode(config, "expected")])
sampled = [t for t in run_records if t.config.mode == "sampled"]
print(format_summary(run_records, metrics=("accuracy", "accuracy_hard", "entropy", "pass_auc")))

# %% [markdown]
# Solid lines are sampled runs (mean over seeds, with the 95% interval of the mean as a band);
# dashed lines are the *expected* runs, in which each step is replaced by its exact expectation c(p)
# π ⊙ (r − p) from notebook 2: no sampling noise, no clipping.

# %%
figure, axes = subplots(ncols=2, nrows=2, width=4.25, height=3.0)
for ax, (name, title) in zip(axes, [("accuracy", "mean success rate (pass@1)"),
                                    ("entropy", "mean entropy (nats)"),
                                    ("pass_auc", "pass@k AUC (k = 1..256)"),
                                    ("accuracy_hard", "success on prompts starting < 5%")]):
    teaching.plot_metric(ax, run_records, name, title)
teaching.figure_legend(figure, ncols=3)
plt.show()

# %% [markdown]
# NGRPO ends with *lower* entropy than GRPO here, not higher, and with higher accuracy. Is that a
# contradiction of the paper, or just a faster run? A method that learns faster sharpens its policy
# sooner. The fair comparison is at equal accuracy: plot entropy against accuracy instead of against
# steps.

# %% tags=["readme-figure"]
figure, (ax,) = subplots(width=5.6, height=4.0)
teaching.plot_metric_pair(ax, run_records, "accuracy", "entropy", "mean success rate (pass@1)",
                          "mean entropy (nats)")
ax.set_title("Entropy at equal accuracy")
teaching.figure_legend(figure, ncols=3)
plt.show()
start, end = sampled[0].metrics["accuracy"][0].mean(), min(t.metrics["accuracy"][-1].mean()
                                                           for t in sampled)
levels = np.linspace(start, end, 5)[1:]
print("entropy when the seed-mean accuracy first reaches ...")
print(f"{'method':>10}" + "".join(f"{level:>9.3f}" for level in levels))
for run_record in sampled:
    print(f"{run_record.method:>10}"
          + "".join(f"{entropy_at_matched_accuracy(run_record, level):>9.3f}" for level in levels))

# %% [markdown]
# At equal accuracy the three curves lie on top of each other (within about 0.01 nats in the
# full-size run): NGRPO's lower final entropy is the price of its higher accuracy, not a different
# path. Over the README's nine settings NGRPO is never *higher* than GRPO at equal accuracy. So the
# simulator does not reproduce "NGRPO keeps entropy higher". It does not refute the paper either: a
# bandit with one-token answers is not a 7B model writing 3000 tokens. What it shows is the
# mechanism (notebook 2): NGRPO's penalties spread probability over the answers the policy already
# likes, not over the rare correct answer.
#
# ## Explore any metric
#
# Every run records each of these per step and seed: accuracy and entropy by difficulty, pass@k AUC,
# abandoned, newly solved and regressed prompts, group shares (all wrong, all correct, mixed), clip
# fractions by sign, approx_kl and the first-order entropy prediction.

# %%
metric_picker = widgets.Dropdown(options=METRICS, value="entropy_hard", description="metric")
metric_view = teaching.LiveView()


def show_metric(change=None):
    figure, (ax,) = metric_view.subplots(width=6.0, height=3.8)
    teaching.plot_metric(ax, run_records, metric_picker.value)
    teaching.figure_legend(figure, ncols=3)
    lines = [f"{metric_picker.value} at the last step (mean over seeds):"]
    lines += [f"  {run_record.method:>8} {run_record.config.mode:>8}: "
              f"{np.mean(run_record.metrics[metric_picker.value][-1]):.4f}"
              for run_record in run_records]
    metric_view.show(figure, "\n".join(lines))


metric_picker.observe(show_metric, "value")
display(metric_picker, metric_view.widget)
show_metric()

# %% [markdown]
# Things worth a look: `share_all_wrong` (how much of each batch GRPO cannot learn from, falling as
# prompts get solved), `abandoned` and `regressed` (prompts left behind or made worse: NGRPO's price
# on the shared policy), `entropy_hard` (entropy on the hard prompts, where exploration matters
# most) and `clipfrac_low` (notebook 4).
#
# ## Does the first-order formula predict the entropy?
#
# For a softmax, a small change Δz of the logits changes the entropy by **−Cov_{a∼π}(log π(a),
# Δz(a))** (Cui et al. 2025): raising answers that are already likely lowers the entropy, raising
# unlikely ones raises it. The simulator records this prediction beside the measured change at every
# step. Each dot is one step of one seed.

# %%
figure, (ax,) = subplots(width=5.6, height=4.2)
teaching.plot_entropy_prediction(ax, run_records)
teaching.figure_legend(figure, ncols=2)
plt.show()

# %% [markdown]
# The dots lie on the diagonal: at this learning rate the per-step entropy change is first order, so
# the covariance tells you *why* entropy falls. Every step that raises the correct answer on a
# prompt where the policy already likes it lowers the entropy; steps on hard prompts raise it.
#
# ## Run your own
#
# **Predict:** if you multiply the learning rate by 10, does the prediction error grow, and by about
# how much? Then try the tabular policy (free logits per prompt, no interference), SGD instead of
# Adam, and one minibatch instead of four. The defaults below are the tabular policy with SGD, where
# the README finds the largest differences between methods.
#
# A learning rate only means something for its optimiser and policy (SGD's 32 would blow Adam up),
# so choosing either sets it to the README's value for the pair. The runs stay within a tenth to ten
# times that value: beyond, the first-order prediction errs by more than 100% and the curves show
# the step size, not the method.

# %%
LR_RANGE = (0.1, 10.0)
"""The learning rates "run" accepts, as multiples of the README's value for the policy and
optimiser."""
policy_picker = widgets.Dropdown(options=["tabular", "shared"], value="tabular",
                                 description="policy")
optimizer_picker = widgets.Dropdown(options=[("SGD", "sgd"), ("Adam", "adam")], value="sgd",
                                    description="optimizer")
learning_rate_box = widgets.FloatText(value=LEARNING_RATES["tabular", "sgd"],
                                      description="learning rate",
                           style={"description_width": "initial"})
minibatch_picker = widgets.Dropdown(options=[1, 2, 4, 8], value=4, description="minibatches")
method_picker = widgets.SelectMultiple(options=["grpo", "ngrpo", "dapo", "psr_nsr", "ppo"],
                                       value=("grpo", "ngrpo"), description="methods")
run_button = widgets.Button(description="run", button_style="primary",
                            layout=widgets.Layout(width="auto"))
own_progress = widgets.Output()
own_view = teaching.LiveView()


def reset_learning_rate(change=None):
    learning_rate_box.value = LEARNING_RATES[policy_picker.value, optimizer_picker.value]


def run_own(*_):
    preset = LEARNING_RATES[policy_picker.value, optimizer_picker.value]
    low, high = LR_RANGE[0] * preset, LR_RANGE[1] * preset
    if not low <= learning_rate_box.value <= high:
        own_view.refuse(f"learning rate {learning_rate_box.value:g} is "
                        f"{learning_rate_box.value / preset:.3g} times the README's {preset:g} for "
                        f"the {policy_picker.value} policy with "
                        f"{optimizer_picker.label}. Runs here take {low:g} to {high:g}: beyond, "
                        f"the first-order entropy prediction errs by more than 100% and the "
                        f"curves show the step size, not the method.")
        return
    if not method_picker.value:
        own_view.refuse("Pick at least one method (hold Ctrl or Shift to pick several).")
        return
    own = dataclasses.replace(config, policy=policy_picker.value, optimizer=optimizer_picker.value,
                              learning_rate=learning_rate_box.value,
                              minibatches=minibatch_picker.value)
    run_button.disabled, run_button.description = True, "running..."
    try:
        with own_progress:
            clear_output(wait=True)
            runs = run_methods([get_method(name) for name in method_picker.value],
                               [own, with_mode(own, "expected")])
            clear_output()
    finally:
        run_button.disabled, run_button.description = False, "run"
    figure, axes = own_view.subplots(ncols=2, nrows=2, width=4.25, height=3.0)
    teaching.plot_metric(axes[0], runs, "accuracy", "mean success rate")
    teaching.plot_metric(axes[1], runs, "entropy", "mean entropy (nats)")
    teaching.plot_metric(axes[2], runs, "accuracy_hard", "success on prompts starting < 5%")
    teaching.plot_entropy_prediction(axes[3], runs)
    teaching.figure_legend(figure, ncols=3)
    own_view.show(figure, format_summary(runs, metrics=("accuracy", "accuracy_hard", "entropy",
                                                        "abandoned", "regressed")))


for picker in (policy_picker, optimizer_picker):
    picker.observe(reset_learning_rate, "value")
run_button.on_click(run_own)
settings = widgets.VBox([policy_picker, optimizer_picker, learning_rate_box, minibatch_picker])
display(widgets.HBox([settings, method_picker, run_button]), own_progress, own_view.widget)
run_own()

# %% [markdown]
# ## Sampled against expected
#
# Compare the solid and dashed lines of the first figure. The expected runs follow the mean gradient
# without noise, and they sharpen faster: higher pass@1, lower entropy, lower pass@256. Sampling
# noise keeps some diversity. Only for SGD on the tabular policy does one expected step equal the
# mean of sampled steps exactly (the tests check this); Adam rescales each step by its own history,
# and the shared policy couples prompts.
#
# ## Exercises
#
# 1. **Equal accuracy, other settings.** Repeat the entropy-against-accuracy comparison for the
#    tabular policy with
#    Adam and one minibatch (`dataclasses.replace(config, policy="tabular", minibatches=1)`). Is
#    NGRPO ever higher?
# 2. **Where the prediction fails.** With "Run your own", raise the learning rate until the
#    prediction error passes
#    10%. How does the error scale with the learning rate? Why must it grow at least linearly?
# 3. **An entropy bonus.** `DynamicsConfig(entropy_coef=...)` overrides the presets' 0.001. Which
#    coefficient keeps
#    GRPO's entropy at its starting value, and what does it cost in accuracy?
# 4. **Hard prompts.** Plot `accuracy_hard` and `abandoned` for GRPO and NGRPO on the tabular policy
#    with Adam.
#    The README reports that NGRPO abandons far fewer prompts there. Which mechanism of notebook 2
#    explains it?
# 5. **A claim of your own.** Pick a claim from the README's "Training dynamics" section, predict
#    the figure that
#    would test it, then make it.

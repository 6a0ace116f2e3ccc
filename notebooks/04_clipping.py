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
# # 4. Clipping
#
# **What you will learn.** Where PPO's clipped objective removes the gradient of a token, how the
# symmetric (GRPO: 0.2 / 0.2), clip-higher (DAPO: 0.2 / 0.28) and NGRPO (0.16 / 0.24) ranges differ,
# why clipping does nothing at all unless the policy takes several updates per rollout, and how
# often each bound binds in training.
#
# **For whom.** You know the probability ratio ρ = π_θ / π_old of PPO, or are happy to meet it here.
# Notebooks 1-3 help but are not needed. About 15 minutes.

# %%
# %matplotlib inline
import dataclasses

import ipywidgets as widgets
import numpy as np
from IPython.display import display

from ngrpo_sim import clipped_surrogate, get_method, teaching
from ngrpo_sim.base.plotting import pyplot, subplots
from ngrpo_sim.reports.claims import HEADLINE
from ngrpo_sim.simulators.dynamics import DynamicsConfig, simulate

plt = pyplot()
PRESETS = [get_method(name) for name in ("grpo", "dapo", "ngrpo")]

# %% [markdown]
# ## The rule
#
# For a token with advantage A and ratio ρ, the loss is
# `max(−A ρ, −A clip(ρ, 1 − ε_low, 1 + ε_high))`. The max takes the pessimistic branch, so the clip
# can only *remove* incentive:
#
# * a token with A > 0 whose probability already rose past 1 + ε_high this round gets no more push
#   up;
# * a token with A < 0 whose probability already fell below 1 − ε_low gets no more push down;
# * everywhere else the push on log π is A ρ.
#
# **Predict before you run.** A token with A = −1 at ρ = 1.3 (its probability *rose*, though it was
# bad): is its gradient clipped? And a token with A = +1 at ρ = 0.7?

# %%
ratios = [0.7, 0.82, 0.9, 1.0, 1.1, 1.22, 1.3]
print("push on log pi (-d loss / d log pi); 0 where the clip removes it")
for advantage in (+1.0, -1.0):
    print(f"\nA = {advantage:+.0f}{'ratio:':>12}" + "".join(f"{rho:>7}" for rho in ratios))
    for method in PRESETS:
        surrogate = clipped_surrogate(np.array(ratios), advantage, method.clip_low,
                                      method.clip_high)
        bounds = f"{method.clip_low}/{method.clip_high}"
        print(f"{method.name:>6} {bounds:<11}"
              + "".join(f"{0.0 - g:>7.2f}" for g in surrogate.grad_logp))

# %% [markdown]
# Neither is clipped: the clip only stops a token from moving *further in the direction its
# advantage wants*. A bad token whose probability rose keeps its full push down (there is no "dual
# clip" in the NGRPO release).
#
# ## The ratio-advantage plane
#
# Colour is the push on log π per token; grey is where clipping removes the gradient. NGRPO's
# tighter lower bound (0.84 instead of 0.8) stops the push on failed answers sooner; its looser
# upper bound (1.24) lets rewarded answers rise a little further than GRPO's 1.2, less than
# DAPO's 1.28.

# %% tags=["readme-figure"]
figure, axes = subplots(ncols=3, width=2.75, height=3.0)
for ax, method in zip(axes, PRESETS):
    image = teaching.plot_clip_plane(ax, method.clip_low, method.clip_high, colorbar=False)
    ax.set_title(f"{method.name}: clip {method.clip_low} / {method.clip_high}", fontsize=9)
figure.colorbar(image, ax=axes, label=teaching.CLIP_PUSH_LABEL)
figure.suptitle("grey: clipping removes the gradient", fontsize=9)
plt.show()

# %% [markdown]
# Move the bounds yourself. The share printed below the plane is the grey area, in the window drawn
# (ρ from 0.6 to 1.4, |A| ≤ 2).

# %%
clip_low_slider = widgets.FloatSlider(value=0.16, min=0.0, max=0.4, step=0.01, description="ε_low",
                                      continuous_update=False)
clip_high_slider = widgets.FloatSlider(value=0.24, min=0.0, max=0.4, step=0.01,
                                       description="ε_high", continuous_update=False)
plane_view = teaching.LiveView()


def show_plane(change=None):
    figure, (ax,) = plane_view.subplots(width=5.2, height=3.8)
    teaching.plot_clip_plane(ax, clip_low_slider.value, clip_high_slider.value)
    ratio, advantage = np.meshgrid(np.linspace(0.6, 1.4, 401), np.linspace(-2, 2, 401))
    grey = teaching.vanishing_gradient(ratio, advantage, clip_low_slider.value,
                                       clip_high_slider.value).mean()
    plane_view.show(figure, f"lower bound {1 - clip_low_slider.value:.2f}, upper bound "
                            f"{1 + clip_high_slider.value:.2f}: {grey:.1%} of the window gives no "
                            f"gradient")


for slider in (clip_low_slider, clip_high_slider):
    slider.observe(show_plane, "value")
display(widgets.HBox([clip_low_slider, clip_high_slider]), plane_view.widget)
show_plane()

# %% [markdown]
# ## When does a ratio leave 1?
#
# The ratios are taken against the policy that sampled the rollout. On the first update after the
# rollout the policy *is* that policy, so every ρ = 1 and nothing is clipped, whatever the bounds.
# Clipping can only act on later updates of the same rollout: the release splits each rollout batch
# into μ = 4 minibatches, so updates 2-4 see ratios that the earlier updates moved.
#
# **Predict:** with μ = 1 minibatch per rollout, what share of answers is clipped? And as μ grows,
# which bound of which method binds most often?
#
# The sweep trains each method on the simulator's shared policy (one parameter vector for all
# prompts, so every update moves every prompt) with Adam, as in notebook 3, for several μ, and
# records the share of sampled answers clipped at each bound.

# %%
sweep_config = dataclasses.replace(HEADLINE, num_prompts=teaching.sized(256, 64),
                                   prompts_per_step=teaching.sized(64, 16),
                                   steps=teaching.sized(60, 8), seeds=teaching.sized(4, 1))
minibatch_counts = teaching.sized([1, 2, 4, 8, 16], [1, 4, 16])
sweep = teaching.clip_fraction_sweep([m.name for m in PRESETS], sweep_config, minibatch_counts)
figure, (ax,) = subplots(width=5.6, height=4.0)
teaching.plot_clip_fraction_sweep(ax, sweep)
teaching.figure_legend(figure, ncols=3)
plt.show()
print(f"{'method':>6}{'μ':>4}{'clipped low (A < 0)':>21}{'clipped high (A > 0)':>22}")
for name, row in sweep.items():
    for count, low, high in zip(row["minibatches"], row["clipfrac_low"], row["clipfrac_high"]):
        print(f"{name:>6}{count:>4}{low:>21.4f}{high:>22.4f}")

# %% [markdown]
# With μ = 1 nothing is clipped, for every method. As μ grows, NGRPO's *lower* bound binds more
# often than any other: its bound is the tightest (0.84), and most of its advantages are negative
# (every all-wrong group gives 8 of them). Its clip is the brake on its own penalties, which is why
# the paper pairs calibration with asymmetric clipping. DAPO clips more often than GRPO although its
# lower bound is the same; part of that is bookkeeping: GRPO's all-wrong and all-correct groups have
# zero advantage, can never be clipped, and still count among the answers, while DAPO drops them.
#
# ## Epochs on the tabular policy
#
# With free logits per prompt (the tabular policy) and plain SGD, a prompt's logits move only when
# that prompt is in the minibatch, and each prompt sits in exactly one minibatch per pass:
# minibatches alone never clip. A second pass over the same rollout (`epochs=2`) does.

# %%
tabular = DynamicsConfig(policy="tabular", optimizer="sgd", learning_rate=32.0,
                         num_prompts=teaching.sized(256, 64),
                         prompts_per_step=teaching.sized(64, 16), steps=teaching.sized(60, 8),
                         seeds=teaching.sized(4, 1))
print(f"{'epochs':>6}{'method':>8}{'clipped low':>13}{'clipped high':>14}{'accuracy':>10}")
for epochs in (1, 2, 4):
    for name in ("grpo", "ngrpo"):
        run = simulate(name, dataclasses.replace(tabular, epochs=epochs), progress=False)
        print(f"{epochs:>6}{name:>8}{np.nanmean(run.metrics['clipfrac_low']):>13.4f}"
              f"{np.nanmean(run.metrics['clipfrac_high']):>14.4f}"
              f"{run.final('accuracy').mean():>10.3f}")

# %% [markdown]
# ## Exercises
#
# 1. **The first update.** Prove that the gradient of the clipped loss at ρ = 1 equals the plain
#    policy gradient
#    for *any* ε_low, ε_high > 0. What does that imply for a trainer with one update per rollout,
#    like many GRPO
#    set-ups?
# 2. **Asymmetric on purpose.** Use the sliders to build a range that clips negative advantages
#    *less* than
#    positive ones. Which method of notebook 1 would you pair it with, and what would you expect for
#    entropy?
# 3. **The ablation.** The paper's ablation adds asymmetric clipping to GRPO (`grpo_asym_clip`) and
#    calibration
#    without it (`grpo_calibrated`). Add both to the sweep. Which of NGRPO's two changes makes its
#    low bound bind?
# 4. **Learning rate.** Repeat the sweep with `learning_rate=0.15`. How do the clip fractions scale
#    with the step size?
# 5. **No clip.** Run NGRPO with `get_method("ngrpo").replace(clip_low=0.99, clip_high=100.0)`
#    (almost no clip)
#    and μ = 16 through `simulate`. Do accuracy, `regressed` or `max_drawdown` change?

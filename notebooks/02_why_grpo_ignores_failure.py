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
# # 2. Why GRPO ignores failure
#
# **What you will learn.** How often a sampled group teaches GRPO nothing, what NGRPO's penalty on
# all-wrong groups does to the *expected* update, and what a single sampled group does to a prompt's
# probabilities and entropy.
#
# **For whom.** You have seen notebook 1 (or know GRPO's z-score advantage) and want to know what
# the advantages do to a policy. We use the simplest policy there is: one prompt, K = 16 candidate
# answers, one of them correct, and a softmax over their logits. Its success rate p is the
# probability of sampling the correct answer.
#
# About 15 minutes. Every number comes from `ngrpo_sim` (`landscape` for exact quantities,
# `teaching` for one sampled group).

# %%
# %matplotlib inline
import ipywidgets as widgets
import numpy as np
from IPython.display import display

from ngrpo_sim import get_method, teaching
from ngrpo_sim.analysis import landscape
from ngrpo_sim.base.plotting import pyplot, subplots
from ngrpo_sim.simulators.bandit import sample_answers

plt = pyplot()
METHODS = ["grpo", "ngrpo", "dapo", "psr_nsr", "dr_grpo", "rloo"]

# %% [markdown]
# ## Silent groups
#
# A group of G = 8 answers gives GRPO no gradient when all 8 are wrong or all 8 are correct.
#
# **Predict before you run.** A prompt is solved 1% of the time. Of 100 sampled groups of 8, how
# many give GRPO any gradient at all? And NGRPO?

# %%
success_rates = np.array([0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 0.99])
print("P(a group of 8 gives no gradient)")
print(f"{'p':>6}" + "".join(f"{name:>10}" for name in METHODS))
for p in success_rates:
    print(f"{p:>6}"
          + "".join(f"{landscape.zero_gradient_probability(get_method(name), 8, p):>10.3f}"
                    for name in METHODS))

# %% [markdown]
# At p = 0.01, 92% of GRPO's groups are all wrong and teach nothing: `(1 − p)^8`. DAPO drops exactly
# those groups and refills the batch, which saves compute but does not make them teach. NGRPO's
# virtual answer makes every group that is not all-correct informative. Dr.GRPO and RLOO are silent
# on all-wrong groups too; PSR-NSR's fixed −1 never depends on the group, so it is never silent. The
# log scale below shows the whole range of p.

# %%
methods = [get_method(name) for name in METHODS]
figure, (ax,) = subplots(width=5.6, height=4.0)
landscape.plot_zero_gradient(ax, methods, group_size=8)
teaching.figure_legend(figure)
plt.show()

# %% [markdown]
# ## The expected update, and its gain c(p)
#
# So NGRPO learns from groups that GRPO ignores. Does it therefore move *further* on hard prompts,
# on average?
#
# For this softmax policy (and for any advantage that depends only on an answer's reward and its
# group's count of correct answers) the expected change of the logits after one step on a sampled
# group is exactly
#
# $$\mathbb{E}[\Delta z] = c(p)\;\pi \odot (r - p),$$
#
# the gradient of the success rate p itself, times a scalar **gain** c(p) that depends on the method
# and on p (`ngrpo_sim/analysis/landscape.py` proves it; the tests check it against enumeration of
# every group). All methods push the logits in the *same direction* on average; they differ only in
# how far, at each difficulty, and in noise.
#
# **Predict:** at p = 0.01, is NGRPO's gain larger or smaller than GRPO's?

# %%
figure, (ax,) = subplots(width=5.6, height=4.0)
landscape.plot_gain(ax, methods, group_size=8)
teaching.figure_legend(figure)
plt.show()
print(f"{'p':>6}" + "".join(f"{name:>10}" for name in METHODS))
for p in success_rates:
    print(f"{p:>6}" + "".join(f"{landscape.expected_gain(get_method(name), 8, p):>10.3f}"
                              for name in METHODS))

# %% [markdown]
# Smaller: c = 2.08 for NGRPO against 2.44 for GRPO at p = 0.01. The penalty of the all-wrong groups
# adds to the expected update (each pushes the failed answers down, and on average that is a push up
# for the correct answer), but the rare correct answer's reward shrinks from +2.47 to +1.76, and
# that takes away more. On easy prompts it is the other way round. The intuition "NGRPO learns more
# from hard prompts" holds for the *number* of informative groups, not for the size of the average
# step.
#
# ## The rivals: who pushes hardest on hard prompts?
#
# NGRPO is not the only method published to learn from hard prompts and failed groups. Four rivals
# have a gain c(p) too, because their advantages also depend only on the rewards of the group: MaxRL
# divides by the group's pass rate, QAE replaces the mean by the group's 0.4-quantile, AsymRE lowers
# the mean by 0.1, and `shifted_baseline` is NGRPO's own baseline (k + 1) / 9 without its std.
#
# **Predict:** which of them pushes hardest at p = 0.01? Does moving the baseline (AsymRE, NGRPO's
# baseline) change the expected step at all?

# %%
RIVALS = ["grpo", "ngrpo", "maxrl", "qae", "asymre", "shifted_baseline"]
figure, (ax,) = subplots(width=5.6, height=4.0)
landscape.plot_gain(ax, [get_method(name) for name in RIVALS], group_size=8)
teaching.figure_legend(figure, ncols=3)
plt.show()
print(f"{'p':>6}" + "".join(f"{name:>17}" for name in RIVALS))
for p in success_rates:
    gains = [landscape.expected_gain(get_method(name), 8, p) for name in RIVALS]
    print(f"{p:>6}" + "".join(f"{gain:>17.3f}" for gain in gains))

# %% [markdown]
# What each does to hard prompts:
#
# * **MaxRL** pushes hardest: c(p) = [1 − (1 − p)^7] / p, 6.79 at p = 0.01, almost three times
#   GRPO's, because dividing by the pass rate gives a hard prompt's rare correct answer +7 (the
#   maximum-likelihood weighting); all-wrong groups still teach it nothing.
# * **QAE** puts the baseline at 0 on a hard group, so the rare correct answer gets +1/std and the
#   failures are never pushed down: c = 2.78 at p = 0.01, 8/7 of GRPO's.
# * **AsymRE** and **NGRPO's baseline without its std** have a flat gain, 1 − (1 − λ)/G (0.875 and
#   0.889): on policy, moving the baseline changes which answers carry the step, not its expected
#   size. So NGRPO's smaller push on hard prompts comes from its std, not from its baseline.
# * **RL-ZVP** and **LENS** have no c(p): they read the policy (token entropy; the probability of
#   each sampled answer). In this one-token bandit RL-ZVP gives an all-wrong group exactly 0 (its
#   penalty is the gap to the answer's most uncertain token, and a one-token answer has none), so it
#   adds nothing on hard prompts; LENS re-ranks an all-wrong group's answers, pushing down the ones
#   the policy was most sure of and up the others.
#
# ## One sampled group
#
# The expectation hides what a single step does. The button draws a group of G answers from a prompt
# solved with probability p and shows, for each method, the advantage of each sampled answer and
# what one SGD step on the method's loss does to every candidate answer's probability (the correct
# answer shaded) and to the prompt's entropy: exactly, and as the first-order prediction −Cov(log π,
# Δz) that notebook 3 uses over whole runs.
#
# Here is one group, drawn from a prompt solved 5% of the time. **Predict first:** most such groups
# are all wrong. What will GRPO's step do, and where will NGRPO's −1/3 send the probability it takes
# from the failed answers?

# %% tags=["readme-figure"]
sample = teaching.sample_one_group(["grpo", "ngrpo", "psr_nsr"], 0.05, rng=np.random.default_rng(0))
figure, axes = subplots(ncols=2, width=4.25, height=3.6)
teaching.plot_sampled_group(axes, sample)
teaching.figure_legend(figure)
plt.show()
print(teaching.format_sampled_group(sample))

# %% [markdown]
# GRPO does nothing. NGRPO and PSR-NSR lower the failed answers and the freed probability goes to
# every other answer in proportion to what it already has (the dots): most of it to the popular
# wrong answers, little to the correct one. Now sample your own.
#
# **Try:** type 0.02 into the box next to the p slider and sample until you get an all-wrong group
# (most are). Where does NGRPO's probability go? Does the correct answer always gain?
#
# A setting always shows the same group until you ask for a new one: the draw's random numbers
# depend only on the draw (the button counts them) and on G, so moving p or the learning rate
# changes the prompt or the step, not the luck of the draw.

# %%
# Sliders act when released, not at every value they pass while dragged.
success_slider = widgets.FloatLogSlider(value=0.05, base=10, min=-3, max=-0.01, step=0.01,
                                        description="p", readout_format=".3f",
                                        continuous_update=False)
success_box = widgets.BoundedFloatText(value=0.05, min=0.001, max=0.977, step=0.001,
                                       description="p =", layout=widgets.Layout(width="9em"),
                                       style={"description_width": "2em"})
# Drag for a rough p, type for an exact one.
widgets.link((success_slider, "value"), (success_box, "value"))
group_slider = widgets.IntSlider(value=8, min=2, max=16, description="G", continuous_update=False)
step_slider = widgets.FloatLogSlider(value=1.0, base=10, min=-2, max=1, step=0.1,
                                     description="learning rate", continuous_update=False,
                                     style={"description_width": "initial"})
sample_button = widgets.Button(description="sample a new group", button_style="primary",
                               layout=widgets.Layout(width="auto"))
group_view = teaching.LiveView()
draw = 1


def show_group(change=None):
    rng = np.random.default_rng([draw, group_slider.value])
    sample = teaching.sample_one_group(["grpo", "ngrpo", "psr_nsr"], success_slider.value,
                                       group_size=group_slider.value,
                                       learning_rate=step_slider.value, rng=rng)
    figure, axes = group_view.subplots(ncols=2, width=4.25, height=3.6)
    teaching.plot_sampled_group(axes, sample)
    teaching.figure_legend(figure)
    group_view.show(figure, f"draw {draw}: " + teaching.format_sampled_group(sample))


def sample_new_group(button):
    global draw
    draw += 1
    show_group()


sample_button.on_click(sample_new_group)
for control in (success_slider, group_slider, step_slider):
    control.observe(show_group, "value")
controls = widgets.VBox([widgets.HBox([success_slider, success_box]), group_slider, step_slider])
display(widgets.HBox([controls, sample_button]), group_view.widget)
show_group()

# %% [markdown]
# What to notice:
#
# * In an all-wrong group NGRPO lowers the sampled answers and hands their probability to *all
#   other* answers in proportion to their current probability. A correct answer of probability 0.02
#   gets 2% of it; the bulk flows to the other wrong answers the policy already likes. If the
#   sampled wrong answers are rare ones, the correct answer can even *lose* probability: its logit
#   rises, but the popular wrong answers' logits rise too. A sampled wrong answer can rise as well,
#   when it was sampled less often than its probability predicts (the dots show the probabilities
#   before the step).
# * Whether a step raises or lowers the entropy depends on *which* answers it moves, which is what
#   −Cov(log π, Δz) measures: raising a rare answer (the correct answer of a hard prompt) spreads
#   probability and raises the entropy, raising a likely one concentrates it. On this prompt at p =
#   0.05 about nine in ten mixed groups raise the entropy under NGRPO, while an all-wrong group
#   raises it only about half the time: pushing down popular wrong answers spreads the probability,
#   pushing down rare ones concentrates it. At p = 0.3 every step lowers it. More learning from
#   failure does not by itself mean more entropy.
# * At a large learning rate the first-order entropy prediction drifts from the exact change; at a
#   small one the two
#   agree. Try it.
#
# ## Many groups: the mean is c(p) π ⊙ (r − p)
#
# Average the step over many sampled groups and compare it with the expected update from the gain
# identity. The spread of the steps around that mean is the noise each method adds.

# %%
group_count = teaching.sized(4000, 400)
logits, rewards = teaching.one_prompt(0.05)
correct_answer = int(np.flatnonzero(rewards == 1.0)[0])
groups = sample_answers(logits[None, None].repeat(group_count, axis=1), 8,
                        np.random.default_rng(1))[0]
print(f"{group_count} groups of 8 at p = 0.05; change of the correct answer's logit per step "
      f"(learning rate 1)")
print(f"{'method':>10}{'mean':>10}{'c(p)π(r-p)':>12}{'std':>10}{'steps = 0':>11}")
for name in ("grpo", "ngrpo", "psr_nsr"):
    method = get_method(name)
    steps = np.array([teaching.group_logit_step(method, logits, answers, rewards[answers])
                      for answers in groups])
    expected = landscape.expected_logit_update(method, 8, logits, rewards)
    print(f"{name:>10}{steps[:, correct_answer].mean():>10.4f}{expected[correct_answer]:>12.4f}"
          f"{steps[:, correct_answer].std():>10.4f}{np.mean(np.all(steps == 0, axis=1)):>11.1%}")

# %% [markdown]
# The sampled means agree with c(p) π ⊙ (r − p) up to Monte Carlo error (which shrinks as
# 1/√groups). GRPO's steps are zero most of the time and large when a correct answer shows up;
# NGRPO's are never zero here, with many small pushes in between. Same direction on average,
# different noise: notebook 3 asks what that noise does over a whole training run.
#
# ## Exercises
#
# 1. **The 92%.** Show that GRPO's zero-gradient probability is p^G + (1 − p)^G and NGRPO's is p^G.
#    At which p is
#    GRPO's smallest? How does it change with G (move the group size in the first table's code)?
# 2. **Where the gains cross.** Find the p at which NGRPO's gain equals GRPO's for G = 8 (use
#    `landscape.expected_gain` on a fine grid). Which side of it do most prompts of a hard benchmark
#    sit on?
# 3. **The lost correct answer.** Sample all-wrong groups at p = 0.02 until the correct answer loses
#    probability under NGRPO. Show from Δz = (A/G) Σ_i (e_{a_i} − π), with A ≈ −1/3 for every
#    answer, that the correct answer r gains at first order exactly when π_r + (mean probability
#    of the sampled answers) > Σ_a π_a². Which groups break it?
# 4. **Noise.** In the last table, compare the standard deviations at p = 0.01 and p = 0.5. Which
#    method has the
#    best signal-to-noise ratio (mean / std) on hard prompts? Does that match the gain plot?
# 5. **A new method.** PSR-NSR's gain is flat in p. Derive its c(p) by hand for G = 8 and check it.

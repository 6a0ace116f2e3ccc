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
# # 1. The advantage landscape
#
# **What you will learn.** How GRPO, NGRPO and their peers turn the rewards of a group of G sampled
# answers into one advantage per answer, and what NGRPO's single change, a *virtual* answer with the
# best possible reward in the group's statistics, does to those numbers.
#
# **For whom.** You know what a policy gradient is (an advantage times the gradient of a
# log-probability; see OpenAI's Spinning Up, part 3, if not) and have heard of GRPO. No maths beyond
# a mean and a standard deviation.
#
# **How.** Every number below comes from `ngrpo_sim`, the project's one home of the method
# definitions. The notebook only calls it and draws. About 10 minutes.

# %%
# %matplotlib inline
import ipywidgets as widgets
import numpy as np
from IPython.display import display

from ngrpo_sim import get_method, teaching
from ngrpo_sim.analysis import landscape
from ngrpo_sim.base.plotting import pyplot

plt = pyplot()

# %% [markdown]
# ## One prompt, eight answers, one of them correct
#
# A verifier scores each of G = 8 sampled answers: 1 if correct, 0 if wrong. GRPO scores an answer
# by its z-score inside its group, `A_i = (r_i - mean) / (std + 1e-6)`, with the standard deviation
# that `torch.std` computes (Bessel's correction, dividing by G - 1).
#
# **Predict before you run.** The group below has one correct answer. Which advantage does GRPO give
# it, and which does each wrong answer get? NGRPO adds one virtual answer with reward 1 to the mean
# and the std (never to the batch: it has no tokens). Will the correct answer get more or less than
# under GRPO? And the wrong ones?

# %%
one_correct = np.array([1.0, 0, 0, 0, 0, 0, 0, 0])
for name in ("grpo", "ngrpo"):
    advantages = get_method(name).advantages(one_correct)
    print(f"{name:>6}: correct answer {advantages[0]:+.2f}, each wrong answer {advantages[1]:+.2f}")

# %% [markdown]
# These are the paper's numbers: **+2.47 → +1.76** for the correct answer and **−0.35 → −0.50** for
# each wrong one. The virtual correct answer raises the group's mean, so the real correct answer
# stands out less, and every wrong answer is further below the mean.
#
# Now the cases that made NGRPO necessary. **Predict:** what does GRPO do with a group in which
# every answer is wrong? What does NGRPO do?

# %%
all_wrong, all_correct = np.zeros(8), np.ones(8)
for name in ("grpo", "ngrpo"):
    method = get_method(name)
    print(f"{name:>6}: all wrong {method.advantages(all_wrong)[0]:+.3f}, "
          f"all correct {method.advantages(all_correct)[0]:+.3f}")

# %% [markdown]
# Under GRPO an all-wrong group has no spread, so every advantage is 0: the model learns nothing
# from the prompts it fails. NGRPO's virtual answer gives the group a spread, and each answer gets
# −1/3: a push away from what failed. An all-correct group stays at 0 under both (the virtual answer
# equals every real one), and NGRPO drops such groups from the batch.
#
# ## The whole landscape at once
#
# A group of G answers can hold k = 0, 1, ..., G correct ones. For a binary reward, each of these
# methods gives every correct answer of the group the same advantage, and every wrong answer the
# same advantage, so two curves against k describe a method completely. Solid lines are correct
# answers, dashed lines wrong answers; a dotted line marks a method that coincides with an earlier
# one, and the panel's title names it (DAPO uses GRPO's advantage; it differs in what it drops and
# clips).

# %% tags=["readme-figure"]
# Ten methods in one panel could not be told apart: the baselines above, NGRPO's rivals below.
landscape.landscape_figure([get_method(name) for name in landscape.DEFAULT_METHODS],
                           group_size=8, panels=[landscape.plot_advantages], width=6.4, height=3.6)
plt.show()

# %% [markdown]
# Things to notice:
#
# * GRPO (and DAPO) give the rare correct answer of a hard group a large advantage (+2.47 at k = 1),
#   and the rare wrong answer of an easy group a large penalty: the std rescales every group to the
#   same force.
# * NGRPO's curves sit *below* GRPO's everywhere: the virtual r_max answer moves the baseline up. At
#   k = 0 it is
#   the only method (with the always-negative PSR-NSR) that says anything.
# * Dr.GRPO and RLOO do not divide by the std, so their advantages are small where the group is
#   nearly unanimous.
# * PSR-NSR's weights do not depend on the group at all: +0.1 for correct, −1 for wrong.
#
# ## Explore
#
# The sliders retune the presets through `Method.retuned`:
#
# * **G**, the group size;
# * **r_max**, the reward of NGRPO's virtual answer (it should equal the best reward the verifier
#   can give; correct answers here score 1);
# * **virtual samples**, how many r_max answers join the statistics (the release's
#   `add_max_reward_num`; the
#   paper found that more than one over-explores);
# * **std**, Bessel's correction (dividing by n − 1, as `torch.std` and the release do) or the
#   population std
#   (dividing by n, as the paper's printed formula reads).
#
# **Predict first:** with 4 virtual samples instead of 1, does an all-wrong group's penalty grow or
# shrink? Then move the slider and read the k = 0 row of the wrong-answer table.

# %%
method_picker = widgets.SelectMultiple(options=list(landscape.DEFAULT_METHODS)
                                       + ["grpo_calibrated", "ngrpo_no_filter"],
                                       value=("grpo", "ngrpo", "psr_nsr"), description="methods",
                                       rows=8)
# The sliders redraw when released, not at every value they pass while dragged.
group_size_slider = widgets.IntSlider(value=8, min=2, max=32, description="G",
                                      continuous_update=False)
r_max_slider = widgets.FloatSlider(value=1.0, min=1.0, max=3.0, step=0.25, description="r_max",
                                   continuous_update=False)
virtual_slider = widgets.IntSlider(value=1, min=1, max=8, description="virtual samples",
                                   continuous_update=False, style={"description_width": "initial"})
std_picker = widgets.Dropdown(options=[("Bessel (n - 1), the release", 1),
                                       ("population (n), the paper's formula", 0)],
                              value=1, description="std")
landscape_view = teaching.LiveView()


def show_landscape(change=None):
    if not method_picker.value:
        landscape_view.refuse("Pick at least one method (hold Ctrl or Shift to pick several).")
        return
    methods = [get_method(name).retuned(r_max=r_max_slider.value,
                                        virtual_samples=virtual_slider.value,
                                        ddof=std_picker.value) for name in method_picker.value]
    figure, (ax,) = landscape_view.subplots(width=6.4, height=4.2)
    landscape.plot_advantages(ax, methods, group_size_slider.value)
    teaching.figure_legend(figure)
    # The first two tables of the landscape: advantages by k (the others are notebook 2's subject).
    tables = landscape.format_tables(methods, group_size_slider.value).split("\n\n")[:2]
    landscape_view.show(figure, "\n\n".join(tables))


for control in (method_picker, group_size_slider, r_max_slider, virtual_slider, std_picker):
    control.observe(show_landscape, "value")
display(widgets.HBox([method_picker,
                      widgets.VBox([group_size_slider, r_max_slider, virtual_slider, std_picker])]),
        landscape_view.widget)
show_landscape()

# %% [markdown]
# ## Exercises
#
# 1. **The all-wrong penalty.** With one virtual sample and Bessel's std, show by hand that every
#    answer of an
#    all-wrong group of G gets −1/√(G + 1) (G = 8: −1/3). Check it with the G slider. How does it
#    change with
#    the number of virtual samples, and why might a larger push "over-explore", as the paper
#    reports?
# 2. **Which std?** Switch the std to the population convention. Which convention reproduces the
#    paper's
#    +1.76 / −0.50, and which one its printed equation?
# 3. **A wrong r_max.** Set r_max to 2 and show `ngrpo_no_filter` (NGRPO without its group filter).
#    What happens
#    to an all-*correct* group? Why must r_max equal the best reward the verifier can give?
# 4. **A group one larger.** Compare NGRPO's tables for G = 8 with GRPO's for G = 9. Show that NGRPO
#    on a group of G answers with k correct gives exactly GRPO's advantages on a group of G + 1 with
#    k + 1 correct. What does that say about what the virtual answer *is*, and why can an
#    all-correct group never become informative?
# 5. **Your own method.** `get_method("grpo").replace(...)` and `Method.retuned(...)` build
#    variants. Build NGRPO with r_max = 1 and 2 virtual samples and plot it next to the preset with
#    `landscape.plot_advantages`.

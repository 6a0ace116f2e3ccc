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
# # 5. The small-LLM run
#
# **What you will learn.** How to read a real RL run of NGRPO against GRPO on a language model:
# reward, entropy, the share of all-wrong groups and held-out pass@k against training steps, and
# which of the simulator's mechanisms (notebooks 2-4) you can see in them.
#
# **For whom.** You have met the simulator and want to see the same quantities on a transformer. The
# runs come from `minimal/ngrpo_train.py`, the project's single-file trainer for Hugging Face causal
# LMs. Its CPU default is a 0.5M-parameter Qwen2 with a character tokenizer, pre-trained on 3-digit
# addition only until 12% of its answers sampled at temperature 1 are correct (so that many groups
# are all wrong, the case NGRPO is about), then trained with RL: groups of 8 answers per prompt
# sampled at temperature 1, a reward of 1 for the correct sum, 4 minibatch updates per rollout. The
# held-out evaluation samples at temperature 0.6, which makes the same model look better: there it
# starts at a pass@1 of about 0.22 (the table's "pass@1 before").
#
# **Time.** The full comparison (2 methods × 3 seeds × 400 steps) takes about 6 minutes on an idle
# 2-core CPU the first time (much longer on a busy one: the trainer's progress bars show how far it
# is) and is reused afterwards; in fast mode (`NGRPO_FAST=1`) the notebook trains 1 seed for 8 steps
# in well under a minute, enough to see the plumbing, not the learning.

# %%
# %matplotlib inline
import tempfile
from pathlib import Path

import ipywidgets as widgets
import numpy as np
from IPython.display import Markdown, display

from ngrpo_sim import teaching
from ngrpo_sim.base.plotting import pyplot, subplots

plt = pyplot()

# %% [markdown]
# ## Train (or reuse) the comparison
#
# `minimal/compare.py --methods ngrpo,grpo` trains each method for seeds 1, 2, ... into
# `METHOD-seedSEED` folders and writes a table of the final held-out numbers. Each folder holds
# `config.json`, `metrics.jsonl` (one JSON line per step) and `curves.png`; finished runs are
# reused, so running this cell again is free. The trainer's progress bars show below while it
# trains.

# %%
seeds = teaching.sized(3, 1)
if teaching.fast_mode():
    # A fresh folder each time: fast mode checks that training works, so it must never reuse a
    # finished run. It is deleted when the kernel stops.
    scratch = tempfile.TemporaryDirectory(prefix="ngrpo_small_llm_")
    where, run_dir = Path(scratch.name), "compare"
    arguments = ["--methods", "ngrpo,grpo", "--seeds", seeds, "--steps", 8, "--prompts-per-step", 8,
                 "--minibatches", 2, "--eval-prompts", 64, "--eval-samples", 8, "--eval-every", 4,
                 "--threads", 1]
else:
    where, run_dir = teaching.repository_root(), "runs/minimal/compare"
    arguments = ["--methods", "ngrpo,grpo", "--seeds", seeds]
print("python minimal/compare.py", *arguments, "--run-dir", run_dir,
      "(in a temporary folder)" if teaching.fast_mode() else "(from the repository's root)")
compare_script = teaching.repository_root() / teaching.COMPARE
teaching.run_trainer([*arguments, "--run-dir", run_dir], compare_script, cwd=where)
run_folder = where / run_dir
display(Markdown((run_folder / "table.md").read_text()))

# %% [markdown]
# **Predict before you plot.** From notebook 2: which method learns from more groups early on, when
# most prompts fail? From notebook 3: which ends with the lower entropy, if NGRPO learns faster?
# Does the share of all-wrong groups fall faster under NGRPO?

# %%
runs = teaching.read_comparison(run_folder, seeds)
first_step = runs["ngrpo"][0][1]
print("methods and seeds:", {method: len(records) for method, records in runs.items()})
print("logged at every step:",
      ", ".join(key for key in first_step if not key.startswith(("time/", "perf/"))))

# %% tags=["readme-figure"]
# running mean over this many steps: one step's rollout is only 16 prompts
smoothing = teaching.sized(20, 1)
panels = [("reward", "mean reward of the rollouts", smoothing),
          ("entropy", "entropy (nats per token)", smoothing),
          ("share_all_wrong", "share of all-wrong groups", smoothing),
          ("eval/pass@1", "held-out pass@1", 1)]
figure, axes = subplots(ncols=2, nrows=2, width=4.25, height=3.0)
for ax, (key, title, window) in zip(axes, panels):
    teaching.plot_run_metric(ax, runs, key, title, window=window)
figure.suptitle(f"{run_folder.name}: thin lines are seeds, bold their mean; per-step quantities "
                f"are running means over {smoothing} steps", fontsize=9)
teaching.figure_legend(figure)
plt.show()

# %% [markdown]
# Reading the figure (for the full-size run):
#
# * **Reward** is the sampled accuracy of each step's rollouts: noisy, because each step samples 16
#   new prompts.
# * **Entropy** of the sampled tokens falls as the model sharpens. Compare it with notebook 3: is
#   NGRPO's higher
#   or lower than GRPO's, and at equal reward?
# * **All-wrong groups** start at about a third of all groups (0.35 to 0.38 over the first 20 steps
#   of each run). GRPO learns nothing from them; NGRPO gives each answer −1/3. The next plot shows
#   the share of all-wrong groups each method actually learned from.
# * **Held-out pass@1** is measured on 512 prompts never trained on, at temperature 0.6, with 16
#   samples each.

# %%
figure, axes = subplots(ncols=2, width=4.25, height=3.4)
teaching.plot_run_metric(axes[0], runs, "share_all_wrong_learned",
                         "all-wrong groups learned from (share)", window=smoothing)
teaching.plot_final_pass_at_k(axes[1], runs)
teaching.figure_legend(figure)
plt.show()

# %% [markdown]
# ## Explore any logged quantity
#
# The trainer logs the update's diagnostics too: `clipfrac_low` and `clipfrac_high` (notebook 4:
# with 4 minibatches the ratios leave 1 and the bounds bind), `approx_kl` between the updated and
# the sampling policy, `grad_norm`, `response_length`, `refill_rounds` (how often dropped groups had
# to be replaced).

# %%
numeric_keys = sorted(key for key, value in first_step.items()
                      if isinstance(value, (int, float)) and key != "step"
                      and not key.startswith(("time/", "perf/")))
metric_picker = widgets.Dropdown(options=numeric_keys, value="entropy", description="metric")
metric_view = teaching.LiveView()


def show_metric(change=None):
    figure, (ax,) = metric_view.subplots(width=6.0, height=3.8)
    teaching.plot_run_metric(ax, runs, metric_picker.value, window=smoothing)
    teaching.figure_legend(figure)
    lines = [f"{metric_picker.value} at the last step (mean over seeds):"]
    for method, records in runs.items():
        last = np.mean([teaching.run_curve(run, metric_picker.value)[1][-1] for run in records])
        lines.append(f"  {method:>6}: {last:.4f}")
    metric_view.show(figure, "\n".join(lines))


metric_picker.observe(show_metric, "value")
display(metric_picker, metric_view.widget)
show_metric()

# %% [markdown]
# ## What carries over from the simulator, and what does not
#
# The bandit of notebooks 2-4 has one-token answers and a log-linear policy; here answers are
# several tokens long, the reward arrives only at the end, and the policy is a transformer. Expect
# the *mechanisms* to carry over: GRPO is blind to all-wrong groups, NGRPO's lower bound binds more
# often, learning faster means losing entropy sooner. Do not expect the simulator's numbers to. And
# with 3 seeds the 95% intervals in the table are wide: read a difference only when its interval
# excludes 0.
#
# ## Exercises
#
# 1. **Harder task.** Train with `--digits 4` (the tiny model is pre-trained again for 4 digits,
#    once). More
#    prompts start all wrong. Does NGRPO's advantage over GRPO grow?
# 2. **The ablations.** Compare `--methods ngrpo,grpo_calibrated,grpo_asym_clip,grpo` (in a new
#    `--run-dir`).
#    Which of NGRPO's changes accounts for the difference you see?
# 3. **DAPO.** Add `dapo` and plot `refill_rounds`: how much extra sampling does dropping
#    homogeneous groups cost
#    when half the groups are all wrong?
# 4. **Entropy at equal reward.** Plot entropy against reward for each run (use `teaching.run_curve`
#    for both and
#    smooth the reward over 20 steps). Is NGRPO above GRPO at equal reward, as the paper claims, or
#    on top of it,
#    as the simulator found?
# 5. **A larger model.** `python minimal/compare.py --model smollm2 --methods ngrpo,grpo --run-dir
#    runs/minimal/smollm2` trains SmolLM2-135M-Instruct (see the trainer's docstring; a GPU helps).
#    Load its folder
#    here by setting `run_folder`.

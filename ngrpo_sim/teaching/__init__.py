"""What the notebooks stand on: small computations and figures made for teaching, one module per
lesson, and the headless runner that executes the notebooks in the tests (``notebook_runner``).

* ``notebook``: the fast mode the tests run the notebooks in, and views that widgets redraw;
* ``groups``: one prompt, one sampled group and each method's step on it (notebooks 1 and 2);
* ``curves``: training curves, the entropy prediction, the trainer's run folders (3 and 5);
* ``clipping``: where the clip removes the gradient, and how often (4);
* ``tokens``: answers made of tokens, aggregations and the all-wrong penalty (6).

A notebook imports this package (``from ngrpo_sim import teaching``) and calls ``teaching.X``: the
names below, with the figure legend and the trainer-run readers it also needs. No method and no
training step is defined here: every number comes from the layers below.

Imports only the layers below: ``base`` to ``reports``.
"""

from ngrpo_sim.base.plotting import figure_legend
from ngrpo_sim.experiments.trainer_runs import (COMPARE, TRAINER, final_pass_at_k, find_trainer,
                                                read_comparison, read_run, repository_root,
                                                run_curve, run_trainer)
from ngrpo_sim.teaching.clipping import (CLIP_PUSH_LABEL, clip_fraction_sweep,
                                         plot_clip_fraction_sweep, plot_clip_plane,
                                         vanishing_gradient)
from ngrpo_sim.teaching.curves import (entropy_prediction_error, plot_entropy_prediction,
                                       plot_final_pass_at_k, plot_metric, plot_metric_pair,
                                       plot_run_metric)
from ngrpo_sim.teaching.groups import (GroupStep, SampledGroup, format_sampled_group,
                                       group_logit_step, one_prompt, plot_sampled_group,
                                       sample_one_group)
from ngrpo_sim.teaching.notebook import FAST_MODE_VARIABLE, LiveView, fast_mode, sized
from ngrpo_sim.teaching.tokens import (TOKEN_NAMES, aggregation_effects, all_wrong_step,
                                       answer_table, one_prompt_task, plot_aggregation_effects,
                                       plot_all_wrong_step, token_text)

__all__ = [
    "CLIP_PUSH_LABEL", "COMPARE", "FAST_MODE_VARIABLE", "GroupStep", "LiveView", "SampledGroup",
    "TOKEN_NAMES", "TRAINER", "aggregation_effects", "all_wrong_step", "answer_table",
    "clip_fraction_sweep", "entropy_prediction_error", "fast_mode", "figure_legend",
    "final_pass_at_k", "find_trainer", "format_sampled_group", "group_logit_step", "one_prompt",
    "one_prompt_task", "plot_aggregation_effects", "plot_all_wrong_step",
    "plot_clip_fraction_sweep", "plot_clip_plane", "plot_entropy_prediction",
    "plot_final_pass_at_k", "plot_metric", "plot_metric_pair", "plot_run_metric",
    "plot_sampled_group", "read_comparison", "read_run", "repository_root", "run_curve",
    "run_trainer", "sample_one_group", "sized", "token_text", "vanishing_gradient",
]

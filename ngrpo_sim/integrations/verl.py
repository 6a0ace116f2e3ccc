"""NGRPO in verl: the ``ngrpo`` advantage estimator, and a filter key that makes verl drop only
all-correct groups.

How verl finds this module
--------------------------
``import verl`` (verl >= 0.9.0, in ``verl/__init__.py``) loads every entry point of the group
``verl.plugins``. ngrpo-sim declares ``ngrpo = "ngrpo_sim.integrations.verl"`` there, so installing
ngrpo-sim next to verl is all it takes: every process that imports verl, the driver and each Ray
worker alike, imports this module, which registers the estimator with verl's ``register_adv_est``;
``algorithm.adv_estimator=ngrpo`` then works without patching verl.
``VERL_USE_EXTERNAL_PLUGINS=none`` switches the discovery off, and a comma-separated list of
entry-point names keeps only those. verl logs a plugin's import error at debug level only: if verl
answers "Unknown advantage estimator simply: ngrpo", run
``python -c "import ngrpo_sim.integrations.verl"`` to see what went wrong.

The estimator
-------------
verl's trainer calls a registered estimator with keyword arguments: ``token_level_rewards`` and
``response_mask`` (both ``(answers, response tokens)``), ``index`` (the ``uid`` of each answer's
prompt: answers with the same uid form a group) and ``config`` (the ``algorithm`` section). The
outcome reward of an answer is the sum of its token rewards (verl puts it on the last token). Groups
may differ in size; ``ngrpo_sim.methods.groups`` hands each size to ``ngrpo_sim``'s NGRPO
estimator in one call (a group of one answer gets 0: the estimator needs two). The advantage is
spread over every response token, and the function returns it twice, as verl expects (advantages,
returns). Two keys of the ``algorithm`` section, named as in the authors' release, tune it:
``max_reward`` (r_max, default 1.0) and ``add_max_reward_num`` (the number of virtual samples,
default 1). verl's config schema does not know them, so a launch command adds them with a ``+``.

The group filter
----------------
NGRPO drops all-correct groups (they have zero advantage and would only dilute the token mean) and
keeps all-wrong ones (they are where calibration creates a signal), refilling the batch with new
rollouts. verl's own filter (``algorithm.filter_groups``, DAPO's dynamic sampling with refill) drops
a group when a chosen per-answer metric has zero spread over the group, which drops all-wrong groups
too. It is not pluggable, but the metric is ours to choose: ``compute_score`` below adds
``FILTER_KEY`` to every answer's reward details. Correct answers report r_max; each wrong answer
reports a fresh random number below r_max. A group's key then has zero spread exactly when every
answer is correct, so ``filter_groups.metric=ngrpo_filter_key`` makes verl's filter, refill
included, drop exactly the groups of two or more answers that ``ngrpo_sim``'s
``DropAllCorrectGroups`` drops (verl never drops a group of one). verl reads the metric at sampling
time, so it needs a rule-based reward (or a reward model in its own resource pool), as verl's filter
always does.

Whole groups and a true token mean
----------------------------------
This plugin on verl 0.9.1 gives NGRPO as the paper describes it, not as the authors' release (a
fork of an older verl) runs it. The release filters, then cuts the collected rows at
``train_batch_size`` x n after reordering them over the GPUs, carries the rest to the next step
and only then computes advantages, so most groups are split: their mean and std cover part of the
group, a lone answer gets A = r (mean 0, std 1) and carried answers train a step late; and its
loss weighs tokens per micro-batch, not by one token mean (``docs/method_reference.md``, "What the
release computes"). In verl 0.9.1, ``verl.trainer.main_ppo`` runs the V1 trainer
(``trainer.use_v1=True`` and ``trainer.v1.trainer_mode=sync``, both defaults). Its sampler
(``verl/trainer/ppo/v1/replay_buffer.py``, ``ReplayBuffer.sample``) selects whole prompt groups,
evicts filtered groups whole and discards surplus groups instead of carrying answers; the trainer
balances that batch over the GPUs and computes advantages afterwards, by ``uid``, on whole groups
(``trainer_base.py``, ``_step_once``). ``actor.loss_agg_mode=token-mean`` divides each
micro-batch's token sum by the response tokens of the whole minibatch on all GPUs
(``batch_num_tokens`` in ``core_algos.agg_loss``), whatever the micro-batching: a true token mean.
So keep those two defaults and set ``token-mean``. With ``trainer.use_v1=False`` verl 0.9.1 has no
group filter at all (only the V1 sampler reads ``algorithm.filter_groups``); the asynchronous
trainer modes also hand over whole groups but may train on answers of older policies. No verl
setting reproduces the release's split groups or its micro-batch weights. A group left with fewer
answers by failed rollouts is standardised over the answers it has; a single answer gets 0 here,
r under the release's fallback.

NGRPO's rivals
--------------
The plugin also registers, under their ``ngrpo_sim`` preset names, the rivals whose advantage needs
only the rewards: ``maxrl``, ``qae``, ``asymre`` and ``shifted_baseline``
(``algorithm.adv_estimator=maxrl``, ...). Each calls its ``ngrpo_sim`` estimator the way ``ngrpo``
does. Their options in the ``algorithm`` section (``RIVAL_CONFIG_KEYS``): QAE's quantile level as
``quantile_k`` (the QAE release's name), AsymRE's baseline shift as ``baseline_shift``
(Trinity-RFT's name), the shifted baseline's r_max as ``max_reward``. Group filters: QAE's preset
drops homogeneous groups, which is verl's own ``filter_groups`` on ``acc``; ``shifted_baseline``
drops all-correct ones, which ``ngrpo_filter_key`` does as above. RL-ZVP and LENS read the policy's
token entropy and answer probabilities, which verl does not pass to an advantage estimator; they are
not registered.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est
from verl.utils.reward_score import default_compute_score

from ngrpo_sim.methods.advantages import AdvantageEstimator
from ngrpo_sim.methods.groups import group_advantages
from ngrpo_sim.methods.presets import DropAllCorrectGroups, get_method

ESTIMATOR_NAME = "ngrpo"
"""The value of ``algorithm.adv_estimator`` that selects NGRPO."""

FILTER_KEY = "ngrpo_filter_key"
"""The per-answer reward detail to give verl's group filter:
``algorithm.filter_groups.metric=ngrpo_filter_key``."""

CONFIG_KEYS = {"r_max": "max_reward", "virtual_samples": "add_max_reward_num"}
"""Where verl's ``algorithm`` section holds each NGRPO option (the release's names)."""

RIVAL_CONFIG_KEYS = {"maxrl": {}, "qae": {"quantile": "quantile_k"},
                     "asymre": {"shift": "baseline_shift"},
                     "shifted_baseline": {"r_max": "max_reward"}}
"""The rivals registered as verl estimators, by preset name, and where the ``algorithm`` section
holds each of their options."""

# Reward workers may be forked from one parent: the operating system's randomness gives each of them
# its own stream, where forked copies of one seeded generator would hand two wrong answers of a
# group the same key.
_fresh_randomness = random.SystemRandom()


def estimator_from_config(config, method: str = ESTIMATOR_NAME) -> AdvantageEstimator:
    """The ``method`` preset's estimator with its options read from ``config`` (for ``ngrpo``, the
    default: r_max and the number of virtual samples).

    ``config`` is verl's ``algorithm`` section (an omegaconf ``DictConfig`` or verl's
    ``AlgoConfig``), or ``None``; a missing key keeps the release's default, which is the preset's.
    """
    preset = get_method(method).advantage
    if config is None:
        return preset
    options = {}
    keys = CONFIG_KEYS if method == ESTIMATOR_NAME else RIVAL_CONFIG_KEYS[method]
    for field, key in keys.items():
        options[field] = config.get(key, getattr(preset, field))
        try:
            # ngrpo_sim checks this one option
            dataclasses.replace(preset, **{field: options[field]})
        except ValueError as error:
            raise ValueError(f"algorithm.{key}={options[field]!r} is not a valid {method.upper()} "
                             f"{field}: {error}") from error
    return dataclasses.replace(preset, **options)


def _outcome_advantages(method: str, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                        index, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``method`` preset's advantages of a verl batch, spread over each answer's response
    tokens: ``(advantages, returns)``."""
    if index is None:
        raise ValueError(f"the {method} estimator needs index (the uid of each answer's prompt) to "
                         f"form groups; got None")
    if token_level_rewards.shape != response_mask.shape:
        raise ValueError(f"token_level_rewards has shape {tuple(token_level_rewards.shape)} but "
                         f"response_mask has shape {tuple(response_mask.shape)}")
    estimator = estimator_from_config(config, method)
    outcome_rewards = token_level_rewards.detach().sum(dim=-1).to("cpu", torch.float64).numpy()
    try:
        advantages = group_advantages(outcome_rewards, index, estimator)
    except ValueError as error:
        bound = (f" (r_max={estimator.r_max}, set by algorithm.{CONFIG_KEYS['r_max']})"
                 if "r_max" in estimator.calibration_options else "")
        raise ValueError(f"the {method} estimator cannot use this batch{bound}: {error}") from error
    advantages = torch.as_tensor(advantages, dtype=token_level_rewards.dtype,
                                 device=token_level_rewards.device)
    advantages = advantages.unsqueeze(-1) * response_mask
    return advantages, advantages


@register_adv_est(ESTIMATOR_NAME)
def compute_ngrpo_outcome_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                    index: np.ndarray | None = None, config=None,
                                    **other_batch_fields) -> tuple[torch.Tensor, torch.Tensor]:
    """NGRPO advantages for a verl batch, spread over each answer's response tokens:
    ``(advantages, returns)``.

    ``other_batch_fields`` takes what verl passes to every registered estimator that NGRPO does not
    use (``reward_baselines`` when the batch has them).
    """
    return _outcome_advantages(ESTIMATOR_NAME, token_level_rewards, response_mask, index, config)


def _register_rival(method: str):
    """Register the ``method`` preset's advantage with verl under the preset's name."""
    def compute_outcome_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                  index: np.ndarray | None = None, config=None,
                                  **other_batch_fields) -> tuple[torch.Tensor, torch.Tensor]:
        return _outcome_advantages(method, token_level_rewards, response_mask, index, config)

    compute_outcome_advantage.__name__ = f"compute_{method}_outcome_advantage"
    compute_outcome_advantage.__doc__ = (f"The {method} preset's advantages for a verl batch, as "
                                         f"``compute_ngrpo_outcome_advantage`` computes NGRPO's.")
    return register_adv_est(method)(compute_outcome_advantage)


RIVAL_ESTIMATORS = {method: _register_rival(method) for method in RIVAL_CONFIG_KEYS}
"""verl's estimator function of each registered rival, by preset name."""


def all_correct_filter_key(score: float, r_max: float = 1.0) -> float:
    """r_max for a correct answer, a fresh random number below r_max for any other: see "The group
    filter" above.

    An answer is correct when ``DropAllCorrectGroups`` would drop a group made of it alone, so a
    group of answers shares one key exactly when that filter drops the group.
    """
    answer_is_correct = not DropAllCorrectGroups(r_max=r_max).keep(np.array([score]))[()]
    return float(r_max) if answer_is_correct else r_max - 1.0 - _fresh_randomness.random()


def compute_score(data_source, solution_str, ground_truth, extra_info=None, max_reward: float = 1.0,
                  **scorer_options) -> dict:
    """verl's default rule-based score of one answer, with ``FILTER_KEY`` added to its reward
    details.

    Select it with ``reward.custom_reward_function.path=pkg://ngrpo_sim.integrations.verl`` and
    ``reward.custom_reward_function.name=compute_score``. ``max_reward`` must equal
    ``algorithm.max_reward``; set it with
    ``+reward.custom_reward_function.reward_kwargs.max_reward=...`` when that is not 1. A reward
    function of your own gets the same filter by adding
    ``FILTER_KEY: all_correct_filter_key(score, r_max)`` to its result.
    """
    result = default_compute_score(data_source, solution_str, ground_truth, extra_info,
                                   **scorer_options)
    # A plain number becomes {"score", "acc"}: the reward details verl itself records for a plain
    # number.
    details = (dict(result) if isinstance(result, dict)
               else {"score": float(result), "acc": float(result)})
    details[FILTER_KEY] = all_correct_filter_key(details["score"], max_reward)
    return details

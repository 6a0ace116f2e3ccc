"""NGRPO in TRL: ``NGRPOTrainer``, a ``GRPOTrainer`` that trains with NGRPO's advantages, and its
``NGRPOConfig``.

What changes against GRPO, and where
-----------------------------------
* The advantage. ``GRPOTrainer`` scores each generation batch (``_generate_and_score_completions``),
  with rewards gathered from every process, and standardises them per group of ``num_generations``
  answers. ``NGRPOTrainer`` keeps everything else that method does (generation, old and reference
  log-probabilities, TRL's logs) and replaces the advantages with ``ngrpo_sim``'s NGRPO estimator on
  the same rewards: the weighted sum of the reward functions, as in TRL's default
  ``multi_objective_aggregation="sum_then_normalize"``. An answer that no reward function could
  score (every function returned None or NaN) has an *unknown* reward, with the semantics of
  ``ngrpo_sim``'s ``mask_unknown=True``: it stays out of its group's mean and std (the virtual
  sample still counts), gets advantage 0 and no gradient (its tokens leave the loss), and a group
  without a known reward gives no gradient at all. A weighted sum within a few float32 ulps of r_max
  counts as r_max; a real excess stops training. The new advantages are what TRL logs (the
  ``advantage`` column of its completions table).
* The group filter. All-correct groups have zero advantage under NGRPO; the release drops them so
  that they do not dilute the token mean. TRL has no refill, so the trainer removes their tokens
  from the loss instead, the way TRL's own ``mask_truncated_completions`` removes truncated answers,
  and logs the share of groups it dropped as ``ngrpo/dropped_groups_frac``. All-wrong groups stay:
  they are where NGRPO's signal comes from.
* The entropy bonus. ``GRPOTrainer`` takes the mean entropy over the tokens of each
  process's micro-batch, and gradients are then averaged over processes and micro-batches: a
  process left with only dropped groups, or with fewer tokens than the others, scales the bonus
  down, and the run depends on how the batch was split. ``NGRPOTrainer`` divides the entropy sum
  by the count that divides the token-mean policy loss (the kept tokens of the step on all
  processes, the normaliser of ``loss_type="dapo"``) whatever the ``loss_type``, as verl does for
  ``loss_agg_mode="token-mean"``. One process and two then give the same loss and update.
* The clip range. ``NGRPOConfig`` defaults to the preset's asymmetric clip, ``epsilon=0.16`` (low)
  and ``epsilon_high=0.24``, and to its entropy coefficient, 0.001. TRL's defaults already match the
  rest of the recipe: no KL (``beta=0``), token-mean loss (``loss_type="dapo"``: every response
  token of the generation batch weighs the same), 8 answers per prompt, learning rate 1e-6.
* Dropout. TRL trains in training mode with dropout on unless ``disable_dropout=True``, so the
  network that scores an answer is not the one that sampled it and the ratio starts away from 1.
  ``NGRPOConfig`` defaults to ``disable_dropout=True``, and the trainer also zeroes the rates
  attention layers keep as plain numbers (Qwen2, Llama), which TRL's switch misses.

Advantages are computed once per generation batch and buffered, so TRL's ``num_iterations`` (several
policy updates on one batch, where the clip range starts to act), ``steps_per_generation`` and every
``loss_type`` use them as they use GRPO's. Tested with TRL 1.16.

Whole groups and the token mean
-------------------------------
This trainer gives NGRPO as the paper describes it, not as the authors' release runs it (the
release splits most groups at its batch cut and weighs tokens per micro-batch:
``docs/method_reference.md``, "What the release computes"). TRL's sampler puts the
``num_generations`` answers of a prompt in the same generation batch, and the advantages are
computed on the gathered rewards of that batch before it is shuffled and sliced into updates, so
every group's mean and std cover all its answers; a dropped group leaves the loss and nothing is
carried to a later batch. With ``loss_type="dapo"`` (the default) every kept response token of a
generation batch has the same weight: TRL divides each update's token sum by a count taken over the
whole generation batch (``num_items_in_batch``), never per micro-batch, so an update holding more
tokens than the average takes a proportionally larger step.

NGRPO's rivals
--------------
The same trainer trains any ``ngrpo_sim`` preset whose advantage needs only the rewards:
``method="maxrl"``, ``"qae"``, ``"asymre"`` or ``"shifted_baseline"`` (and ``"ngrpo"``, the
default). ``NGRPOConfig.for_method(name, ...)`` also takes the preset's clip range, KL and entropy
coefficients and loss aggregation (as TRL's ``loss_type``). The preset's group filter applies the
way NGRPO's does: a dropped group's tokens leave the loss. RL-ZVP and LENS read the policy's token
entropy and answer probabilities, which this trainer does not hand to the advantage; they are
refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from trl import GRPOConfig, GRPOTrainer

from ngrpo_sim.methods.presets import DropAllCorrectGroups, GroupFilter, KeepAllGroups, get_method

_NGRPO = get_method("ngrpo")

TRL_LOSS_TYPES = {"token-mean": "dapo", "seq-mean-token-mean": "grpo",
                  "seq-mean-token-sum-norm": "dr_grpo"}
"""TRL's ``loss_type`` for each of ``ngrpo_sim``'s loss aggregations."""


@dataclass
class NGRPOConfig(GRPOConfig):
    """``GRPOConfig`` with NGRPO's defaults and its options: ``method``, ``r_max``,
    ``virtual_samples`` and ``drop_all_correct_groups``."""

    method: str = field(
        default="ngrpo",
        metadata={"help": "The ngrpo_sim preset whose advantage and group filter train: ngrpo, "
                          "or a rival whose advantage needs only the rewards (maxrl, qae, asymre, "
                          "shifted_baseline). NGRPOConfig.for_method sets its clip range, KL, "
                          "entropy and loss type too."},
    )

    epsilon: float = field(
        default=_NGRPO.clip_low,
        metadata={"help": "eps_low: the probability ratio of an answer with negative advantage may "
                          "fall to 1 - epsilon before its gradient is cut. NGRPO: 0.16."},
    )
    epsilon_high: float | None = field(
        default=_NGRPO.clip_high,
        metadata={"help": "eps_high: the ratio of an answer with positive advantage may rise to "
                          "1 + epsilon_high before its gradient is cut. NGRPO: 0.24."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Switch dropout off in the policy and the reference, so that the first "
                          "update on a batch sees ratio 1 (TRL's default is False)."},
    )
    entropy_coef: float = field(
        default=_NGRPO.entropy_coef,
        metadata={"help": "Weight of the entropy bonus; the NGRPO release inherits verl's 0.001."},
    )
    r_max: float = field(
        default=_NGRPO.advantage.r_max,
        metadata={"help": "The best reward a completion can earn (the weighted sum of the reward "
                          "functions); the virtual sample's reward. Rewards above it are refused."},
    )
    virtual_samples: int = field(
        default=_NGRPO.advantage.virtual_samples,
        metadata={"help": "How many virtual r_max samples join each group's mean and std. The "
                          "paper reports that more than one over-explores."},
    )
    drop_all_correct_groups: bool = field(
        default=True,
        metadata={"help": "Remove the tokens of groups whose answers all earn r_max from the loss "
                          "(NGRPO's filter; TRL has no refill). All-wrong groups always stay."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.scale_rewards != "group":
            raise ValueError("scale_rewards must be 'group' for NGRPO (the std of each group with "
                             f"its virtual sample), got {self.scale_rewards!r}")
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("multi_objective_aggregation must be 'sum_then_normalize' for NGRPO "
                             "(r_max bounds the summed reward), got "
                             f"{self.multi_objective_aggregation!r}")
        if not isinstance(self.drop_all_correct_groups, bool):
            raise ValueError("drop_all_correct_groups must be True or False, got "
                             f"{self.drop_all_correct_groups!r}")
        estimator = get_method(self.method).advantage
        if estimator.policy_inputs or estimator.uses_values:
            raise ValueError(f"method={self.method!r} reads the policy or a critic, which "
                             f"NGRPOTrainer does not hand to the advantage; choose a preset whose "
                             f"advantage needs only the rewards, such as ngrpo, maxrl, qae, asymre "
                             f"or shifted_baseline")
        # Refuses a bad r_max or virtual_samples now, not at the first generation batch.
        self.ngrpo_estimator()

    @classmethod
    def for_method(cls, method: str, **options) -> "NGRPOConfig":
        """A config for the ``ngrpo_sim`` preset ``method`` with its clip range, KL and entropy
        coefficients and loss aggregation; ``options`` (any ``GRPOConfig`` field) override them."""
        preset = get_method(method)
        recipe = dict(method=method, epsilon=preset.clip_low, epsilon_high=preset.clip_high,
                      beta=preset.kl_coef, entropy_coef=preset.entropy_coef,
                      loss_type=TRL_LOSS_TYPES[preset.loss_aggregation])
        return cls(**{**recipe, **options})

    def ngrpo_estimator(self):
        """The preset's advantage estimator, with this config's r_max and virtual samples where it
        has them."""
        estimator = get_method(self.method).advantage
        options = {"r_max": self.r_max, "virtual_samples": self.virtual_samples}
        return dataclasses.replace(estimator, **{name: value for name, value in options.items()
                                                 if name in estimator.calibration_options})

    def ngrpo_group_filter(self):
        """The preset's group filter; an all-correct filter at this r_max, or ``KeepAllGroups`` when
        it is switched off with ``drop_all_correct_groups=False``."""
        group_filter = get_method(self.method).group_filter
        if not isinstance(group_filter, DropAllCorrectGroups):
            return group_filter
        return (DropAllCorrectGroups(r_max=self.r_max) if self.drop_all_correct_groups
                else KeepAllGroups())


def summed_rewards(rewards_per_func: torch.Tensor, reward_weights: torch.Tensor,
                   r_max: float) -> np.ndarray:
    """The weighted sum of the reward functions per answer (float64), NaN where no function gave a
    reward.

    TRL sums in the dtype of its rewards (float32): weights that add up to 1 can give r_max plus or
    minus a few ulps, which counts as r_max here (so that an all-correct group is dropped and gets
    exactly 0); a real excess is left for the estimator to refuse.
    """
    unknown = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * reward_weights.to(rewards_per_func.device)).nansum(dim=1)
    tolerance = 8 * torch.finfo(rewards.dtype).eps * max(1.0, abs(r_max))
    rewards = rewards.to("cpu", torch.float64).numpy()
    rewards = np.where(np.abs(rewards - r_max) <= tolerance, r_max, rewards)
    return np.where(unknown.cpu().numpy(), np.nan, rewards)


def ngrpo_batch(rewards: np.ndarray, group_size: int, estimator,
                group_filter: GroupFilter) -> tuple:
    """(advantages, trained, group_kept) for a flat batch of groups of `group_size` consecutive
    answers, as TRL orders them: the estimator's advantages with unknown rewards (NaN) masked,
    whether each answer enters the loss (its group is kept and its reward known), and whether each
    group is kept."""
    grouped = rewards.reshape(-1, group_size)
    advantages = estimator(grouped, mask_unknown=True)
    group_kept = group_filter.keep(grouped, mask_unknown=True)
    trained = group_kept[:, None] & ~np.isnan(grouped)
    return advantages.ravel(), trained.ravel(), group_kept


def _disable_attention_dropout(model) -> None:
    """Zero the dropout rates that attention layers keep as plain numbers; TRL's switch only sets
    nn.Dropout."""
    for module in model.modules():
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)


class NGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with NGRPO's advantages and group filter; takes the same arguments, with an
    ``NGRPOConfig``."""

    def __init__(self, model, reward_funcs=None, args: NGRPOConfig | None = None,
                 **trainer_options):
        if args is None:
            model_name = model if isinstance(model, str) else model.config.name_or_path
            args = NGRPOConfig(f"{str(model_name).split('/')[-1]}-NGRPO")
        if not isinstance(args, NGRPOConfig):
            raise ValueError("args must be an NGRPOConfig (NGRPO's defaults and options), got "
                             f"{type(args).__name__}")
        super().__init__(model, reward_funcs, args, **trainer_options)
        if args.disable_dropout:
            for network in (self.model, self.ref_model):
                if network is not None:
                    _disable_attention_dropout(network)
        self.ngrpo_estimator = args.ngrpo_estimator()
        self.ngrpo_group_filter = args.ngrpo_group_filter()
        self._gathered_rewards_per_func: torch.Tensor | None = None
        self._loss_entropies: torch.Tensor | None = None
        self._loss_entropy_mask: torch.Tensor | None = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # TRL gathers the rewards of every process here: the groups NGRPO needs, whichever process
        # holds an answer.
        self._gathered_rewards_per_func = super()._calculate_rewards(inputs, prompts, completions,
                                                                     completion_ids_list)
        return self._gathered_rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval

        try:
            rewards = summed_rewards(self._gathered_rewards_per_func, self.reward_weights,
                                     self.args.r_max)
            advantages, trained, group_kept = ngrpo_batch(rewards, group_size, self.ngrpo_estimator,
                                                          self.ngrpo_group_filter)
        except ValueError as error:
            raise ValueError(f"{self.args.method} cannot use this batch's rewards (NGRPOConfig."
                             f"r_max={self.args.r_max} bounds the weighted sum of the reward "
                             f"functions): {error}") from error

        # This process's answers, sliced from the gathered batch the way GRPOTrainer slices its own
        # advantages.
        local_size = len(output["advantages"])
        local = slice(self.accelerator.process_index * local_size,
                      (self.accelerator.process_index + 1) * local_size)
        device = output["advantages"].device
        output["advantages"] = torch.as_tensor(advantages[local], dtype=output["advantages"].dtype,
                                               device=device)
        completion_mask = output["completion_mask"]
        trained_here = torch.as_tensor(trained[local], dtype=completion_mask.dtype, device=device)
        output["completion_mask"] = completion_mask * trained_here.unsqueeze(1)
        # The token-mean loss divides by the tokens of the whole generation batch; dropped groups
        # and unknown rewards no longer count.
        loss_mask = output["completion_mask"]
        if "tool_mask" in output:
            loss_mask = loss_mask * output["tool_mask"]
        output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()

        # GRPOTrainer has just appended this batch's GRPO advantages to its log; put NGRPO's in
        # their place.
        logged = self._logs["advantages"]
        replaced = min(len(advantages), len(logged))
        for _ in range(replaced):
            logged.pop()
        logged.extend(advantages[len(advantages) - replaced:].tolist())
        self._metrics[mode]["ngrpo/dropped_groups_frac"].append(float(1.0 - group_kept.mean()))
        return output

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux_loss = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        self._loss_entropies = entropies  # None when generation asks for log-probabilities only
        return logps, entropies, aux_loss

    def get_high_entropy_mask(self, entropies, mask, threshold):
        self._loss_entropy_mask = super().get_high_entropy_mask(entropies, mask, threshold)
        return self._loss_entropy_mask

    def _compute_loss(self, model, inputs):
        # The coefficient GRPOTrainer applies in this call (its adaptive control may change
        # entropy_coef inside the call).
        coefficient = self.entropy_coef
        if self.use_adaptive_entropy and self._last_world_entropy > self.args.entropy_target:
            coefficient = 0.0
        self._loss_entropies, self._loss_entropy_mask = None, None
        loss = super()._compute_loss(model, inputs)
        if not self._entropy_bonus_enabled or coefficient == 0.0:
            return loss

        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        if self._loss_entropy_mask is not None:
            mask = mask * self._loss_entropy_mask
        entropy_sum = (self._loss_entropies * mask).sum()
        training = self.model.training
        accumulation = self.current_gradient_accumulation_steps if training else 1.0
        # GRPOTrainer subtracted coefficient x this micro-batch's mean entropy / accumulation.
        # NGRPO's bonus divides the entropy sum as the token-mean policy loss divides its sum.
        trl_bonus = entropy_sum / mask.sum().clamp(min=1.0) / accumulation
        step_tokens = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if training:
            step_tokens = step_tokens * accumulation / self.args.steps_per_generation
        self._loss_entropies, self._loss_entropy_mask = None, None
        return loss + coefficient * (trl_bonus - entropy_sum / step_tokens)

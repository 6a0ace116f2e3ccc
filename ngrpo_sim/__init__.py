"""ngrpo_sim: the advantage landscapes and training dynamics of GRPO, NGRPO and their peers.

The one home of the method definitions used across the project:

* ``ngrpo_sim.advantages``: advantage estimators (GRPO, NGRPO, Dr.GRPO, RLOO, PSR, NSR, W-REINFORCE,
  critic, and NGRPO's rivals MaxRL, QAE, RL-ZVP, LENS and the shifted baselines of AsymRE);
* ``ngrpo_sim.methods``: method presets (advantage + clip range + group filter + loss aggregation)
  and the registry ``METHODS``;
* ``ngrpo_sim.surrogate``: the clipped surrogate with asymmetric clipping;
* ``ngrpo_sim.metrics``: pass@k, its AUC and entropy;
* ``ngrpo_sim.landscape``: exact advantage landscapes and the gain c(p).
"""

from ngrpo_sim.advantages import (CriticAdvantage, DrGRPOAdvantage, GRPOAdvantage, LENSAdvantage,
                                  MaxRLAdvantage, NGRPOAdvantage, NSRAdvantage, PSRAdvantage,
                                  QAEAdvantage, RLOOAdvantage, RLZVPAdvantage,
                                  ShiftedBaselineAdvantage, WeightedReinforceAdvantage)
from ngrpo_sim.methods import (LOSS_AGGREGATIONS, METHODS, DropAllCorrectGroups,
                               DropHomogeneousGroups, KeepAllGroups, Method, aggregate_loss,
                               get_method, token_weights)
from ngrpo_sim.metrics import pass_at_k_auc, pass_at_k_exact, pass_at_k_unbiased, softmax_entropy
from ngrpo_sim.surrogate import clip_fractions, clipped_surrogate

__version__ = "0.1.0"

__all__ = [
    "CriticAdvantage", "DrGRPOAdvantage", "GRPOAdvantage", "NGRPOAdvantage", "NSRAdvantage",
    "PSRAdvantage",
    "RLOOAdvantage", "WeightedReinforceAdvantage", "LENSAdvantage", "MaxRLAdvantage",
    "QAEAdvantage", "RLZVPAdvantage", "ShiftedBaselineAdvantage",
    "LOSS_AGGREGATIONS", "METHODS", "DropAllCorrectGroups",
    "DropHomogeneousGroups", "KeepAllGroups", "Method", "aggregate_loss", "get_method",
    "token_weights",
    "pass_at_k_auc", "pass_at_k_exact", "pass_at_k_unbiased", "softmax_entropy", "clip_fractions",
    "clipped_surrogate",
]

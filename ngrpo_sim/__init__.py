"""ngrpo_sim: the advantage landscapes and training dynamics of GRPO, NGRPO and their peers.

The package is built in layers, each a subpackage that imports only from the layers before it in
this list (``tests/test_layers.py`` checks it):

1. ``base``: input checks, atomic files, HTML escaping, one colour per method;
2. ``methods``: the one definition of each method (advantages, presets, clipped surrogate, pass@k);
3. ``analysis``: exact landscapes and the gain c(p) of the expected update;
4. ``simulators``: the shared training loop and its tasks (one-token answers, token sequences);
5. ``experiments``: many runs at once, their folders, sweeps, the trainer's run folders;
6. ``pages``: the interactive page and the step inspector;
7. ``reports``: ``ngrpo-sim report`` and its sections;
8. ``teaching``: what the notebooks stand on;
9. ``integrations``: verl and TRL plugins (above ``methods`` only).

The command line (``cli``) stands on all of them. The names below are the public API: the method
definitions are imported with the package; the analysis and simulator entry points on first use,
so that an engine's plugin, which imports ``ngrpo_sim.integrations``, loads no simulator.
"""

import importlib
import importlib.metadata

from ngrpo_sim.methods.advantages import (CriticAdvantage, DrGRPOAdvantage, GRPOAdvantage,
                                          NGRPOAdvantage, NSRAdvantage, PSRAdvantage, RLOOAdvantage,
                                          WeightedReinforceAdvantage)
from ngrpo_sim.methods.metrics import (pass_at_k_auc, pass_at_k_exact, pass_at_k_unbiased,
                                       softmax_entropy)
from ngrpo_sim.methods.presets import (LOSS_AGGREGATIONS, METHODS, DropAllCorrectGroups,
                                       DropHomogeneousGroups, KeepAllGroups, Method, aggregate_loss,
                                       get_method, token_weights)
from ngrpo_sim.methods.rival_advantages import (LENSAdvantage, MaxRLAdvantage, QAEAdvantage,
                                                RLZVPAdvantage, ShiftedBaselineAdvantage)
from ngrpo_sim.methods.surrogate import clip_fractions, clipped_surrogate

__version__ = importlib.metadata.version("ngrpo-sim")

_ON_FIRST_USE = {
    "count_advantages": "ngrpo_sim.analysis.landscape",
    "expected_gain": "ngrpo_sim.analysis.landscape",
    "zero_gradient_probability": "ngrpo_sim.analysis.landscape",
    "simulate": "ngrpo_sim.simulators.training_loop",
    "DynamicsConfig": "ngrpo_sim.simulators.dynamics",
    "SequenceConfig": "ngrpo_sim.simulators.sequence_config",
    "run_methods": "ngrpo_sim.experiments.runs",
}


def __getattr__(name: str):
    if name in _ON_FIRST_USE:
        return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
    raise AttributeError(f"module 'ngrpo_sim' has no attribute {name!r}")


__all__ = [
    "CriticAdvantage", "DrGRPOAdvantage", "GRPOAdvantage", "NGRPOAdvantage", "NSRAdvantage",
    "PSRAdvantage", "RLOOAdvantage", "WeightedReinforceAdvantage", "LENSAdvantage",
    "MaxRLAdvantage", "QAEAdvantage", "RLZVPAdvantage", "ShiftedBaselineAdvantage",
    "LOSS_AGGREGATIONS", "METHODS", "DropAllCorrectGroups", "DropHomogeneousGroups",
    "KeepAllGroups", "Method", "aggregate_loss", "get_method", "token_weights",
    "pass_at_k_auc", "pass_at_k_exact", "pass_at_k_unbiased", "softmax_entropy",
    "clip_fractions", "clipped_surrogate", *_ON_FIRST_USE,
]

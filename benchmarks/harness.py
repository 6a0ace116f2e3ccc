"""What the benchmarks share: the single-file trainer loaded by its path, and a counter of the work
a model does.

Needs only numpy, torch and transformers (the trainer's own dependencies), so that a GPU machine
without the project's other packages can run `gpu_check.py`.
"""
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_trainer():
    """minimal/ngrpo_train.py as the module `ngrpo_train` (a file, not a package)."""
    if "ngrpo_train" not in sys.modules:
        path = ROOT / "minimal" / "ngrpo_train.py"
        spec = importlib.util.spec_from_file_location("ngrpo_train", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["ngrpo_train"] = module
        spec.loader.exec_module(module)
    return sys.modules["ngrpo_train"]


class ForwardCounter:
    """Counts a model's forward calls and the token positions they read (rows x sequence length,
    padding included), apart for calls that record a graph for a backward pass ("grad") and calls
    that do not ("no_grad").

    Attach it to the top-level modules that a trainer calls; `detach()` removes the hooks. A hook
    costs a Python call per forward: count in steps that are not timed.
    """

    def __init__(self, *models):
        self.handles = [model.register_forward_pre_hook(self._count, with_kwargs=True)
                        for model in models]
        self.reset()

    def reset(self) -> None:
        self.calls = {"no_grad": 0, "grad": 0}
        self.tokens = {"no_grad": 0, "grad": 0}

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape = ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:2]
        kind = "grad" if torch.is_grad_enabled() else "no_grad"
        self.calls[kind] += 1
        self.tokens[kind] += shape[0] * shape[1]

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()

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
    costs a Python call per forward: count in steps that are not timed. Decode steps replayed from
    CUDA graphs call no forward: pass the policy's `decoding` dict (the trainer's
    Policy.decoding), whose replays are added to the no-grad counts.
    """

    def __init__(self, *models, decoding: dict | None = None):
        self.handles = [model.register_forward_pre_hook(self._count, with_kwargs=True)
                        for model in models]
        self.decoding = decoding if decoding is not None else {}
        self.reset()

    def reset(self) -> None:
        self._calls = {"no_grad": 0, "grad": 0}
        self._tokens = {"no_grad": 0, "grad": 0}
        self._replays = self._replayed()

    def _replayed(self) -> tuple:
        return self.decoding.get("graph_replays", 0), self.decoding.get("graph_positions", 0)

    @property
    def calls(self) -> dict:
        replays = self._replayed()[0] - self._replays[0]
        return {"no_grad": self._calls["no_grad"] + replays, "grad": self._calls["grad"]}

    @property
    def tokens(self) -> dict:
        positions = self._replayed()[1] - self._replays[1]
        return {"no_grad": self._tokens["no_grad"] + positions, "grad": self._tokens["grad"]}

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape = ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:2]
        kind = "grad" if torch.is_grad_enabled() else "no_grad"
        self._calls[kind] += 1
        self._tokens[kind] += shape[0] * shape[1]

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()

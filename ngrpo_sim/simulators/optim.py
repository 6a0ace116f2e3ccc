"""SGD and Adam on arrays whose first axis is the seed: every seed is an independent run with its
own state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ngrpo_sim.base import checks

OPTIMIZERS = ("sgd", "adam")


@dataclass
class Optimizer:
    """Minimises: ``step(params, grads)`` returns ``params - update``.

    SGD moves each parameter in proportion to its gradient, so rare prompts (small gradients) move
    slowly. Adam divides by a running RMS of each parameter's gradient, so every parameter moves at
    roughly ``learning_rate`` per step whatever the scale of its gradient: it erases the size
    differences between methods (the gain c(p)) and keeps only their signs and consistency. Which
    one a simulation uses can change its conclusions.
    """

    kind: str = "adam"
    learning_rate: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    first_moment: np.ndarray | None = None
    """Adam's running mean of the gradients (created at the first step)."""
    second_moment: np.ndarray | None = None
    """Adam's running mean of the squared gradients."""
    steps: int = 0
    """Adam steps taken, for the bias correction."""

    def __post_init__(self):
        checks.choice("optimizer", self.kind, OPTIMIZERS)
        checks.number("learning_rate", self.learning_rate, low=0.0, low_open=True)

    def step(self, params: np.ndarray, grads: np.ndarray) -> np.ndarray:
        if self.kind == "sgd":
            return params - self.learning_rate * grads
        if self.first_moment is None:
            self.first_moment, self.second_moment = np.zeros_like(params), np.zeros_like(params)
        self.steps += 1
        # In place, with one scratch buffer: the tabular policy updates every logit of every seed
        # several times per step, so temporaries dominate the simulator's time otherwise.
        scratch = np.multiply(grads, 1 - self.beta1)
        self.first_moment *= self.beta1
        self.first_moment += scratch
        np.square(grads, out=scratch)
        scratch *= 1 - self.beta2
        self.second_moment *= self.beta2
        self.second_moment += scratch
        np.divide(self.second_moment, 1 - self.beta2 ** self.steps, out=scratch)
        np.sqrt(scratch, out=scratch)
        scratch += self.eps
        np.divide(self.first_moment, scratch, out=scratch)
        scratch *= self.learning_rate / (1 - self.beta1 ** self.steps)
        return params - scratch

"""The clipped surrogate objective of PPO, GRPO and NGRPO, with asymmetric clipping.

For one token with probability ratio rho = pi_theta / pi_old and advantage A the loss is

    loss = max(-A * rho, -A * clip(rho, 1 - eps_low, 1 + eps_high))

The max picks the pessimistic branch, so the clip only ever removes incentive, never adds it:

* A > 0 and rho > 1 + eps_high: the token already gained enough probability this round; its gradient
  is cut (the *high* bound binds, only for positive advantages);
* A < 0 and rho < 1 - eps_low: the token already lost enough probability; its gradient is cut (the
  *low* bound binds, only for negative advantages);
* anywhere else the gradient with respect to log pi_theta is -A * rho.

At rho = 1 (the first minibatch update after a rollout) nothing is clipped. There is no dual clip
here, so a negative-advantage token whose ratio has grown large keeps its full gradient, as in the
NGRPO release.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ngrpo_sim.base import checks


@dataclass(frozen=True)
class ClippedSurrogate:
    """Per-token values of the clipped surrogate; all arrays share the broadcast shape of ratio and
    advantage."""

    loss: np.ndarray
    """max(-A rho, -A clip(rho))."""
    grad_logp: np.ndarray
    """d loss / d log pi_theta (the ratio's own derivative is rho)."""
    clipped_low: np.ndarray
    """True where the lower bound removed the gradient (A < 0, rho < 1 - eps_low)."""
    clipped_high: np.ndarray
    """True where the upper bound removed the gradient (A > 0, rho > 1 + eps_high)."""


def clipped_surrogate(ratio, advantages, clip_low: float, clip_high: float) -> ClippedSurrogate:
    """Loss, gradient and clip masks of the clipped surrogate for each token.

    A ratio of 0 is valid: exp(log pi_theta - log pi_old) underflows to 0 once the token has lost
    more than a factor e^745 of its probability during the updates, as a very large learning rate
    does; its loss and gradient are the limits at rho -> 0 (the low clip binds for A < 0; for
    A > 0 the gradient -A rho is 0). Raises ValueError for a negative, NaN or infinite ratio: an
    infinite one would need a sampled token whose old probability underflowed, and -A rho has no
    value at A = 0.
    """
    ratio = checks.finite_array("ratio", ratio)
    advantages = checks.finite_array("advantages", advantages)
    if np.any(ratio < 0):
        raise ValueError(f"ratio must be >= 0 (a ratio of probabilities), got "
                         f"{ratio[ratio < 0].ravel()[0]}")
    clip_low = checks.number("clip_low", clip_low, low=0.0, high=1.0, high_open=True)
    clip_high = checks.number("clip_high", clip_high, low=0.0)
    ratio, advantages = np.broadcast_arrays(ratio, advantages)
    clipped_low = (advantages < 0) & (ratio < 1.0 - clip_low)
    clipped_high = (advantages > 0) & (ratio > 1.0 + clip_high)
    loss = np.maximum(-advantages * ratio,
                      -advantages * np.clip(ratio, 1.0 - clip_low, 1.0 + clip_high))
    grad_logp = np.where(clipped_low | clipped_high, 0.0, -advantages * ratio)
    return ClippedSurrogate(loss, grad_logp, clipped_low, clipped_high)


def clip_fractions(surrogate: ClippedSurrogate, mask=None) -> tuple[float, float]:
    """(share of tokens clipped at the low bound, share clipped at the high bound) among the masked
    tokens.

    Both shares use all tokens as denominator, so they add up to the usual ``clipfrac``.
    """
    if mask is None:
        mask = np.ones_like(surrogate.loss)
    mask = checks.finite_array("mask", mask)
    if mask.shape != surrogate.loss.shape:
        raise ValueError(f"mask has shape {mask.shape} but the tokens have shape "
                         f"{surrogate.loss.shape}")
    tokens = max(mask.sum(), 1.0)
    return (float((surrogate.clipped_low * mask).sum() / tokens),
            float((surrogate.clipped_high * mask).sum() / tokens))

"""The starting difficulty profile that every simulator's task shares: how hard each prompt is for
the "base model" before training, and the buckets the metrics report by.

A profile is a named mixture (``"base"``: many prompts almost never solved, some mid, some easy,
like a base model on a math benchmark) or explicit success rates.
"""

from __future__ import annotations

import numpy as np

from ngrpo_sim.base import checks

PROFILES: dict[str, tuple[tuple[float, float, float], ...]] = {
    # (share of prompts, Beta a, Beta b) components of the starting success rate.
    "base": ((0.5, 0.3, 30.0), (0.3, 1.5, 3.5), (0.2, 5.0, 1.5)),
    "hard": ((1.0, 0.3, 30.0),),
    "mid": ((1.0, 2.0, 5.0),),
    "uniform": ((1.0, 1.0, 1.0),),
}
"""Named starting profiles. ``base``: half the prompts are hard (Beta(0.3, 30), mean 1%), 30% mid
(mean 30%), 20% easy (mean 77%)."""

DIFFICULTY_BUCKETS = {"hard": (0.0, 0.05), "mid": (0.05, 0.5), "easy": (0.5, 1.0 + 1e-12)}
"""Buckets of the *starting* success rate, for per-difficulty accuracy and entropy."""

SUCCESS_FLOOR = 1e-6
"""A softmax cannot reach a success rate of exactly 0 or 1; profile values are kept inside
[1e-6, 1 - 1e-6]."""

def parse_profile(profile) -> str | np.ndarray:
    """A profile's name, or its explicit success rates as a 1-d array; refuses anything else with a
    sentence.

    Runs before any work (``DynamicsConfig`` calls it), so a bad ``--profile`` is reported before a
    run starts.
    """
    if isinstance(profile, str) and profile in PROFILES:
        return profile
    if isinstance(profile, str):
        try:
            profile = [float(part) for part in profile.split(",")]
        except ValueError:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)} or comma-separated "
                             f"success rates, got {profile!r}") from None
    rates = checks.finite_array("profile", profile).ravel()
    if rates.size == 0 or np.any((rates < 0) | (rates > 1)):
        bad = rates[(rates < 0) | (rates > 1)]
        raise ValueError("profile success rates must lie in [0, 1], got "
                         f"{bad[0] if bad.size else 'nothing'}")
    return rates


def starting_success(profile, num_prompts: int, rng: np.random.Generator) -> np.ndarray:
    """Starting success rate of each prompt: drawn from a named profile, or explicit rates cycled
    over prompts."""
    profile = parse_profile(profile)
    if isinstance(profile, str):
        components = PROFILES[profile]
        shares = np.array([share for share, _, _ in components])
        which = rng.choice(len(components), size=num_prompts, p=shares / shares.sum())
        a = np.array([c[1] for c in components])[which]
        b = np.array([c[2] for c in components])[which]
        rates = rng.beta(a, b)
    else:
        rates = np.resize(profile, num_prompts)
    return np.clip(rates, SUCCESS_FLOOR, 1.0 - SUCCESS_FLOOR)


def difficulty_masks(initial_success: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean (P,) masks of the prompts in each difficulty bucket of the starting success rate."""
    return {name: (initial_success >= low) & (initial_success < high)
            for name, (low, high) in DIFFICULTY_BUCKETS.items()}

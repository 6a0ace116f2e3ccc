"""The advantage landscape: what each method does with a group of G answers of which k are correct.

Three views, all exact (no sampling):

1. ``count_advantages``: the advantage of a correct and of a wrong answer in a group with k correct
   answers.
2. ``zero_gradient_probability``: the chance that a group sampled at success rate p moves nothing.
3. ``expected_gain``: the scalar c(p) of the expected update of a tabular softmax policy.

The gain identity. Take a softmax policy pi = softmax(z) over K answers with binary rewards r (1
correct, 0 wrong) and success rate p = sum_a pi_a r_a. Sample a group of G answers i.i.d. from pi
and ascend the group's policy-gradient estimate g = (1/G) sum_i A_i grad_z log pi(a_i) = (1/G) sum_i
A_i (e_{a_i} - pi). If A_i depends only on the answer's reward and the group's count k of correct
answers, A_i = f(r_{a_i}, k), then

    E[g] = c(p) * pi * (r - p),    c(p) = E[f(1, 1 + B)] - E[f(0, B)],    B ~ Binomial(G - 1, p).

Proof sketch: fix an answer a. By symmetry over the G positions, E[sum_i A_i 1{a_i = a}] = G pi_a
E[f(r_a, k) | a_1 = a], and given a_1 = a the other G - 1 answers hold B ~ Bin(G - 1, p) correct
ones, so this is G pi_a alpha for a correct answer and G pi_a beta for a wrong one, with alpha = E
f(1, 1 + B), beta = E f(0, B). The mean of (1/G) sum_i A_i is p alpha + (1 - p) beta. Hence E[g]_a =
pi_a (alpha r_a + beta (1 - r_a) - p alpha - (1 - p) beta) = (alpha - beta) pi_a (r_a - p).

So, for binary rewards, every count-based method moves the expected logits in the *same direction*
pi * (r - p), the exact policy gradient of the success rate; methods differ only in the step size
c(p) they apply at each difficulty (and in their noise). A dropped group counts as advantage 0 in f.
The identity is per sampled group, before a filter's refill renormalises the batch, on the first
update after a rollout (ratio 1, so clipping is inactive), and ignores KL and entropy terms.

Not covered: PPO, whose advantage r - V depends on a learned critic rather than on the group (for
any V that does not depend on the sampled group the same argument gives c = 1: a baseline changes
variance, not the mean); RL-ZVP and LENS, whose advantages depend on the policy's probabilities
(RL-ZVP scales zero-variance groups by the policy's entropy, LENS ranks wrong answers by the
probability of each), so the same counts give different advantages on different policies and A_i is
not f(r, k); graded (non-binary) rewards; the second and later minibatch updates, where ratios leave
1 and clipping acts.

Of NGRPO's rivals the count-based ones are MaxRL, QAE and the shifted baselines (AsymRE, and NGRPO's
baseline without its std). Closed forms, each tested: MaxRL c(p) = [1 - (1 - p)^(G - 1)] / p; a
shifted baseline c(p) = 1 - (1 - fraction) / G at every p.

An estimator that reads a policy input which is the same for every answer of a group is
count-based *given* that input, and the identity holds at each value of it: RL-ZVP in the
one-token bandit reads the entropy H of the prompt's answer distribution, shared by the G answers,
and its gain is c_GRPO(p) + alpha H p^(G - 1) (tested by enumeration). ``count_advantages``,
``count_group_advantages`` and ``expected_gain`` take such inputs as keywords, one value per group.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.special import comb, softmax

from ngrpo_sim.base import checks
from ngrpo_sim.base.plotting import (axis_label, coincidence_note, coinciding, family_subplots,
                                     figure_legend, method_families, plot_method_curves, save)
from ngrpo_sim.methods.metrics import as_probability
from ngrpo_sim.methods.presets import Method, check_scores_correct_answers

DEFAULT_METHODS = ("grpo", "ngrpo", "dapo", "psr_nsr", "dr_grpo", "rloo", "maxrl", "qae", "asymre",
                   "shifted_baseline")
"""The count-based presets the landscape shows unless told otherwise: baselines, then rivals."""


def check_method(method: Method, given: tuple[str, ...] = ()) -> None:
    """Refuse a method the landscape cannot describe, with a sentence saying why: one whose
    advantage is not a function of the group's count of correct answers given the policy inputs
    ``given`` (the same for every answer of a group), such as PPO's, or one whose estimator refuses
    the reward 1 of a correct answer (r_max below 1)."""
    estimator = method.advantage
    if estimator.count_based or (estimator.policy_inputs
                                 and set(estimator.policy_inputs) <= set(given)):
        check_scores_correct_answers(method, "the landscape's groups hold binary rewards (1 "
                                             "correct, 0 wrong) and r_max is the best reward, the "
                                             "virtual answer's")
        return
    if estimator.uses_values:
        reason = ("a learned value V, not on the group's count of correct answers, so it has no "
                  "advantage landscape or gain c(p); for any V that does not depend on the sampled "
                  "group its expected gain is 1")
    else:
        inputs = ", ".join(estimator.policy_inputs)
        reason = (f"the policy ({inputs} of the sampled answers) as well as on the group's count "
                  f"of correct answers, so it has no advantage landscape or gain c(p)")
    raise ValueError(f"method {method.name!r} is not count-based: its advantage ({estimator.name}) "
                     f"depends on {reason}")


def memory_bytes(group_size: int, grid_points: int = 201) -> float:
    """An upper estimate of the peak memory (bytes) of the landscape's tables, CSV files and figures
    for groups of G, so that a command can refuse a size beyond the machine before it starts.

    The (G + 1) x G canonical groups and an estimator's temporaries on them take about five such
    arrays at once, the binomial probabilities on the grid of p a few (grid_points x (G + 1))
    arrays, matplotlib's figures tens of MiB. Measured with tracemalloc; tests/test_landscape.py
    checks that the estimate bounds the peak.
    """
    group_size = checks.integer("group_size", group_size, low=2)
    cells = (group_size + 1) * group_size
    return 8.0 * (6 * cells + 8 * grid_points * (group_size + 1)) + 48 * 2 ** 20


def canonical_groups(group_size: int) -> np.ndarray:
    """Row k (k = 0..G) is a group with k correct answers (reward 1) followed by G - k wrong ones
    (reward 0)."""
    group_size = checks.integer("group_size", group_size, low=2)
    return (np.arange(group_size)[None, :] < np.arange(group_size + 1)[:, None]).astype(np.float64)


def count_group_advantages(method: Method, group_size: int, **group_inputs) -> np.ndarray:
    """(..., G + 1, G): the advantages of ``canonical_groups`` after the method's group filter.

    ``group_inputs`` are policy inputs the method reads that are the same for every answer of a
    group (RL-ZVP's ``entropy`` in the one-token bandit), each an array (...) of one value per
    group; the leading axes of the result are theirs. Raises ``ValueError`` for a method whose
    advantage is not a function of the counts given these inputs.
    """
    check_method(method, tuple(group_inputs))
    groups = canonical_groups(group_size)
    if not group_inputs:
        return method.advantages(groups)
    inputs = {name: checks.finite_array(name, value) for name, value in group_inputs.items()}
    shape = np.broadcast_shapes(*(value.shape for value in inputs.values())) + groups.shape
    return method.advantages(np.broadcast_to(groups, shape), **{
        name: np.broadcast_to(value[..., None, None], shape) for name, value in inputs.items()})


def count_advantages(method: Method, group_size: int, **group_inputs
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(correct, wrong): arrays of length G + 1 indexed by k, the number of correct answers in the
    group.

    ``correct[k]`` is the advantage of each correct answer, ``wrong[k]`` of each wrong answer, after
    the method's group filter (a dropped group gives 0). ``correct[0]`` and ``wrong[G]`` describe
    answers that cannot exist and are NaN. With ``group_inputs`` (see ``count_group_advantages``)
    both are shaped (..., G + 1).
    """
    return _correct_and_wrong(count_group_advantages(method, group_size, **group_inputs))


def _correct_and_wrong(advantages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``count_advantages`` from ``count_group_advantages``."""
    group_size = advantages.shape[-1]
    counts = np.arange(group_size + 1)
    right = np.where(counts >= 1, advantages[..., 0], np.nan)
    wrong = np.where(counts <= group_size - 1, advantages[..., -1], np.nan)
    return right, wrong


def _success_rates(success_rate) -> np.ndarray:
    p = checks.finite_array("success_rate", success_rate)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"success_rate must lie in [0, 1], got {p[(p < 0) | (p > 1)].ravel()[0]}")
    return p


DIRECT_PMF_TRIALS = 512
"""Up to this many trials comb(n, k) stays below 5e152, so in every term of
comb(n, k) p^k (1 - p)^(n - k) above 1e-155 the powers are normal floats and the product is exact
to rounding; smaller terms are 0 to that precision."""


def binomial_pmf(trials: int, success_rate: np.ndarray) -> np.ndarray:
    """P(k successes in ``trials``) for k = 0..trials, shaped
    ``success_rate.shape + (trials + 1,)``.

    Plain numpy up to ``DIRECT_PMF_TRIALS``: scipy.stats.binom is exact too but an order of
    magnitude slower in the simulator's inner loop. Beyond it the binomial coefficient overflows a
    float (from 1030 trials) or meets powers of p that have lost precision, so scipy.stats.binom
    takes over.
    """
    counts = np.arange(trials + 1)
    p = np.asarray(success_rate, dtype=np.float64)[..., None]
    if trials > DIRECT_PMF_TRIALS:
        from scipy.stats import binom  # imported here: it takes a noticeable part of a second

        return binom.pmf(counts, trials, p)
    return comb(trials, counts) * p ** counts * (1.0 - p) ** (trials - counts)


def silent_counts(method: Method, group_size: int) -> np.ndarray:
    """(G + 1,) bool indexed by k: whether a group with k correct answers gives every answer
    advantage 0 (GRPO: k = 0 and k = G; NGRPO: k = G only, the all-correct group it drops)."""
    return _silent(count_group_advantages(method, group_size))


def _silent(advantages: np.ndarray) -> np.ndarray:
    """``silent_counts`` from ``count_group_advantages``."""
    return np.all(advantages == 0.0, axis=-1)


def zero_gradient_probability(method: Method, group_size: int, success_rate) -> np.ndarray:
    """Probability that a group of G answers sampled at success rate p gives every answer advantage
    0.

    Sums the Binomial(G, p) probabilities of the counts k whose canonical group is silent under the
    method (GRPO: k = 0 or G, so p^G + (1 - p)^G; NGRPO: only k = G). Broadcasts over
    ``success_rate``.
    """
    return _zero_gradient(silent_counts(method, group_size), _success_rates(success_rate))


def _zero_gradient(silent: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``zero_gradient_probability`` from ``silent_counts``."""
    return binomial_pmf(len(silent) - 1, p) @ silent


def expected_gain(method: Method, group_size: int, success_rate, **group_inputs) -> np.ndarray:
    """The gain c(p) = E[f(1, 1 + B)] - E[f(0, B)], B ~ Bin(G - 1, p), exactly (see the module
    docstring). ``group_inputs`` (see ``count_group_advantages``) broadcast against p."""
    p = _success_rates(success_rate)
    return _gain(*count_advantages(method, group_size, **group_inputs), p)


def _gain(right: np.ndarray, wrong: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``expected_gain`` from ``count_advantages``."""
    group_size = right.shape[-1] - 1
    return np.sum(binomial_pmf(group_size - 1, p) * (right[..., 1:] - wrong[..., :-1]), axis=-1)


def count_landscape(method: Method, group_size: int, success_rate) -> dict[str, np.ndarray]:
    """The landscape of one method at group size G from one evaluation of its advantages on the
    canonical groups, for tables and pages of many settings: ``right`` and ``wrong``
    (``count_advantages``), ``silent`` (``silent_counts``), and on the success rates
    ``success_rate`` ``zero_gradient`` (``zero_gradient_probability``) and ``gain``
    (``expected_gain``)."""
    p = _success_rates(success_rate)
    advantages = count_group_advantages(method, group_size)
    right, wrong = _correct_and_wrong(advantages)
    silent = _silent(advantages)
    return dict(right=right, wrong=wrong, silent=silent, zero_gradient=_zero_gradient(silent, p),
                gain=_gain(right, wrong, p))


def expected_logit_update(method: Method, group_size: int, logits, rewards) -> np.ndarray:
    """E[g] = c(p) pi (r - p) for softmax logits ``(..., K)`` and binary rewards ``(..., K)``.

    g is the ascent direction of the group's surrogate (minus the gradient of its loss), per group.
    """
    logits = checks.finite_array("logits", logits)
    rewards = checks.finite_array("rewards", rewards)
    if logits.ndim == 0 or logits.shape[-1] < 2:
        raise ValueError(f"logits need K >= 2 answers on the last axis, got shape {logits.shape}")
    if not np.all((rewards == 0) | (rewards == 1)):
        raise ValueError("rewards must be binary (0 or 1) for the gain identity")
    probs = softmax(logits, axis=-1)
    rewards = np.broadcast_to(rewards, probs.shape)
    success = as_probability(np.sum(probs * rewards, axis=-1, keepdims=True))
    gain = expected_gain(method, group_size, success[..., 0])[..., None]
    return gain * probs * (rewards - success)


# --------------------------------------------------------------------------------------------------
# Tables, CSV and figures for the command line and the notebooks
# --------------------------------------------------------------------------------------------------

TABLE_SUCCESS_RATES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def format_tables(methods: list[Method], group_size: int) -> str:
    """The landscape as plain-text tables: advantages by k, zero-gradient probability and c(p) by
    p."""
    names = [m.name for m in methods]
    width = max(9, *(len(n) + 1 for n in names))
    header = "".join(f"{n:>{width}}" for n in names)
    advantages = {m.name: count_advantages(m, group_size) for m in methods}
    lines = [f"Advantage of each CORRECT answer in a group of G={group_size} with k correct",
             f"{'k':>4}" + header]
    for k in range(1, group_size + 1):
        lines.append(f"{k:>4}" + "".join(f"{advantages[n][0][k]:>{width}.4f}" for n in names))
    lines += ["", f"Advantage of each WRONG answer in a group of G={group_size} with k correct",
              f"{'k':>4}" + header]
    for k in range(group_size):
        lines.append(f"{k:>4}" + "".join(f"{advantages[n][1][k]:>{width}.4f}" for n in names))
    for title, quantity in (("Probability that a sampled group gives no gradient",
                             zero_gradient_probability),
                            ("Gain c(p): E[update] = c(p) * pi * (r - p)", expected_gain)):
        lines += ["", f"{title} (G={group_size})", f"{'p':>6}" + header]
        values = {m.name: quantity(m, group_size, np.array(TABLE_SUCCESS_RATES)) for m in methods}
        for i, p in enumerate(TABLE_SUCCESS_RATES):
            lines.append(f"{p:>6}" + "".join(f"{values[n][i]:>{width}.4f}" for n in names))
    return "\n".join(lines)


def write_csv(methods: list[Method], group_size: int, folder: Path,
              grid_points: int = 201) -> list[Path]:
    """advantages.csv (by k) and curves.csv (zero-gradient probability and c(p) on a grid of p) in
    ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    advantage_path, curve_path = folder / "advantages.csv", folder / "curves.csv"
    with advantage_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "group_size", "k", "advantage_correct", "advantage_wrong"])
        for m in methods:
            right, wrong = count_advantages(m, group_size)
            for k in range(group_size + 1):
                writer.writerow([m.name, group_size, k, right[k], wrong[k]])
    grid = np.linspace(0.0, 1.0, grid_points)
    with curve_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "group_size", "success_rate", "zero_gradient_probability",
                         "gain"])
        for m in methods:
            silent, gain = (zero_gradient_probability(m, group_size, grid),
                            expected_gain(m, group_size, grid))
            writer.writerows([m.name, group_size, p, s, c] for p, s, c in zip(grid, silent, gain))
    return [advantage_path, curve_path]


def _title(ax, title: str, note: str) -> None:
    """The panel's title, with the note of which curves coincide or are missing below it."""
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=10 if not note else 9)


def plot_advantages(ax, methods: list[Method], group_size: int) -> None:
    """Advantage against k: solid for correct answers, dashed for wrong answers; a method whose
    two curves equal an earlier method's is drawn dotted on top and named in the title."""
    counts = np.arange(group_size + 1)
    advantages = {m.name: count_advantages(m, group_size) for m in methods}
    twins = coinciding({name: np.concatenate(pair) for name, pair in advantages.items()})
    plot_method_curves(ax, counts, {name: right for name, (right, _) in advantages.items()},
                       marker="o", twins=twins)
    plot_method_curves(ax, counts, {name: wrong for name, (_, wrong) in advantages.items()},
                       linestyle="--", marker="s", label=False, twins=twins)
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_xlabel(f"correct answers k in a group of G = {group_size}")
    ax.set_ylabel(axis_label("advantage (solid: correct answer, dashed: wrong)"))
    _title(ax, "Advantage of each answer", coincidence_note(twins))
    ax.legend(fontsize=8)


def plot_zero_gradient(ax, methods: list[Method], group_size: int, grid_points: int = 201) -> None:
    """Probability that a sampled group gives no gradient, against the success rate p."""
    grid = np.linspace(0.0, 1.0, grid_points)
    curves = {m.name: zero_gradient_probability(m, group_size, grid) for m in methods}
    never_silent = [name for name, curve in curves.items() if not curve.any()]
    twins = plot_method_curves(ax, grid, {name: curve for name, curve in curves.items()
                                          if name not in never_silent})
    # A log axis cannot show them.
    missing = [f"never silent (no line): {', '.join(never_silent)}"] if never_silent else []
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 1.5)
    ax.set_xlabel("success rate p of the prompt")
    ax.set_ylabel(axis_label("probability that a group gives no gradient"))
    _title(ax, f"Silent groups (G = {group_size})", coincidence_note(twins, missing))
    ax.legend(fontsize=8)


def plot_gain(ax, methods: list[Method], group_size: int, grid_points: int = 201) -> None:
    """The gain c(p) against the success rate p."""
    grid = np.linspace(0.0, 1.0, grid_points)
    twins = plot_method_curves(ax, grid, {m.name: expected_gain(m, group_size, grid)
                                          for m in methods})
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_xlabel("success rate p of the prompt")
    ax.set_ylabel(axis_label("gain c(p) (per unit learning rate)"))
    _title(ax, r"Expected update $c(p)\,\pi\odot(r-p)$", coincidence_note(twins))
    ax.legend(fontsize=8)


PANELS = {"advantages": plot_advantages, "zero_gradient": plot_zero_gradient, "gain": plot_gain}


def landscape_figure(methods: list[Method], group_size: int, panels=None, width: float = 4.8,
                     height: float = 3.6):
    """The ``panels`` (drawing functions of ``PANELS``, all by default) side by side, a row per
    family of methods (``plotting.method_families``: many methods are split into the baselines and
    NGRPO's rivals), each row's legend on its right; returns the figure."""
    panels = list(PANELS.values()) if panels is None else list(panels)
    by_name = {m.name: m for m in methods}
    figure, rows = family_subplots(method_families(by_name), ncols=len(panels), width=width,
                                   height=height)
    for names, axes, row in rows:
        for ax, draw in zip(axes, panels):
            draw(ax, [by_name[name] for name in names], group_size)
        figure_legend(row, where="right")
    return figure


def write_figures(methods: list[Method], group_size: int, folder: Path) -> list[Path]:
    """One PNG per panel plus ``landscape.png`` with the three side by side (a row per family of
    methods)."""
    folder = Path(folder)
    paths = [save(landscape_figure(methods, group_size, [draw]), folder / f"{name}.png")
             for name, draw in PANELS.items()]
    paths.append(save(landscape_figure(methods, group_size), folder / "landscape.png"))
    return paths

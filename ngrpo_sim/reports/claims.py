"""What every section of ``ngrpo-sim report`` starts from and how each says what it found: the
headline settings of the bandit and token experiments, a difference with its interval in words, and
the verdict block that opens the report (what ``make demo`` prints): each section turns its numbers
into ``Finding``s, one per claim it tests, and ``verdict_block`` lays them out.

The sections (``report``, ``token_report``, ``length_report``, ``rivals_report``,
``clipping_report``) import from here, never from each other's modules, so the report's parts form
no cycle.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np

from ngrpo_sim.experiments.runs import difference_interval
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.sequence_config import SequenceConfig
from ngrpo_sim.simulators.training_loop import RunRecord

HEADLINE_METHODS = ("grpo", "ngrpo", "dapo", "psr_nsr", "ppo")
HEADLINE = DynamicsConfig(policy="shared", optimizer="adam", learning_rate=0.05, minibatches=4,
                          steps=200, seeds=16)
LEARNING_RATES = {("tabular", "adam"): 0.05, ("shared", "adam"): 0.05, ("tabular", "sgd"): 32.0,
                  ("shared", "sgd"): 4.0}
"""Per policy and optimiser, a step size at which GRPO gains a comparable amount of accuracy in the
sweep's steps (SGD steps scale with the gradient, which token-mean divides by the batch's answer
count)."""
TOKEN_LEARNING_RATES = {"shared": 0.01, "tabular": 0.05}
"""Adam's step size per policy: the shared policy's one parameter vector moves every prompt at once,
so it needs a smaller step for GRPO to make comparable progress in the section's steps."""
TOKEN_HEADLINE = SequenceConfig(policy="shared", optimizer="adam",
                                learning_rate=TOKEN_LEARNING_RATES["shared"], num_prompts=64,
                                prompts_per_step=16, minibatches=4, steps=80, seeds=8)

def verdict(mean: float, half: float, above: str, below: str) -> str:
    """A difference (``mean`` ± its 95% half-width ``half``) in words: ``above`` where the whole
    interval lies above 0, ``below`` where it lies below, "no clear difference" where it holds 0."""
    if not np.isfinite(half):
        return "n/a"
    if mean - half > 0:
        return above
    if mean + half < 0:
        return below
    return "no clear difference"


def entropy_at_matched_accuracy(run_record: RunRecord, accuracy: float) -> float:
    """Seed-mean entropy at the first moment the seed-mean accuracy reaches ``accuracy`` (linear
    interpolation)."""
    curve = np.nanmean(run_record.metrics["accuracy"], axis=1)
    entropy = np.nanmean(run_record.metrics["entropy"], axis=1)
    reached = np.nonzero(curve >= accuracy)[0]
    if reached.size == 0:
        return float("nan")
    step = reached[0]
    if step == 0:
        return float(entropy[0])
    share = (accuracy - curve[step - 1]) / (curve[step] - curve[step - 1])
    return float(entropy[step - 1] + share * (entropy[step] - entropy[step - 1]))


def difference(first: np.ndarray, second: np.ndarray, above: str, below: str,
               digits: int = 3) -> str:
    """``first`` − ``second`` (final values per seed) as "mean ± half-width: verdict", with the 95%
    Welch interval of ``experiments.runs.difference_interval`` and ``verdict``'s words."""
    mean, half = difference_interval(first, second)
    return f"{mean:+.{digits}f} ± {half:.{digits}f}: {verdict(mean, half, above, below)}"


# -- the verdict block ---------------------------------------------------------------------------

ENTROPY = "1. NGRPO keeps entropy higher than GRPO"
HARD_PROMPTS = "2. NGRPO learns the hard prompts that GRPO abandons"
INSTABILITY = "3. PSR-NSR's fixed weights are unstable"
LENGTHENING = "seq-mean-token-mean makes wrong answers longer (Dr. GRPO)"
COLLAPSE = "Answers grow to the length cap and collapse"
OVERLONG = "DAPO's overlong filtering and soft punishment lower truncation"
RIVAL_LEAD = "NGRPO solves the most hard prompts among its rivals"
CLIP_LOW = "The clip's low bound alone raises entropy under pure noise (Park et al.)"
CLIP_HIGH = "The clip's high bound alone lowers entropy under pure noise (Park et al.)"
NSR_CLIP = "NSR keeps entropy higher only with the clip and several minibatches (Zhu et al.)"
CLAIM_ORDER = (ENTROPY, HARD_PROMPTS, INSTABILITY, LENGTHENING, COLLAPSE, OVERLONG, RIVAL_LEAD,
               CLIP_LOW, CLIP_HIGH, NSR_CLIP)
"""The claims of the verdict block, in its order: the paper's three, then what the sections test
besides."""
SUPPORTED, NOT_REPRODUCED, DEPENDS = "supported", "not reproduced", "depends"
LINE_WIDTH = 100
"""The widest line the verdict block prints (and the terminal tables of ``ngrpo-sim``)."""
WHERE_WIDTH, WORD_WIDTH = 18, 16
NO_BREAK = "\N{NO-BREAK SPACE}"
"""The columns of a finding's line: where it was tested, the verdict word; the numbers follow."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """What one simulator says about one claim."""

    claim: str
    """One of ``CLAIM_ORDER``."""
    where: str
    """The simulator or setting, e.g. "bandit (1 token)"."""
    word: str
    """``SUPPORTED``, ``NOT_REPRODUCED`` or ``DEPENDS``."""
    evidence: str
    """The numbers, each with its 95% interval, and in how many settings the claim holds."""


def word_of(holds: list[bool]) -> str:
    """A claim tested in several settings in one word: supported where it holds in every one, not
    reproduced where it holds in none, depends where the settings disagree."""
    if all(holds):
        return SUPPORTED
    return NOT_REPRODUCED if not any(holds) else DEPENDS


def judged(claim: str, where: str, differences: list[tuple[str, float, float]], claimed: str,
           above: str, below: str, unit: str = "", noun: str = "settings", digits: int = 3
           ) -> Finding:
    """A claim about a difference, from its (setting, mean, 95% half-width) in every setting, the
    first the headline's; ``claimed`` is ``above`` or ``below``, the side of 0 the claim says. The
    claim holds in a setting where the whole interval lies on that side (``verdict``). The evidence
    gives the first setting's difference and how many settings fall on each side; where they
    disagree, the one or two settings on the smaller side too."""
    outcomes = [verdict(mean, half, above, below) for _, mean, half in differences]
    holds = [outcome == claimed for outcome in outcomes]
    sides = ["unclear" if outcome == "no clear difference" else outcome for outcome in outcomes]
    name, mean, half = differences[0]
    evidence = f"{mean:+.{digits}f} ± {half:.{digits}f}{unit} ({name})"
    if len(differences) > 1:
        counts = [(side, sides.count(side)) for side in (above, below, "unclear", "n/a")]
        evidence += ("; " + ", ".join(f"{side} in {count}" for side, count in counts if count)
                     + f" of {len(differences)} {noun}")
        smaller = min([index for index, held in enumerate(holds) if held],
                      [index for index, held in enumerate(holds) if not held], key=len)
        listed = [index for index in smaller if index > 0]
        if listed and len(smaller) <= 2:
            evidence += " (" + "; ".join(
                f"{differences[index][0]}: {sides[index]} {differences[index][1]:+.{digits}f} ± "
                f"{differences[index][2]:.{digits}f}" for index in listed) + ")"
    return Finding(claim, where, word_of(holds), evidence)


def verdict_block(findings: list[Finding]) -> list[str]:
    """The verdict block: per claim (in ``CLAIM_ORDER``) a line with its word over every
    simulator, then one line per finding; every line at most ``LINE_WIDTH`` characters (longer
    ones wrap under the numbers)."""
    lines = ["What the simulations say about each claim: the difference in the named setting",
             "(mean ± 95% interval over seeds), then on which side of 0 it lies in how many:"]
    for claim in (claim for claim in CLAIM_ORDER if any(f.claim == claim for f in findings)):
        found = [finding for finding in findings if finding.claim == claim]
        words = {finding.word for finding in found}
        lines += ["", *textwrap.wrap(f"{claim}: {words.pop() if len(words) == 1 else DEPENDS}",
                                     LINE_WIDTH, subsequent_indent="   ")]
        for finding in found:
            start = f"  {finding.where:<{WHERE_WIDTH}}{finding.word:<{WORD_WIDTH}}"
            # A number and its interval stay on one line: no break at a no-break space.
            evidence = finding.evidence.replace(" ± ", NO_BREAK + "±" + NO_BREAK)
            lines += [line.replace(NO_BREAK, " ") for line in textwrap.wrap(
                start + evidence, LINE_WIDTH, subsequent_indent=" " * len(start),
                break_long_words=False, break_on_hyphens=False)]
    return lines


def figure_lines(figure: Path, out: Path, caption: str) -> list[str]:
    """A section's figure as a Markdown image beside its text, and where its run folders are, both
    relative to the report's folder (the folder that holds the section's folder ``out``)."""
    folder = Path(out).name
    return [f"![{caption}]({folder}/{Path(figure).relative_to(out).as_posix()})", "",
            f"Run folders (CSV files of every metric, config.json): `{folder}/`."]

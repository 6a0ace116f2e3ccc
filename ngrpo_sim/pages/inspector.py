"""The step inspector: one HTML page that shows, token by token, what chosen steps of a trainer
run did.

``minimal/ngrpo_train.py --inspect-steps 1,200`` records those steps (read by
``ngrpo_sim.experiments.trainer_runs.read_inspection``); ``ngrpo-sim inspect RUN_DIR`` writes this
page. For every group of a step it shows the prompt, the group's rewards beside NGRPO's virtual
r_max answer, the group's mean and std with and without that answer (``group_statistics`` of
``ngrpo_sim``'s GRPO and NGRPO estimators), and each answer's tokens coloured by the answer's
advantage, with every token whose ratio the clip removed from the gradient marked. All-wrong
groups are flagged with what GRPO would have done with them (``get_method("grpo").advantages``:
all 0, nothing learned); groups the method's filter dropped are shown greyed. The page is plain
HTML and CSS (no script, no library): it opens in any browser.

Every string read from the run folder reaches the page through ``ngrpo_sim.base.escaping.escape``.
The page stays small for long answers: an answer's colour is one CSS class of its tokens cell (one
class per colour step, ``COLOUR_STEPS``), and a token is an ``<i>`` element whose title holds its
ratio, 22 bytes besides its text (``benchmarks/bench_inspector.py``: 10.6 MB for 3 steps of 128
answers of 1,024 tokens).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ngrpo_sim.base.escaping import escape
from ngrpo_sim.base.files import replace_only_own, write_atomically
from ngrpo_sim.experiments.trainer_runs import (InspectedAnswer, InspectedGroup, InspectedStep,
                                                read_config, read_inspections)
from ngrpo_sim.methods.presets import METHODS, get_method

INSPECTOR_FILE = "inspector.html"
ADVANTAGE_COLOURMAP = "PiYG"
"""Diverging: pink for a negative advantage (pushed down), green for a positive one (pushed up)."""
AGREEMENT_TOLERANCE = 1e-6
"""The trainer computes advantages in float64 like ngrpo_sim: a larger gap means they disagree."""
CLIP_CLASSES = {None: "", "low": ' class="clipped-low"', "high": ' class="clipped-high"'}
CLIP_MARKS = {None: "", "low": "<sup>▼</sup>", "high": "<sup>▲</sup>"}
"""A token whose ratio was clipped is framed (``CLIP_CLASSES``) and marked with its bound."""
COLOUR_STEPS = 21
"""Colours of the advantage scale, from -scale to +scale in steps of a tenth of the scale (the
largest |advantage| of the page); class ``aN`` is step N, ``a21`` an unknown advantage."""

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em;
       line-height: 1.45; }
.group { border: 1px solid #ccc; border-radius: 0.4em; padding: 0.5em 0.8em; margin: 0.8em 0; }
.group.dropped { opacity: 0.55; border-style: dashed; }
.prompt { font-family: monospace; font-weight: bold; }
.badge { display: inline-block; padding: 0 0.5em; border-radius: 0.8em; font-size: 0.85em;
         margin-left: 0.5em; }
.badge.all-wrong { background: #ffe3a3; } .badge.dropped { background: #ddd; }
.badge.mismatch { background: #d62728; color: white; }
.chip { display: inline-block; min-width: 1.4em; padding: 0 0.3em; margin: 0.1em;
        border-radius: 0.3em; text-align: center; font-family: monospace; }
.chip.correct { background: #b7e1a1; } .chip.wrong { background: #f4b6c2; }
.chip.unknown { background: #eee; }
.chip.virtual { background: #fff3b0; border: 2px dashed #b08d00; }
table.answers { border-collapse: collapse; margin-top: 0.4em; }
table.answers td { padding: 0.1em 0.5em; vertical-align: middle; font-family: monospace; }
td.tokens i { display: inline-block; padding: 0.05em 0.15em; margin: 0.05em; font-style: normal;
              border-radius: 0.2em; white-space: pre; border: 2px solid transparent; }
td.tokens i.clipped-low { border-color: #222; border-style: solid; }
td.tokens i.clipped-high { border-color: #222; border-style: double; border-width: 3px; }
td.tokens i[data-tokens] { text-decoration: underline dotted; }
.legend i { padding: 0.05em 0.3em; font-style: normal; border-radius: 0.2em; }
td.tokens sup { font-size: 0.7em; }
.legend span { margin-right: 1em; }
"""


def colour_steps(advantages, scale: float) -> np.ndarray:
    """(n,) the colour step (``COLOUR_STEPS``) of each advantage: the nearest tenth of the scale,
    clipped to [-scale, scale]; ``COLOUR_STEPS`` for an unknown (NaN) advantage."""
    advantages = np.asarray(advantages, dtype=np.float64)
    share = np.clip(np.nan_to_num(advantages) / scale, -1.0, 1.0)
    steps = np.rint((share + 1.0) / 2.0 * (COLOUR_STEPS - 1)).astype(np.int64)
    return np.where(np.isfinite(advantages), steps, COLOUR_STEPS)


def colour_rules() -> str:
    """The CSS rule of each colour step: white for 0, pink for a negative advantage (pushed down),
    green for a positive one, white text on the darkest shades; grey when unknown."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    shares = np.linspace(-1.0, 1.0, COLOUR_STEPS)
    colours = colormaps[ADVANTAGE_COLOURMAP](0.5 + 0.5 * shares)
    rules = [f".a{number} i {{ background: {to_hex(colour)};"
             f"{' color: white;' if abs(share) > 0.6 else ''} }}"
             for number, (share, colour) in enumerate(zip(shares, colours))]
    return "\n".join(rules + [f".a{COLOUR_STEPS} i {{ background: #eeeeee; }}"])


class _Escaped(dict):
    """Each distinct text escaped once: a run repeats few token texts many times."""

    def __missing__(self, text: str) -> str:
        self[text] = escape(text)
        return self[text]


def _number(value: float, digits: int = 3) -> str:
    return "unknown" if not np.isfinite(value) else f"{value:+.{digits}f}"


def _tokens(answer: InspectedAnswer, step: InspectedStep, escaped: _Escaped) -> str:
    """The answer's pieces as ``<i>`` elements: a token, or the tokens of a character that a
    byte-level tokenizer split (``data-tokens``, their count), titled with each token's ratio,
    framed and marked where clipped."""
    notes = {None: "", "low": f" clipped: below 1 - {step.clip_low:g}, no gradient",
             "high": f" clipped: above 1 + {step.clip_high:g}, no gradient"}
    if answer.ratio is None:
        labels, states = [None] * len(answer.tokens), [None] * len(answer.tokens)
    else:
        states = answer.clip
        labels = [f"{ratio:.4f}{notes[state]}"
                  for ratio, state in zip(answer.ratio.tolist(), states)]

    def element(text: str, label: str | None, state: str | None, count: int = 1) -> str:
        return "".join(("<i", CLIP_CLASSES[state], f' data-tokens="{count}"' if count > 1 else "",
                        "" if label is None else f' title="{label}"', ">", escaped[text],
                        CLIP_MARKS[state], "</i>"))

    elements = [element(text, label, state)
                for text, label, state in zip(answer.tokens, labels, states)]
    for first, stop, text in reversed(answer.spans):
        state = next((state for state in states[first:stop] if state), None)
        label = None if answer.ratio is None else ", ".join(labels[first:stop])
        elements[first:stop] = [element(text, label, state, stop - first)]
    return "".join(elements)


def _chip(reward: float, r_max: float) -> str:
    if not np.isfinite(reward):
        return '<span class="chip unknown" title="unknown reward">?</span>'
    kind = "correct" if reward == r_max else "wrong" if reward == 0 else "unknown"
    return f'<span class="chip {kind}">{reward:g}</span>'


def _statistics(group: InspectedGroup, step: InspectedStep) -> tuple[str, np.ndarray | None]:
    """The group's statistics line and, for a method of ngrpo_sim's registry, its advantages."""
    rewards = group.rewards
    retuning = dict(r_max=step.r_max, virtual_samples=step.virtual_samples, ddof=step.ddof)
    expected = None
    if step.method in METHODS:
        method = get_method(step.method).retuned(**retuning)
        if hasattr(method.advantage, "r_max"):  # the trainer's r_max is also its reward scale
            method = method.replace(advantage=dataclasses.replace(method.advantage,
                                                                  r_max=step.r_max))
        expected = method.advantages(rewards, mask_unknown=True)
    if not np.isfinite(rewards).all():
        return "some rewards are unknown; the statistics leave those answers out", expected
    grpo = get_method("grpo").retuned(ddof=step.ddof).advantage
    ngrpo = get_method("ngrpo").retuned(**retuning).advantage
    mean, std = grpo.group_statistics(rewards)
    mean_virtual, std_virtual = ngrpo.group_statistics(rewards)
    text = (f"GRPO's mean {mean:.4f}, std {std:.4f}; with NGRPO's virtual answer of reward "
            f"{step.r_max:g}: mean {mean_virtual:.4f}, std {std_virtual:.4f}")
    return text, expected


def _badges(group: InspectedGroup, step: InspectedStep, expected: np.ndarray | None) -> str:
    rewards, badges = group.rewards, []
    if np.isfinite(rewards).all() and np.all(rewards == 0):
        grpo = get_method("grpo").advantages(rewards)
        ours = (f"; {escape(step.method)} gives each {_number(group.advantages[0])}"
                if group.trained else "")
        badges.append(f'<span class="badge all-wrong" data-all-wrong="1">all wrong: GRPO would '
                      f"give every answer {grpo[0]:g} and skip this group{ours}</span>")
    if not group.trained:
        badges.append('<span class="badge dropped">dropped by the group filter (refilled)</span>')
    if expected is not None and group.trained and not np.allclose(
            group.advantages, expected, rtol=0.0, atol=AGREEMENT_TOLERANCE):
        badges.append(f'<span class="badge mismatch" data-mismatch="1">the recorded advantages '
                      f"differ from ngrpo_sim's {escape(step.method)}: "
                      f"{np.round(expected, 4).tolist()}</span>")
    return "".join(badges)


def _group(number: int, group: InspectedGroup, step: InspectedStep, scale: float,
           escaped: _Escaped) -> str:
    rewards = group.rewards
    statistics, expected = _statistics(group, step)
    chips = "".join(_chip(reward, step.r_max) for reward in rewards)
    virtual = (f'<span class="chip virtual" title="NGRPO\'s virtual answer">{step.r_max:g}'
               "</span>")
    grpo = get_method("grpo").advantages(rewards, mask_unknown=True)
    rows = []
    colours = colour_steps(group.advantages, scale)
    for index, (answer, colour) in enumerate(zip(group.answers, colours), 1):
        where = "" if answer.minibatch is None else f"update {answer.minibatch + 1}"
        rows.append(
            f'<tr data-answer="{index}"><td>{index}</td><td>{_chip(answer.reward, step.r_max)}</td>'
            f'<td data-advantage="{answer.advantage!r}">{_number(answer.advantage)}</td>'
            f'<td data-grpo="{float(grpo[index - 1])!r}">{_number(grpo[index - 1])}</td>'
            f'<td>{where}</td><td class="tokens a{colour}">{_tokens(answer, step, escaped)}</td>'
            "</tr>")
    kind = "group" + ("" if group.trained else " dropped")
    return (f'<div class="{kind}" data-group="{number}"><div>group {number}: '
            f'<span class="prompt">{escape(group.prompt)}</span>'
            f"{_badges(group, step, expected)}</div>"
            f"<div>rewards {chips} + {virtual} <small>{statistics}</small></div>"
            '<table class="answers"><tr><th>answer</th><th>reward</th><th>advantage</th>'
            "<th>GRPO would give</th><th>minibatch</th><th>tokens</th></tr>"
            f'{"".join(rows)}</table></div>')


def _step_summary(step: InspectedStep) -> str:
    trained = [group for group in step.groups if group.trained]
    all_wrong = [group for group in step.groups
                 if np.isfinite(group.rewards).all() and np.all(group.rewards == 0)]
    learned = [group for group in all_wrong if group.trained and np.any(group.advantages != 0)]
    states = [state for group in trained for answer in group.answers for state in answer.clip or ()]
    low, high = states.count("low"), states.count("high")
    return (f"<p>{len(step.groups)} groups sampled, {len(trained)} trained, "
            f"{len(step.groups) - len(trained)} dropped by the filter. "
            f"<b>{len(all_wrong)}</b> all-wrong groups: GRPO would have skipped every one; "
            f"{escape(step.method)} learned from <b>{len(learned)}</b>. Tokens clipped: {low} at "
            f"the low bound (1 - {step.clip_low:g}), {high} at the high bound "
            f"(1 + {step.clip_high:g}), "
            f"of {len(states)}, over {step.minibatches} minibatch updates.</p>")


EXPLANATION = """Each recorded step shows every group sampled, refills included. An answer's
tokens are coloured by its advantage; a token with a frame had its probability ratio clipped in its
minibatch update (▼: below 1 - clip_low with a negative advantage, ▲: above 1 + clip_high with a
positive one), so it gave no gradient there. Hover a token for its probability ratio in that
update; a dotted underline marks a character that the tokenizer split over several tokens (hover
it for each one's ratio). The group's mean and std, with and without NGRPO's virtual answer
(dashed chip), and what GRPO would have done with each group are computed by
<code>ngrpo_sim</code>; rewards, advantages and ratios are what the trainer recorded."""


def render(run_dir) -> str:
    """The inspector page of a run folder, as HTML text."""
    run_dir = Path(run_dir)
    steps = read_inspections(run_dir)
    config = read_config(run_dir)
    finite = [abs(answer.advantage) for step in steps for group in step.groups
              for answer in group.answers if np.isfinite(answer.advantage)]
    scale = max(finite + [1.0])
    values = np.linspace(-scale, scale, 5)
    legend = "".join(f'<span class="a{colour}"><i>A = {value:+.2f}</i></span>'
                     for value, colour in zip(values, colour_steps(values, scale)))
    settings = ", ".join(f"{key} {escape(config[key])}" for key in
                         ("model", "task", "group_size", "prompts_per_step", "minibatches",
                          "learning_rate", "seed") if key in config)
    navigation = " · ".join(f'<a href="#step-{step.step}">step {step.step}</a>' for step in steps)
    sections, escaped = [], _Escaped()
    for step in steps:
        groups = "".join(_group(number, group, step, scale, escaped)
                         for number, group in enumerate(step.groups, 1))
        sections.append(f'<section id="step-{step.step}" data-step="{step.step}">'
                        f"<h2>Step {step.step}</h2>{_step_summary(step)}{groups}</section>")
    where = escape(run_dir)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Step inspector: {where}</title>
<style>{STYLE}{colour_rules()}</style></head><body>
<h1>Step inspector: {escape(steps[0].method)} in {where}</h1>
<p>{settings}. {EXPLANATION}</p>
<p class="legend">{legend}</p><p>Steps: {navigation}</p>
{"".join(sections)}
</body></html>
"""


def write_inspector(run_dir, path=None) -> Path:
    """Write the inspector page of ``run_dir`` (default: ``RUN_DIR/inspector.html``) and return
    the path. Raises ``ValueError`` for a folder without inspected steps or a path not .html."""
    path = Path(run_dir) / INSPECTOR_FILE if path is None else Path(path)
    if path.suffix != ".html":
        raise ValueError(f"path must end in .html, got {str(path)!r}")
    replace_only_own(path, "<title>Step inspector: ")
    return write_atomically(path, render(run_dir))

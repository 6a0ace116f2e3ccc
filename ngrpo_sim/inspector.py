"""The step inspector: one HTML page that shows, token by token, what chosen steps of a trainer
run did.

``minimal/ngrpo_train.py --inspect-steps 1,200`` records those steps (read by
``ngrpo_sim.trainer_runs.read_inspection``); ``ngrpo-sim inspect RUN_DIR`` writes this page. For
every group of a step it shows the prompt, the group's rewards beside NGRPO's virtual r_max
answer, the group's mean and std with and without that answer (``group_statistics`` of
``ngrpo_sim``'s GRPO and NGRPO estimators), and each answer's tokens coloured by the answer's
advantage, with every token whose ratio the clip removed from the gradient marked. All-wrong
groups are flagged with what GRPO would have done with them (``get_method("grpo").advantages``:
all 0, nothing learned); groups the method's filter dropped are shown greyed. The page is plain
HTML and CSS (no script, no library): it opens in any browser.
"""

from __future__ import annotations

import dataclasses

import html
from pathlib import Path

import numpy as np

from ngrpo_sim._files import write_atomically
from ngrpo_sim.methods import METHODS, get_method
from ngrpo_sim.trainer_runs import (InspectedAnswer, InspectedGroup, InspectedStep, read_config,
                                    read_inspections)

INSPECTOR_FILE = "inspector.html"
ADVANTAGE_COLOURMAP = "PiYG"
"""Diverging: pink for a negative advantage (pushed down), green for a positive one (pushed up)."""
AGREEMENT_TOLERANCE = 1e-6
"""The trainer computes advantages in float64 like ngrpo_sim: a larger gap means they disagree."""

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
.token { display: inline-block; padding: 0.05em 0.15em; margin: 0.05em; border-radius: 0.2em;
         white-space: pre; border: 2px solid transparent; }
.token.clipped-low { border-color: #222; border-style: solid; }
.token.clipped-high { border-color: #222; border-style: double; border-width: 3px; }
.token sup { font-size: 0.7em; }
.legend span { margin-right: 1em; }
"""


def advantage_colour(advantage: float, scale: float) -> str:
    """The CSS colours of a token of an answer with this advantage: white for 0, grey when unknown,
    white text on the darkest shades."""
    if not np.isfinite(advantage):
        return "background:#eeeeee"
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    share = float(np.clip(advantage / scale, -1.0, 1.0))
    text = ";color:white" if abs(share) > 0.6 else ""
    return f"background:{to_hex(colormaps[ADVANTAGE_COLOURMAP](0.5 + 0.5 * share))}{text}"


def _number(value: float, digits: int = 3) -> str:
    return "unknown" if not np.isfinite(value) else f"{value:+.{digits}f}"


def _token(text: str, answer: InspectedAnswer, position: int, step: InspectedStep,
           scale: float) -> str:
    details = [f"token {text!r}", f"A = {_number(answer.advantage)}"]
    classes = ["token"]
    mark = ""
    if answer.ratio is not None:
        ratio, state = answer.ratio[position], answer.clip[position]
        details += [f"ratio {ratio:.4f}", f"minibatch update {answer.minibatch + 1}"]
        if state == "low":
            details.append(f"clipped: ratio below 1 - {step.clip_low:g} with A < 0, no gradient")
            classes.append("clipped-low")
            mark = "<sup>▼</sup>"
        elif state == "high":
            details.append(f"clipped: ratio above 1 + {step.clip_high:g} with A > 0, no gradient")
            classes.append("clipped-high")
            mark = "<sup>▲</sup>"
    data = "" if answer.ratio is None else (f' data-ratio="{answer.ratio[position]!r}" '
                                            f'data-clip="{answer.clip[position] or ""}"')
    return (f'<span class="{" ".join(classes)}"{data} '
            f'style="{advantage_colour(answer.advantage, scale)}" '
            f'title="{html.escape(", ".join(details))}">{html.escape(text)}{mark}</span>')


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
        ours = f"; {step.method} gives each {_number(group.advantages[0])}" if group.trained else ""
        badges.append(f'<span class="badge all-wrong" data-all-wrong="1">all wrong: GRPO would '
                      f"give every answer {grpo[0]:g} and skip this group{ours}</span>")
    if not group.trained:
        badges.append('<span class="badge dropped">dropped by the group filter (refilled)</span>')
    if expected is not None and group.trained and not np.allclose(
            group.advantages, expected, rtol=0.0, atol=AGREEMENT_TOLERANCE):
        badges.append(f'<span class="badge mismatch" data-mismatch="1">the recorded advantages '
                      f"differ from ngrpo_sim's {step.method}: "
                      f"{np.round(expected, 4).tolist()}</span>")
    return "".join(badges)


def _group(number: int, group: InspectedGroup, step: InspectedStep, scale: float) -> str:
    rewards = group.rewards
    statistics, expected = _statistics(group, step)
    chips = "".join(_chip(reward, step.r_max) for reward in rewards)
    virtual = (f'<span class="chip virtual" title="NGRPO\'s virtual answer">{step.r_max:g}'
               "</span>")
    grpo = get_method("grpo").advantages(rewards, mask_unknown=True)
    rows = []
    for index, answer in enumerate(group.answers, 1):
        tokens = "".join(_token(text, answer, position, step, scale)
                         for position, text in enumerate(answer.tokens))
        where = "" if answer.minibatch is None else f"update {answer.minibatch + 1}"
        rows.append(
            f'<tr data-answer="{index}"><td>{index}</td><td>{_chip(answer.reward, step.r_max)}</td>'
            f'<td data-advantage="{answer.advantage!r}">{_number(answer.advantage)}</td>'
            f'<td data-grpo="{grpo[index - 1]!r}">{_number(grpo[index - 1])}</td>'
            f'<td>{where}</td><td class="tokens">{tokens}</td></tr>')
    kind = "group" + ("" if group.trained else " dropped")
    return (f'<div class="{kind}" data-group="{number}"><div>group {number}: '
            f'<span class="prompt">{html.escape(group.prompt)}</span>'
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
            f"{step.method} learned from <b>{len(learned)}</b>. Tokens clipped: {low} at the low "
            f"bound (1 - {step.clip_low:g}), {high} at the high bound (1 + {step.clip_high:g}), "
            f"of {len(states)}, over {step.minibatches} minibatch updates.</p>")


EXPLANATION = """Each recorded step shows every group sampled, refills included. An answer's
tokens are coloured by its advantage; a token with a frame had its probability ratio clipped in its
minibatch update (▼: below 1 - clip_low with a negative advantage, ▲: above 1 + clip_high with a
positive one), so it gave no gradient there. Hover a token for its ratio. The group's mean and std,
with and without NGRPO's virtual answer (dashed chip), and what GRPO would have done with each
group are computed by <code>ngrpo_sim</code>; rewards, advantages and ratios are what the trainer
recorded."""


def render(run_dir) -> str:
    """The inspector page of a run folder, as HTML text."""
    run_dir = Path(run_dir)
    steps = read_inspections(run_dir)
    config = read_config(run_dir)
    finite = [abs(answer.advantage) for step in steps for group in step.groups
              for answer in group.answers if np.isfinite(answer.advantage)]
    scale = max(finite + [1.0])
    legend = "".join(
        f'<span><span class="token" style="{advantage_colour(value, scale)}">'
        f"A = {value:+.2f}</span></span>" for value in np.linspace(-scale, scale, 5))
    settings = ", ".join(f"{key} {html.escape(str(config[key]))}" for key in
                         ("model", "task", "group_size", "prompts_per_step", "minibatches",
                          "learning_rate", "seed") if key in config)
    navigation = " · ".join(f'<a href="#step-{step.step}">step {step.step}</a>' for step in steps)
    sections = []
    for step in steps:
        groups = "".join(_group(number, group, step, scale)
                         for number, group in enumerate(step.groups, 1))
        sections.append(f'<section id="step-{step.step}" data-step="{step.step}">'
                        f"<h2>Step {step.step}</h2>{_step_summary(step)}{groups}</section>")
    where = html.escape(str(run_dir))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Step inspector: {where}</title>
<style>{STYLE}</style></head><body>
<h1>Step inspector: {html.escape(steps[0].method)} in {where}</h1>
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
    return write_atomically(path, render(run_dir))

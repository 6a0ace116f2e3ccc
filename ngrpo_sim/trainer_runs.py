"""The run folders of ``minimal/ngrpo_train.py``, read in one place.

The trainer is one self-contained file, so it writes its folders without this module; everything
in ``ngrpo_sim`` that reads them (the notebooks through ``teaching``, the step inspector,
``ngrpo-sim inspect``) goes through the names and readers here, and ``tests/test_inspector.py``
trains a tiny run to keep writer and reader in step.

A run folder (``runs/minimal/METHOD-seedSEED`` unless ``--run-dir`` says otherwise) holds

* ``config.json``: the run's ``Config`` as a JSON object;
* ``metrics.jsonl``: one JSON object per line, ``{"step": 0, "eval/pass@1": ...}`` before
  training, then one line per step with its rollout and update statistics (``reward``,
  ``entropy``, ``clipfrac_low``, ...) and, on evaluation steps, ``eval/pass@k`` and
  ``eval/pass_auc``;
* ``checkpoint.pt``, ``model/`` and ``curves.png``;
* ``inspect/step-NNNNNN.json`` for every step chosen with ``--inspect-steps``
  (``read_inspection``).

``--compare`` writes one run folder per method and seed, named ``METHOD-seedSEED``, beside
``table.md``, ``results.json`` and ``comparison.png``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ngrpo_sim import _checks

TRAINER = Path("minimal") / "ngrpo_train.py"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
INSPECT_FOLDER = "inspect"
INSPECT_FILE = re.compile(r"step-(?P<step>\d+)\.json$")
"""One file per inspected step, ``step-`` and the step number padded to six digits."""
RUN_FOLDER_NAME = re.compile(r"(?P<method>.+)-seed(?P<seed>\d+)$")
"""``--compare`` writes one folder per method and seed, named METHOD-seedSEED."""
CLIP_STATES = (None, "low", "high")
"""A token's clip state in its update: unclipped, or the bound that removed its gradient
(1 - clip_low for A < 0, 1 + clip_high for A > 0)."""


def inspection_file_name(step: int) -> str:
    """The file name of an inspected step inside ``inspect/``."""
    return f"step-{_checks.integer('step', step, low=1):06d}.json"


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); was the {what} cut short?") from None


def read_config(run_dir) -> dict:
    """The run's settings (``config.json``) as a dict."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"run_dir={str(run_dir)!r} holds no {CONFIG_FILE}; is it a folder written "
                         f"by {TRAINER}?")
    return _read_json(path, "run's start")


def read_run(run_dir) -> list[dict]:
    """The records of one trainer run, one per logged step (``metrics.jsonl``; step 0 is the
    evaluation before training, later lines hold the step's rollout and update statistics, and the
    evaluation on eval steps)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise ValueError(f"run_dir={str(run_dir)!r} holds no {METRICS_FILE}; is it a folder "
                         f"written by {TRAINER}?")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not JSON ({error}); a run killed while "
                             "writing it can be continued with --resume") from None
    return records


def read_comparison(folder, seeds: int | None = None) -> dict[str, list[list[dict]]]:
    """The runs of a ``--compare`` folder: {method: [records of seed 1, seed 2, ...]}, methods in
    name order.

    ``seeds`` keeps seeds 1..seeds only, the runs that ``--compare --seeds N`` trained and
    tabulated; a folder can hold more from an earlier, larger comparison. None keeps every seed.
    """
    if seeds is not None:
        seeds = _checks.integer("seeds", seeds, low=1)
    folder = Path(folder)
    found = []
    for run in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = RUN_FOLDER_NAME.match(run.name)
        if not match or not (run / METRICS_FILE).is_file():
            continue
        if seeds is None or int(match["seed"]) <= seeds:
            found.append((match["method"], int(match["seed"]), run))
    if not found:
        raise ValueError(f"folder={str(folder)!r} holds no METHOD-seedSEED run folders with "
                         f"{METRICS_FILE}" + (f" for seeds 1..{seeds}" if seeds else ""))
    runs: dict[str, list[list[dict]]] = {}
    for method, _, run in sorted(found, key=lambda item: (item[0], item[1])):
        runs.setdefault(method, []).append(read_run(run))
    return runs


# -------------------------------------------------------------------------------------------------
# The step inspector's records
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InspectedAnswer:
    """One sampled answer of an inspected step."""

    tokens: list[str]
    """The answer's tokens as text, each decoded alone, up to and including its end token."""
    reward: float
    """The verifier's reward; NaN where the reward was unknown."""
    advantage: float
    """The advantage the update used; NaN in a group that the method's filter dropped."""
    minibatch: int | None
    """Which of the step's minibatch updates trained on the answer (0-based); None if dropped."""
    ratio: np.ndarray | None
    """(tokens,) probability ratio pi_theta / pi_old of each token when its minibatch update
    computed the loss."""
    clip: list[str | None] | None
    """Each token's clip state in that update: None, "low" or "high" (``CLIP_STATES``)."""

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass(frozen=True)
class InspectedGroup:
    """One prompt of an inspected step and its G answers."""

    prompt: str
    answers: list[InspectedAnswer]
    trained: bool
    """False when the method's group filter dropped the group (NGRPO: all answers right) and a
    refill replaced it."""

    @property
    def rewards(self) -> np.ndarray:
        """(G,) rewards, NaN where unknown."""
        return np.array([answer.reward for answer in self.answers])

    @property
    def advantages(self) -> np.ndarray:
        """(G,) advantages, NaN for a dropped group."""
        return np.array([answer.advantage for answer in self.answers])


@dataclass(frozen=True)
class InspectedStep:
    """What one training step of the trainer did, group by group and token by token."""

    step: int
    method: str
    advantage: str
    """The trainer's advantage kind: z_score, calibrated (NGRPO's virtual r_max sample), dr_grpo,
    rloo or w_reinforce."""
    r_max: float
    clip_low: float
    clip_high: float
    minibatches: int
    groups: list[InspectedGroup]


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _field(record: dict, key: str, path: Path, where: str):
    if key not in record:
        raise ValueError(f"{path}: {where} has no {key!r} key; was it written by an older "
                         f"{TRAINER}?")
    return record[key]


def _answer(record: dict, path: Path, where: str) -> InspectedAnswer:
    tokens = _field(record, "tokens", path, where)
    ratio, clip = record.get("ratio"), record.get("clip")
    lengths = {len(tokens), len(ratio or tokens), len(tokens if clip is None else clip)}
    if ratio is not None and (clip is None or len(lengths) > 1):
        raise ValueError(f"{path}: {where} has {len(tokens)} tokens but {len(ratio)} ratios and "
                         f"{None if clip is None else len(clip)} clip states; the file is damaged")
    if clip is not None and any(state not in CLIP_STATES for state in clip):
        raise ValueError(f"{path}: {where} holds a clip state outside {CLIP_STATES}: {clip!r}")
    return InspectedAnswer(
        tokens=list(tokens), reward=_number(_field(record, "reward", path, where)),
        advantage=_number(record.get("advantage")), minibatch=record.get("minibatch"),
        ratio=None if ratio is None else np.array(ratio, dtype=np.float64), clip=clip)


def inspected_steps(run_dir) -> list[int]:
    """The steps of the run that ``--inspect-steps`` recorded, in order."""
    folder = Path(run_dir) / INSPECT_FOLDER
    names = [path.name for path in folder.iterdir()] if folder.is_dir() else []
    matches = [INSPECT_FILE.match(name) for name in names]
    return sorted(int(match["step"]) for match in matches if match)


def read_inspection(run_dir, step: int) -> InspectedStep:
    """The record of one inspected step, ``inspect/step-NNNNNN.json``.

    The file holds ``step``, ``method``, ``advantage``, ``r_max``, ``clip_low``, ``clip_high``,
    ``minibatches`` and ``groups``: every group sampled in the step, refills included, in the
    order sampled, each with ``prompt``, ``trained`` and ``answers``; an answer holds ``tokens``,
    ``reward`` (null if unknown), ``advantage``, ``minibatch``, ``ratio`` and ``clip`` (the last
    four null for a dropped group).
    """
    path = Path(run_dir) / INSPECT_FOLDER / inspection_file_name(step)
    if not path.is_file():
        recorded = inspected_steps(run_dir)
        listed = ", ".join(map(str, recorded)) or "none (train with --inspect-steps 1,2,...)"
        raise ValueError(f"step={step} was not inspected in run_dir={str(run_dir)!r}; recorded "
                         f"steps: {listed}")
    record = _read_json(path, "step's record")
    groups = []
    for number, group in enumerate(_field(record, "groups", path, "the step"), 1):
        where = f"group {number}"
        answers = [_answer(answer, path, f"{where}, answer {index}")
                   for index, answer in enumerate(_field(group, "answers", path, where), 1)]
        groups.append(InspectedGroup(prompt=_field(group, "prompt", path, where), answers=answers,
                                     trained=bool(_field(group, "trained", path, where))))
    fields = {key: _field(record, key, path, "the step") for key in
              ("step", "method", "advantage", "r_max", "clip_low", "clip_high", "minibatches")}
    if fields["step"] != step:
        raise ValueError(f"{path} records step {fields['step']}, not {step}; was it renamed?")
    if not math.isfinite(fields["r_max"]):
        raise ValueError(f"{path}: r_max must be finite, got {fields['r_max']}")
    return InspectedStep(groups=groups, **fields)


def read_inspections(run_dir) -> list[InspectedStep]:
    """Every inspected step of the run, in order; a clear error when there is none."""
    steps = inspected_steps(run_dir)
    if not steps:
        if not (Path(run_dir) / METRICS_FILE).is_file():
            raise ValueError(f"run_dir={str(run_dir)!r} is not a run folder of {TRAINER} (no "
                             f"{METRICS_FILE})")
        raise ValueError(f"run_dir={str(run_dir)!r} holds no inspected steps; train with "
                         "--inspect-steps (for example --inspect-steps 1,100) to record some")
    return [read_inspection(run_dir, step) for step in steps]

"""The run folders of ``minimal/ngrpo_train.py``, read in one place: this module is the contract.

The trainer is one self-contained file, so it writes its folders without this module; everything
else that reads them (the notebooks through ``teaching``, the step inspector, ``ngrpo-sim
inspect``, ``minimal/compare.py``) goes through the names and readers here, and
``tests/test_inspector.py`` and ``tests/test_trainer_runs.py`` train tiny runs to keep writer and
reader in step.

A run folder (``runs/minimal/METHOD-seedSEED`` unless ``--run-dir`` says otherwise) holds

* ``config.json``: the run's ``Config`` as a JSON object;
* ``metrics.jsonl``: one JSON object per line, ``{"step": 0, "eval/pass@1": ...}`` before
  training, then one line per step with its rollout and update statistics (``reward``,
  ``sampled_accuracy``, ``share_all_wrong``, ``share_all_correct``,
  ``share_all_wrong_learned``, ``entropy``, ``clipfrac_low``, ...) and, on evaluation steps,
  ``eval/pass@k`` and ``eval/pass_auc``; runs trained before the project's one vocabulary wrote
  some keys under older names, which ``read_run`` maps to these (``RENAMED_KEYS``);
* ``samples.jsonl``: a few sampled answers with their prompt, reward (null where unknown) and
  reference answer, at each evaluation and on request every few steps;
* ``checkpoint.pt``, ``model/`` and ``curves.png``;
* ``inspect/step-NNNNNN.json`` for every step chosen with ``--inspect-steps``
  (``read_inspection``).

``minimal/compare.py`` writes one run folder per method and seed, named ``METHOD-seedSEED``
(``RUN_FOLDER``), beside ``table.md``, ``results.json`` and ``comparison.png``.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ngrpo_sim.base import checks

TRAINER = Path("minimal") / "ngrpo_train.py"
COMPARE = Path("minimal") / "compare.py"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
MODEL_FOLDER = "model"
"""The trained model, written (with its tokenizer) when a run finishes."""
INSPECT_FOLDER = "inspect"
INSPECT_FILE = re.compile(r"step-(?P<step>\d+)\.json$")
"""One file per inspected step, ``step-`` and the step number padded to six digits."""
RUN_FOLDER = "{method}-seed{seed}"
"""``minimal/compare.py`` writes one folder per method and seed, named METHOD-seedSEED."""
RUN_FOLDER_NAME = re.compile(r"(?P<method>.+)-seed(?P<seed>\d+)$")
RENAMED_KEYS = {"accuracy": "sampled_accuracy", "all_wrong_share": "share_all_wrong",
                "all_right_share": "share_all_correct",
                "all_wrong_learned_share": "share_all_wrong_learned"}
"""metrics.jsonl keys of runs trained before the project's one vocabulary, and their names now."""
RENAMED_ADVANTAGES = {"z_score": "grpo", "calibrated": "ngrpo", "quantile": "qae",
                      "asymre": "shifted_baseline"}
"""Advantage kinds of older inspected steps, and ngrpo_sim's estimator names for them."""
CLIP_STATES = (None, "low", "high")
"""A token's clip state in its update: unclipped, or the bound that removed its gradient
(1 - clip_low for A < 0, 1 + clip_high for A > 0)."""


def inspection_file_name(step: int) -> str:
    """The file name of an inspected step inside ``inspect/``."""
    return f"step-{checks.integer('step', step, low=1):06d}.json"


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
            records.append({RENAMED_KEYS.get(key, key): value
                            for key, value in json.loads(line).items()})
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not JSON ({error}); a run killed while "
                             "writing it can be continued with --resume") from None
    return records


def read_comparison(folder, seeds: int | None = None) -> dict[str, list[list[dict]]]:
    """The runs of a ``minimal/compare.py`` folder: {method: [records of seed 1, seed 2, ...]},
    methods in name order.

    ``seeds`` keeps seeds 1..seeds only, the runs that ``compare.py --seeds N`` trained and
    tabulated; a folder can hold more from an earlier, larger comparison. None keeps every seed.
    """
    if seeds is not None:
        seeds = checks.integer("seeds", seeds, low=1)
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
    spans: tuple[tuple[int, int, str], ...] = ()
    """(first, stop, text) of each run of tokens ``first..stop - 1`` that cut characters between
    them (a byte-level tokenizer such as SmolLM2's split "😀" over two tokens): each of them shows
    U+FFFD in ``tokens``, ``text`` is the run decoded as one. Empty in steps of older runs, which
    recorded each token decoded alone only."""

    def pieces(self) -> list[tuple[int, int, str]]:
        """(first, stop, text) of every piece of the answer in order: each run of ``spans`` and
        every other token alone; the texts joined are the answer's text."""
        pieces, position = [], 0
        for first, stop, text in (*self.spans, (len(self.tokens), len(self.tokens), "")):
            pieces += [(index, index + 1, self.tokens[index]) for index in range(position, first)]
            if stop > first:
                pieces.append((first, stop, text))
            position = stop
        return pieces

    @property
    def text(self) -> str:
        """The answer's text (end token included) as the verifier read it."""
        return "".join(text for _, _, text in self.pieces())


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
    """ngrpo_sim's name of the advantage estimator (``AdvantageEstimator.name``): grpo, ngrpo
    (NGRPO's virtual r_max answers), dr_grpo, rloo, w_reinforce, maxrl, qae or shifted_baseline."""
    r_max: float
    virtual_samples: int
    """Virtual r_max answers in NGRPO's group statistics (1 in steps of older runs)."""
    ddof: int
    """The group std's delta degrees of freedom (1 in steps of older runs)."""
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


def _typed(value, kinds, path: Path, where: str, what: str):
    """``value`` if it is one of ``kinds`` (a bool is no number here); a clear error if not."""
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
        raise ValueError(f"{path}: {where} has {what}={value!r}, not {names}; the file is damaged")
    return value


def _spans(record: dict, tokens: list, path: Path, where: str) -> tuple:
    spans, position = [], 0
    for span in _typed(record.get("spans", []), (list,), path, where, "spans"):
        first, stop, text = span if isinstance(span, list) and len(span) == 3 else (None,) * 3
        if not (isinstance(first, int) and isinstance(stop, int) and isinstance(text, str)
                and position <= first < stop <= len(tokens)):
            raise ValueError(f"{path}: {where} has the span {span!r}; spans are [first, stop, "
                             f"text] in order, within its {len(tokens)} tokens: the file is "
                             "damaged")
        spans.append((first, stop, text))
        position = stop
    return tuple(spans)


def _answer(record: dict, path: Path, where: str) -> InspectedAnswer:
    tokens = _typed(_field(record, "tokens", path, where), (list,), path, where, "tokens")
    if not all(isinstance(token, str) for token in tokens):
        raise ValueError(f"{path}: {where} has tokens that are not text: {tokens!r}; the file is "
                         "damaged")
    ratio, clip = record.get("ratio"), record.get("clip")
    lengths = {len(tokens), len(ratio or tokens), len(tokens if clip is None else clip)}
    if ratio is not None and (clip is None or len(lengths) > 1):
        raise ValueError(f"{path}: {where} has {len(tokens)} tokens but {len(ratio)} ratios and "
                         f"{None if clip is None else len(clip)} clip states; the file is damaged")
    if clip is not None and any(state not in CLIP_STATES for state in clip):
        raise ValueError(f"{path}: {where} holds a clip state outside {CLIP_STATES}: {clip!r}")
    number = (int, float, type(None))
    return InspectedAnswer(
        tokens=tokens,
        reward=_number(_typed(_field(record, "reward", path, where), number, path, where,
                              "reward")),
        advantage=_number(_typed(record.get("advantage"), number, path, where, "advantage")),
        minibatch=_typed(record.get("minibatch"), (int, type(None)), path, where, "minibatch"),
        ratio=None if ratio is None else np.array(ratio, dtype=np.float64), clip=clip,
        spans=_spans(record, tokens, path, where))


def inspected_steps(run_dir) -> list[int]:
    """The steps of the run that ``--inspect-steps`` recorded, in order."""
    folder = Path(run_dir) / INSPECT_FOLDER
    names = [path.name for path in folder.iterdir()] if folder.is_dir() else []
    matches = [INSPECT_FILE.match(name) for name in names]
    return sorted(int(match["step"]) for match in matches if match)


def read_inspection(run_dir, step: int) -> InspectedStep:
    """The record of one inspected step, ``inspect/step-NNNNNN.json``.

    The file holds ``step``, ``method``, ``advantage``, ``r_max``, ``virtual_samples``, ``ddof``,
    ``clip_low``, ``clip_high``, ``minibatches`` and ``groups``: every group sampled in the step,
    refills included, in the order sampled, each with ``prompt``, ``trained`` and ``answers``; an
    answer holds ``tokens``, ``spans`` (``InspectedAnswer.spans``; absent in older runs),
    ``reward`` (null if unknown), ``advantage``, ``minibatch``, ``ratio`` and ``clip`` (the last
    four null for a dropped group). A field of the wrong type is an error naming the file.
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
        prompt = _typed(_field(group, "prompt", path, where), (str,), path, where, "prompt")
        groups.append(InspectedGroup(prompt=prompt, answers=answers,
                                     trained=bool(_field(group, "trained", path, where))))
    kinds = dict(step=(int,), method=(str,), advantage=(str,), r_max=(int, float),
                 clip_low=(int, float), clip_high=(int, float), minibatches=(int,))
    fields = {key: _typed(_field(record, key, path, "the step"), kind, path, "the step", key)
              for key, kind in kinds.items()}
    fields["advantage"] = RENAMED_ADVANTAGES.get(fields["advantage"], fields["advantage"])
    fields.update({key: _typed(record.get(key, 1), (int,), path, "the step", key)
                   for key in ("virtual_samples", "ddof")})
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


# -------------------------------------------------------------------------------------------------
# Finding and running the trainer, the curves of its logs
# -------------------------------------------------------------------------------------------------


def repository_root(start=None) -> Path:
    """The ngrpo checkout around ``start`` (default: the working directory): the nearest folder,
    ``start`` itself or one above it, that holds ``minimal/ngrpo_train.py``. Notebooks run from
    ``notebooks/`` and write under its ``runs/`` (ignored by git)."""
    start = Path.cwd() if start is None else Path(start)
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / TRAINER).is_file():
            return folder
    raise ValueError(f"start={str(start)!r} is not inside the ngrpo repository: no {TRAINER} "
                     "there or above")


def find_trainer(start=None) -> Path:
    """``minimal/ngrpo_train.py`` of the checkout around ``start``."""
    return repository_root(start) / TRAINER


def run_trainer(arguments: list[str], trainer=None, cwd=None) -> str:
    """Run the single-file trainer with these command-line arguments in a fresh Python, in the
    folder ``cwd`` (default: the current one), and return everything it printed.

    What it prints is passed on while it runs, its progress bars included (at most one update a
    second), so a notebook cell shows how far training is instead of minutes of silence. A separate
    process keeps the notebook's kernel free of torch and shows the trainer as its users run it.
    Raises RuntimeError with the end of the output when the trainer fails.
    """
    trainer = find_trainer() if trainer is None else Path(trainer)
    command = [sys.executable, str(trainer), *map(str, arguments)]
    decoder, printed = codecs.getincrementaldecoder("utf-8")(errors="replace"), []
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, cwd=cwd,
                          env={**os.environ, "TQDM_MININTERVAL": "1"}) as process:
        for chunk in iter(lambda: process.stdout.read1(65536), b""):
            text = decoder.decode(chunk)
            printed.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    printed.append(decoder.decode(b"", final=True))
    output = "".join(printed)
    if process.returncode:
        raise RuntimeError(f"{trainer.name} {' '.join(map(str, arguments))} failed with exit code "
                           f"{process.returncode}:\n{output[-3000:]}")
    return output


def run_curve(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of every record that logged ``key``."""
    points = [(record["step"], record[key]) for record in records if key in record]
    if not points:
        known = sorted({name for record in records for name in record})
        raise ValueError(f"key={key!r} was never logged; the run logged {', '.join(known)}")
    steps, values = zip(*points)
    return np.array(steps), np.array(values, dtype=np.float64)


def final_pass_at_k(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(k, pass@k) of the run's last evaluation."""
    evaluations = [record for record in records
                   if any(key.startswith("eval/pass@") for key in record)]
    last = evaluations[-1] if evaluations else None
    if last is None:
        raise ValueError("the run holds no evaluation (no eval/pass@k keys)")
    ks = sorted(int(key.split("@")[1]) for key in last if re.fullmatch(r"eval/pass@\d+", key))
    return np.array(ks), np.array([last[f"eval/pass@{k}"] for k in ks])

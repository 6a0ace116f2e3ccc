"""minimal/compare.py never loses a finished run (issue 21, item 3): a run that fails leaves the
others trained and tabled, every run's folder is checked before the first is trained, and Ctrl-C
names the runs kept and the command that continues."""

import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from test_minimal_runs import flags
from test_minimal_trainer import ROOT, compare, tiny_config, tiny_folder, trainer  # noqa: F401


def fail_in_step(monkeypatch, method: str, seed: int, step: int, error):
    """Make the run of ``method`` and ``seed`` raise ``error`` in its ``step``-th step."""
    real, steps = trainer.training_step, {}

    def training_step(policy, reference, optimizer, task, config, *args, **kwargs):
        key = config.method, config.seed
        steps[key] = steps.get(key, 0) + 1
        if key == (method, seed) and steps[key] == step:
            raise error
        return real(policy, reference, optimizer, task, config, *args, **kwargs)

    monkeypatch.setattr(trainer, "training_step", training_step)


def trained_runs(monkeypatch) -> list:
    """The (method, seed) of every run trained (or resumed) from now on."""
    calls, real = [], trainer.train

    def train(config, *args, **kwargs):
        calls.append((config.method, config.seed))
        return real(config, *args, **kwargs)

    monkeypatch.setattr(trainer, "train", train)
    return calls


def table_methods(base: Path) -> list:
    return [line.split(" | ")[0].removeprefix("| ") for line in
            (base / "table.md").read_text().splitlines() if line.startswith("| ")][1:]


def test_a_run_that_fails_leaves_the_others_trained_and_tabled(tiny_folder, tmp_path,
                                                               monkeypatch, capsys):
    base = tmp_path / "compare"
    argv = ["--methods", "ngrpo,grpo,dapo", "--seeds", "1",
            *flags(tiny_folder, base, steps=2, eval_every=1)]
    fail_in_step(monkeypatch, "grpo", 1, 2, trainer.NonFiniteError("the loss is nan"))
    with pytest.raises(SystemExit) as stop:
        compare.main(argv)
    assert stop.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()[-4:]
    assert lines[:3] == [f"compare: kept {base / 'ngrpo-seed1'}",
                         f"compare: kept {base / 'dapo-seed1'}",
                         f"compare: failed {base / 'grpo-seed1'}: NonFiniteError: step 2: the "
                         "loss is nan (learning rate 0.001 too high?); stopped, no checkpoint was "
                         "saved yet"]
    assert lines[3] == ("compare: 1 of 3 runs failed; table.md leaves out grpo, with a failed "
                        "run; the same command trains only the failed runs again: "
                        + shlex.join([os.path.relpath(sys.executable),
                                      os.path.relpath(compare.__file__), *argv]))
    assert table_methods(base) == ["ngrpo", "dapo"]

    monkeypatch.undo()
    calls = trained_runs(monkeypatch)
    compare.main(argv)
    assert calls == [("grpo", 1)]
    assert table_methods(base) == ["ngrpo", "grpo", "dapo"]


def test_every_runs_folder_is_checked_before_the_first_is_trained(tiny_folder, tmp_path,
                                                                  monkeypatch):
    config = tiny_config(tiny_folder, tmp_path / "compare", steps=2)
    compare.compare(compare.Comparison(methods=["grpo"], seeds=1, config=config))
    calls = trained_runs(monkeypatch)
    with pytest.raises(trainer.UsageError, match="grpo-seed1 was trained with other settings"):
        compare.compare(compare.Comparison(methods=["ngrpo", "grpo"], seeds=1,
                                           config=replace(config, learning_rate=0.02)))
    assert calls == [] and not (tmp_path / "compare" / "ngrpo-seed1").exists()


def test_ctrl_c_names_the_runs_kept_and_the_command_that_continues(tiny_folder, tmp_path,
                                                                   monkeypatch, capsys):
    base = tmp_path / "compare"
    argv = ["--methods", "ngrpo,grpo", "--seeds", "1", *flags(tiny_folder, base, steps=2)]
    fail_in_step(monkeypatch, "grpo", 1, 2, KeyboardInterrupt)
    with pytest.raises(SystemExit) as stop:
        compare.main(argv)
    assert stop.value.code == 130
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    prefix = "interrupted; 1 of 2 runs finished and are kept, the stopped one resumes; continue " \
             f"with: {shlex.quote(os.path.relpath(sys.executable))} "
    assert line.startswith(prefix)
    command = shlex.split(line[len(prefix):])
    assert Path(command[0]).resolve() == ROOT / "minimal" / "compare.py"
    monkeypatch.undo()
    calls = trained_runs(monkeypatch)
    compare.main(command[1:])
    assert calls == [("grpo", 1)]

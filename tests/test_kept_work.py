"""No command that simulates loses finished work (issue 21, items 3, 9 and 10).

Every finished simulation is kept in ``--out/tasks`` as soon as it finishes, under its full
settings: a method that fails mid-run does not take the others with it (they are written, the
command names the failure and exits 1), Ctrl-C ends in one line naming what was kept and the command
that continues, and the same command run again reuses what it kept. The failures are made by
``training_loop.apply_rollout`` raising in the k-th step of one method.
"""

import csv
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ngrpo_sim.cli import main
from ngrpo_sim.experiments import sweep
from ngrpo_sim.methods.presets import KeepAllGroups, get_method
from ngrpo_sim.reports import report
from ngrpo_sim.simulators import training_loop
from ngrpo_sim.simulators.dynamics import DynamicsConfig

SMALL = ["--steps", "3", "--seeds", "2", "--num-prompts", "16", "--prompts-per-step", "8"]
TOKENS = ["--vocab-size", "3", "--max-length", "3"]
COMMANDS = {"dynamics": ["dynamics", *SMALL], "tokens": ["tokens", *SMALL, *TOKENS],
            "sweep": ["sweep", *SMALL, "--learning-rate", "0.05", "0.1"]}


def fail_in_step(monkeypatch, method: str, step: int, error=RuntimeError):
    """Make every run of ``method`` raise ``error`` in its ``step``-th step; returns the undo."""
    real = training_loop.apply_rollout
    steps = {}

    def apply(task, trained, config, state, rollout, reference):
        if trained.name == method:
            steps[config] = steps.get(config, 0) + 1
            if steps[config] == step:
                raise error(f"{method} diverged in step {step}")
        return real(task, trained, config, state, rollout, reference)

    monkeypatch.setattr(training_loop, "apply_rollout", apply)
    return lambda: monkeypatch.setattr(training_loop, "apply_rollout", real)


def count_runs(monkeypatch) -> list:
    """The (method, config) of every simulation that runs from now on."""
    calls, real = [], sweep.train

    def counted(method, config, progress):
        calls.append((method.name, config))
        return real(method, config, progress=progress)

    monkeypatch.setattr(sweep, "train", counted)
    return calls


def exit_code(argv) -> int:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code


def methods_in(table: Path) -> set:
    with table.open() as handle:
        return {row["method"] for row in csv.DictReader(handle)}


def test_a_run_refused_on_its_settings_keeps_the_others_and_exits_2(tmp_path, monkeypatch,
                                                                    capsys):
    """A divergence (a ValueError: the settings' fault) would fail again as it is: the finished
    runs are kept, the command exits 2 and says to change the settings first."""
    out = tmp_path / "run"
    argv = [*COMMANDS["dynamics"], "--methods", "grpo,ngrpo", "--out", str(out)]
    fail_in_step(monkeypatch, "ngrpo", 2, error=lambda message: training_loop.TrainingDiverged(
        "ngrpo", 0.05, "its parameters are no longer finite after an optimiser update"))
    assert exit_code(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert any(line.endswith(": kept grpo") for line in err)
    assert any(": failed ngrpo: TrainingDiverged: method 'ngrpo' diverged at step 2 with "
               "learning_rate=0.05"
               in line for line in err)
    assert err[-1].endswith("1 of 2 runs failed on their settings; change what the lines above "
                            f"name, then this runs only those again: ngrpo-sim {' '.join(argv)}")
    assert len(list((out / "tasks").glob("*.npz"))) == 1


@pytest.mark.parametrize("command", ["dynamics", "tokens", "sweep"])
def test_a_method_that_fails_mid_run_leaves_the_others_written(command, tmp_path, monkeypatch,
                                                             capsys):
    out = tmp_path / "run"
    argv = [*COMMANDS[command], "--methods", "grpo,ngrpo,dapo", "--out", str(out)]
    restore = fail_in_step(monkeypatch, "ngrpo", 2)
    assert exit_code(argv) == 1
    err = capsys.readouterr().err.splitlines()
    settings = 2 if command == "sweep" else 1
    assert len([line for line in err if ": kept grpo" in line]) == settings
    assert len([line for line in err if ": kept dapo" in line]) == settings
    failed = [line for line in err if ": failed ngrpo" in line]
    assert len(failed) == settings
    assert all(line.endswith("RuntimeError: ngrpo diverged in step 2") for line in failed)
    assert err[-1].endswith(f"{settings} of {3 * settings} runs failed; the same command runs "
                            f"only the failed ones again: ngrpo-sim {' '.join(argv)}")
    assert len(list((out / "tasks").glob("*.npz"))) == 2 * settings
    tables = [out / "metrics.csv"] if command != "sweep" else sorted(out.glob("00*/metrics.csv"))
    assert len(tables) == settings
    assert all(methods_in(table) == {"grpo", "dapo"} for table in tables)
    kept = {path: path.stat().st_mtime_ns for path in (out / "tasks").iterdir()}

    restore()
    calls = count_runs(monkeypatch)
    assert main(argv) == 0  # the same command: only the failed method runs
    assert [name for name, _ in calls] == ["ngrpo"] * settings
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    assert all(methods_in(table) == {"grpo", "ngrpo", "dapo"} for table in tables)


def test_the_runs_kept_after_a_failure_are_those_of_a_run_without_one(tmp_path, monkeypatch,
                                                                     capsys):
    argv = [*COMMANDS["dynamics"], "--methods", "grpo,ngrpo"]
    main(argv + ["--out", str(tmp_path / "whole")])
    restore = fail_in_step(monkeypatch, "ngrpo", 3)
    assert exit_code(argv + ["--out", str(tmp_path / "failed")]) == 1
    restore()
    main(argv + ["--out", str(tmp_path / "failed")])
    capsys.readouterr()
    for name in ("metrics.csv", "pass_at_k.csv", "summary.csv", "config.json"):
        assert (tmp_path / "failed" / name).read_text() == (tmp_path / "whole" / name).read_text()


@dataclasses.dataclass(frozen=True)
class FailsOnThirdCall(KeepAllGroups):
    """Keeps every group, and raises the third time it is asked in a process: a method that
    fails mid-run in whichever process trains it (a worker imports this module to unpickle it)."""

    def keep(self, rewards, *, mask_unknown=False):
        CALLS[self] = CALLS.get(self, 0) + 1
        if CALLS[self] == 3:
            raise RuntimeError("the filter failed on its third call")
        return super().keep(rewards, mask_unknown=mask_unknown)


CALLS = {}


def test_a_failure_in_a_worker_process_leaves_the_others(tmp_path):
    config = DynamicsConfig(num_prompts=16, prompts_per_step=8, steps=4, seeds=2)
    failing = get_method("grpo").replace(name="failing", group_filter=FailsOnThirdCall())
    with pytest.raises(sweep.TasksFailed) as failure:
        sweep.run_sweep(["grpo", failing, "dapo"], [config], workers=2, store=tmp_path)
    assert sorted(failure.value.finished) == [0, 2] and list(failure.value.errors) == [1]
    assert str(failure.value.errors[1]) == "the filter failed on its third call"
    for index, name in ((0, "grpo"), (2, "dapo")):
        direct = training_loop.simulate(name, config, progress=False)
        for metric, values in direct.metrics.items():
            np.testing.assert_array_equal(failure.value.finished[index].metrics[metric], values)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_every_run_failing_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    out = tmp_path / "new" / "run"
    fail_in_step(monkeypatch, "grpo", 1)
    assert exit_code([*COMMANDS["dynamics"], "--methods", "grpo", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "failed grpo: RuntimeError: grpo diverged in step 1" in err and "kept" not in err
    assert not (tmp_path / "new").exists()


def test_ctrl_c_keeps_the_finished_runs_and_names_the_command_that_continues(tmp_path,
                                                                            monkeypatch, capsys):
    out = tmp_path / "run"
    argv = [*COMMANDS["dynamics"], "--methods", "grpo,ngrpo,dapo", "--out", str(out)]
    restore = fail_in_step(monkeypatch, "dapo", 2, KeyboardInterrupt)
    assert exit_code(argv) == 130
    captured = capsys.readouterr()
    [line] = [line for line in captured.err.splitlines() if line.strip() and "|" not in line]
    assert line == (f"ngrpo-sim dynamics: interrupted; kept the 2 of 3 runs that finished, in "
                    f"{out / 'tasks'}; continue with: ngrpo-sim {' '.join(argv)}")
    # Only the header naming the setting came before the bar: no table of unfinished runs.
    assert "Traceback" not in captured.err and captured.out.startswith("Setting: ")
    assert "\nmethod " not in captured.out
    restore()
    calls = count_runs(monkeypatch)
    assert main(argv) == 0
    assert [name for name, _ in calls] == ["dapo"]


def test_ctrl_c_before_any_run_finished_removes_the_folder_it_made(tmp_path, monkeypatch, capsys):
    out = tmp_path / "new" / "run"
    argv = [*COMMANDS["dynamics"], "--methods", "grpo", "--out", str(out)]
    fail_in_step(monkeypatch, "grpo", 2, KeyboardInterrupt)
    assert exit_code(argv) == 130
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.strip()
              and "|" not in line]
    assert line == (f"ngrpo-sim dynamics: interrupted before any run finished, so nothing was "
                    f"kept, and {out} it had made is removed; start again with: ngrpo-sim "
                    f"{' '.join(argv)}")
    assert not (tmp_path / "new").exists()


def test_a_folder_of_other_settings_is_refused_without_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*COMMANDS["dynamics"], "--methods", "grpo", "--out", str(out)]
    main(argv)
    capsys.readouterr()
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--learning-rate", "0.2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"ngrpo-sim dynamics: error: --out {str(out)!r} holds an ngrpo-sim dynamics "
                   "with other settings (its request.json differs in configs); give another "
                   "--out, repeat that run's options to continue it, or pass --overwrite to "
                   "replace it\n")
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    with pytest.raises(SystemExit):
        main(["tokens", *SMALL, *TOKENS, "--methods", "grpo", "--out", str(out)])
    assert "holds an ngrpo-sim dynamics, not a tokens" in capsys.readouterr().err
    main([*argv, "--learning-rate", "0.2", "--overwrite"])
    # Replaced: the other settings' stored run is gone, the new one is the only one.
    assert len(list((out / "tasks").iterdir())) == 1
    assert (out / "tasks").iterdir().__next__() not in before


def test_workers_beyond_the_machine_are_refused_before_the_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "usable_cores", lambda: 2)
    out = tmp_path / "report"
    for workers, message in (("1000", "--workers 1000 is more than the 2 CPU cores of this "
                                      "machine, where each worker takes one; give --workers 2 or "
                                      "fewer (or a Ray cluster)"),
                             ("0", "--workers must be >= 1, got 0")):
        for command in (["report"], [*COMMANDS["sweep"]]):
            assert exit_code([*command, "--workers", workers, "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert err.endswith(f": error: {message}\n") and err.count("\n") == 1
            assert not out.exists()
    assert exit_code(["report", "--workers", "2", "--ray", "auto", "--out", str(out)]) == 2
    assert "--workers 2 and --ray auto: Ray runs one task" in capsys.readouterr().err
    assert not out.exists()


def test_a_report_run_again_reuses_every_simulation_and_the_report(tmp_path, small_report,
                                                                  made_report, without_figures,
                                                                  monkeypatch, capsys):
    out = tmp_path / "report"
    shutil.copytree(made_report.folder, out)
    first = made_report.printed
    calls = count_runs(monkeypatch)
    assert main(["report", "--out", str(out)]) == 0
    assert calls == []
    again = capsys.readouterr().out
    # It prints again what the first run printed: the verdict block, where everything is, and
    # how long the run that made it took.
    made = first.replace("\nTotal time ", "\nIt was made in ")
    assert made != first and again == (f"Nothing to run: {out} holds this report with these "
                                       f"settings (--overwrite redoes it).\n\n{made}")
    assert first.startswith("What the simulations say") and "Total time" in first
    # --overwrite writes every file anew from the kept simulations, still without running one.
    (out / "headline" / "metrics.csv").unlink()
    assert main(["report", "--out", str(out), "--overwrite"]) == 0
    assert calls == [] and (out / "headline" / "metrics.csv").is_file()


def test_a_report_of_other_settings_is_refused_without_overwrite(tmp_path, small_report,
                                                                 made_report, without_figures,
                                                                 monkeypatch, capsys):
    out = tmp_path / "report"
    shutil.copytree(made_report.folder, out)
    monkeypatch.setattr(report, "SWEEP_STEPS", 4)
    assert exit_code(["report", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"ngrpo-sim report: error: --out {str(out)!r} holds an ngrpo-sim report with other "
        "settings (its request.json differs in simulations); give another --out, repeat that "
        "run's options to continue it, or pass --overwrite to replace it\n")
    calls = count_runs(monkeypatch)
    assert main(["report", "--out", str(out), "--overwrite"]) == 0
    assert len(calls) == 40  # the sweep's 8 settings x 5 methods; the rest is reused
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.md").write_text("# an earlier version's report\n")
    assert exit_code(["report", "--out", str(tmp_path / "old")]) == 2
    assert "holds files but no request.json of an ngrpo-sim report" in capsys.readouterr().err


def test_the_default_folder_of_an_earlier_report_is_kept_and_the_next_one_taken(
        tmp_path, small_report, made_report, without_figures, monkeypatch, capsys):
    # make demo after an upgrade: runs/report holds a report of other settings.
    monkeypatch.chdir(tmp_path)
    shutil.copytree(made_report.folder, "runs/report")
    earlier = {path: path.read_bytes() for path in Path("runs/report").rglob("*") if path.is_file()}
    monkeypatch.setattr(report, "SWEEP_STEPS", 4)
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("runs/report holds another ngrpo-sim run (kept as it is); this one goes "
                          "to runs/report-2 (--out names a folder, --overwrite replaces the old "
                          "run)\n")
    assert {path: path.read_bytes() for path in Path("runs/report").rglob("*")
            if path.is_file()} == earlier
    assert Path("runs/report-2/report.md").is_file()
    # The same settings again find their folder and run nothing.
    calls = count_runs(monkeypatch)
    assert main(["report"]) == 0 and calls == []
    assert "Nothing to run: runs/report-2 holds this report" in capsys.readouterr().out


def test_a_report_whose_simulation_fails_keeps_the_others(tmp_path, small_report,
                                                         without_figures, monkeypatch, capsys):
    out = tmp_path / "report"
    restore = fail_in_step(monkeypatch, "ppo", 2)
    assert exit_code(["report", "--out", str(out)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("ngrpo-sim report: ")]
    failed = [line for line in err if ": failed ppo (" in line]
    total = len(list((out / "tasks").iterdir())) + len(failed)
    assert len(err) == 2 + len(failed)
    assert err[0] == (f"ngrpo-sim report: kept {total - len(failed)} of {total} simulations in "
                      f"{out / 'tasks'}; the report needs every one, so it is not written")
    assert len(failed) == 11  # headline (sampled and expected), 8 sweep settings, tokens
    assert not (out / "report.md").exists()
    restore()
    calls = count_runs(monkeypatch)
    assert main(["report", "--out", str(out)]) == 0
    assert [name for name, _ in calls] == ["ppo"] * 11


SCRIPT = '''
"""ngrpo-sim at the scale of the small_report fixture, without figures; SLOW=1 makes each step
take 50 ms more (in the workers too: they import this file as their main module)."""
import os, sys, time
sys.path.insert(0, os.environ["TESTS"])
from ngrpo_sim.simulators import training_loop
from report_scale import shrink_report, stub_figures

shrink_report(setattr)
stub_figures(setattr)
if os.environ.get("SLOW"):
    real = training_loop.apply_rollout

    def slow(*args):
        time.sleep(0.05)
        return real(*args)

    training_loop.apply_rollout = slow

if __name__ == "__main__":
    from ngrpo_sim.cli import main
    sys.exit(main(sys.argv[1:]))
'''


def test_ctrl_c_in_a_report_on_two_workers_continues_where_it_stopped(tmp_path, small_report,
                                                                     made_report):
    psutil = pytest.importorskip("psutil")
    script, out = tmp_path / "small_report.py", tmp_path / "report"
    script.write_text(SCRIPT)
    argv = ["report", "--workers", "2", "--out", str(out)]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "TESTS": str(root / "tests"), "SLOW": "1"}
    # A terminal's Ctrl-C reaches every process of its group: the workers too.
    process = subprocess.Popen([sys.executable, str(script), *argv], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list((out / "tasks").glob("*.npz"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert len(workers) >= 2
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err
    [line] = [line for line in err.split("\n") if line.strip() and "simulations:" not in line]
    kept = sorted((out / "tasks").iterdir())
    total = sum(len(tasks) for tasks in report.report_plan().values())  # at small_report's scale
    assert line == (f"ngrpo-sim report: interrupted; kept the {len(kept)} of {total} runs that "
                    f"finished, in {out / 'tasks'}; continue with: ngrpo-sim {' '.join(argv)}")
    assert 3 <= len(kept) < total and not (out / "report.md").exists()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []  # no worker outlives the command
    stamps = {path: path.stat().st_mtime_ns for path in kept}

    finished = subprocess.run([sys.executable, str(script), *argv], env={**env, "SLOW": ""},
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert {path: path.stat().st_mtime_ns for path in kept} == stamps
    assert len(list((out / "tasks").iterdir())) == total
    # The continued report is the report of a run never stopped (in one process, with figures).
    for table in ("headline/metrics.csv", "sweep/0-tabular-adam-mb1/summary.csv",
                  "clipping/nsr-0/metrics.csv", "lengths/cap-binds/presets/metrics.csv"):
        assert (out / table).read_text() == (made_report.folder / table).read_text()


def test_ctrl_c_in_a_command_that_keeps_nothing_removes_the_folder_it_made(tmp_path, monkeypatch,
                                                                          capsys):
    from ngrpo_sim.analysis import landscape

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(landscape, "format_tables", interrupted)
    out = tmp_path / "new" / "landscape"
    argv = ["landscape", "--no-figures", "--out", str(out)]
    assert exit_code(argv) == 130
    captured = capsys.readouterr()
    assert captured.err == (f"\nngrpo-sim landscape: interrupted; nothing of it was kept, and "
                            f"{out} it had made is removed; start it again with: ngrpo-sim "
                            f"{' '.join(argv)}\n")
    assert not (tmp_path / "new").exists()

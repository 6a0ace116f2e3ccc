"""Sweeps run here, in local processes and on Ray give the same arrays; a stopped sweep resumes.

The oracle is ``dynamics.simulate`` called directly, one method and config at a time, in this
process: every way of running a sweep must return exactly its arrays, in the sweep's order.
"""

import contextlib
import csv
import dataclasses
import io
import re
import subprocess
import sys

import numpy as np
import pytest

from ngrpo_sim.cli import main
from ngrpo_sim.experiments import sweep
from ngrpo_sim.experiments.runs import SUMMARY_METRICS
from ngrpo_sim.simulators.dynamics import DynamicsConfig, simulate

SMALL = DynamicsConfig(num_prompts=32, prompts_per_step=8, steps=4, seeds=3)
METHODS = ["grpo", "ngrpo", "ppo"]
CONFIGS = [SMALL, dataclasses.replace(SMALL, policy="shared", minibatches=2, seed=1),
           dataclasses.replace(SMALL, mode="expected", seeds=1)]


def direct_runs(methods=METHODS, configs=CONFIGS):
    return [simulate(method, config, progress=False) for config in configs for method in methods]


def assert_same_runs(runs, expected):
    assert [(run.method, run.config) for run in runs] == [(e.method, e.config) for e in expected]
    for run, oracle in zip(runs, expected):
        assert run.metrics.keys() == oracle.metrics.keys()
        for name, values in oracle.metrics.items():
            np.testing.assert_array_equal(run.metrics[name], values, err_msg=name)
        for name in ("pass_at_k", "ks", "initial_success", "final_success"):
            np.testing.assert_array_equal(getattr(run, name), getattr(oracle, name), err_msg=name)


@pytest.fixture(scope="module")
def oracle_runs():
    return direct_runs()


def test_a_sweep_here_gives_the_direct_runs(oracle_runs):
    assert_same_runs(sweep.run_sweep(METHODS, CONFIGS), oracle_runs)


def test_a_sweep_in_local_processes_gives_the_same_arrays(oracle_runs):
    assert_same_runs(sweep.run_sweep(METHODS, CONFIGS, workers=2), oracle_runs)


def test_a_sweep_on_ray_gives_the_same_arrays(ray_cluster, oracle_runs):
    # The session's cluster is already connected, so run_sweep uses it instead of starting one.
    assert_same_runs(sweep.run_sweep(METHODS, CONFIGS, ray_address="local"), oracle_runs)


def test_a_stopped_sweep_resumes_with_the_missing_tasks_only(tmp_path, monkeypatch, oracle_runs):
    calls = []

    def stopped_at_the_third_task(method, config, progress):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append((method.name, config))
        return simulate(method, config, progress=progress)

    monkeypatch.setattr(sweep, "train", stopped_at_the_third_task)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(METHODS, CONFIGS, store=tmp_path)
    assert [path.suffix for path in tmp_path.iterdir()] == [".npz", ".npz"]  # nothing partial

    def counted(method, config, progress):
        calls.append((method.name, config))
        return simulate(method, config, progress=progress)

    monkeypatch.setattr(sweep, "train", counted)
    resumed = sweep.run_sweep(METHODS, CONFIGS, store=tmp_path)
    tasks = [(method, config) for config in CONFIGS for method in METHODS]
    assert calls == tasks  # the first two before the stop, every other one after it
    assert_same_runs(resumed, oracle_runs)
    assert_same_runs(sweep.run_sweep(METHODS, CONFIGS, store=tmp_path), oracle_runs)
    assert len(calls) == len(tasks)  # a finished sweep runs nothing again


@pytest.mark.parametrize("options, named", [
    ({"workers": 0}, "workers must be >= 1, got 0"),
    ({"workers": 1.5}, "workers must be an integer"),
    ({"ray_address": ""}, "ray_address must be a Ray address"),
    ({"workers": 2, "ray_address": "auto"}, "workers=2 and ray_address='auto'"),
])
def test_where_to_run_is_checked_before_any_work(options, named):
    with pytest.raises(ValueError, match=named):
        sweep.run_sweep(["grpo"], [SMALL], **options)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were missing
    with pytest.raises(ValueError, match=r"ray_address='auto' needs Ray.*ngrpo-sim\[ray\]"):
        sweep.run_sweep(["grpo"], [SMALL], ray_address="auto")


def test_the_core_commands_never_import_ray():
    script = ("import sys\n"
              "import ngrpo_sim.cli, ngrpo_sim.reports.report, ngrpo_sim.experiments.sweep\n"
              "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def sweep_arguments(out):
    return ["sweep", "--methods", "grpo,ngrpo", "--policy", "tabular", "shared", "--learning-rate",
            "0.05", "0.1", "--num-prompts", "32", "--prompts-per-step", "8", "--steps", "3",
            "--seeds", "2", "--out", str(out)]


SETTINGS = ["000-policy=tabular-learning_rate=0.05", "001-policy=tabular-learning_rate=0.1",
            "002-policy=shared-learning_rate=0.05", "003-policy=shared-learning_rate=0.1"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """The sweep command run once: its folder and what it printed."""
    folder, printed = tmp_path_factory.mktemp("sweep"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(sweep_arguments(folder)) == 0
    return folder, printed.getvalue()


def test_the_sweep_command_writes_each_setting(finished_sweep):
    folder, printed = finished_sweep
    assert sorted(path.name for path in folder.iterdir() if path.name[0].isdigit()) == SETTINGS
    assert all((folder / name / "dynamics.png").stat().st_size > 0 for name in SETTINGS)
    assert all(name in printed for name in SETTINGS)

    with (folder / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(SETTINGS) * 2 * len(SUMMARY_METRICS)
    for row in rows:
        if row["metric"] == "accuracy":
            config = dataclasses.replace(SMALL, policy=row["policy"],
                                         learning_rate=float(row["learning_rate"]), steps=3,
                                         seeds=2)
            final = simulate(row["method"], config, progress=False).metrics["accuracy"][-1]
            assert float(row["mean"]) == pytest.approx(final.mean(), rel=1e-5)


def test_the_sweep_command_run_again_resumes_without_running_a_task(finished_sweep, monkeypatch,
                                                                    capsys):
    folder, printed = finished_sweep

    def must_not_run(*_, **__):
        raise AssertionError("a finished sweep ran a task again")

    monkeypatch.setattr(sweep, "train", must_not_run)
    assert main(sweep_arguments(folder)) == 0
    assert capsys.readouterr().out == printed


@pytest.mark.parametrize("change, message", [
    (["--learning-rate", "0.2"], "holds an ngrpo-sim sweep with other settings (its request.json "
                                 "differs in configs)"),
    (["--learning-rate", "fast"], "argument --learning-rate: 'fast' is not a float"),
    (["--refill", "maybe"], "argument --refill: 'maybe' is not true or false"),
    (["--max-candidates", "many"], "'many' is not a int or none"),
    (["--group-size", "2", "1"], "group_size must be >= 2, got 1"),
    (["--workers", "2", "--ray", "auto"], "--workers 2 and --ray auto: Ray runs one task"),
])
def test_the_sweep_command_refuses_bad_input_in_one_line(finished_sweep, capsys, change, message):
    folder, _ = finished_sweep
    before = (folder / "request.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(sweep_arguments(folder) + change)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert (folder / "request.json").read_text() == before


def test_the_sweep_command_leaves_a_folder_of_other_files_alone(tmp_path, capsys):
    (tmp_path / "summary.csv").write_text("a dynamics run's table\n")
    with pytest.raises(SystemExit) as exit_info:
        main(sweep_arguments(tmp_path))
    assert exit_info.value.code == 2
    assert "holds files but no request.json of an ngrpo-sim sweep" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["summary.csv"]


def test_the_report_on_ray_equals_the_report_here(ray_cluster, tmp_path, small_report,
                                                  without_figures, capsys):
    # Only the numbers are compared: the figures and the page are drawn from them.
    main(["report", "--out", str(tmp_path / "here")])
    main(["report", "--out", str(tmp_path / "ray"), "--ray", "local"])
    capsys.readouterr()

    def without_timing(text):
        return re.sub(r"\d+(\.\d+)? s\b", "(seconds)", text)

    here, on_ray = (tmp_path / "here" / "report.md").read_text(), (tmp_path / "ray" / "report.md")
    assert without_timing(on_ray.read_text().replace("/ray/", "/here/")) == without_timing(here)
    for table in ["headline/metrics.csv", "headline/pass_at_k.csv"]:
        assert (tmp_path / "ray" / table).read_text() == (tmp_path / "here" / table).read_text()


def test_each_method_and_config_is_checked_once_where_it_enters(monkeypatch):
    """A sweep checks every (method, config) pair once, in ``sweep_tasks``, and hands the checked
    tasks on: not again in ``run_tasks``, in each run, or at every step of an expected run (3, 3
    and steps times as many checks before)."""
    from ngrpo_sim.simulators.loop_config import LoopConfig

    checked, real = [], LoopConfig.check_method

    def counted(config, method):
        checked.append((method.name, config))
        return real(config, method)

    monkeypatch.setattr(LoopConfig, "check_method", counted)
    configs = [dataclasses.replace(SMALL, steps=3), dataclasses.replace(SMALL, steps=3,
                                                                         mode="expected")]
    sweep.run_sweep(["grpo", "ngrpo"], configs)
    assert sorted(checked, key=repr) == sorted([(method, config) for config in configs
                                                for method in ("grpo", "ngrpo")], key=repr)
    with pytest.raises(ValueError, match="tasks must be made by sweep_tasks"):
        sweep.run_tasks([("grpo", SMALL)])

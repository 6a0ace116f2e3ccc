"""The ngrpo-sim command line."""

import re
import subprocess
import sys

import pytest

from ngrpo_sim.analysis import landscape
from ngrpo_sim.analysis.landscape import DEFAULT_METHODS
from ngrpo_sim.base import checks
from ngrpo_sim.cli import build_parser, main
from ngrpo_sim.simulators.dynamics import DynamicsConfig


def test_every_option_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help and len(action.help) > 10, (
                    f"{name} {action.option_strings} lacks help")


def test_help_runs_as_a_console_command():
    top = subprocess.run([sys.executable, "-m", "ngrpo_sim", "--help"], capture_output=True,
                         text=True, check=True)
    assert "landscape" in top.stdout
    sub = subprocess.run([sys.executable, "-m", "ngrpo_sim", "landscape", "--help"],
                         capture_output=True, text=True, check=True)
    for option in ("--group-size", "--methods", "--r-max", "--virtual-samples", "--ddof", "--out"):
        assert option in sub.stdout


def test_landscape_prints_the_papers_numbers_and_writes_files(tmp_path, capsys):
    assert main(["landscape", "--group-size", "8", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for number in ("2.4749", "1.7638", "-0.3536", "-0.5040", "-0.3333"):
        assert number in out
    for name in ("advantages.csv", "curves.csv", "advantages.png", "zero_gradient.png", "gain.png",
                 "landscape.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = (tmp_path / "advantages.csv").read_text().splitlines()
    assert rows[0] == "method,group_size,k,advantage_correct,advantage_wrong"
    assert len(rows) == 1 + len(DEFAULT_METHODS) * 9


def test_landscape_options_reach_the_estimator(tmp_path, capsys):
    main(["landscape", "--group-size", "8", "--methods", "ngrpo", "--virtual-samples", "2",
          "--ddof", "0", "--no-figures", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    # Two virtual ones among ten values, population std: right answer (1 - 0.3) / sqrt(0.21).
    assert f"{0.7 / 0.21 ** 0.5:.4f}" in out


@pytest.mark.parametrize("argv, message", [
    (["landscape", "--methods", "grpo,bogus"], "unknown method 'bogus'"),
    (["landscape", "--group-size", "1"], "group_size must be >= 2, got 1"),
    (["landscape", "--methods", "ppo"], "'ppo' is not count-based"),
    # In the user's terms: the user gave r_max, not rewards.
    (["landscape", "--r-max", "0"], "r_max must be > 0.0, got 0.0"),
    (["landscape", "--r-max", "0.5"],
     "r_max must be at least 1, got 0.5: the landscape's groups hold binary rewards"),
])
def test_bad_input_exits_with_a_clear_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--no-figures", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert message in err and "rewards holds" not in err
    assert out == "", "nothing is printed before the arguments are checked"


def test_dynamics_writes_a_run_folder_with_both_modes(tmp_path, capsys):
    main(["dynamics", "--methods", "grpo,ngrpo", "--mode", "sampled,expected", "--steps", "3",
          "--seeds", "2", "--num-prompts", "32", "--prompts-per-step", "8", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ngrpo (expected)" in out and "accuracy" in out
    for name in ("config.json", "metrics.csv", "pass_at_k.csv", "summary.csv", "dynamics.png",
                 "pass_at_k.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    # Two methods: sampled (2 seeds) and expected (1 run), 4 rows of steps each.
    assert len(rows) == 1 + 2 * (4 * 2 + 4 * 1)


def test_dynamics_options_come_from_the_config_docstrings():
    parser = build_parser()
    dynamics = next(a for a in parser._actions if a.dest == "command").choices["dynamics"]
    helps = {tuple(a.option_strings): a.help for a in dynamics._actions}
    assert "clipping acts" in helps[("--epochs",)]
    assert helps[("--refill", "--no-refill")].startswith("Draw more prompts")


@pytest.mark.parametrize("argv, message", [
    (["dynamics", "--methods", "grpo", "--group-size", "1"], "group_size must be >= 2, got 1"),
    (["dynamics", "--methods", "grpo", "--learning-rate", "-1"],
     "learning_rate must be > 0.0, got -1.0"),
    (["dynamics", "--methods", "grpo", "--mode", "exact"],
     "--mode must be sampled, expected or both"),
    (["dynamics", "--methods", "grpo", "--num-answers", "1"], "num_answers must be >= 2, got 1"),
    (["dynamics", "--methods", "grpo", "--profile", "0.5,2"],
     r"profile success rates must lie in [0, 1], got 2.0"),
])
def test_dynamics_bad_input(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--steps", "1", "--seeds", "1", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_report_runs_end_to_end_at_a_small_scale(made_report):
    from ngrpo_sim.reports.claims import CLAIM_ORDER, DEPENDS, NOT_REPRODUCED, SUPPORTED

    folder, printed = made_report.folder, made_report.printed
    report = (folder / "report.md").read_text()
    # The terminal: the verdict block, where everything is, the total time; no table.
    lines = printed.splitlines()
    assert max(map(len, lines)) <= 100 and not any(line.startswith("|") for line in lines)
    claims = [line for line in lines if line.split(": ")[0] in CLAIM_ORDER]
    assert [line.split(": ")[0] for line in claims] == list(CLAIM_ORDER)
    assert all(line.split(": ")[-1] in (SUPPORTED, NOT_REPRODUCED, DEPENDS) for line in claims)
    assert f"Written to {folder}:" in lines and re.fullmatch(r"Total time \d+ s\.", lines[-1])
    # report.md: the same block first, the total time last, every figure beside its text.
    block = printed[:printed.index("\n\nWritten to")]
    assert report.startswith(f"# ngrpo-sim report\n\n```text\n{block}\n```\n")
    assert report.splitlines()[-1] == lines[-1] and report.count("Total time") == 1
    figures = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", report)
    assert figures == ["landscape/landscape.png", "headline/dynamics.png", "tokens/tokens.png",
                       "lengths/lengths.png", "rivals/rivals.png", "clipping/clipping.png"]
    assert all((folder / figure).stat().st_size > 0 for figure in figures)
    assert "  figures: " + ", ".join(figures[:4]) in printed
    assert (folder / "summary.txt").read_text() == printed
    # The bandit's entropy line gives the headline row of the claims table.
    headline_row = next(row for row in report.splitlines() if row.startswith("| shared, adam"))
    difference = headline_row.split(" | ")[1].split(":")[0]
    assert any(line.startswith("  bandit (1 token)") and f"{difference} nats (headline)" in line
               for line in lines[lines.index(claims[0]):lines.index(claims[1])])
    out = report
    assert out.count("| tabular,") == 4 and out.count("| shared,") == 5
    assert (folder / "page.html").read_text().startswith("<!DOCTYPE html>")
    assert "[page.html](page.html)" in out
    assert len(list((folder / "sweep").iterdir())) == 8
    assert "## Token level" in out and out.count("| 4. length of wrong answers") == 4
    tokens = folder / "tokens"
    assert (tokens / "tokens.png").exists() and len(list(tokens.iterdir())) == 6
    # The rivals: 5 headline methods and 6 rivals on one-token answers, 5 presets and 3 rivals on
    # tokens; a verdict for each of the 6 questions in each.
    rivals = out[out.index("## NGRPO against its rivals"):out.index("## The clip bounds")]
    assert rivals.count("| maxrl |") == 2 and rivals.count("| qae |") == 1
    assert rivals.count("| grpo |") == 2 and rivals.count("- Highest ") == 12
    # The clip bounds: 3 noise settings x 6 clips, 2 NSR settings x 3 ways to train.
    clipping = out[out.index("## The clip bounds"):]
    assert clipping.count("| 0.2/0.28 |") == 3 and clipping.count("| unclipped |") == 3
    assert clipping.count("only with clipping and several minibatches?") == 2
    assert clipping.count("| 4 minibatches unclipped |") == 2
    assert len(list((folder / "clipping").glob("nsr-*"))) == 6


def test_tokens_writes_a_run_folder_with_both_modes(tmp_path, capsys):
    main(["tokens", "--methods", "grpo,ngrpo", "--mode", "sampled,expected", "--steps", "3",
          "--seeds", "2", "--num-prompts", "16", "--prompts-per-step", "8", "--vocab-size", "3",
          "--max-length", "3", "--loss-aggregation", "seq-mean-token-mean", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ngrpo [seq-mean-token-mean] (expected)" in out and "length_wrong" in out
    for name in ("config.json", "metrics.csv", "pass_at_k.csv", "summary.csv", "dynamics.png",
                 "pass_at_k.png", "tokens.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert "unsampled_mass_gain" in rows[0] and len(rows) == 1 + 2 * (4 * 2 + 4 * 1)
    assert '"loss_aggregation": "seq-mean-token-mean"' in (tmp_path / "config.json").read_text()


def test_tokens_options_come_from_the_config_docstrings():
    parser = build_parser()
    tokens = next(a for a in parser._actions if a.dest == "command").choices["tokens"]
    helps = {tuple(a.option_strings): a.help for a in tokens._actions}
    assert helps[("--max-length",)].startswith("L, most tokens per answer")
    assert "clipping acts" in helps[("--epochs",)]


@pytest.mark.parametrize("argv, message", [
    (["tokens", "--vocab-size", "1"], "vocab_size must be >= 2, got 1"),
    (["tokens", "--max-length", "1"], "max_length must be >= 2 with an end token"),
    (["tokens", "--loss-aggregation", "sum"], "loss_aggregation must be one of"),
    (["tokens", "--methods", "lens", "--mode", "expected"], "method 'lens': it reads the policy's"),
])
def test_tokens_bad_input(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--steps", "1", "--seeds", "1", "--num-prompts", "8", "--prompts-per-step",
                     "4", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, refused", [
    (["dynamics", "--methods", "maxrl,lens", "--mode", "expected"], "lens"),
    (["dynamics", "--methods", "grpo,lens", "--mode", "sampled,expected"], "lens"),
    (["tokens", "--methods", "maxrl,rl_zvp", "--mode", "sampled,expected", "--vocab-size", "3",
      "--max-length", "3"], "rl_zvp"),
    (["tokens", "--methods", "lens", "--mode", "expected", "--vocab-size", "3",
      "--max-length", "3"], "lens"),
    (["sweep", "--methods", "grpo,lens", "--mode", "expected"], "lens"),
])
def test_a_method_a_mode_cannot_train_is_refused_before_any_run(argv, refused, tmp_path,
                                                                 monkeypatch, capsys):
    from ngrpo_sim.experiments import sweep

    def no_run(*_, **__):
        raise AssertionError("a run started")

    monkeypatch.setattr(sweep, "train", no_run)
    monkeypatch.setattr(sweep, "run_task", no_run)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--steps", "2", "--seeds", "1", "--num-prompts", "16", "--prompts-per-step",
                     "8", "--out", str(out)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"mode='expected' cannot train method {refused!r}: it reads the policy's" in error
    assert "(use mode='sampled')" in error and not out.exists()


NEW_PRESETS = "maxrl,qae,rl_zvp,lens,asymre,shifted_baseline"


@pytest.mark.parametrize("command, sizes", [
    ("dynamics", ["--num-answers", "4"]), ("tokens", ["--vocab-size", "3", "--max-length", "3"])])
def test_every_rival_runs_in_both_simulators(command, sizes, tmp_path, capsys):
    main([command, "--methods", NEW_PRESETS, "--steps", "3", "--seeds", "2", "--num-prompts", "16",
          "--prompts-per-step", "8", *sizes, "--out", str(tmp_path)])
    printed = capsys.readouterr().out.split("\nwrote")[0]
    table = printed[printed.index("\nmethod ") + 1:].split("\n\n")[0].splitlines()
    assert [row.split()[0] for row in table[1:]] == NEW_PRESETS.split(",")
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 * 4 * 2


# --------------------------------------------------------------------------------------------------
# Refusals before any work: sizes beyond the machine, folders that cannot be written, arguments
# checked before the first progress bar
# --------------------------------------------------------------------------------------------------

GIB = 2 ** 30


def refusal(argv, capsys) -> str:
    """The one line a refused command prints; nothing else may reach stdout or stderr (no table,
    no bar)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, f"not one line: {out!r} {err!r}"
    return err


def test_a_landscape_beyond_the_memory_is_refused_up_front(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checks, "available_memory", lambda: 8 * GIB)
    out = tmp_path / "landscape"
    err = refusal(["landscape", "--group-size", "100000", "--out", str(out)], capsys)
    needed = landscape.memory_bytes(100000)
    # The (G + 1) G float64 canonical groups alone take 74.5 GiB: the estimate says at least that,
    # and names the limit.
    assert needed >= 8 * 100001 * 100000
    assert (f"needs about {needed / GIB:.1f} GiB of memory, more than the 8.0 GiB available now"
            in err)
    assert "--group-size" in err and not out.exists()


def test_dynamics_beyond_the_memory_is_refused_before_the_first_step(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setattr(checks, "available_memory", lambda: 8 * GIB)
    out = tmp_path / "run"
    err = refusal(["dynamics", "--seeds", "100000", "--steps", "1", "--out", str(out)], capsys)
    needed = DynamicsConfig(seeds=100000, steps=1).memory_bytes()
    # Tabular logits and Adam's two moments: three (S, P, K) float64 arrays at least.
    assert needed >= 3 * 8 * 100000 * 256 * 16
    assert "100000 seeds x 256 prompts x 16 answers" in err and f"{needed / GIB:.1f} GiB" in err
    assert "8.0 GiB available" in err and not out.exists()


def test_the_issue_commands_exit_with_one_line_on_this_machine():
    # The real limit: 100000 x 100001 groups of float64 need 74.5 GiB before any temporary.
    finished = subprocess.run([sys.executable, "-m", "ngrpo_sim", "landscape", "--group-size",
                               "100000", "--no-figures"], capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 2 and finished.stdout == ""
    assert finished.stderr.count("\n") == 1 and "of memory, more than the" in finished.stderr


@pytest.mark.parametrize("command", [["landscape", "--no-figures"],
                                     ["dynamics", "--steps", "1", "--seeds", "1"], ["report"],
                                     ["sweep", "--steps", "1", "--seeds", "1"],
                                     ["tokens", "--steps", "1", "--seeds", "1"]])
def test_an_unwritable_output_folder_is_named_with_its_reason(command, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where the run folder should go")
    err = refusal(command + ["--out", str(blocker / "run")], capsys)
    assert f"--out {str(blocker / 'run')!r} cannot be written: Not a directory" in err
    err = refusal(command + ["--out", str(blocker)], capsys)
    assert f"--out {str(blocker)!r} is a file, not a folder" in err
    assert blocker.read_text() == "a file where the run folder should go"


def test_a_page_whose_folder_cannot_be_written_is_named(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where the page's folder should go")
    err = refusal(["page", "--out", str(blocker / "index.html")], capsys)
    assert f"--out {str(blocker)!r} is a file, not a folder" in err


def test_a_sweep_beyond_the_memory_is_refused_before_its_folder_is_made(tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setattr(checks, "available_memory", lambda: 8 * GIB)
    out = tmp_path / "sweep"
    err = refusal(["sweep", "--seeds", "100000", "--steps", "1", "--out", str(out)], capsys)
    assert "100000 seeds x 256 prompts x 16 answers" in err and "8.0 GiB available" in err
    # Two local processes run two runs side by side: twice the memory of one.
    err = refusal(["sweep", "--seeds", "30000", "--steps", "1", "--workers", "2", "--out",
                   str(out)], capsys)
    needed = 2 * DynamicsConfig(seeds=30000, steps=1).memory_bytes()
    assert f", 2 at once, needs about {needed / GIB:.1f} GiB" in err
    assert "or fewer workers" in err and not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--profile", "bogus"], "profile must be one of base, hard, mid, uniform or comma-separated"),
    (["--rewards", "partial"], "rewards must be one of 'binary', 'graded', 'noise'; got 'partial'"),
    (["--correct-answers", "16"], "correct_answers must be <= 15, got 16"),
    (["--feature-dim", "0"], "feature_dim must be >= 1, got 0"),
])
def test_dynamics_checks_every_argument_before_the_progress_bar(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    err = refusal(["dynamics", "--methods", "grpo", "--steps", "2", "--seeds", "1", "--out",
                   str(out), *argv], capsys)
    assert message in err and not out.exists()


@pytest.mark.parametrize("command", [["dynamics"], ["tokens", "--num-prompts", "8",
                                                    "--prompts-per-step", "4"]])
def test_a_method_its_mode_cannot_train_is_refused_before_the_progress_bar(command, tmp_path,
                                                                          capsys):
    err = refusal([*command, "--methods", "grpo,lens", "--mode", "sampled,expected", "--steps",
                   "1", "--seeds", "1", "--out", str(tmp_path / "run")], capsys)
    assert "mode='expected' cannot train method 'lens': it reads the policy's" in err


KNOBS = ("--r-max", "--virtual-samples", "--ddof", "--clip-low", "--clip-high")


@pytest.mark.parametrize("command", ["landscape", "dynamics", "tokens", "sweep"])
def test_every_command_that_runs_methods_has_the_method_knobs(command):
    subparsers = next(action for action in build_parser()._actions if action.dest == "command")
    options = {option for action in subparsers.choices[command]._actions
               for option in action.option_strings}
    assert set(KNOBS) <= options


@pytest.mark.parametrize("command", ["dynamics", "tokens", "sweep"])
def test_the_method_knobs_reach_the_trained_methods(command, tmp_path, monkeypatch):
    from ngrpo_sim.experiments import runs, sweep
    from ngrpo_sim.methods.advantages import NGRPOAdvantage
    from ngrpo_sim.methods.presets import DropAllCorrectGroups

    trained = []

    def capture(methods, *args, **kwargs):
        trained.extend(methods)
        raise SystemExit(0)

    monkeypatch.setattr(runs, "run_methods", capture)
    monkeypatch.setattr(sweep, "run_sweep", capture)
    with pytest.raises(SystemExit):
        main([command, "--methods", "grpo,ngrpo", "--r-max", "2", "--virtual-samples", "3",
              "--ddof", "0", "--clip-low", "0.1", "--clip-high", "0.5", "--steps", "2",
              "--seeds", "2", "--num-prompts", "64", "--out", str(tmp_path / "run")])
    grpo, ngrpo = trained
    assert (grpo.clip_low, grpo.clip_high, grpo.advantage.ddof) == (0.1, 0.5, 0)
    assert ngrpo.advantage == NGRPOAdvantage(r_max=2.0, virtual_samples=3, ddof=0)
    assert ngrpo.group_filter == DropAllCorrectGroups(r_max=2.0)
    assert (ngrpo.clip_low, ngrpo.clip_high) == (0.1, 0.5)


@pytest.mark.parametrize("command", ["dynamics", "tokens"])
def test_a_run_folder_records_the_method_knobs_that_retuned_its_methods(command, tmp_path,
                                                                        capsys):
    import json

    small = ["--steps", "1", "--seeds", "1", "--num-prompts", "8", "--prompts-per-step", "4",
             "--methods", "grpo"]
    main([command, *small, "--clip-high", "0.3", "--ddof", "0", "--out", str(tmp_path / "knobs")])
    main([command, *small, "--out", str(tmp_path / "presets")])
    record = json.loads((tmp_path / "knobs" / "config.json").read_text())
    assert record["method_knobs"] == {"ddof": 0, "clip_high": 0.3}
    assert "method_knobs" not in json.loads((tmp_path / "presets" / "config.json").read_text())


@pytest.mark.parametrize("command", ["dynamics", "tokens"])
def test_an_r_max_below_the_tasks_best_reward_is_refused_before_any_run(command, tmp_path, capsys):
    out = tmp_path / "run"
    err = refusal([command, "--r-max", "0.5", "--steps", "1", "--seeds", "1", "--out", str(out)],
                  capsys)
    assert "r_max must be at least 1, got 0.5: the task's rewards reach 1" in err
    assert not out.exists()


def test_a_second_landscape_into_the_same_folder_is_refused_unless_overwrite(tmp_path, capsys):
    command = ["landscape", "--group-size", "4", "--no-figures"]
    out = tmp_path / "run"
    main(command + ["--out", str(out)])
    capsys.readouterr()
    first = {path.name: path.read_bytes() for path in out.iterdir()}
    err = refusal(command + ["--out", str(out)], capsys)
    assert f"--out {str(out)!r} already holds an earlier run" in err and "--overwrite" in err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == first
    main(command + ["--out", str(out), "--overwrite"])
    assert sorted(path.name for path in out.iterdir()) == sorted(first)


@pytest.mark.parametrize("command", [["dynamics", "--methods", "grpo", "--steps", "1", "--seeds",
                                      "1"],
                                     ["tokens", "--methods", "grpo", "--steps", "1", "--seeds", "1",
                                      "--num-prompts", "8", "--prompts-per-step", "4"]])
def test_a_second_run_with_the_same_settings_reuses_the_first(command, tmp_path, monkeypatch,
                                                              capsys):
    from ngrpo_sim.experiments import sweep

    out = tmp_path / "run"
    main(command + ["--out", str(out)])
    first = capsys.readouterr().out
    files = {path: path.read_bytes() for path in out.rglob("*.*") if path.suffix != ".png"}

    def must_not_run(*_, **__):
        raise AssertionError("a finished run ran again")

    monkeypatch.setattr(sweep, "train", must_not_run)
    assert main(command + ["--out", str(out)]) == 0
    assert capsys.readouterr().out == first
    assert {path: path.read_bytes() for path in out.rglob("*.*") if path.suffix != ".png"} == files


def test_the_command_to_continue_names_the_ngrpo_sim_the_user_ran(tmp_path, monkeypatch):
    from ngrpo_sim.cli import _continuing
    program = tmp_path / ".venv" / "bin" / "ngrpo-sim"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [".venv/bin/ngrpo-sim", "report"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # .venv/bin is not on it
    assert _continuing(["report", "--overwrite"]) == ".venv/bin/ngrpo-sim report"
    monkeypatch.setenv("PATH", f"{program.parent}:/usr/bin:/bin")  # an activated environment
    assert _continuing(["report"]) == "ngrpo-sim report"

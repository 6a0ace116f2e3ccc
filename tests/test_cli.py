"""The ngrpo-sim command line."""

import subprocess
import sys

import pytest

from ngrpo_sim.cli import build_parser, main
from ngrpo_sim.landscape import DEFAULT_METHODS


def test_every_option_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help and len(action.help) > 10, f"{name} {action.option_strings} lacks help"


def test_help_runs_as_a_console_command():
    top = subprocess.run([sys.executable, "-m", "ngrpo_sim", "--help"], capture_output=True, text=True, check=True)
    assert "landscape" in top.stdout
    sub = subprocess.run([sys.executable, "-m", "ngrpo_sim", "landscape", "--help"], capture_output=True, text=True,
                         check=True)
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
    assert rows[0] == "method,group_size,k,advantage_right,advantage_wrong"
    assert len(rows) == 1 + len(DEFAULT_METHODS) * 9


def test_landscape_options_reach_the_estimator(tmp_path, capsys):
    main(["landscape", "--group-size", "8", "--methods", "ngrpo", "--virtual-samples", "2", "--ddof", "0",
          "--no-figures", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    # Two virtual ones among ten values, population std: right answer (1 - 0.3) / sqrt(0.21).
    assert f"{0.7 / 0.21 ** 0.5:.4f}" in out


@pytest.mark.parametrize("argv, message", [
    (["landscape", "--methods", "grpo,bogus"], "unknown method 'bogus'"),
    (["landscape", "--group-size", "1"], "group_size must be >= 2, got 1"),
    (["landscape", "--methods", "ppo"], "'ppo' is not count-based"),
    (["landscape", "--r-max", "0.5"], "above r_max=0.5"),
])
def test_bad_input_exits_with_a_clear_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--no-figures", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_dynamics_writes_a_run_folder_with_both_modes(tmp_path, capsys):
    main(["dynamics", "--methods", "grpo,ngrpo", "--mode", "sampled,expected", "--steps", "3", "--seeds", "2",
          "--num-prompts", "32", "--batch-prompts", "8", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ngrpo (expected)" in out and "accuracy" in out
    for name in ("config.json", "metrics.csv", "pass_at_k.csv", "summary.csv", "dynamics.png", "pass_at_k.png"):
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
    (["dynamics", "--methods", "grpo", "--lr", "-1"], "lr must be > 0.0, got -1.0"),
    (["dynamics", "--methods", "grpo", "--mode", "exact"], "mode must be sampled, expected or both"),
    (["dynamics", "--methods", "grpo", "--num-answers", "1"], "num_answers must be >= 2, got 1"),
    (["dynamics", "--methods", "grpo", "--profile", "0.5,2"], r"profile success rates must lie in [0, 1], got 2.0"),
])
def test_dynamics_bad_input(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--steps", "1", "--seeds", "1", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_report_runs_end_to_end_at_a_small_scale(tmp_path, monkeypatch, capsys):
    import dataclasses

    from ngrpo_sim import report, token_report

    monkeypatch.setattr(report, "HEADLINE", dataclasses.replace(report.HEADLINE, steps=3, seeds=2))
    monkeypatch.setattr(report, "SWEEP_STEPS", 2)
    monkeypatch.setattr(report, "SWEEP_SEEDS", 2)
    monkeypatch.setattr(token_report, "TOKEN_HEADLINE",
                        dataclasses.replace(token_report.TOKEN_HEADLINE, steps=2, seeds=2))
    main(["report", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("| tabular,") == 4 and out.count("| shared,") == 5
    assert (tmp_path / "report.md").read_text().startswith("# ngrpo-sim report")
    assert (tmp_path / "landscape" / "landscape.png").exists() and (tmp_path / "headline" / "dynamics.png").exists()
    assert (tmp_path / "page.html").read_text().startswith("<!DOCTYPE html>")
    assert "Interactive page (opens in any browser, no network)" in out
    assert len(list((tmp_path / "sweep").iterdir())) == 8
    assert "## Token level" in out and out.count("| 4. length of wrong answers") == 4
    tokens = tmp_path / "tokens"
    assert (tokens / "tokens.png").exists() and len(list(tokens.iterdir())) == 6


def test_tokens_writes_a_run_folder_with_both_modes(tmp_path, capsys):
    main(["tokens", "--methods", "grpo,ngrpo", "--mode", "sampled,expected", "--steps", "3",
          "--seeds", "2", "--num-prompts", "16", "--batch-prompts", "8", "--vocab-size", "3",
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
    (["tokens", "--methods", "lens", "--mode", "expected"], "method 'lens' reads the policy's"),
])
def test_tokens_bad_input(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--steps", "1", "--seeds", "1", "--num-prompts", "8", "--batch-prompts", "4",
                     "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err

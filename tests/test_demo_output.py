"""What a newcomer reads first (issue 23, items 1 and 3): the verdict block that ``make demo``
ends with, computed from the numbers and at most 100 columns wide; terminal tables that fit 100
columns; and the header a training command prints before its first progress bar, naming its
setting and the command that runs the setting the README tells about.

The report end to end (its terminal output and report.md) is tested in
``tests/test_cli.py::test_report_runs_end_to_end_at_a_small_scale``; its second run in
``tests/test_kept_work.py``.
"""

import csv
import re
import shlex

import pytest

from ngrpo_sim._config_cli import config_flags
from ngrpo_sim.cli import main
from ngrpo_sim.experiments import sweep
from ngrpo_sim.reports.claims import (CLAIM_ORDER, ENTROPY, HEADLINE, INSTABILITY, LENGTHENING,
                                      TOKEN_HEADLINE, Finding, judged, verdict_block, word_of)
from ngrpo_sim.reports.length_report import LENGTH_HEADLINE
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.long_answer_config import LongAnswerConfig
from ngrpo_sim.simulators.sequence_config import SequenceConfig

# --------------------------------------------------------------------------------------------------
# The verdict words, from the numbers
# --------------------------------------------------------------------------------------------------


def test_a_claim_on_its_side_of_0_in_every_setting_is_supported():
    finding = judged(ENTROPY, "bandit", [("headline", 0.05, 0.01), ("other", 0.02, 0.019)],
                     "higher", "higher", "lower", " nats")
    assert finding.word == "supported"
    assert finding.evidence == "+0.050 ± 0.010 nats (headline); higher in 2 of 2 settings"


def test_a_claim_on_the_other_side_or_with_0_inside_is_not_reproduced():
    # -0.059 ± 0.008 lies below 0; 0.001 ± 0.01 holds 0: neither on the claimed side.
    finding = judged(ENTROPY, "bandit", [("headline", -0.059, 0.008), ("b", 0.001, 0.01),
                                         ("c", -0.02, 0.01)], "higher", "higher", "lower", " nats")
    assert finding.word == "not reproduced"
    # No setting supports it, so none is named apart.
    assert finding.evidence == ("-0.059 ± 0.008 nats (headline); lower in 2, unclear in 1 of 3 "
                                "settings")
    # An interval that touches 0 is not on a side.
    assert judged(ENTROPY, "x", [("h", 0.01, 0.01)], "higher", "higher", "lower").word == (
        "not reproduced")


def test_settings_that_disagree_make_a_claim_depend_and_the_few_are_named():
    # PSR-NSR regresses more prompts than GRPO in one setting of nine, as in the README.
    differences = ([("headline", -3.6, 2.0), ("tabular, sgd, 4 mb", 33.8, 4.0)]
                   + [(f"s{index}", 0.0, 1.0) for index in range(7)])
    finding = judged(INSTABILITY, "bandit", differences, "more", "more", "fewer",
                     " prompts regressed", digits=1)
    assert finding.word == "depends"
    assert finding.evidence == (
        "-3.6 ± 2.0 prompts regressed (headline); more in 1, fewer in 1, unclear in 7 of 9 "
        "settings (tabular, sgd, 4 mb: more +33.8 ± 4.0)")
    # More than two on each side: counted, not named.
    differences = [(f"s{index}", (-1) ** index, 0.5) for index in range(6)]
    finding = judged(LENGTHENING, "tokens", differences, "longer", "longer", "shorter",
                     noun="runs")
    assert finding.word == "depends" and finding.evidence.endswith("shorter in 3 of 6 runs")


def test_a_single_seed_has_no_interval_and_supports_nothing():
    finding = judged(ENTROPY, "x", [("h", 0.5, float("nan"))], "higher", "higher", "lower")
    assert finding.word == "not reproduced" and finding.evidence == "+0.500 ± nan (h)"


def test_word_of_many_settings():
    assert [word_of(holds) for holds in ([True, True], [False, False], [True, False])] == [
        "supported", "not reproduced", "depends"]


def test_the_verdict_block_orders_the_claims_and_wraps_every_line_at_100_columns():
    long = "; ".join(f"setting number {index}: +0.123 ± 0.045" for index in range(12))
    findings = [Finding(LENGTHENING, "tokens (L = 4)", "depends", long),
                Finding(ENTROPY, "bandit (1 token)", "not reproduced", "-0.059 ± 0.008 nats"),
                Finding(ENTROPY, "tokens (L = 4)", "not reproduced", "-0.053 ± 0.010 nats"),
                Finding(LENGTHENING, "long (L = 128)", "supported", "+1.0 ± 0.5 tokens")]
    lines = verdict_block(findings)
    assert max(map(len, lines)) <= 100
    titles = [line for line in lines if line and not line.startswith(" ")][2:]
    # In CLAIM_ORDER; a claim's word is its simulators' word where they agree, else "depends".
    assert titles == [f"{ENTROPY}: not reproduced", f"{LENGTHENING}: depends"]
    assert CLAIM_ORDER.index(ENTROPY) < CLAIM_ORDER.index(LENGTHENING)
    start = lines.index(f"{LENGTHENING}: depends") + 1
    first = lines[start]
    column = first.index("setting number 0")
    assert first.startswith("  tokens (L = 4)") and first[column - 16:column].strip() == "depends"
    wrapped = lines[start + 1:lines.index(next(line for line in lines[start:]
                                              if line.startswith("  long")))]
    # The evidence goes on under itself, whole words only, nothing lost, no number parted from
    # its interval.
    assert len(wrapped) >= 2 and all(line[:column] == " " * column for line in wrapped)
    assert " ".join([first[column:]] + [line[column:] for line in wrapped]) == long
    assert all(re.search(r"(^| )\+0\.123 ± 0\.045(;|$)", line) for line in [first, *wrapped])


def test_a_number_and_its_interval_stay_on_one_line():
    # 100 columns end between "±" and the half-width: the whole difference goes to the next line.
    lines = verdict_block([Finding(ENTROPY, "bandit (1 token)", "supported",
                                   "a" * 52 + " +0.123 ± 0.045 nats")])
    assert lines[-2].endswith("a" * 52) and lines[-1].strip() == "+0.123 ± 0.045 nats"


# --------------------------------------------------------------------------------------------------
# Tables that fit the terminal
# --------------------------------------------------------------------------------------------------


def test_the_summary_tables_fit_100_columns_and_hold_every_value_of_summary_csv(tmp_path,
                                                                                capsys):
    from ngrpo_sim.reports.token_report import SUMMARY

    out = tmp_path / "run"
    # The longest labels: an imposed aggregation and the expected mode.
    main(["tokens", "--methods", "grpo,ngrpo", "--mode", "sampled,expected", "--steps", "2",
          "--seeds", "2", "--num-prompts", "8", "--prompts-per-step", "4", "--vocab-size", "3",
          "--max-length", "3", "--loss-aggregation", "seq-mean-token-mean", "--out", str(out)])
    printed = capsys.readouterr().out
    section = printed[:printed.index("\nwrote ")]
    tables = section[section.index("\nmethod ") + 1:].split("\n\n")
    assert len(tables) >= 2
    assert all(len(line) <= 100 for table in tables for line in table.splitlines())
    shown = {}
    for table in tables:
        header, *rows = table.splitlines()
        names = header.split()[1:]
        for row in rows:
            label, cells = re.match(r"(.*?)\s{2,}(-?\d.*)$", row).groups()
            values = re.findall(r"(-?\d+\.\d+)(?: ±\s*(\d+\.\d+))?", cells)
            shown.update({(label.strip(), name): value for name, value in zip(names, values)})
    with (out / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(shown) == len(rows) == 4 * len(SUMMARY)
    for row in rows:
        label = f"{row['method']} [seq-mean-token-mean]" + (
            " (expected)" if row["mode"] == "expected" else "")
        mean, half = shown[label, row["metric"]]
        assert float(mean) == pytest.approx(float(row["mean"]), abs=5e-4)
        if row["mode"] == "sampled":
            assert float(half) == pytest.approx(float(row["ci95_half_width"]), abs=5e-4)


# --------------------------------------------------------------------------------------------------
# The header of a command run with no flags
# --------------------------------------------------------------------------------------------------

STORIES = {"dynamics": (DynamicsConfig, HEADLINE), "tokens": (SequenceConfig, TOKEN_HEADLINE),
           "lengths": (LongAnswerConfig, LENGTH_HEADLINE), "sweep": (DynamicsConfig, HEADLINE)}
"""Per command: its config class and the setting that the README and the docs tell about."""


def trained(monkeypatch, capsys, argv) -> tuple[str, list]:
    """What ``argv`` prints before its first run, and the configs it would train."""
    configs = []

    def capture(methods, grid, *args, **kwargs):
        configs.extend(grid)
        raise SystemExit(0)

    monkeypatch.setattr(sweep, "run_sweep", capture)
    with pytest.raises(SystemExit):
        main(argv)
    return capsys.readouterr().out, configs


@pytest.mark.parametrize("command", list(STORIES))
def test_a_command_with_no_flags_names_its_setting_and_the_command_of_the_readmes(
        command, tmp_path, monkeypatch, capsys):
    config_class, story = STORIES[command]
    printed, configs = trained(monkeypatch, capsys, [command, "--out", str(tmp_path / "a")])
    default = config_class()
    assert configs == [default] and default != story
    header, _, rest = printed.partition("\n  ngrpo-sim ")
    words = " ".join(header.split())
    assert words.startswith(
        f"Setting: {default.policy} policy, {default.optimizer} (lr {default.learning_rate}), "
        f"{default.minibatches} minibatches, {default.steps} steps, {default.seeds} seeds, "
        f"{default.num_prompts} prompts ({default.profile} profile)")
    assert words.endswith("that one runs with:") and "This is not the" in words
    assert all(len(line) <= 100 for line in printed.splitlines())
    # The command, its lines joined as a shell joins them, trains that setting exactly.
    typed = shlex.split(re.sub(r" \\\n\s*", " ", "ngrpo-sim " + rest))
    assert typed[:2] == ["ngrpo-sim", command]
    for flag in ("--policy", "--optimizer", "--learning-rate", "--minibatches", "--steps",
                 "--seeds"):
        assert flag in typed
    printed, configs = trained(monkeypatch, capsys, [*typed[1:], "--out", str(tmp_path / "b")])
    assert configs == [story]
    joined = " ".join(printed.split())
    assert "runs with" not in joined and re.search(r"\. This is the [^.]*\.$", joined)


def test_the_header_shows_every_value_of_a_grid(tmp_path, monkeypatch, capsys):
    printed, configs = trained(monkeypatch, capsys, [
        "sweep", "--policy", "tabular", "shared", "--learning-rate", "0.02", "0.05", "--steps",
        "200", "--seeds", "16", "--out", str(tmp_path)])
    assert len(configs) == 4 and HEADLINE in configs
    assert " ".join(printed.split()) == (
        "Setting: tabular/shared policy, adam (lr 0.02/0.05), 4 minibatches, 200 steps, 16 "
        "seeds, 256 prompts (base profile). This is the headline the README quotes.")


def test_config_flags_give_a_bool_as_each_parser_takes_it():
    config = DynamicsConfig(refill=False, steps=3, max_candidates=128)
    assert config_flags(config) == ["--no-refill", "--max-candidates", "128", "--steps", "3"]
    assert config_flags(config, ("seeds",), grid=True) == [
        "--seeds", "16", "--refill", "false", "--max-candidates", "128", "--steps", "3"]

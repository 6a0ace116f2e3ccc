"""minimal/ngrpo_train.py refuses what cannot work before its first write, in one line that names
the flag as the user typed it: arguments, folders, the model's context and the machine's memory."""

import re

import numpy as np
import pytest
from test_minimal_runs import flags
from test_minimal_trainer import tiny_config, tiny_folder, torch, trainer  # noqa: F401


def refused(argv, capsys) -> str:
    """The one line main() prints for `argv`, after checking it exits with code 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        trainer.main(argv)
    assert stop.value.code == 2
    output = capsys.readouterr()
    [line] = output.err.strip().splitlines()
    assert "pre-training" not in output.out + output.err
    return line


@pytest.mark.parametrize("argv, line", [
    (["--learning-rate", "-1e-4"], "error: --learning-rate must be positive, got -0.0001"),
    (["--learning-rate=-1e-4"], "error: --learning-rate must be positive, got -0.0001"),
    (["--learning-rate", "-1E-4", "--steps", "2"],
     "error: --learning-rate must be positive, got -0.0001"),
    (["--temperature", "-.5"], "error: --temperature must be positive, got -0.5"),
    (["--learning-rate", "nan"], "error: --learning-rate must be positive, got nan"),
    (["--seed", "-3"], "error: --seed must be >= 0, got -3"),
    (["--clip-low", "-2e-1"], "error: --clip-low must lie in [0, 1), got -0.2"),
    (["--group-size", "1"],
     "error: --group-size must be >= 2 (a group-relative advantage needs siblings), got 1"),
    (["--prompts-per-step", "6"],
     "error: --prompts-per-step 6 does not divide into --minibatches 4; choose a divisor of it"),
    (["--resume", "--overwrite"], "error: --resume and --overwrite were both given; --resume "
                                  "continues the run in --run-dir, --overwrite replaces it: "
                                  "choose one"),
])
def test_each_bad_value_is_refused_naming_the_flag_as_typed(argv, line, capsys):
    assert refused(argv, capsys) == line


def test_a_negative_number_is_still_refused_where_a_flag_takes_none(capsys):
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--resume", "-1"])
    assert stop.value.code == 2  # argparse's own usage error
    assert "ignored explicit argument '-1'" in capsys.readouterr().err


def test_cuda_asked_for_where_there_is_none(monkeypatch, capsys):
    monkeypatch.setattr(trainer.torch.cuda, "is_available", lambda: False)
    line = refused(["--device", "cuda"], capsys)
    assert re.fullmatch(r"error: --device cuda: CUDA is not available \(torch [^)]+\); use "
                        r"--device cpu, or --device auto to take CUDA where present", line), line


def test_a_task_file_with_the_default_tiny_model_says_which_models_can_read_it(tmp_path, capsys):
    task = tmp_path / "math.jsonl"
    task.write_text('{"prompt": "What is 2+2?", "answer": "4"}\n')
    assert refused(["--task", str(task), "--run-dir", str(tmp_path / "run")], capsys) == (
        f"error: --model tiny (the default) was pre-trained on the built-in addition tasks only "
        f"and cannot read --task {task}; give a model that reads text: --model smollm2, or "
        "--model PATH for a Hugging Face model folder (e.g. Qwen2.5-0.5B-Instruct)")
    assert not (tmp_path / "run").exists()


def test_a_group_too_large_for_the_memory_is_refused_before_the_tiny_model_is_built(
        tmp_path, monkeypatch, capsys):
    """The issue's case: --group-size 100000 with the default tiny model filled 24 GiB and was
    killed, leaving a run folder that blocked a rerun. Sampling 1.6 million answers holds each
    one's keys and values (16 tokens x 2 layers x 2 x 128 numbers of 4 bytes) and more: far beyond
    24 GiB; the refusal comes before the tiny model is pre-trained into the empty cache."""
    monkeypatch.setattr(trainer, "available_memory", lambda device: 24 * 2 ** 30)
    run, cache = tmp_path / "run", tmp_path / "cache"
    line = refused(["--group-size", "100000", "--run-dir", str(run), "--cache-dir", str(cache)],
                   capsys)
    match = re.fullmatch(r"error: sampling --prompts-per-step 16 x --group-size 100000 answers of "
                         r"up to --max-new-tokens 8 tokens at once needs about ([\d.]+) GiB of "
                         r"memory with the model and its optimizer, more than the 24.0 GiB "
                         r"available now; use a smaller --group-size, --prompts-per-step or "
                         r"--max-new-tokens", line)
    assert match, line
    keys_and_values = 16 * 100_000 * 16 * 2 * 2 * 128 * 4
    assert float(match.group(1)) * 2 ** 30 > keys_and_values > 24 * 2 ** 30
    assert not run.exists() and not cache.exists()


@pytest.mark.parametrize("phase, changes, advice", [
    ("update", dict(group_size=64, minibatches=1, max_new_tokens=50),
     "give --micro-batch-size a few answers (gradient accumulation), or add "
     "--gradient-checkpointing"),
    ("evaluation", dict(eval_samples=2048, max_new_tokens=50),
     "use a smaller --eval-samples or --max-new-tokens"),
])
def test_the_refusal_names_the_flags_of_the_part_that_needs_the_memory(
        tiny_folder, tmp_path, monkeypatch, capsys, phase, changes, advice):
    available = 100 * 2 ** 20
    monkeypatch.setattr(trainer, "available_memory", lambda device: available)
    config = trainer.with_task_defaults(tiny_config(tiny_folder, tmp_path / "run", **changes))
    line = refused(flags(tiny_folder, tmp_path / "run", **changes), capsys)
    assert line.endswith(f"more than the 100.0 MiB available now; {advice}"), line
    model = trainer.load_policy(tiny_folder, torch.device("cpu")).model
    parts = trainer.memory_parts(config, trainer.resolve_method(config), model.config,
                                 sum(p.numel() for p in model.parameters()), prompt_tokens=6)
    # The part named is the first that does not fit: a smaller update never shrinks the sampling.
    assert [part for part in ("sampling", "evaluation", "update")
            if parts["model"] + parts[part] > available] == [phase]
    assert not (tmp_path / "run").exists()


def test_with_enough_memory_the_run_starts(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "available_memory", lambda device: 2 ** 40)
    trainer.train(tiny_config(tiny_folder, tmp_path / "run", steps=1))
    assert [r["step"] for r in trainer.read_metrics(tmp_path / "run")] == [0, 1]


def test_an_unwritable_cache_is_said_before_pre_training(tmp_path, capsys):
    """The issue's case: a read-only --cache-dir was found after 41 s of pre-training, as a
    traceback. (A folder below a file stands for it: root may write anywhere else.) Two-digit
    sums: the shipped tiny model is the default's, three digits, so this one must be built."""
    (tmp_path / "file").write_text("")
    cache, run = tmp_path / "file" / "cache", tmp_path / "run"
    assert refused(["--digits", "2", "--cache-dir", str(cache), "--run-dir", str(run)],
                   capsys) == (
        f"error: --cache-dir {cache} cannot be written: Not a directory; choose a folder you can "
        "write to")
    assert not run.exists()


def test_the_default_tiny_model_ships_with_the_trainer_and_needs_no_cache(tmp_path):
    """Every user starts from the same weights: the default recipe's folder lies beside the
    trainer, loads with from_pretrained, and no cache folder is made for it. Its sampled accuracy
    on fresh sums sits near the pre-training's target (12% at T = 1): 512 draws put a 99.9%
    binomial interval of about +-5% around it."""
    config = trainer.Config(cache_dir=str(tmp_path / "cache"))
    folder = trainer.model_folder(config)
    assert folder.parent == trainer.SHIPPED_MODELS and not (tmp_path / "cache").exists()
    policy = trainer.load_policy(folder, torch.device("cpu"), "fp32")
    task = trainer.make_task(config)
    examples = task.draw(np.random.default_rng(123), 512)
    rewards = trainer.rollout(policy, task, examples, 1, 1.0, 1.0, config.digits + 2,
                              torch.Generator().manual_seed(0))[0]
    assert 0.05 <= rewards.mean() <= 0.25

"""minimal/ngrpo_train.py's memory estimate (memory_parts), which refuses a run before any work,
against the peak resident memory that the trainer logs (memory/peak_rss_mib) for real steps.

Each case trains one step twice in a fresh process, with a small group and then a large one: the
difference of the two peaks is what the larger sizes cost, with the process's libraries and the
small run's share cancelled. The estimate of that difference must lie within a factor of 2 of the
measured one (0.89 to 1.25 on the project's machine)."""

import dataclasses
import json
import subprocess
import sys

import pytest
from test_minimal_trainer import ROOT, tiny_config, tiny_folder, torch, trainer  # noqa: F401

MEASURE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("ngrpo_train", sys.argv[1])
trainer = sys.modules["ngrpo_train"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trainer)
peaks = []
for settings in json.loads(sys.argv[2]):
    run = trainer.train(trainer.Config(**settings), reward=lambda completion, example: 0.5)
    peaks.append(trainer.read_metrics(run)[1]["memory/peak_rss_mib"])
print(json.dumps(peaks))
"""


@pytest.fixture(scope="module")
def wide_vocabulary_folder(tmp_path_factory):
    """A tiny model with 8192 output tokens (the character tokenizer names 18 of them; the others
    decode to nothing): its logits outweigh its activations."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    folder = tmp_path_factory.mktemp("wide")
    tokenizer = trainer.character_tokenizer()
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=8192, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id,
                                 **trainer.TINY_ARCHITECTURE)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def estimated_peak(config) -> int:
    config = trainer.with_task_defaults(config)
    shape, _ = trainer.model_shape(config, trainer.model_source(config))
    model = trainer.load_policy(trainer.model_source(config), torch.device("cpu")).model
    parts = trainer.memory_parts(config, trainer.resolve_method(config), shape,
                                 sum(p.numel() for p in model.parameters()),
                                 prompt_tokens=6)  # 2-digit sums: "12+34=", a token a character
    return parts["model"] + max(parts["sampling"], parts["evaluation"], parts["update"])


@pytest.mark.skipif(sys.platform != "linux", reason="the per-step peak needs Linux's clear_refs")
@pytest.mark.parametrize("case, small, large", [
    ("the update's activations", dict(group_size=2, minibatches=1),
     dict(group_size=256, minibatches=1)),
    ("the keys and values while sampling",
     dict(group_size=2, max_new_tokens=56, micro_batch_size=8),
     dict(group_size=256, max_new_tokens=56, micro_batch_size=8)),
    ("the logits while sampling", dict(group_size=2, micro_batch_size=4),
     dict(group_size=256, micro_batch_size=4)),
    ("the update's logits", dict(group_size=2, minibatches=1), dict(group_size=32, minibatches=1)),
])
def test_the_memory_estimate_follows_the_measured_peak(tiny_folder, wide_vocabulary_folder,
                                                       tmp_path, case, small, large):
    folder = wide_vocabulary_folder if "logits" in case else tiny_folder
    shared = dict(steps=1, eval_prompts=4, eval_samples=2, max_new_tokens=8)
    configs = [tiny_config(folder, tmp_path / name, **{**shared, **sizes})
               for name, sizes in (("small", small), ("large", large))]
    finished = subprocess.run(
        [sys.executable, "-c", MEASURE, str(ROOT / "minimal" / "ngrpo_train.py"),
         json.dumps([dataclasses.asdict(config) for config in configs])],
        capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    small_peak, large_peak = json.loads(finished.stdout.strip().splitlines()[-1])
    measured = (large_peak - small_peak) * 2 ** 20
    estimated = estimated_peak(configs[1]) - estimated_peak(configs[0])
    assert measured > 100 * 2 ** 20, (case, measured)  # large enough to stand out of the noise
    assert 0.5 < estimated / measured < 2, (case, estimated / 2 ** 20, measured / 2 ** 20)

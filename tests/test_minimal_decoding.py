"""minimal/ngrpo_train.py's decoding modes and its long-answer task: the static KV cache draws the
eager path's tokens from the same generator state, with log-probabilities within float rounding;
the draw is torch.multinomial's; a mode that fails falls back and says so; addition-work writes
its work out right, scores the final answer only and gives a cut answer 0. The CUDA graph itself
needs a GPU (benchmarks/gpu_check.py captures it there); everything around it runs here."""

import hashlib
import json
import math
import sys

import numpy as np
import pytest
from test_minimal_trainer import ROOT, tiny_config, tiny_folder, torch, trainer  # noqa: F401

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

GQA = dict(trainer.TINY_ARCHITECTURE, num_key_value_heads=2, num_attention_heads=4)


@pytest.fixture(scope="module")
def gqa_folder(tmp_path_factory):
    """A random tiny Qwen2 whose key-value heads are shared by two query heads each."""
    return gpu_check.random_model(tmp_path_factory.mktemp("gqa"), GQA)


def draw_both(folder, precision, prompts, group_size, new_tokens, top_p, seed, ban_end=False):
    """sample() eagerly and with the static cache, from the same generator state."""
    results = []
    for mode in ("eager", "static"):
        policy = trainer.load_policy(folder, torch.device("cpu"), precision, mode)
        if ban_end:
            policy.banned = torch.tensor(sorted({*policy.banned.tolist(), *policy.end_ids}))
        ids, mask = trainer.encode_prompts(policy.tokenizer, prompts, "cpu")
        with policy.autocast():
            results.append(trainer.sample(policy, ids, mask, group_size, new_tokens, 1.0, top_p,
                                          torch.Generator().manual_seed(seed)))
        assert policy.decode == mode and not policy.decoding.get("failures")
    return results


@pytest.mark.parametrize("top_p", [1.0, 0.9])
@pytest.mark.parametrize("folder_name", ["tiny_folder", "gqa_folder"])
def test_the_static_cache_draws_the_eager_tokens_with_fp32_log_probabilities(folder_name, top_p,
                                                                             request):
    """Left-padded prompts of 4, 6 and 8 tokens (padded to 8 columns), 3 x 3 = 9 answers (padded
    to 16 rows), answers that end at different steps: the same tokens, and log-probabilities that
    differ only by float rounding (measured: at most 4.8e-7 nats)."""
    folder = request.getfixturevalue(folder_name)
    prompts = ["1+2=", "11+22=", "111+222="]
    for seed in range(4):
        (eager, eager_mask, eager_logp), (static, static_mask, static_logp) = draw_both(
            folder, "fp32", prompts, 3, 12, top_p, seed)
        assert torch.equal(eager, static) and torch.equal(eager_mask, static_mask)
        assert float(((eager_logp - static_logp) * eager_mask).abs().max()) <= 1e-5


def test_under_bf16_autocast_the_static_cache_stays_within_bf16_rounding(gqa_folder):
    """bf16 rounds the two attentions differently (the static one sums over masked columns too):
    measured 0.0065 nats at most, under the 0.05 that gpu_check allows bf16 against fp32; the
    loss never sees it, since under bf16 the update recomputes the old log-probabilities."""
    (eager, _, eager_logp), (static, _, static_logp) = draw_both(
        gqa_folder, "bf16", ["1+2=", "11+22=", "111+222="], 3, 12, 1.0, 5, ban_end=True)
    assert torch.equal(eager, static)
    assert 0 < float((eager_logp - static_logp).abs().max()) <= 0.05


def test_the_draw_is_torch_multinomials_from_the_same_generator_state():
    """draw_tokens against torch.multinomial on the same tempered, banned and nucleus-cut
    probabilities (computed here the way the trainer computed them before: sort, cumulative sum,
    zero what lies beyond top_p), for 200 generator states."""
    rng = np.random.default_rng(0)
    for seed in range(200):
        logits = torch.tensor(rng.normal(0, 3, (7, 13)), dtype=torch.float32)
        temperature, top_p = [(1.0, 1.0), (0.6, 0.95), (1.3, 0.5)][seed % 3]
        banned = torch.tensor([0, 2])
        tokens, log_probs, finite = trainer.draw_tokens(logits, banned, temperature, top_p,
                                                        torch.Generator().manual_seed(seed))
        probs = torch.softmax((logits / temperature).index_fill(-1, banned, -1e9), -1)
        if top_p < 1:
            ordered, order = probs.sort(dim=-1, descending=True)
            ordered[ordered.cumsum(-1) - ordered > top_p] = 0
            probs = torch.zeros_like(probs).scatter(-1, order, ordered)
        expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(tokens, expected[:, 0]) and bool(finite)
        assert not set(tokens.tolist()) & {0, 2}


def test_non_finite_logits_stop_sampling_with_the_trainers_error(tiny_folder):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"), "fp32", "static")
    with torch.no_grad():
        policy.model.lm_head.weight[3] = math.nan  # tied: the embedding of token 3 too
    ids, mask = trainer.encode_prompts(policy.tokenizer, ["1+2="], "cpu")
    with pytest.raises(trainer.NonFiniteError, match="non-finite logits while sampling"):
        trainer.sample(policy, ids, mask, 2, 5, 1.0, 1.0, torch.Generator().manual_seed(0))


def count_passes(policy):
    calls = []
    policy.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(
        tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    return calls


def test_a_decoder_is_made_once_per_shape_and_the_policy_keeps_the_last_four(tiny_folder):
    """The first batch of a shape runs one extra step to make its decoder (rows padded to a power
    of two); a batch of the same shape reuses it; a policy keeps DECODERS_KEPT decoders."""
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"), "fp32", "static")
    policy.banned = torch.tensor(sorted({*policy.banned.tolist(), *policy.end_ids}))
    calls = count_passes(policy)
    ids, mask = trainer.encode_prompts(policy.tokenizer, ["1+2=", "11+22="], "cpu")
    trainer.sample(policy, ids, mask, 3, 5, 1.0, 1.0, torch.Generator().manual_seed(0))
    # The prompts once, the warm-up step and 4 decode steps, each over 6 answers padded to 8 rows.
    assert calls == [(2, 6)] + [(8, 1)] * 5
    calls.clear()
    trainer.sample(policy, ids, mask, 3, 5, 1.0, 1.0, torch.Generator().manual_seed(1))
    assert calls == [(2, 6)] + [(8, 1)] * 4
    for group_size in (1, 5, 9, 17, 33):  # 2, 10, 18, 34 and 66 rows: five more shapes
        trainer.sample(policy, ids, mask, group_size, 3, 1.0, 1.0, torch.Generator())
    shapes = list(policy.decoding["decoders"])
    assert len(shapes) == trainer.DECODERS_KEPT == 4
    assert [rows for rows, *_ in shapes] == [16, 32, 64, 128]  # the most recent four


def test_a_model_that_rejects_the_static_cache_falls_back_to_eager_and_says_why(tiny_folder,
                                                                              monkeypatch, capsys):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"), "fp32", "static")
    eager = trainer.load_policy(tiny_folder, torch.device("cpu"), "fp32", "eager")

    def refuse(self, *args, **kwargs):
        raise NotImplementedError("this attention keeps its own cache")
    monkeypatch.setattr(trainer.StaticDecoder, "update", refuse)
    ids, mask = trainer.encode_prompts(policy.tokenizer, ["1+2=", "11+22="], "cpu")
    capsys.readouterr()
    fallen = trainer.sample(policy, ids, mask, 3, 6, 1.0, 1.0, torch.Generator().manual_seed(4))
    expected = trainer.sample(eager, ids, mask, 3, 6, 1.0, 1.0, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(fallen, expected))
    assert policy.decode == "eager"
    failure = "static decoding failed (NotImplementedError: this attention keeps its own cache)" \
              "; decoding eager from now on"
    assert policy.decoding["failures"] == [failure]
    assert capsys.readouterr().err.strip().splitlines() == [f"warning: {failure}"]


def test_decode_modes_resolve_by_device_and_graph_is_refused_on_the_cpu(tmp_path, tiny_folder):
    assert trainer.decode_mode("auto", torch.device("cpu")) == "eager"
    assert trainer.decode_mode("auto", torch.device("cuda")) == "graph"
    assert trainer.load_policy(tiny_folder, torch.device("cpu")).decode == "eager"
    with pytest.raises(trainer.UsageError, match=r"^--decode graph replays CUDA graphs, but this "
                                                 r"run's device is the CPU \(--device cpu\)"):
        trainer.train(tiny_config(tiny_folder, tmp_path / "run", decode="graph"))
    with pytest.raises(trainer.UsageError, match=r"^--decode must be one of auto, eager, static, "
                                                 r"graph, got 'fast'$"):
        trainer.train(tiny_config(tiny_folder, tmp_path / "run", decode="fast"))


def test_a_run_may_resume_with_another_decoding_mode(tiny_folder, tmp_path):
    trainer.train(tiny_config(tiny_folder, tmp_path / "run", steps=2, decode="eager"))
    trainer.train(tiny_config(tiny_folder, tmp_path / "run", steps=3, decode="static",
                              resume=True))
    assert [r["step"] for r in trainer.read_metrics(tmp_path / "run")] == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------------
# addition-work: answers with length
# --------------------------------------------------------------------------------------------------
def test_the_work_is_written_column_by_column_with_carries():
    assert trainer.column_work(47, 85) == "7+5+0=12 4+8+1=13 =132"
    assert trainer.column_work(3, 4) == "3+4+0=7 =7"
    assert trainer.column_work(909, 191) == "9+1+0=10 0+9+1=10 9+1+1=11 =1100"
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 19))
        a, b = (int(x) for x in rng.integers(10 ** (n - 1), 10 ** n, size=2))
        *columns, final = trainer.column_work(a, b).split(" ")
        carry = 0
        for place, column in enumerate(columns):  # each column's arithmetic, checked here
            x, y, c, s = (int(part) for part in column.replace("=", "+").split("+"))
            assert (x, y, c) == (a // 10 ** place % 10, b // 10 ** place % 10, carry)
            assert s == x + y + c
            carry = s // 10
        assert len(columns) == n and final == f"={a + b}"


def test_the_longest_right_answer_and_its_end_token_fit_the_default_length():
    for digits in (1, 3, 12, 18):
        config = trainer.with_task_defaults(trainer.Config(task="addition-work", digits=digits,
                                                           model="x"))
        longest = trainer.column_work(10 ** digits - 1, 10 ** digits - 1)  # every sum two digits
        assert len(longest) + 1 == config.max_new_tokens == 10 * digits + 3


def test_sums_draw_1_to_digits_digits_and_are_held_out_by_hash():
    task = trainer.make_task(trainer.Config(task="addition-work", digits=4, eval_prompts=50))
    examples = task.draw(np.random.default_rng(1), 2000)
    sizes = [len(e["prompt"].split("+")[0]) for e in examples]
    assert set(sizes) == {1, 2, 3, 4} and min(np.bincount(sizes)[1:]) > 400
    for example in examples:
        a, b = (int(x) for x in example["prompt"][:-1].split("+"))
        assert len(str(a)) == len(str(b)) and example["answer"] == str(a + b)
        assert example["solution"] == trainer.column_work(a, b)
    for split, held in ((examples, False), (task.held_out, True)):
        for example in split:
            digest = hashlib.sha256(example["prompt"][:-1].encode()).hexdigest()
            assert (int(digest[:8], 16) % 10 == 0) == held


def test_only_the_final_answer_is_scored():
    task = trainer.make_task(trainer.Config(task="addition-work", digits=2))
    example = {"prompt": "47+85=", "answer": "132"}
    for completion, reward in [("7+5+0=12 4+8+1=13 =132", 1.0), ("=132", 1.0),
                               ("7+5+0=12 4+8+1=13 =131", 0.0), ("7+5+0=12 4+8+1=13 132", 0.0),
                               ("9+9+0=18 =132", 1.0), ("=132 ", 0.0), ("", 0.0)]:
        assert task.reward(completion, example) == reward, completion


def test_a_cut_answer_earns_0_even_when_its_text_is_right(tiny_folder, monkeypatch):
    """Two right answers of 11 tokens, one ended by the end token and one cut at max_new_tokens
    11: addition-work gives 1 and 0; the addition task, which scores cut answers, 1 and 1."""
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"))
    # One id a character (the tokenizer as saved with a Qwen2 config drops spaces when encoding).
    ended = policy.tokenizer.convert_tokens_to_ids(list("3+4+0=7 =7")) + policy.end_ids[:1]
    cut = policy.tokenizer.convert_tokens_to_ids(list(" 3+4+0=7 =7"))
    completion = torch.tensor([ended, cut])
    monkeypatch.setattr(trainer, "sample", lambda policy, *a, **k: (
        completion, trainer.answer_mask(completion, policy.end_ids), torch.zeros(2, 11)))
    for task_name, expected in (("addition-work", [[1.0, 0.0]]), ("addition", [[1.0, 1.0]])):
        task = trainer.make_task(trainer.Config(task=task_name, digits=1))
        rewards = trainer.rollout(policy, task, [{"prompt": "3+4=", "answer": "7"}], 2, 1.0, 1.0,
                                  11, None)[0]
        assert rewards.tolist() == expected


def test_the_cut_answer_of_the_work_task_earns_0_without_being_verified(tiny_folder, monkeypatch):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"))
    text = policy.tokenizer.convert_tokens_to_ids(list("3+4+0=7 =7"))
    completion = torch.tensor([text])  # no end token: cut
    monkeypatch.setattr(trainer, "sample", lambda policy, *a, **k: (
        completion, trainer.answer_mask(completion, policy.end_ids), torch.zeros(1, len(text))))
    task = trainer.make_task(trainer.Config(task="addition-work", digits=1))
    seen = []
    task = task._replace(reward=lambda text, example: seen.append(text) or 1.0)
    rewards = trainer.rollout(policy, task, [{"prompt": "3+4=", "answer": "7"}], 1, 1.0, 1.0, 10,
                              None)[0]
    assert rewards.tolist() == [[0.0]] and seen == []


def test_the_tiny_models_cache_names_keep_the_addition_recipe_and_tell_the_others_apart():
    config = trainer.Config()
    old_recipe = dict(trainer.TINY_ARCHITECTURE, digits=3, sft_accuracy=0.12, batch=64, lr=1e-3)
    old_name = "tiny-addition-" + hashlib.sha256(json.dumps(old_recipe, sort_keys=True)
                                                 .encode()).hexdigest()[:10]
    assert trainer.tiny_model_folder(config).name == old_name
    names = {trainer.tiny_model_folder(config).name,
             trainer.tiny_model_folder(trainer.Config(task="addition-work")).name,
             trainer.tiny_model_folder(config, seconds=90.0).name,
             trainer.tiny_model_folder(config, batch=256).name}
    assert len(names) == 4


def test_the_tiny_model_is_refused_no_task_but_the_built_in_two(tiny_folder, tmp_path):
    with pytest.raises(trainer.UsageError, match=r"^--model tiny \(the default\) was pre-trained "
                                                 r"on the built-in addition tasks only"):
        trainer.train(trainer.Config(task=str(tmp_path / "x.jsonl"), run_dir=str(tmp_path / "r")))
    config = trainer.with_task_defaults(trainer.Config(task="addition-work", digits=3))
    assert config.max_new_tokens == 33 and trainer.answer_checker(config).startswith(
        "the last word of the answer")

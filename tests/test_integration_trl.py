"""NGRPOTrainer trains a tiny local model with TRL and logs NGRPO's advantages.

The model and tokenizer are built here (a one-layer Qwen2 over a character vocabulary, saved to a
temporary folder), so nothing comes from a model hub. The reward functions fix each group's rewards:
"always" is all right, "never" all wrong, "one" has exactly one right answer. The oracles are
ngrpo_sim's NGRPO estimator on the rewards TRL logged, and the worked numbers computed by hand
below.
"""

import ast
import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl",
                    reason="TRL is not installed: pip install -e '.[trl]' (tested with trl 1.16)")
pd = pytest.importorskip("pandas", reason="pandas reads TRL's completions log; it comes with TRL")

from datasets import Dataset  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from ngrpo_sim import DropHomogeneousGroups, NGRPOAdvantage, get_method  # noqa: E402
from ngrpo_sim.integrations.trl import (NGRPOConfig, NGRPOTrainer, ngrpo_batch,  # noqa: E402
                                        summed_rewards)

ROOT = Path(__file__).resolve().parents[1]
GROUP_SIZE = 8
PROMPTS = ["always", "never", "one"]


def ngrpo_by_hand(rewards, r_max=1.0):
    """(r - mean) / (std + 1e-6) over the group plus one virtual r_max, std with Bessel's
    correction."""
    values = list(rewards) + [r_max]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return [(r - mean) / (std + 1e-6) for r in rewards]


def test_the_hand_oracle_gives_the_papers_worked_numbers():
    one_right = ngrpo_by_hand([1.0] + [0.0] * 7)
    assert (one_right[0] == pytest.approx(1.76, abs=0.005)
            and one_right[1] == pytest.approx(-0.50, abs=0.005))
    assert ngrpo_by_hand([0.0] * 8) == pytest.approx([-1 / 3] * 8, abs=1e-5)


def fixed_rewards(prompts, completions, **_):
    """1 for every answer to "always", 0 for "never", 1 for only the first answer to "one" in the
    batch."""
    rewards, first_one_seen = [], False
    for prompt in prompts:
        if prompt == "one":
            rewards.append(0.0 if first_one_seen else 1.0)
            first_one_seen = True
        else:
            rewards.append(1.0 if prompt == "always" else 0.0)
    return rewards


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random one-layer Qwen2 and a character-level tokenizer, saved like a hub checkpoint."""
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({char: 3 + i for i, char in enumerate("abcdefghijklmnopqrstuvwxyz ")})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                        unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=64,
                         pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


def train_two_steps(model_dir, output_dir, **options):
    args = NGRPOConfig(output_dir=str(output_dir),
                       per_device_train_batch_size=GROUP_SIZE * len(PROMPTS),
                       num_generations=GROUP_SIZE, max_completion_length=4, max_steps=2,
                       logging_steps=1, log_completions=True, report_to="none", use_cpu=True,
                       bf16=False, save_strategy="no", learning_rate=1e-2, seed=0, **options)
    trainer = NGRPOTrainer(model=str(model_dir), reward_funcs=fixed_rewards, args=args,
                           train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    trainer.train()
    return trainer


# Two steps: with num_iterations=2 both update on one generation batch (the second one off-policy,
# where the clip acts); with the default num_iterations=1 each step generates its own batch.
@pytest.mark.parametrize("options, generation_batches",
                         [({"num_iterations": 2}, 1), ({"loss_type": "grpo"}, 2)],
                         ids=["num_iterations=2", "loss_type=grpo"])
def test_logged_advantages_are_ngrpos(tiny_model_dir, tmp_path, options, generation_batches):
    trainer = train_two_steps(tiny_model_dir, tmp_path, **options)
    assert (trainer.epsilon_low, trainer.epsilon_high) == (0.16, 0.24)

    logs = sorted((tmp_path / "completions").glob("completions_*.parquet"))
    assert len(logs) == 2  # one table per logged step
    for log in logs:
        table = pd.read_parquet(log)
        assert sorted(table["prompt"].value_counts().items()) == [(p, GROUP_SIZE)
                                                                  for p in sorted(PROMPTS)]
        for prompt, group in table.groupby("prompt"):
            rewards = group["fixed_rewards"].to_numpy()
            logged = group["advantage"].to_numpy()
            np.testing.assert_allclose(logged, NGRPOAdvantage()(rewards), atol=1e-12)
            np.testing.assert_allclose(logged, ngrpo_by_hand(rewards), atol=1e-9)
            if prompt == "one":
                assert sorted(np.round(logged, 2)) == [-0.50] * 7 + [1.76]

    # What the loss saw on the last generation batch: NGRPO's advantages, and no tokens of the
    # dropped group.
    trained = trainer._buffered_inputs[0]
    prompts = np.array(trainer.processing_class.batch_decode(trained["prompt_ids"],
                                                             skip_special_tokens=True))
    tokens = trained["completion_mask"].sum(dim=1).numpy()
    assert np.all(tokens[prompts == "always"] == 0) and np.all(tokens[prompts != "always"] > 0)
    assert trained["num_items_in_batch"].item() == tokens.sum()
    np.testing.assert_allclose(trained["advantages"][prompts == "never"].numpy(), -1 / 3, atol=1e-6)
    assert (sorted(np.round(trained["advantages"][prompts == "one"].numpy(), 2))
            == [-0.50] * 7 + [1.76])

    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(steps) == 2 and all(math.isfinite(step["loss"]) and "clip_ratio/low_mean" in step
                                   for step in steps)
    dropped = [step["ngrpo/dropped_groups_frac"] for step in steps
               if "ngrpo/dropped_groups_frac" in step]
    # the "always" group, logged once per batch
    assert dropped == [pytest.approx(1 / 3)] * generation_batches


def test_a_reward_above_r_max_stops_training_with_the_reason(tiny_model_dir, tmp_path):
    args = NGRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=GROUP_SIZE,
                       num_generations=GROUP_SIZE, max_completion_length=2, max_steps=1,
                       report_to="none", use_cpu=True, bf16=False, save_strategy="no")
    trainer = NGRPOTrainer(model=str(tiny_model_dir),
                           reward_funcs=lambda completions, **_: [2.0] * len(completions),
                           args=args, train_dataset=Dataset.from_dict({"prompt": ["never"]}))
    with pytest.raises(ValueError, match=r"r_max=1\.0"):
        trainer.train()


def test_config_defaults_follow_the_ngrpo_preset(tmp_path):
    args = NGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    assert (args.epsilon, args.epsilon_high, args.entropy_coef) == (0.16, 0.24, 0.001)
    assert (args.beta, args.loss_type, args.num_generations,
            args.learning_rate) == (0.0, "dapo", 8, 1e-6)
    assert args.ngrpo_estimator() == NGRPOAdvantage(r_max=1.0, virtual_samples=1, ddof=1, eps=1e-6)


@pytest.mark.parametrize("option, value, named", [
    ("scale_rewards", "batch", "scale_rewards"),
    ("multi_objective_aggregation", "normalize_then_sum", "multi_objective_aggregation"),
    ("virtual_samples", 0, "virtual_samples"),
    ("r_max", float("nan"), "r_max"),
    ("drop_all_correct_groups", "yes", "drop_all_correct_groups"),
])
def test_config_refuses_what_ngrpo_cannot_use(tmp_path, option, value, named):
    with pytest.raises(ValueError, match=named):
        NGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                    **{option: value})


def test_trainer_refuses_a_plain_grpo_config(tiny_model_dir, tmp_path):
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    with pytest.raises(ValueError, match="NGRPOConfig"):
        NGRPOTrainer(model=str(tiny_model_dir), reward_funcs=fixed_rewards, args=args,
                     train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


def test_the_documented_trl_config_names_only_real_options():
    text = (ROOT / "docs" / "scaling_out.md").read_text()
    script = re.search(r"```python\n(.*?)```", text, flags=re.DOTALL).group(1)
    calls = [node for node in ast.walk(ast.parse(script))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "NGRPOConfig"]
    fields = {field.name for field in dataclasses.fields(NGRPOConfig)}
    assert calls and {keyword.arg for keyword in calls[0].keywords} <= fields


def completion_entropies(model_dir, prompt, completion_ids):
    """The model's next-token entropy (nats) at each completion token, by a plain forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + completion_ids])).logits[0].double()
    log_probs = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1).numpy()


@pytest.fixture(scope="module")
def one_and_two_processes(tiny_model_dir, tmp_path_factory):
    """tests/trl_distributed_run.py in one process and, alongside, in two under torchrun (gloo)."""
    import os
    import subprocess
    import sys

    script = str(ROOT / "tests" / "trl_distributed_run.py")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    launches = {1: [sys.executable, script], 2: torchrun + ["2", script]}
    outputs, runs = {}, {}
    for processes, command in launches.items():
        outputs[processes] = tmp_path_factory.mktemp(f"trl-{processes}-process")
        runs[processes] = subprocess.Popen(
            command + [str(tiny_model_dir), str(outputs[processes])], env=environment,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for processes, run in runs.items():
        log, _ = run.communicate(timeout=600)
        assert run.returncode == 0, f"{processes} process(es) failed:\n{log[-4000:]}"
    return outputs


@pytest.mark.parametrize("layout", ["split", "uneven"])
def test_two_processes_train_exactly_as_one(tiny_model_dir, one_and_two_processes, layout):
    import json

    import torch

    def load(processes, rank):
        folder = one_and_two_processes[processes] / layout
        return (json.loads((folder / f"rank{rank}.json").read_text()),
                torch.load(folder / f"rank{rank}-weights.pt"))

    (single, single_weights), *ranks = [load(1, 0), load(2, 0), load(2, 1)]
    ranks, rank_weights = [record for record, _ in ranks], [weights for _, weights in ranks]
    assert [record["world_size"] for record in [single] + ranks] == [1, 2, 2]
    group_size = single["group_size"]

    for step, batch in enumerate(single["generation_batches"]):
        shares = [record["generation_batches"][step] for record in ranks]
        gathered = {key: sum((share[key] for share in shares), []) for key in
                    ("prompts", "rewards", "completion_ids", "kept_tokens", "advantages")}
        assert gathered["prompts"] == batch["prompts"]
        assert gathered["completion_ids"] == batch["completion_ids"]
        if layout == "split":  # every group has answers on both processes
            assert shares[0]["prompts"] == shares[1]["prompts"]
        else:  # the second process holds the all-right group and keeps fewer tokens
            assert set(shares[0]["prompts"]) == {"nil", "mix"}
            assert set(shares[1]["prompts"]) == {"mix", "all"}
            assert sum(shares[1]["kept_tokens"]) < sum(shares[0]["kept_tokens"])

        # Advantages: ngrpo_sim's NGRPO, group by group, on the rewards of both processes.
        rewards = np.array(gathered["rewards"])
        assert rewards.tolist() == batch["rewards"]
        expected = NGRPOAdvantage()(rewards.reshape(-1, group_size)).ravel()
        np.testing.assert_allclose(gathered["advantages"], expected, atol=1e-6)
        np.testing.assert_allclose(batch["advantages"], expected, atol=1e-6)

        # Kept tokens: the all-right groups' are gone; both processes divide by the same count.
        prompts, kept = np.array(gathered["prompts"]), np.array(gathered["kept_tokens"])
        assert np.all(kept[prompts == "all"] == 0) and np.all(kept[prompts != "all"] > 0)
        assert shares[0]["num_items_in_batch"] == shares[1]["num_items_in_batch"] == kept.sum()
        assert batch["num_items_in_batch"] == kept.sum()

    # The first step is on-policy (ratio 1): its loss is -(sum over answers of advantage x kept
    # tokens + entropy_coef x the entropies of all kept tokens) / the kept tokens of the step,
    # with the entropies from a plain forward pass of the starting model.
    first = single["generation_batches"][0]
    entropy = sum(completion_entropies(tiny_model_dir, prompt, ids)[:tokens].sum()
                  for prompt, ids, tokens in
                  zip(first["prompts"], first["completion_ids"], first["kept_tokens"]))
    policy = sum(a * tokens for a, tokens in zip(first["advantages"], first["kept_tokens"]))
    first_loss = -(policy + 0.5 * entropy) / sum(first["kept_tokens"])
    for record in [single] + ranks:
        assert record["losses"][0] == pytest.approx(first_loss, rel=1e-6)

    # Losses and updated weights: two processes give what one gives, to float32 rounding.
    for record in ranks:
        np.testing.assert_allclose(record["losses"], single["losses"], rtol=1e-6, atol=1e-7)
    for name, value in single_weights.items():
        torch.testing.assert_close(rank_weights[0][name], rank_weights[1][name], rtol=0, atol=0)
        torch.testing.assert_close(rank_weights[0][name], value, rtol=0, atol=1e-6)


# -- NGRPO's rivals whose advantage needs only the rewards ---------------------------------------

@pytest.mark.parametrize("method, by_hand, dropped", [
    # MaxRL: (r - mean) / mean; "one" has mean 1/8, so 7 for its right answer and -1 for the others.
    ("maxrl", {"always": [0.0] * 8, "never": [0.0] * 8, "one": [7.0] + [-1.0] * 7}, 0.0),
    # QAE: a hard group's baseline is 0; the right answer gets 1 / std, std = sqrt(1/8) (Bessel).
    ("qae", {"one": [1 / (math.sqrt(1 / 8) + 1e-6)] + [0.0] * 7}, 2 / 3),
])
def test_a_rival_trains_with_its_advantage_and_filter(tiny_model_dir, tmp_path, method, by_hand,
                                                      dropped):
    trainer = train_two_steps(tiny_model_dir, tmp_path, method=method)
    estimator = get_method(method).advantage
    for log in sorted((tmp_path / "completions").glob("completions_*.parquet")):
        for prompt, group in pd.read_parquet(log).groupby("prompt"):
            logged = group["advantage"].to_numpy()
            expected = estimator(group["fixed_rewards"].to_numpy())
            np.testing.assert_allclose(logged, expected, atol=1e-12)
            if prompt in by_hand:
                np.testing.assert_allclose(sorted(logged), sorted(by_hand[prompt]), rtol=1e-9)
    steps = [entry for entry in trainer.state.log_history if "ngrpo/dropped_groups_frac" in entry]
    shares = [step["ngrpo/dropped_groups_frac"] for step in steps]
    assert shares and shares == [pytest.approx(dropped)] * len(shares)


def test_for_method_takes_the_presets_recipe(tmp_path):
    common = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    qae = NGRPOConfig.for_method("qae", **common)
    assert (qae.epsilon, qae.epsilon_high, qae.beta, qae.entropy_coef) == (0.2, 0.28, 0.0, 0.0)
    assert qae.loss_type == "dapo" and qae.ngrpo_estimator() == get_method("qae").advantage
    assert isinstance(qae.ngrpo_group_filter(), DropHomogeneousGroups)
    shifted = NGRPOConfig.for_method("shifted_baseline", r_max=2.0, **common)
    assert shifted.ngrpo_estimator().r_max == 2.0 and shifted.ngrpo_group_filter().r_max == 2.0
    assert NGRPOConfig.for_method("maxrl", epsilon=0.1, **common).epsilon == 0.1
    assert NGRPOConfig.for_method("dr_grpo", **common).loss_type == "dr_grpo"


@pytest.mark.parametrize("method, named", [
    ("lens", "reads the policy"), ("rl_zvp", "reads the policy"), ("ppo", "or a critic"),
    ("bogus", "unknown method 'bogus'")])
def test_config_refuses_methods_the_trainer_cannot_feed(tmp_path, method, named):
    with pytest.raises(ValueError, match=named):
        NGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                    method=method)


# -- unknown rewards, float rounding at r_max, dropout ---------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_unknown_rewards_get_the_same_advantages_here_in_ngrpo_sim_and_in_the_trainer(seed):
    import torch
    rng = np.random.default_rng(seed)
    groups, functions = 16, 3
    per_func = rng.integers(0, 2, (groups * GROUP_SIZE, functions)).astype(np.float32)
    per_func[rng.random(per_func.shape) < 0.3] = np.nan  # a function returned None for this answer
    per_func[rng.random(len(per_func)) < 0.2] = np.nan  # no function could score it: unknown
    per_func[:GROUP_SIZE] = np.nan  # a group without a known reward
    weights = torch.tensor([0.5, 0.3, 0.2])
    rewards = summed_rewards(torch.from_numpy(per_func), weights, r_max=1.0)
    expected = np.nansum(per_func * weights.numpy(), axis=1).astype(np.float64)
    expected[np.isnan(per_func).all(axis=1)] = np.nan
    expected = np.where(np.abs(expected - 1) < 1e-6, 1.0, expected)
    np.testing.assert_allclose(rewards, expected, rtol=1e-6)
    config = NGRPOConfig(output_dir="unused", use_cpu=True, bf16=False, report_to="none")
    advantages, trained, group_kept = ngrpo_batch(rewards, GROUP_SIZE, config.ngrpo_estimator(),
                                                  config.ngrpo_group_filter())
    grouped = rewards.reshape(groups, GROUP_SIZE)
    advantages = advantages.reshape(groups, GROUP_SIZE)
    np.testing.assert_allclose(np.where(group_kept[:, None], advantages, 0.0),
                               get_method("ngrpo").advantages(grouped, mask_unknown=True),
                               rtol=1e-12, atol=1e-12)
    from test_minimal_trainer import trainer  # the single-file trainer, loaded by path
    restated = trainer.METHODS["ngrpo"]
    np.testing.assert_array_equal(group_kept, trainer.keep_groups(grouped, restated))
    np.testing.assert_allclose(advantages, trainer.group_advantages(grouped, restated),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(trained, (group_kept[:, None] & ~np.isnan(grouped)).ravel())
    assert not group_kept[0] and np.all(advantages[0] == 0.0)


def test_a_weighted_sum_at_r_max_counts_as_r_max_but_a_real_excess_is_refused():
    import torch
    ten_tenths = torch.ones(GROUP_SIZE, 10)  # ten functions weighted 0.1: float32 sums miss 1
    rewards = summed_rewards(ten_tenths, torch.full((10,), 0.1), r_max=1.0)
    assert np.float32(sum([np.float32(0.1)] * 10)) != 1.0 and np.all(rewards == 1.0)
    config = NGRPOConfig(output_dir="unused", use_cpu=True, bf16=False, report_to="none")
    advantages, trained, group_kept = ngrpo_batch(rewards, GROUP_SIZE, config.ngrpo_estimator(),
                                                  config.ngrpo_group_filter())
    assert not group_kept[0] and not trained.any() and np.all(advantages == 0.0)
    excess = summed_rewards(ten_tenths, torch.full((10,), 0.1001), r_max=1.0)
    with pytest.raises(ValueError, match=r"above r_max=1.0"):
        ngrpo_batch(excess, GROUP_SIZE, config.ngrpo_estimator(), config.ngrpo_group_filter())


def partly_unknown(prompts, completions, **_):
    """As fixed_rewards, but the second answer to "one" cannot be scored (None)."""
    rewards, seen = fixed_rewards(prompts, completions), 0
    for index, prompt in enumerate(prompts):
        if prompt == "one":
            seen += 1
            if seen == 2:
                rewards[index] = None
    return rewards


def test_an_answer_no_function_could_score_gets_no_gradient(tiny_model_dir, tmp_path):
    args = NGRPOConfig(output_dir=str(tmp_path), num_generations=GROUP_SIZE,
                       per_device_train_batch_size=GROUP_SIZE * len(PROMPTS),
                       max_completion_length=4, max_steps=1, report_to="none", use_cpu=True,
                       bf16=False, save_strategy="no", seed=0)
    trainer = NGRPOTrainer(model=str(tiny_model_dir), reward_funcs=partly_unknown, args=args,
                           train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    trainer.train()
    trained = trainer._buffered_inputs[0]
    decoded = trainer.processing_class.batch_decode(trained["prompt_ids"], skip_special_tokens=True)
    one = np.array(decoded) == "one"
    tokens = trained["completion_mask"].sum(dim=1).numpy()[one]
    advantages = trained["advantages"].numpy()[one]
    unknown = tokens == 0  # TRL shuffles a generation batch: the unknown answer has an empty mask
    assert unknown.sum() == 1 and advantages[unknown] == 0.0
    known = NGRPOAdvantage()(np.array([1.0] + [0.0] * 6))  # seven known answers and the virtual one
    np.testing.assert_allclose(np.sort(advantages[~unknown]), np.sort(known), rtol=1e-6)


def test_dropout_is_off_by_default_in_the_policy_and_its_attention(tmp_path, tiny_model_dir):
    from transformers import Qwen2ForCausalLM
    model = Qwen2ForCausalLM.from_pretrained(tiny_model_dir, attention_dropout=0.3)
    args = NGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                       per_device_train_batch_size=GROUP_SIZE, num_generations=GROUP_SIZE)
    assert args.disable_dropout
    trainer = NGRPOTrainer(model=model, reward_funcs=fixed_rewards, args=args,
                           train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    rates = [value for module in trainer.model.modules() for name, value in vars(module).items()
             if "dropout" in name and isinstance(value, float)]
    assert rates and all(rate == 0.0 for rate in rates)

"""The verl plugin: verl's own code calls the `ngrpo` estimator and gets ngrpo_sim's advantages.

Oracles: ngrpo_sim's NGRPO estimator applied group by group (the plugin must only route verl's batch
to it), the worked numbers by hand, ngrpo_sim's clipped surrogate for verl's policy loss, and verl's
own configuration schema for the documented launch commands. verl runs on CPU here. One test runs
verl in a worker of a local Ray cluster; one loads a tiny model, to show why verl and TRL 1.x need
separate environments.
"""

import importlib.metadata
import os
import re
from pathlib import Path

import numpy as np
import pytest

try:
    import torch
    import verl  # first, so that a missing verl is what the skip reason names
    from hydra import compose, initialize_config_dir
    from verl import DataProto
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, get_adv_estimator_fn
    from verl.trainer.ppo.ray_trainer import compute_advantage
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config
except ImportError as error:  # the message names the missing module
    pytest.skip(f"verl cannot be imported here ({error}); install it as the Makefile does: "
                "verl==0.9.1 with --no-deps, plus its import-time dependencies",
                allow_module_level=True)

from ngrpo_sim import (NGRPOAdvantage, QAEAdvantage, ShiftedBaselineAdvantage,  # noqa: E402
                       aggregate_loss, clipped_surrogate, get_method)
from ngrpo_sim.integrations import verl as ngrpo_verl  # noqa: E402
from ngrpo_sim.methods.presets import DropAllCorrectGroups  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def random_batch(rng, group_sizes, response_length=7):
    """A verl batch: each answer's reward on its last response token, groups shuffled through the
    batch."""
    uids = np.array([f"prompt-{g}" for g, size in enumerate(group_sizes) for _ in range(size)],
                    dtype=object)
    rng.shuffle(uids)
    answers = len(uids)
    # Binary rewards, plus a few graded ones in [0, 1] (NGRPO accepts any reward up to r_max).
    rewards = rng.integers(0, 2, answers).astype(np.float64)
    graded = rng.random(answers) < 0.2
    rewards[graded] = rng.random(graded.sum())
    lengths = rng.integers(1, response_length + 1, answers)
    mask = (np.arange(response_length)[None, :] < lengths[:, None]).astype(np.float32)
    token_rewards = np.zeros((answers, response_length), dtype=np.float32)
    token_rewards[np.arange(answers), lengths - 1] = rewards
    return uids, rewards.astype(np.float32), torch.tensor(token_rewards), torch.tensor(mask)


def oracle(uids, rewards, estimator=NGRPOAdvantage()):
    """ngrpo_sim's estimator on each group separately; a group too small for it gets 0 (no
    gradient)."""
    expected = np.zeros(len(uids))
    for uid in set(uids):
        members = np.flatnonzero(uids == uid)
        if len(members) >= estimator.min_group_size:
            expected[members] = estimator(rewards[members].astype(np.float64))
    return expected


def algorithm_config(*overrides):
    """verl's own `algorithm` section, composed from its ppo_trainer.yaml with command-line
    overrides."""
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def test_the_estimator_is_registered_under_ngrpo():
    assert get_adv_estimator_fn("ngrpo") is ngrpo_verl.compute_ngrpo_outcome_advantage


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_verls_compute_advantage_gives_ngrpo_sims_advantages_on_uneven_groups(seed):
    rng = np.random.default_rng(seed)
    # sizes 1..9, as verl's batches have after failed rollouts
    group_sizes = rng.integers(1, 10, 30)
    uids, rewards, token_rewards, mask = random_batch(rng, group_sizes)
    data = DataProto.from_dict(tensors={"token_level_rewards": token_rewards,
                                        "response_mask": mask},
                               non_tensors={"uid": uids})
    config = algorithm_config("algorithm.adv_estimator=ngrpo").algorithm

    out = compute_advantage(data, adv_estimator=config.adv_estimator, config=config)

    expected = oracle(uids, rewards)[:, None] * mask.numpy()
    np.testing.assert_allclose(out.batch["advantages"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(out.batch["returns"].numpy(), expected, atol=1e-6)
    assert out.batch["advantages"].dtype == token_rewards.dtype


def test_the_worked_numbers_through_verl():
    # Group "hard": one right answer in 8; group "none": all wrong; group "easy": all right.
    uids = np.array(["hard"] * 8 + ["none"] * 8 + ["easy"] * 8, dtype=object)
    rewards = np.array([1.0] + [0.0] * 7 + [0.0] * 8 + [1.0] * 8, dtype=np.float32)
    estimator = get_adv_estimator_fn("ngrpo")
    advantages, _ = estimator(token_level_rewards=torch.tensor(rewards)[:, None],
                              response_mask=torch.ones(24, 1), index=uids,
                              config=algorithm_config("algorithm.adv_estimator=ngrpo").algorithm)
    advantages = advantages[:, 0].numpy()
    assert advantages[0] == pytest.approx(1.76, abs=0.005)
    np.testing.assert_allclose(advantages[1:8], -0.50, atol=0.005)
    np.testing.assert_allclose(advantages[8:16], -1 / 3, atol=1e-5)
    np.testing.assert_array_equal(advantages[16:], 0.0)


def test_r_max_and_virtual_samples_come_from_the_algorithm_config():
    config = algorithm_config("algorithm.adv_estimator=ngrpo", "+algorithm.max_reward=2.0",
                              "+algorithm.add_max_reward_num=3").algorithm
    assert ngrpo_verl.estimator_from_config(config) == NGRPOAdvantage(r_max=2.0, virtual_samples=3)
    assert ngrpo_verl.estimator_from_config(algorithm_config().algorithm) == NGRPOAdvantage()
    assert ngrpo_verl.estimator_from_config(None) == NGRPOAdvantage()

    rng = np.random.default_rng(3)
    uids, rewards, token_rewards, mask = random_batch(rng, [4, 8, 2])
    token_rewards, rewards = token_rewards * 2, rewards * 2  # rewards in [0, 2]
    advantages, _ = get_adv_estimator_fn("ngrpo")(token_level_rewards=token_rewards,
                                                  response_mask=mask, index=uids, config=config)
    expected = oracle(uids, rewards, NGRPOAdvantage(r_max=2.0, virtual_samples=3))
    np.testing.assert_allclose(advantages.numpy(), expected[:, None] * mask.numpy(), atol=1e-6)


@pytest.mark.parametrize("overrides, named", [
    (["+algorithm.add_max_reward_num=0"], "algorithm.add_max_reward_num"),
    (["+algorithm.max_reward=.nan"], "algorithm.max_reward"),
])
def test_a_bad_config_is_refused_by_its_verl_name(overrides, named):
    config = algorithm_config("algorithm.adv_estimator=ngrpo", *overrides).algorithm
    with pytest.raises(ValueError, match=re.escape(named)):
        ngrpo_verl.estimator_from_config(config)


def test_bad_batches_are_refused_with_a_reason():
    estimator = get_adv_estimator_fn("ngrpo")
    rewards = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="algorithm.max_reward"):
        estimator(token_level_rewards=rewards, response_mask=torch.ones(2, 2),
                  index=np.array(["a", "a"]))
    with pytest.raises(ValueError, match="index"):
        estimator(token_level_rewards=rewards, response_mask=torch.ones(2, 2))


def test_the_entry_point_is_installed():
    # That `import verl` alone then registers the estimator, in a process that imports nothing else
    # of ours, is checked in a Ray worker below.
    plugins = {entry.name: entry.value
               for entry in importlib.metadata.entry_points(group="verl.plugins")}
    assert plugins.get("ngrpo") == "ngrpo_sim.integrations.verl", (
        "ngrpo-sim is installed without its verl.plugins entry point: reinstall it "
        "(pip install -e '.[verl]')")


def verls_filter_drops(metric_values):
    """verl 0.9's group filter (v1 ReplayBuffer): drop a group of more than one answer whose metric
    has no spread."""
    return len(metric_values) > 1 and float(np.std(metric_values)) == 0.0


def test_the_filter_key_makes_verl_drop_exactly_the_all_correct_groups():
    rng = np.random.default_rng(4)
    groups = [np.ones(8), np.zeros(8), np.array([1.0] * 7 + [0.0]), np.array([1.0, 0.5]),
              np.ones(2) * 0.5]
    groups += [rng.integers(0, 2, size).astype(float) for size in rng.integers(2, 10, 200)]
    for rewards in groups:
        keys = [ngrpo_verl.all_correct_filter_key(reward) for reward in rewards]
        assert verls_filter_drops(keys) == (not DropAllCorrectGroups().keep(rewards)), rewards
    assert ngrpo_verl.all_correct_filter_key(2.0, r_max=2.0) == 2.0
    assert ngrpo_verl.all_correct_filter_key(1.0, r_max=2.0) < 2.0


def test_compute_score_scores_like_verl_and_adds_the_filter_key():
    right = ngrpo_verl.compute_score("DigitalLearningGmbH/MATH-lighteval", r"so it is \boxed{2}",
                                     "2")
    wrong = [ngrpo_verl.compute_score("DigitalLearningGmbH/MATH-lighteval", r"so it is \boxed{3}",
                                      "2")
             for _ in range(2)]
    assert right == {"score": 1.0, "acc": 1.0, ngrpo_verl.FILTER_KEY: 1.0}
    assert all(w["score"] == 0.0 and w[ngrpo_verl.FILTER_KEY] < 1.0 for w in wrong)
    assert wrong[0][ngrpo_verl.FILTER_KEY] != wrong[1][ngrpo_verl.FILTER_KEY]


def documented_verl_commands():
    """The override lists of the `python3 -m verl.trainer.main_ppo` commands in
    docs/scaling_out.md."""
    text = (ROOT / "docs" / "scaling_out.md").read_text()
    blocks = re.findall(r"```bash\n(\S*python3? -m verl\.trainer\.main_ppo.*?)```", text,
                        flags=re.DOTALL)
    return [block.replace("\\\n", " ").split()[3:] for block in blocks]


def test_both_documented_launch_commands_pass_verls_own_config_checks():
    commands = documented_verl_commands()
    assert len(commands) == 2  # the authors' recipe and the one-GPU recipe
    for overrides in commands:
        config = algorithm_config(*(override.replace("$HOME", "/home/user")
                                    for override in overrides))
        # What verl's main_ppo checks before it starts Ray: no reference model (no KL) and no
        # critic.
        assert not need_reference_policy(config) and not need_critic(config)
        validate_config(config, use_reference_policy=False, use_critic=False)
        actor = config.actor_rollout_ref.actor
        assert config.algorithm.adv_estimator == "ngrpo" and not config.algorithm.use_kl_in_reward
        assert ngrpo_verl.estimator_from_config(config.algorithm) == NGRPOAdvantage()
        assert config.algorithm.filter_groups.metric == ngrpo_verl.FILTER_KEY
        assert config.reward.custom_reward_function.path == "pkg://ngrpo_sim.integrations.verl"
        assert (actor.clip_ratio_low, actor.clip_ratio_high,
                actor.loss_agg_mode) == (0.16, 0.24, "token-mean")
        # above any ratio verl forms: the dual clip never binds
        assert actor.clip_ratio_c > np.exp(20.0)
        assert not actor.use_kl_loss and actor.entropy_coeff == 0.001 and actor.optim.lr == 1e-6
        assert config.actor_rollout_ref.rollout.n == 8


def test_verls_policy_loss_with_the_documented_settings_is_ngrpos_surrogate():
    overrides = [o.replace("$HOME", "/home/user") for o in documented_verl_commands()[0]]
    actor = omega_conf_to_dataclass(algorithm_config(*overrides).actor_rollout_ref.actor)
    rng = np.random.default_rng(5)
    advantages = rng.normal(size=(16, 6))
    # Ratios from e^-3 to e^3, far outside the clip range on both sides, where verl's default dual
    # clip would bind.
    log_ratio = rng.uniform(-3.0, 3.0, size=(16, 6))
    mask = (rng.random((16, 6)) < 0.8).astype(np.float64)
    old_log_prob = rng.normal(size=(16, 6))

    loss, _ = compute_policy_loss_vanilla(
        old_log_prob=torch.tensor(old_log_prob), log_prob=torch.tensor(old_log_prob + log_ratio),
        advantages=torch.tensor(advantages), response_mask=torch.tensor(mask),
        loss_agg_mode=actor.loss_agg_mode, config=actor)

    surrogate = clipped_surrogate(np.exp(log_ratio), advantages, clip_low=0.16, clip_high=0.24)
    assert loss.item() == pytest.approx(aggregate_loss(surrogate.loss, mask, "token-mean"),
                                        rel=1e-9)


def test_a_ray_worker_that_imports_only_verl_computes_ngrpo_sims_advantages(ray_cluster):
    def advantages_in_a_fresh_worker(token_rewards, mask, uids, config):
        """verl's compute_advantage with ``ngrpo``, in a worker that imports verl and nothing of
        ours: its result or verl's error, and the ngrpo_sim modules loaded before and after."""
        import sys

        def ours():
            return sorted(name for name in sys.modules if name.startswith("ngrpo_sim"))

        before = ours()
        import torch
        from verl import DataProto
        from verl.trainer.ppo.ray_trainer import compute_advantage

        tensors = {"token_level_rewards": torch.tensor(token_rewards),
                   "response_mask": torch.tensor(mask)}
        data = DataProto.from_dict(tensors=tensors, non_tensors={"uid": uids})
        try:
            advantages = compute_advantage(data, adv_estimator="ngrpo", config=config)
        except Exception as error:  # verl's "Unknown advantage estimator", for the test to read
            return {"before": before, "after": ours(), "error": f"{type(error).__name__}: {error}"}
        return {"before": before, "after": ours(),
                "advantages": advantages.batch["advantages"].numpy()}

    rng = np.random.default_rng(6)
    uids, rewards, token_rewards, mask = random_batch(rng, rng.integers(1, 10, 20))
    config = algorithm_config("algorithm.adv_estimator=ngrpo").algorithm
    # Nested, the function travels to the worker by value: the worker never imports this module.
    # A runtime environment of its own gives each call a new worker process (one call each).
    worker = ray_cluster.remote(num_cpus=1, max_calls=1)(advantages_in_a_fresh_worker)
    inputs = (token_rewards.numpy(), mask.numpy(), uids, config)
    plugins = [{"env_vars": {"VERL_USE_EXTERNAL_PLUGINS": policy}} for policy in ("auto", "none")]
    with_entry_point, without = ray_cluster.get(  # verl's default, and its off switch
        [worker.options(runtime_env=env).remote(*inputs) for env in plugins], timeout=600)

    assert with_entry_point["before"] == []
    assert "ngrpo_sim.integrations.verl" in with_entry_point["after"]
    expected = oracle(uids, rewards)[:, None] * mask.numpy()
    np.testing.assert_allclose(with_entry_point["advantages"], expected, atol=1e-6)
    assert without["before"] == without["after"] == []
    assert "Unknown advantage estimator" in without["error"] and "ngrpo" in without["error"]


def test_verl_cannot_load_a_model_next_to_trl_1():
    """docs/scaling_out.md tells users to keep verl and TRL >= 1.16 apart; this is why. When it
    fails, verl or TRL has mended the conflict: update that section of the docs."""
    trl = pytest.importorskip("trl", reason="the conflict needs TRL in verl's environment")
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from verl.models.transformers.monkey_patch import apply_monkey_patch

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1))
    # verl's FSDP workers call this on every model they load; it imports a class TRL 1.x removed.
    with pytest.raises(ImportError, match="AutoModelForCausalLMWithValueHead"):
        apply_monkey_patch(model)
    assert int(trl.__version__.split(".")[0]) >= 1


# -- NGRPO's rivals whose advantage needs only the rewards ---------------------------------------

@pytest.mark.parametrize("method", sorted(ngrpo_verl.RIVAL_CONFIG_KEYS))
def test_verls_compute_advantage_gives_each_rivals_advantages(method):
    assert get_adv_estimator_fn(method) is ngrpo_verl.RIVAL_ESTIMATORS[method]
    rng = np.random.default_rng(6)
    uids, rewards, token_rewards, mask = random_batch(rng, rng.integers(1, 10, 30))
    tensors = {"token_level_rewards": token_rewards, "response_mask": mask}
    data = DataProto.from_dict(tensors=tensors, non_tensors={"uid": uids})
    config = algorithm_config(f"algorithm.adv_estimator={method}").algorithm
    out = compute_advantage(data, adv_estimator=config.adv_estimator, config=config)
    expected = oracle(uids, rewards, get_method(method).advantage)[:, None] * mask.numpy()
    np.testing.assert_allclose(out.batch["advantages"].numpy(), expected, atol=1e-5)


def test_maxrls_worked_numbers_through_verl():
    uids = np.array(["hard"] * 8 + ["none"] * 8, dtype=object)
    rewards = torch.tensor([1.0] + [0.0] * 15)[:, None]
    advantages, _ = get_adv_estimator_fn("maxrl")(token_level_rewards=rewards,
                                                   response_mask=torch.ones(16, 1), index=uids)
    np.testing.assert_allclose(advantages[:, 0].numpy(), [7.0] + [-1.0] * 7 + [0.0] * 8, atol=1e-6)


def test_the_rivals_options_come_from_the_algorithm_config():
    qae = algorithm_config("algorithm.adv_estimator=qae", "+algorithm.quantile_k=0.6").algorithm
    assert ngrpo_verl.estimator_from_config(qae, "qae") == QAEAdvantage(quantile=0.6)
    asymre = algorithm_config("algorithm.adv_estimator=asymre",
                              "+algorithm.baseline_shift=-0.2").algorithm
    assert (ngrpo_verl.estimator_from_config(asymre, "asymre")
            == ShiftedBaselineAdvantage(shift=-0.2))
    assert ngrpo_verl.estimator_from_config(None, "maxrl") == get_method("maxrl").advantage
    bad = algorithm_config("algorithm.adv_estimator=qae", "+algorithm.quantile_k=1.5").algorithm
    with pytest.raises(ValueError, match=re.escape("algorithm.quantile_k=1.5 is not a valid QAE")):
        ngrpo_verl.estimator_from_config(bad, "qae")
    refusal = "the maxrl estimator cannot use this batch: .* below the lowest"
    with pytest.raises(ValueError, match=refusal):
        get_adv_estimator_fn("maxrl")(token_level_rewards=torch.tensor([[-1.0], [1.0]]),
                                      response_mask=torch.ones(2, 1), index=np.array(["a", "a"]))

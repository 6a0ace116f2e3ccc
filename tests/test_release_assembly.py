"""The release's batch assembly (``batch_assembly="release"``): one step against a plain-loop
oracle, the advantages of partial groups and of a group of one by hand, carried rows' old
log-probabilities, the control without a filter, refusals."""

import copy
import dataclasses
import math
from collections import defaultdict

import numpy as np
import pytest

from ngrpo_sim import get_method
from ngrpo_sim.cli import main
from ngrpo_sim.methods.advantages import GRPOAdvantage, NGRPOAdvantage, PSRAdvantage
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.reference_step import (_adam_or_sgd, _count_update, _parameter_gradient,
                                                 _prompt_logits, _regulariser_grad, _softmax)
from ngrpo_sim.simulators.release_assembly import (RELEASE_METRICS, CarriedRows, assemble,
                                                   release_advantages)
from ngrpo_sim.simulators.sequence_config import SequenceConfig
from ngrpo_sim.simulators.task_parts import ROLLOUT_METRICS, Coefficients
from ngrpo_sim.simulators.training_loop import TrainState, apply_rollout, draw_rollout, simulate

EPS = 1e-6

# B = 2 prompts per step, G = 4 answers: a step wants 8 rows; easy prompts make all-correct groups,
# so the filter drops some and the cut splits groups.
TINY = dict(num_prompts=8, num_answers=4, prompts_per_step=2, group_size=4, minibatches=2,
            seeds=4, profile="0.97,0.9,0.6,0.3", batch_assembly="release")


# -------------------------------------------------------------------------------------------------
# Advantages by hand
# -------------------------------------------------------------------------------------------------

def ngrpo_by_hand(rewards: list[float]) -> list[float]:
    """NGRPO over m rewards as written in docs/method_reference.md: the m rewards and one virtual
    answer of reward 1, mean and Bessel std over the m + 1 values, eps 1e-6; for m = 1 the
    release's mean 0 and std 1."""
    if len(rewards) == 1:
        return [rewards[0] / (1 + EPS)]
    values = rewards + [1.0]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return [(r - mean) / (std + EPS) for r in rewards]


def grpo_by_hand(rewards: list[float]) -> list[float]:
    if len(rewards) == 1:
        return [rewards[0] / (1 + EPS)]
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1))
    return [0.0 if r == mean else (r - mean) / (std + EPS) for r in rewards]


def test_a_group_of_one_gets_its_reward_and_no_virtual_answer():
    rewards = np.array([1.0, 0.0, 1.0, 0.0])
    for estimator in (NGRPOAdvantage(), GRPOAdvantage()):
        advantages = release_advantages(rewards, np.array([3, 5, 7, 7]), estimator)
        assert advantages[0] == 1.0 / (1.0 + 1e-6)
        assert advantages[1] == 0.0
    # NGRPO's virtual answer would have given the lone wrong answer -1 / sqrt(2).
    assert release_advantages(np.array([0.0]), np.array([0]), NGRPOAdvantage())[0] == 0.0


def test_partial_groups_get_ngrpos_closed_form_on_their_rows():
    # Group 0 has 2 of its answers in the batch (1 correct), group 1 has 3 (all wrong), group 2
    # has 5 (2 correct); rows interleaved as the reordering leaves them.
    rewards = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    groups = np.array([0, 1, 0, 2, 2, 1, 2, 2, 1, 2])
    advantages = release_advantages(rewards, groups, NGRPOAdvantage())
    # m = 2, k = 1: n = 3 values, c = 2 equal to r_max: +sqrt((n - c)(n - 1) / (c n)) and
    # -sqrt(c (n - 1) / ((n - c) n)) (eps neglected).
    assert advantages[0] == pytest.approx(math.sqrt(1 / 3), rel=1e-5)
    assert advantages[2] == pytest.approx(-math.sqrt(4 / 3), rel=1e-5)
    # All wrong, m = 3: -1 / sqrt(m + 1).
    np.testing.assert_allclose(advantages[[1, 5, 8]], -0.5, rtol=1e-5)
    for group in range(3):
        rows = groups == group
        np.testing.assert_allclose(advantages[rows], ngrpo_by_hand(list(rewards[rows])),
                                   rtol=1e-13)


def test_the_fallback_is_refused_for_an_estimator_without_it():
    with pytest.raises(ValueError, match="GRPO's and NGRPO's estimators only, got the psr"):
        release_advantages(np.array([1.0, 0.0]), np.array([0, 0]), PSRAdvantage())


# -------------------------------------------------------------------------------------------------
# The assembly on a case written out by hand
# -------------------------------------------------------------------------------------------------

def test_assembly_by_hand():
    # One seed, B = 2, G = 2 (a step wants 4 rows), 2 minibatches. One row is carried in (group 9's
    # answer 1). Generation batch 0: group 0 all correct (dropped), group 1 kept; generation batch
    # 1: groups 2 and 3 kept; generation batch 2 is never needed.
    prompts = np.array([[10, 11, 12, 13, 14, 15]])
    answers = np.arange(12).reshape(1, 6, 2)
    rewards = np.array([[[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0],
                         [1.0, 0.0]]])
    keep = ~np.all(rewards == 1.0, axis=-1)
    # Reordered rows of each generation batch: batch 1 reads (3, 1), (2, 0), (3, 0), (2, 1).
    row_order = np.array([[[0, 1], [2, 3], [1, 3], [2, 0], [0, 1], [2, 3]]])
    carried_in = CarriedRows(prompts=np.array([[19]]), answers=np.array([[[90, 91]]]),
                             rewards=np.array([[[0.0, 1.0]]]), rows=np.array([[[False, True]]]),
                             order=np.array([[[-1, 0]]]), sampled_by=np.zeros(1))
    batch = assemble(prompts, answers, rewards, keep, row_order, carried_in, 2, 2, np.zeros(1))
    # Rows in order: (9, 1) carried; (1, 0), (1, 1) from batch 0; (3, 1) from batch 1: 4 rows,
    # cut; (2, 0), (3, 0), (2, 1) carried out.
    np.testing.assert_array_equal(batch.prompts, [[19, 11, 13]])
    np.testing.assert_array_equal(batch.rows, [[[False, True], [True, True], [False, True]]])
    np.testing.assert_array_equal(batch.minibatch, [[[-1, 0], [0, 1], [-1, 1]]])
    np.testing.assert_array_equal(batch.stale, [[True, False, False]])
    np.testing.assert_array_equal(batch.examined, [[True, True, True, True, False, False]])
    carried = batch.carried
    np.testing.assert_array_equal(carried.prompts, [[12, 13]])
    np.testing.assert_array_equal(carried.rows, [[[True, True], [True, False]]])
    np.testing.assert_array_equal(carried.order, [[[0, 2], [1, -1]]])
    assert {name: float(value[0]) for name, value in batch.statistics.items()} == {
        "kept_groups": 3.0, "groups_cut": 1.0, "batch_groups": 3.0, "partial_groups": 2.0,
        "single_groups": 2.0, "carried_rows": 1.0, "trained_rows": 4.0}


# -------------------------------------------------------------------------------------------------
# One step against a plain-loop oracle
# -------------------------------------------------------------------------------------------------

def release_step_oracle(task, method, config, state, rollout, carried, reference, step):
    """One release-assembled step walked seed by seed and row by row. ``carried`` holds per seed
    the list of rows carried in, each (prompt, answer, reward, group id, old log-probability);
    returns the new state, the statistics and the rows carried out. Independent of the vectorised
    code: it shares only the method's group filter and the oracle helpers of reference_step."""
    state = copy.deepcopy(state)
    num_seeds, drawn = rollout.prompts.shape
    batch, group_size, parts = config.prompts_per_step, config.group_size, config.minibatches
    wanted = batch * group_size
    by_hand = ngrpo_by_hand if method.advantage.name == "ngrpo" else grpo_by_hand
    coefficients = Coefficients.of(method, config)
    statistics = {name: np.zeros(num_seeds) for name in ROLLOUT_METRICS + RELEASE_METRICS}
    trained_rows, carried_out = [], []
    for seed in range(num_seeds):
        rows = list(carried[seed])
        examined = dropped = kept = all_wrong = all_correct = 0
        for start in range(0, drawn, batch):
            if len(rows) >= wanted:
                break
            groups = range(start, min(start + batch, drawn))
            reordered = sorted(((c, g) for c in groups for g in range(group_size)),
                               key=lambda row: rollout.row_order[seed, row[0], row[1]])
            for c in groups:
                rewards = [float(task.rewards[rollout.prompts[seed, c], a])
                           for a in rollout.answers[seed, c]]
                examined += 1
                all_wrong += all(r != 1.0 for r in rewards)
                all_correct += all(r == 1.0 for r in rewards)
                if method.group_filter.keep(np.array(rewards)):
                    kept += 1
                else:
                    dropped += 1
            for c, g in reordered:
                prompt = int(rollout.prompts[seed, c])
                rewards = [float(task.rewards[prompt, a]) for a in rollout.answers[seed, c]]
                if not method.group_filter.keep(np.array(rewards)):
                    continue
                answer = int(rollout.answers[seed, c, g])
                probs = _softmax(_prompt_logits(task, state.params, seed, prompt))
                rows.append((prompt, answer, rewards[g], (step, c), math.log(probs[answer])))
        trained, out = rows[:wanted], rows[wanted:]
        by_group = defaultdict(list)
        for row in trained:
            by_group[row[3]].append(row[2])
        advantage_of = {group: iter(by_hand(rewards)) for group, rewards in by_group.items()}
        advantages = [next(advantage_of[row[3]]) for row in trained]
        trained_rows.append((trained, advantages))
        carried_out.append(out)
        out_groups = {row[3] for row in out}
        statistics["sampled_answers"][seed] = examined * group_size
        statistics["share_all_wrong"][seed] = all_wrong / examined
        statistics["share_all_correct"][seed] = all_correct / examined
        statistics["share_mixed"][seed] = (examined - all_wrong - all_correct) / examined
        seen = dropped * group_size + len(trained)
        statistics["share_zero_advantage"][seed] = (
            dropped * group_size + sum(a == 0.0 for a in advantages)) / max(seen, 1)
        statistics["kept_groups"][seed] = kept
        statistics["groups_cut"][seed] = len(out_groups & set(by_group))
        statistics["batch_groups"][seed] = len(by_group)
        statistics["partial_groups"][seed] = sum(len(r) < group_size for r in by_group.values())
        statistics["single_groups"][seed] = sum(len(r) == 1 for r in by_group.values())
        statistics["carried_rows"][seed] = len(carried[seed])
        statistics["trained_rows"][seed] = len(trained)

    num_answers = task.rewards.shape[1]
    clipped_low, clipped_high, tokens = (np.zeros(num_seeds) for _ in range(3))
    for _ in range(config.epochs):
        for part in range(parts):
            _count_update(state.optimizer, state.params)
            for seed, (trained, advantages) in enumerate(trained_rows):
                members = [i for i in range(len(trained)) if i * parts // len(trained) == part]
                logit_grads = defaultdict(lambda: [0.0] * num_answers)
                for i in members:
                    prompt, answer, _, _, old_logp = trained[i]
                    advantage = advantages[i]
                    probs = _softmax(_prompt_logits(task, state.params, seed, prompt))
                    grad = logit_grads[prompt]
                    ratio = math.exp(math.log(probs[answer]) - old_logp)
                    tokens[seed] += 1
                    if advantage > 0 and ratio > 1 + method.clip_high:
                        clipped_high[seed] += 1
                    elif advantage < 0 and ratio < 1 - method.clip_low:
                        clipped_low[seed] += 1
                    else:
                        for b in range(num_answers):
                            grad[b] += (-advantage * ratio * ((b == answer) - probs[b])
                                        / len(members))
                    # KL and entropy terms of the answer's prompt, weighed by its share of rows.
                    reference_probs = _softmax([float(z) for z in reference[seed, prompt]])
                    for b, regulariser in enumerate(_regulariser_grad(probs, reference_probs,
                                                                      coefficients)):
                        grad[b] += regulariser / len(members)
                _adam_or_sgd(state.optimizer, state.params,
                             _parameter_gradient(task, state.params, logit_grads), seed)

    for seed, (trained, _) in enumerate(trained_rows):
        k3 = 0.0
        for prompt, answer, _, _, old_logp in trained:
            probs = _softmax(_prompt_logits(task, state.params, seed, prompt))
            log_ratio = math.log(probs[answer]) - old_logp
            k3 += math.expm1(log_ratio) - log_ratio
        statistics["approx_kl"][seed] = k3 / max(len(trained), 1)
    statistics["clipfrac_low"] = clipped_low / np.maximum(tokens, 1)
    statistics["clipfrac_high"] = clipped_high / np.maximum(tokens, 1)
    return state, statistics, carried_out


def carried_rows_of(state, task):
    """The vectorised state's carried rows per seed, in order, as the oracle lists them (without
    the group id): (prompt, answer, reward, log-probability under the policy that sampled them)."""
    carried = state.carried
    rows = []
    for seed in range(state.params.shape[0]):
        seed_rows = []
        if carried is not None:
            for u, g in zip(*np.nonzero(carried.rows[seed])):
                prompt, answer = int(carried.prompts[seed, u]), int(carried.answers[seed, u, g])
                probs = _softmax(_prompt_logits(task, carried.sampled_by, seed, prompt))
                seed_rows.append((int(carried.order[seed, u, g]), prompt, answer,
                                  float(carried.rewards[seed, u, g]), math.log(probs[answer])))
        rows.append([row[1:] for row in sorted(seed_rows)])
    return rows


@pytest.mark.parametrize("policy", ["tabular", "shared"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("method, options", [
    ("ngrpo", dict()), ("ngrpo", dict(epochs=2)), ("dapo", dict(profile="0.97,0.5,0.6,0.3")),
])
def test_vectorised_release_step_equals_the_loop_oracle(policy, optimizer, method, options):
    config = DynamicsConfig(**{**TINY, **options, "policy": policy, "optimizer": optimizer,
                               "learning_rate": 4.0 if optimizer == "sgd" else 0.3})
    method = get_method(method)
    task = config.build_task()
    rng, order_rng = np.random.default_rng(5), np.random.default_rng(6)
    state = TrainState.start(task, config)
    reference = task.logits(state.params).copy()
    oracle_carried = [[] for _ in range(config.seeds)]
    seen = defaultdict(float)
    for step in range(10):
        rollout = draw_rollout(task, method, state.params, config, rng, state.carried, order_rng)
        expected_state, expected, oracle_carried = release_step_oracle(
            task, method, config, state, rollout, oracle_carried, reference, step)
        stats = apply_rollout(task, method, config, state, rollout, reference)
        np.testing.assert_allclose(state.params, expected_state.params, rtol=1e-12, atol=1e-12)
        for name, value in expected.items():
            np.testing.assert_allclose(stats[name], value, rtol=1e-12, atol=1e-14, err_msg=name)
            seen[name] += value.sum()
        carried = carried_rows_of(state, task)
        for seed in range(config.seeds):
            assert len(carried[seed]) == len(oracle_carried[seed])
            for row, oracle_row in zip(carried[seed], oracle_carried[seed]):
                assert row[:3] == oracle_row[:3]
                assert row[3] == pytest.approx(oracle_row[4], rel=1e-12, abs=1e-12)
    # The case exercised what it is about: cut groups, groups of one, carried rows trained late.
    assert seen["groups_cut"] > 0 and seen["single_groups"] > 0 and seen["carried_rows"] > 0
    if config.epochs > 1:
        assert seen["clipfrac_low"] + seen["clipfrac_high"] > 0


def test_carried_rows_train_against_the_policy_that_sampled_them():
    config = DynamicsConfig(**{**TINY, "policy": "shared", "learning_rate": 0.3})
    method = get_method("ngrpo")
    task = config.build_task()
    rng, order_rng = np.random.default_rng(1), np.random.default_rng(2)
    state = TrainState.start(task, config)
    reference = task.logits(state.params).copy()
    while state.carried is None:
        before = state.params.copy()
        rollout = draw_rollout(task, method, state.params, config, rng, state.carried, order_rng)
        apply_rollout(task, method, config, state, rollout, reference)
    # The carried rows keep the parameters of the rollout that sampled them, not the updated ones.
    np.testing.assert_array_equal(state.carried.sampled_by, before)
    assert not np.allclose(state.params, before)
    carried = state.carried
    update = task.update_batch(state.params, carried.prompts, carried.answers, reference,
                               np.ones(carried.prompts.shape, dtype=bool), carried.sampled_by)
    for seed, u, g in zip(*np.nonzero(carried.rows)):
        prompt, answer = carried.prompts[seed, u], carried.answers[seed, u, g]
        sampler = _softmax(_prompt_logits(task, before, seed, prompt))[answer]
        now = _softmax(_prompt_logits(task, state.params, seed, prompt))[answer]
        assert update.old_logp[seed, u, g] == pytest.approx(math.log(sampler), rel=1e-12)
        # On the next step's first minibatch their ratio is pi_now / pi_sampler, not 1.
        ratio = math.exp(math.log(now) - update.old_logp[seed, u, g])
        assert ratio == pytest.approx(now / sampler, rel=1e-12)
        assert abs(ratio - 1.0) > 1e-6


def test_the_token_task_takes_stale_log_probabilities_per_group():
    config = SequenceConfig(num_prompts=6, vocab_size=2, max_length=3, prompts_per_step=3,
                            group_size=3, minibatches=1, seeds=2, policy="shared", feature_dim=3)
    task = config.build_task()
    rng = np.random.default_rng(0)
    params, stale_params = task.initial_params(2), rng.normal(size=(2, 3))
    # Prompt 1 twice in seed 0: a carried group and a new one share the prompt's prefixes.
    prompts = np.array([[1, 1, 4], [0, 2, 3]])
    tokens = task.sample(params, prompts, 3, rng)
    stale = np.array([[True, False, False], [False, True, True]])
    reference = task.logits(params)
    mixed = task.update_batch(params, prompts, tokens, reference, stale, stale_params)
    fresh = task.update_batch(params, prompts, tokens, reference)
    old = task.update_batch(stale_params, prompts, tokens, reference)
    token_stale = stale[mixed.token_seed, mixed.token_slot]
    np.testing.assert_array_equal(mixed.old_logp, np.where(token_stale, old.old_logp,
                                                           fresh.old_logp))


def test_the_token_gradient_of_single_answers_is_that_of_a_batch_without_the_others():
    config = SequenceConfig(num_prompts=6, vocab_size=2, max_length=3, prompts_per_step=3,
                            group_size=3, minibatches=1, seeds=2, policy="tabular")
    task, method = config.build_task(), get_method("grpo")
    rng = np.random.default_rng(3)
    params = task.initial_params(2)
    prompts = np.array([[1, 0, 4], [5, 2, 3]])
    tokens = task.sample(params, prompts, 3, rng)
    advantages = rng.normal(size=(2, 3, 3))
    answers = rng.random((2, 3, 3)) < 0.5
    reference = task.logits(params) + 0.3
    update = task.update_batch(params, prompts, tokens, reference)
    # The answers outside the part removed: their tokens deleted, their groups still trained.
    without = task.update_batch(params, prompts, np.where(answers[..., None], tokens, -1),
                                reference)
    whole_groups = np.ones((2, 3), dtype=bool)
    coefficients = Coefficients(kl=0.1, entropy=0.01)
    part = update.gradient(params, advantages, answers, method, coefficients)
    reduced = without.gradient(params, advantages, whole_groups, method, coefficients)
    for got, expected in zip(part, reduced):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


# -------------------------------------------------------------------------------------------------
# The control: without a filter nothing is cut, and the release trains the paper's method
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    DynamicsConfig(policy="shared", num_prompts=32, prompts_per_step=8, steps=6, seeds=3,
                   minibatches=1),
    DynamicsConfig(policy="tabular", num_prompts=32, prompts_per_step=8, steps=6, seeds=3,
                   minibatches=1, epochs=2, optimizer="sgd", learning_rate=8.0),
    SequenceConfig(policy="shared", num_prompts=16, prompts_per_step=4, steps=4, seeds=2,
                   minibatches=1, feature_dim=4),
])
def test_without_a_filter_the_release_equals_whole_groups_bit_for_bit(config):
    whole = simulate("grpo", config, progress=False)
    release = simulate("grpo", dataclasses.replace(config, batch_assembly="release"),
                       progress=False)
    for name, value in whole.metrics.items():
        np.testing.assert_array_equal(release.metrics[name], value, err_msg=name)
    np.testing.assert_array_equal(release.pass_at_k, whole.pass_at_k)
    for name in ("groups_cut", "partial_groups", "single_groups", "carried_rows"):
        np.testing.assert_array_equal(release.metrics[name][1:], 0.0)
    np.testing.assert_array_equal(release.metrics["trained_rows"][1:],
                                  config.prompts_per_step * config.group_size)


def test_with_several_minibatches_groups_straddle_them_but_stay_whole():
    config = DynamicsConfig(policy="shared", num_prompts=32, prompts_per_step=8, steps=4,
                            seeds=2, minibatches=4, batch_assembly="release")
    record = simulate("grpo", config, progress=False)
    np.testing.assert_array_equal(record.metrics["partial_groups"][1:], 0.0)
    whole = simulate("grpo", dataclasses.replace(config, batch_assembly="whole_groups"),
                     progress=False)
    # The first rollout is the same (the row order has a random stream of its own); the updates
    # differ, since each minibatch now holds rows of many groups.
    for name in ("share_all_wrong", "share_mixed", "sampled_answers"):
        np.testing.assert_array_equal(record.metrics[name][1], whole.metrics[name][1])
    assert not np.array_equal(record.metrics["accuracy"][1], whole.metrics["accuracy"][1])


# -------------------------------------------------------------------------------------------------
# Refusals
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (dict(batch_assembly="rows"), "batch_assembly must be one of 'whole_groups', 'release'"),
    (dict(batch_assembly="release", mode="expected"),
     "batch_assembly='release' needs mode='sampled' and refill=True"),
    (dict(batch_assembly="release", refill=False),
     "batch_assembly='release' needs mode='sampled' and refill=True"),
])
def test_bad_assembly_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        DynamicsConfig(steps=1, seeds=1, **options)


@pytest.mark.parametrize("method", ["ppo", "psr_nsr", "rl_zvp"])
def test_methods_without_the_release_fallback_are_refused(method):
    config = DynamicsConfig(steps=1, seeds=1, batch_assembly="release")
    with pytest.raises(ValueError, match=f"cannot train method '{method}'"):
        simulate(method, config, progress=False)


def test_the_command_line_refuses_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["dynamics", "--methods", "ngrpo", "--batch-assembly", "release", "--mode",
              "sampled,expected", "--steps", "1", "--seeds", "1", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "batch_assembly='release' needs mode='sampled'" in err
    assert "Traceback" not in err

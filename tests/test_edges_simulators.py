"""The simulators at their numerical edges: policies that become nearly deterministic, and runs
whose learning rate is far too large (issue 21, items 1 and 2)."""

import pickle
from decimal import Decimal, localcontext

import numpy as np
import pytest

from ngrpo_sim import get_method
from ngrpo_sim.cli import main
from ngrpo_sim.methods.metrics import as_probability, log_softmax
from ngrpo_sim.simulators import bandit, optim, sequence_update
from ngrpo_sim.simulators.bandit import BanditTask
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.loop_config import TrainingDiverged
from ngrpo_sim.simulators.sequence_config import SequenceConfig, make_sequence_task
from ngrpo_sim.simulators.task_parts import Coefficients
from ngrpo_sim.simulators.training_loop import simulate

KS = 2 ** np.arange(9)


def exact_probabilities(logits) -> list[Decimal]:
    """softmax of float logits (1-d) in 120-digit decimal arithmetic."""
    with localcontext() as context:
        context.prec = 120
        values = [Decimal(float(x)) for x in logits]
        top = max(values)
        exps = [(x - top).exp() for x in values]
        total = sum(exps)
        return [e / total for e in exps]


# -- 1. Policies that become nearly deterministic ----------------------------------------------

def test_as_probability_changes_nothing_inside_and_clips_rounding_outside():
    values = np.random.default_rng(0).random(1000)
    values[:3] = 0.0, 1.0, 1.0 - 2 ** -53
    np.testing.assert_array_equal(as_probability(values).view(np.int64), values.view(np.int64))
    np.testing.assert_array_equal(as_probability([1.0 + 2 ** -52, -1e-17]), [1.0, 0.0])


def near_deterministic_bandit(rows: int, seed: int = 0):
    """3 correct answers of 4 whose logits lie a few nats apart, and one wrong answer 40 below:
    the success rate is 1 - 4e-18-ish, and the float sum of three probabilities often rounds
    past 1."""
    rng = np.random.default_rng(seed)
    logits = np.concatenate([rng.normal(scale=2.0, size=(rows, 3)), np.full((rows, 1), -40.0)],
                            axis=1)
    rewards = np.tile([1.0, 1.0, 1.0, 0.0], (rows, 1))
    return BanditTask(rewards=rewards, offsets=logits, features=None), logits[None]


def test_bandit_success_rate_with_several_correct_answers_stays_a_probability():
    task, logits = near_deterministic_bandit(2000)
    raw = np.sum(np.exp(log_softmax(logits)) * task.correct, axis=-1)
    assert np.any(raw > 1.0), "the case must round past 1 before the clip"
    success = task.success(logits)
    assert np.all(success <= 1.0)
    for row in range(0, 2000, 97):
        wrong = exact_probabilities(logits[0, row])[3]
        assert abs(success[0, row] - float(1 - wrong)) <= 2 ** -52
    # What the run does with it: pass@k (a strict check of its input) and the expected update.
    metrics, pass_at_k = task.policy_metrics(logits, np.full(2000, 0.5), KS)
    assert np.all(pass_at_k <= 1.0) and metrics["accuracy"][0] <= 1.0
    method = get_method("grpo")
    ascent, _ = task.expected_direction(logits, method, 8, None, logits, Coefficients(0, 0),
                                        None)
    assert np.all(np.isfinite(ascent))


def test_token_success_rate_with_several_keys_stays_a_probability():
    # Without an end token an answer is correct when its last token is a key; at every prefix the
    # 3 keys of 4 tokens lie a few nats apart and the other token 40 below.
    task = make_sequence_task(num_prompts=500, vocab_size=4, max_length=2, end_token=False,
                              correct_answers=3, seed=0)
    keys = (task.rewards == 1.0)[:, None, :]
    normal = np.random.default_rng(1).normal(scale=2.0, size=task.offsets.shape)
    logits = np.where(keys, normal, -40.0)[None]
    probs = np.exp(log_softmax(logits))
    raw = np.sum(task.reach(probs)[..., None] * probs * task.outcome_correct, axis=(-2, -1))
    assert np.any(raw > 1.0), "the case must round past 1 before the clip"
    statistics = task.answer_statistics(logits)
    for success in (task.success(logits), statistics.success):
        assert np.all((success >= 0.0) & (success <= 1.0))
        np.testing.assert_allclose(success, raw, rtol=0, atol=2 ** -52)
    assert np.all(statistics.truncation <= 1.0)
    _, pass_at_k = task.policy_metrics(statistics, np.full(500, 0.5), KS)
    assert np.all(pass_at_k <= 1.0)


@pytest.mark.parametrize("config", [
    # ngrpo-sim dynamics --policy shared --correct-answers 3 stopped late in training with
    # "success_rate must lie in [0, 1], got 1.0000000000000002"; at learning rate 1 it comes early.
    DynamicsConfig(policy="shared", correct_answers=3, learning_rate=1.0, num_prompts=32,
                   prompts_per_step=16, seeds=2, steps=200),
    DynamicsConfig(policy="shared", correct_answers=3, learning_rate=1.0, num_prompts=32,
                   prompts_per_step=16, seeds=2, steps=60, mode="expected"),
    SequenceConfig(correct_answers=2, learning_rate=3.0, num_prompts=32, prompts_per_step=16,
                   seeds=2, steps=10, mode="expected"),
    SequenceConfig(learning_rate=100.0, num_prompts=32, prompts_per_step=16, seeds=2, steps=10),
], ids=["bandit-shared-3-correct", "bandit-expected", "tokens-expected", "tokens-lr-100"])
def test_a_run_into_a_near_deterministic_policy_trains_to_the_end(config):
    record = simulate("grpo", config, progress=False)
    assert np.all((record.final_success >= 0.0) & (record.final_success <= 1.0))
    assert np.all(record.metrics["accuracy"] <= 1.0) and np.all(record.pass_at_k <= 1.0)
    assert np.isfinite(record.metrics["entropy"]).all()


# -- 2. A run that diverges ------------------------------------------------------------------

@pytest.mark.parametrize("config_class, module", [(DynamicsConfig, bandit),
                                                  (SequenceConfig, sequence_update)])
def test_a_learning_rate_of_100_trains_through_ratios_that_underflow_to_zero(config_class, module,
                                                                            monkeypatch):
    # It stopped with "ratio must be positive, got 0.0": one update pushes a sampled token's
    # probability down by more than e^745, which is a valid ratio of 0 for the next minibatch.
    smallest = []
    surrogate = module.clipped_surrogate

    def spy(ratio, *args):
        smallest.append(np.min(ratio))
        return surrogate(ratio, *args)

    monkeypatch.setattr(module, "clipped_surrogate", spy)
    config = config_class(policy="shared", learning_rate=100.0, num_prompts=32,
                          prompts_per_step=16, seeds=2, steps=4)
    record = simulate("grpo", config, progress=False)
    assert min(smallest) == 0.0, "the run must meet a ratio of 0"
    assert np.isfinite(record.metrics["accuracy"]).all()
    assert np.isfinite(record.metrics["approx_kl"][1:]).all()


DIVERGED = (r"^method 'grpo' diverged at step {step} with learning_rate={rate}: .+; lower "
            r"--learning-rate \(learning_rate; the default is 0.05\)$")


@pytest.mark.parametrize("config_class", [DynamicsConfig, SequenceConfig])
@pytest.mark.parametrize("mode", ["sampled", "expected"])
def test_a_diverging_run_stops_with_the_method_step_and_learning_rate(config_class, mode):
    # Adam moves every parameter by about the learning rate at its first update, and 1e308 is
    # next to the largest float: the parameters leave the float range at step 1.
    config = config_class(learning_rate=1e308, num_prompts=32, prompts_per_step=16, seeds=2,
                          steps=3, mode=mode)
    with pytest.raises(TrainingDiverged, match=DIVERGED.format(step=1, rate=r"1e\+308")):
        simulate("grpo", config, progress=False)


@pytest.mark.parametrize("config_class", [DynamicsConfig, SequenceConfig])
def test_divergence_at_a_later_step_names_that_step(config_class, monkeypatch):
    # An update that blows up at the 10th optimiser step: with 4 minibatches per step, the second
    # update of step 3. Nothing of it reaches the next minibatch.
    updates = []
    step = optim.Optimizer.step

    def blowing_up(self, params, grads):
        updates.append(1)
        return step(self, params, grads) * (np.inf if len(updates) == 10 else 1.0)

    monkeypatch.setattr(optim.Optimizer, "step", blowing_up)
    config = config_class(policy="shared", num_prompts=32, prompts_per_step=16, seeds=2, steps=5)
    with pytest.raises(TrainingDiverged, match=DIVERGED.format(step=3, rate="0.05")) as raised:
        simulate("grpo", config, progress=False)
    assert len(updates) == 10
    assert "its parameters are no longer finite after an optimiser update" in str(raised.value)


def test_the_divergence_error_survives_a_trip_between_processes():
    error = TrainingDiverged("ngrpo", 100.0, "its parameters are no longer finite", 7)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and isinstance(copy, ValueError)
    assert "method 'ngrpo' diverged at step 7 with learning_rate=100:" in str(copy)


@pytest.mark.parametrize("command", ["dynamics", "tokens"])
def test_the_command_line_reports_divergence_in_one_line(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--methods", "grpo", "--learning-rate", "1e308", "--steps", "2",
              "--seeds", "2", "--num-prompts", "32", "--prompts-per-step", "8",
              "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    # Before the error only the progress bar (redrawn with \r), and no warning or traceback.
    *bar, error = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("simulating:") for line in bar)
    assert error.startswith(f"ngrpo-sim {command}: error: method 'grpo' diverged at step 1 with "
                            "learning_rate=1e+308: ")
    assert error.endswith("lower --learning-rate (learning_rate; the default is 0.05)")

"""benchmarks/gpu_check.py, the prepared GPU check, in its CPU dry run: tiny sizes, bf16 autocast on
the CPU, every phase of the GPU run (the many-seed launch included, 2 methods x 2 seeds in 4
processes). What a GPU session will run once must not fail for a reason that a CPU could have
shown. Also the check's statistics against scipy, and its worker launcher on failure."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
stats = pytest.importorskip("scipy.stats")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check_seeds  # noqa: E402
import gpu_check_stats  # noqa: E402
from harness import ForwardCounter  # noqa: E402


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    finished = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out",
                               str(out), "--device", "cpu", "--dry-run", "--work-dir",
                               str(out / "work")], capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), out


def test_the_dry_run_passes_every_phase_and_writes_json_png_and_step_logs(dry_run):
    result, out = dry_run
    assert result["ok"] and result["errors"] == {} and result["dry_run"]
    assert set(result["phase_s"]) == {"start-up", "decode", "model", "device_agreement", "resume",
                                      "seeds", "verdict"}
    assert result["resume"]["steps_logged"] == [0, 1, 2, 3]
    assert (out / "gpu_check.png").stat().st_size > 10_000
    assert sorted(path.name for path in (out / "seeds").iterdir()) == [
        "grpo-seed1.jsonl", "grpo-seed2.jsonl", "ngrpo-seed1.jsonl", "ngrpo-seed2.jsonl"]


def test_the_decode_phase_times_each_mode_and_static_draws_the_eager_tokens(dry_run):
    decode = json.loads((dry_run[1] / "gpu_check.json").read_text())["decode"]
    assert set(decode["modes"]) == {"eager", "static"}  # no CUDA graph on a CPU
    for mode in ("eager", "static"):
        entry = decode["modes"][mode]
        assert entry["mode_after"] == mode and entry["failures"] == []
        for length, timing in entry["timings"].items():
            # No forward pass after the last token: one decode step fewer than tokens.
            assert timing["decode_steps"] == int(length) - 1
            # A busy CPU can make the prefill outlast a short pass: then there is no rate to give.
            rate = timing["decode_steps_per_s"]
            assert timing["below_noise"] == (timing["decode_s"] <= 0) == (rate is None)
            assert rate is None or rate == pytest.approx(timing["decode_steps"] / timing["decode_s"])
    agreement = decode["agreement"]
    assert agreement["mode"] == "static" and agreement["token_share_equal"] >= 0.95
    assert agreement["log_prob_max_abs"] <= 0.05  # bf16 autocast on both sides


def test_the_model_is_pretrained_on_answers_with_their_work_within_its_limit(dry_run):
    result = dry_run[0]
    model = result["model"]
    assert model["task"] == "addition-work" and model["pretraining_s"] < 60
    assert result["resume"]["ok"] and all(length > 0 for length in
                                          result["resume"]["response_length"])


def test_bf16_autocast_is_exercised_and_agrees_with_fp32(dry_run):
    agreement = dry_run[0]["device_agreement"]
    # On a CPU "device fp32" is the reference's own arithmetic: equal to the last bit.
    assert agreement["device_fp32"]["loss_abs"] == 0 and agreement["device_fp32"]["agree"]
    bf16 = agreement["device_bf16"]
    assert 0 < bf16["log_prob_max_abs"] <= 0.05 and bf16["agree"]  # it rounded, within bf16
    assert agreement["sampler_decode"] == "static"
    assert 0 < agreement["sampler_log_prob_max_abs"] <= 0.1  # bf16 sampling, fp32 scoring


def test_every_seed_ran_in_its_own_process_to_the_end(dry_run):
    seeds = dry_run[0]["seeds"]
    assert seeds["methods"] == ["ngrpo", "grpo"] and seeds["seeds"] == [1, 2]
    assert seeds["totals"]["processes"] == 4 and seeds["totals"]["steps"] == 12
    for name, run in seeds["runs"].items():
        assert run["finished"] and run["returncode"] == 0 and not run["killed"]
        assert run["decode"] == "static" and run["decode_failures"] == []
        assert [e["step"] for e in run["evaluations"]] == [0, 2, 3]
        assert [r["step"] for r in run["records"]] == [1, 2, 3]
        for record in run["records"]:
            assert record["response_length"] > 0 and 0 <= record["truncated_share"] <= 1
            assert record["entropy"] > 0
        assert run["summary"]["steps_run"] == 3 and run["summary"]["model_tflops_per_s"] > 0
    # The same seed evaluates the same model with the same generator before training.
    runs = seeds["runs"]
    for seed in (1, 2):
        assert runs[f"ngrpo-seed{seed}"]["evaluations"][0] == \
            {**runs[f"grpo-seed{seed}"]["evaluations"][0],
             "time/evaluation_s": runs[f"ngrpo-seed{seed}"]["evaluations"][0]["time/evaluation_s"]}


def test_the_verdict_is_the_paired_t_interval_of_the_runs(dry_run):
    result = dry_run[0]
    runs, verdict = result["seeds"]["runs"], result["verdict"]
    assert verdict["baseline"] == "grpo" and verdict["equal_steps_step"] == 3
    for metric, key in (("pass@1", "eval/pass@1"), ("pass_auc", "eval/pass_auc"),
                        ("answer_length", "eval/response_length")):
        differences = np.array([
            [e[key] for e in runs[f"ngrpo-seed{seed}"]["evaluations"] if e["step"] == 3][0]
            - [e[key] for e in runs[f"grpo-seed{seed}"]["evaluations"] if e["step"] == 3][0]
            for seed in (1, 2)])
        entry = verdict["equal_steps"]["ngrpo"][metric]
        assert entry["pairs"] == 2 and entry["mean"] == pytest.approx(differences.mean())
        if differences.std() > 0:
            low, high = stats.t.interval(0.95, 1, loc=differences.mean(),
                                         scale=stats.sem(differences))
            assert (entry["low"], entry["high"]) == pytest.approx((low, high), rel=1e-9)
    entropy = [np.mean([r["entropy"] for r in runs[f"ngrpo-seed{seed}"]["records"]])
               - np.mean([r["entropy"] for r in runs[f"grpo-seed{seed}"]["records"]])
               for seed in (1, 2)]
    assert verdict["equal_steps"]["ngrpo"]["entropy"]["mean"] == pytest.approx(np.mean(entropy))


def test_the_work_counted_per_step_is_what_the_trainer_does(dry_run):
    """GRPO (no filter, KL to a reference), P prompts of width Wp, R = P G answer rows, answers Wc
    tokens wide: sampling reads each prompt once (P Wp positions) and makes Wc - 1 decode steps
    over the R rows; the reference, the bf16 recomputation of the old log-probabilities and each
    minibatch update read their groups' prompts once and their answers but the last token from
    a copy of the prompt's cache, 2 passes each. The first step also makes the static decoder of
    the training batch's shape: one more pass over its R rows."""
    result = json.loads((dry_run[1] / "work" / "seeds" / "grpo-seed1" / "result.json")
                        .read_text())
    sizes, prompts, rows, prompt_width = dry_run[0]["sizes"], 4, 16, len("1+2=")
    minibatches = sizes["minibatches"]
    assert (sizes["prompts"], sizes["prompts"] * sizes["group_size"]) == (prompts, rows)
    for record in result["records"]:
        first = record["step"] == 1
        trained = record["work/tokens_grad"]
        answer_width, rest = divmod(trained - prompts * prompt_width, rows)
        answer_width += 1
        assert rest == 0 and record["response_length"] <= answer_width
        assert record["work/tokens_no_grad"] == 3 * trained + rows * first
        passes_per_update = 2 if answer_width > 1 else 1
        assert record["work/forward_calls"] == \
            answer_width + 3 * minibatches * passes_per_update + first


def test_the_t_quantile_equals_scipys():
    for df in range(1, 61):
        for probability in (0.6, 0.9, 0.95, 0.975, 0.995, 0.9995):
            assert gpu_check_stats.t_quantile(probability, df) == pytest.approx(
                stats.t.ppf(probability, df), rel=1e-11)
    for t in (0.0, 0.3, 1.0, 2.5, 7.0):
        for df in (1, 2, 3, 10, 31):
            assert gpu_check_stats.t_central_mass(t, df) == pytest.approx(
                stats.t.cdf(t, df) - stats.t.cdf(-t, df), abs=1e-13)


def test_the_paired_difference_is_scipys_t_interval_and_leaves_out_missing_pairs():
    rng = np.random.default_rng(0)
    first, second = rng.normal(0.5, 0.1, 8), rng.normal(0.45, 0.1, 8)
    first[3] = math.nan  # a run that did not finish
    result = gpu_check_stats.paired_difference(first, second)
    kept = (first - second)[~np.isnan(first)]
    low, high = stats.t.interval(0.95, len(kept) - 1, loc=kept.mean(), scale=stats.sem(kept))
    assert result["pairs"] == 7 and result["mean"] == pytest.approx(kept.mean())
    assert (result["low"], result["high"]) == pytest.approx((low, high), rel=1e-10)
    assert gpu_check_stats.paired_difference([1.0], [0.5])["half_width"] is None
    with pytest.raises(ValueError, match="df must be an integer >= 1, got 0"):
        gpu_check_stats.t_quantile(0.975, 0)


def test_a_failing_worker_is_reported_and_a_late_one_killed_keeping_what_they_wrote(tmp_path):
    config = {"model": str(tmp_path / "none"), "method": "nope"}
    spec = {"name": "nope-seed1", "config": config, "deadline": time.time() + 60,
            "eval_every": 1}
    runs = gpu_check_seeds.run_workers([spec], tmp_path / "failed", time.time() + 300)
    run = runs["nope-seed1"]
    assert run["returncode"] == 1 and not run["finished"] and not run["killed"]
    assert "--method must be one of" in run["stderr_tail"]
    runs = gpu_check_seeds.run_workers([{**spec, "name": "late-seed1"}], tmp_path / "late",
                                       time.time() + 0.5)
    assert runs["late-seed1"]["killed"] and runs["late-seed1"]["records"] == []


def test_graph_replays_count_as_forward_work():
    torch = pytest.importorskip("torch")
    model, decoding = torch.nn.Linear(2, 2), {}
    counter = ForwardCounter(model, decoding=decoding)
    decoding.update(graph_replays=5, graph_positions=80)  # before the reset: not this step's
    counter.reset()
    model(torch.zeros(3, 4, 2))  # 3 rows of 4 positions, with a gradient
    decoding.update(graph_replays=7, graph_positions=112)
    assert counter.calls == {"no_grad": 2, "grad": 1}
    assert counter.tokens == {"no_grad": 32, "grad": 12}

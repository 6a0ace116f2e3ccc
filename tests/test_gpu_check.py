"""benchmarks/gpu_check.py, the prepared GPU check, in its CPU dry run: tiny sizes, bf16 autocast on
the CPU, every phase of the GPU run. What a GPU session will run once must not fail for a reason
that a CPU could have shown."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    finished = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out",
                               str(out), "--device", "cpu", "--dry-run", "--work-dir",
                               str(out / "work")], capture_output=True, text=True, timeout=600)
    return finished, out


def test_the_dry_run_passes_every_phase_and_writes_json_and_png(dry_run):
    finished, out = dry_run
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["ok"] and result["errors"] == {} and result["dry_run"]
    assert result["resume"]["steps_logged"] == [0, 1, 2, 3]
    for method in ("ngrpo", "grpo"):
        run = result["runs"][method]
        assert run["steps_run"] == 3 and len(run["records"]) == 3
        assert all(key in run["after"] for key in ("eval/pass@1", "eval/pass@4", "eval/pass_auc"))
        assert run["summary"]["peak_rss_mib"] > 0 and run["summary"]["model_tflops_per_s"] > 0
    assert (out / "gpu_check.png").stat().st_size > 10_000


def test_bf16_autocast_is_exercised_and_agrees_with_fp32(dry_run):
    agreement = json.loads((dry_run[1] / "gpu_check.json").read_text())["device_agreement"]
    # On a CPU "device fp32" is the reference's own arithmetic: equal to the last bit.
    assert agreement["device_fp32"]["loss_abs"] == 0 and agreement["device_fp32"]["agree"]
    bf16 = agreement["device_bf16"]
    assert 0 < bf16["log_prob_max_abs"] <= 0.05 and bf16["agree"]  # it rounded, within bf16


def test_the_work_counted_per_step_is_what_the_trainer_does(dry_run):
    """GRPO (no filter, KL to a reference), P prompts of width Wp, R = P G answer rows, answers Wc
    tokens wide: sampling reads each prompt once (P Wp positions) and makes Wc - 1 decode passes
    over the R rows; the reference, the bf16 recomputation of the old log-probabilities and each of
    the 4 updates (one group each) read the group's prompt once and its answers but their last
    token from a copy of its cache, 2 passes each."""
    result = json.loads((dry_run[1] / "gpu_check.json").read_text())
    sizes, prompts, rows, prompt_width = result["sizes"], 4, 16, len("1+2=")
    assert (sizes["prompts"], sizes["prompts"] * sizes["group_size"]) == (prompts, rows)
    for record in result["runs"]["grpo"]["records"]:
        trained = record["work/tokens_grad"]
        answer_width, rest = divmod(trained - prompts * prompt_width, rows)
        answer_width += 1
        assert rest == 0 and record["response_length"] <= answer_width <= sizes["max_new_tokens"]
        # Sampling, the reference and the recomputation each read what an update reads.
        assert record["work/tokens_no_grad"] == 3 * trained
        passes_per_update = 2 if answer_width > 1 else 1
        assert record["work/forward_calls"] == answer_width + 3 * 4 * passes_per_update

"""The GPU check's many-seed phase: one process per (method, seed), all on the one GPU at once and
all stopped by one deadline, then the verdict: each method against the baseline, paired by seed,
with 95% t-intervals.

At the check's sizes one process leaves the GPU nearly idle (its steps wait on Python and kernel
launches), so 16 processes, each with a CPU core of its own, keep it busy in turns. Each worker
evaluates before it trains and every `eval_every` steps, stops training when the next step and an
evaluation would pass the deadline, evaluates once more and writes its result; the parent kills a
worker still running past the hard deadline and keeps what it wrote.

    python3 benchmarks/gpu_check_seeds.py SPEC.json   # one worker; gpu_check.py starts them
"""
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from gpu_check_stats import paired_difference

ROOT = Path(__file__).resolve().parents[1]
STEP_KEYS = ("step", "sampled_accuracy", "share_all_wrong", "refill_rounds", "response_length",
             "truncated_share", "entropy", "clipfrac_low", "clipfrac_high", "time/step_s",
             "perf/generated_tokens_per_s", "memory/peak_gpu_allocated_mib")
"""Per-step keys kept in gpu_check.json (the worker's records.jsonl has every key)."""
WINDOW = 20
"""Steps over which a training-time metric (token entropy) is averaged for the verdict."""
VERDICT_METRICS = {"pass@1": "eval/pass@1", "pass_auc": "eval/pass_auc",
                   "answer_length": "eval/response_length",
                   "truncated_share": "eval/truncated_share", "entropy": "entropy"}
"""The verdict's metrics: held-out pass@1, pass@k AUC, mean answer length (tokens) and share of
answers cut at max_new_tokens (T 0.6, top-p 0.95), and the update's token entropy (nats, the mean
of the last WINDOW steps)."""


def write_json(path: Path, value) -> None:
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(value, default=float))
    os.replace(staging, path)  # a process killed while writing keeps the last complete file


# --------------------------------------------------------------------------------------------------
# The parent: start the workers, wait for them, collect
# --------------------------------------------------------------------------------------------------
def run_workers(specs: list, work: Path, hard_deadline: float,
                report_every_s: float = 30.0) -> dict:
    """Start one worker per spec (each {"name", "config", "deadline", "eval_every"}), wait until
    all have ended or `hard_deadline` (time.time()) has passed, kill those still running, and
    return {name: the worker's result, or what it left}."""
    processes = {}
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "TOKENIZERS_PARALLELISM": "false"}
    for spec in specs:
        folder = work / spec["name"]
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "spec.json", spec)
        with open(folder / "stdout.log", "w") as stdout, open(folder / "stderr.log", "w") as stderr:
            processes[spec["name"]] = subprocess.Popen(
                [sys.executable, str(Path(__file__)), str(folder / "spec.json")], cwd=ROOT,
                stdout=stdout, stderr=stderr, env=environment)
    killed, reported = set(), time.time()
    while any(process.poll() is None for process in processes.values()):
        if time.time() > hard_deadline:
            for name, process in processes.items():
                if process.poll() is None:
                    process.kill()  # by its own handle: only the workers this phase started
                    killed.add(name)
            for process in processes.values():
                process.wait()
            break
        if time.time() - reported > report_every_s:
            reported = time.time()
            steps = {name: count_lines(work / name / "records.jsonl") for name in processes}
            print("steps so far: " + ", ".join(f"{name} {count}" for name, count in steps.items()),
                  flush=True)
        time.sleep(0.5)
    return {name: collect(work / name, process.returncode, name in killed)
            for name, process in processes.items()}


def count_lines(path: Path) -> int:
    return sum(1 for _ in open(path)) if path.is_file() else 0


def collect(folder: Path, returncode: int, killed: bool) -> dict:
    """A worker's result.json, or (killed, failed) what it left: its step records and
    evaluations, with the end of its stderr."""
    result = json.loads((folder / "result.json").read_text()) \
        if (folder / "result.json").is_file() else {"finished": False, "evaluations": []}
    if not result.get("finished"):
        lines = (folder / "records.jsonl").read_text().splitlines() \
            if (folder / "records.jsonl").is_file() else []
        result["records"] = [json.loads(line) for line in lines if line.strip()]
    result.update(returncode=returncode, killed=killed)
    if returncode != 0:
        result["stderr_tail"] = (folder / "stderr.log").read_text()[-3000:]
    return result


# --------------------------------------------------------------------------------------------------
# A worker: one method and seed, trained to the deadline
# --------------------------------------------------------------------------------------------------
def train_to_deadline(spec: dict, folder: Path) -> None:
    """The trainer's own steps, timed after a device synchronisation, with evaluations at step 0,
    every `eval_every` steps and at the last step. Model FLOPs per step: 2 N per token position
    read without a gradient (sampling, the KL reference, the bf16 recomputation of the old
    log-probabilities) and 6 N per position trained (Kaplan et al. 2020, arXiv 2001.08361, eq.
    2.1), N the parameters."""
    import torch
    from harness import ForwardCounter, load_trainer
    trainer = load_trainer()
    torch.set_num_threads(1)
    started = time.perf_counter()
    config = trainer.with_task_defaults(trainer.Config(**spec["config"]))
    method = trainer.resolve_method(config)
    device = trainer.pick_device(config)
    policy = trainer.load_policy(Path(config.model), device, config.precision, config.decode)
    reference = trainer.load_policy(Path(config.model), device, config.precision, "eager") \
        .model.requires_grad_(False) if method.kl_coef else None
    optimizer = trainer.make_optimizer(policy.model, config)
    task = trainer.make_task(config)
    task = task._replace(reward=trainer.GuardedReward(task.reward))
    prompt_rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device).manual_seed(config.seed)
    parameters = sum(p.numel() for p in policy.model.parameters())
    counter = ForwardCounter(policy.model, *([reference] if reference is not None else []),
                             decoding=policy.decoding)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result = {"method": config.method, "seed": config.seed, "finished": False,
              "parameters": parameters, "load_s": time.perf_counter() - started,
              "evaluations": [], "decode": policy.decode}

    def evaluate(step):
        begun = time.perf_counter()
        values = trainer.evaluate(policy, task, config, step)
        synchronize()
        result["evaluations"].append({"step": step, **values,
                                      "time/evaluation_s": time.perf_counter() - begun})
        result.update(decode=policy.decode, decode_failures=policy.decoding.get("failures", []))
        write_json(folder / "result.json", result)

    evaluate(0)
    records, deadline = [], spec["deadline"]
    with open(folder / "records.jsonl", "a") as log:
        for step in range(1, config.steps + 1):
            counter.reset()
            begun = time.perf_counter()
            record = trainer.training_step(policy, reference, optimizer, task, config, method,
                                           prompt_rng, generator)
            synchronize()
            step_s = time.perf_counter() - begun
            tokens = counter.tokens
            flops = 2 * parameters * tokens["no_grad"] + 6 * parameters * tokens["grad"]
            record = {"step": step, **record, "time/step_s": step_s,
                      "work/forward_calls": sum(counter.calls.values()),
                      "work/tokens_no_grad": tokens["no_grad"],
                      "work/tokens_grad": tokens["grad"], "perf/model_flops_per_s": flops / step_s}
            records.append(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
            if step % spec["eval_every"] == 0:
                evaluate(step)
            typical = statistics.median(r["time/step_s"] for r in records)
            evaluation_s = max(e["time/evaluation_s"] for e in result["evaluations"])
            if time.time() + typical + 1.2 * evaluation_s > deadline:
                break
    counter.detach()
    if result["evaluations"][-1]["step"] != len(records):
        evaluate(len(records))
    result.update(finished=True, records=records, steps_run=len(records),
                  wall_s=time.perf_counter() - started)
    write_json(folder / "result.json", result)


# --------------------------------------------------------------------------------------------------
# Summaries and the verdict
# --------------------------------------------------------------------------------------------------
def summarise(run: dict, peak_tflops: float | None) -> dict:
    """One run in numbers: steps, medians of its step times and rates, first and last
    evaluation."""
    records, evaluations = run.get("records") or [], run.get("evaluations") or []
    timed = records[3:] or records  # the first steps compile, capture and warm caches

    def median(key):
        values = [record[key] for record in timed if key in record]
        return statistics.median(values) if values else None
    summary = {"steps_run": len(records), "finished": bool(run.get("finished")),
               "median_step_s": median("time/step_s"),
               "median_generation_s": median("time/generation_s"),
               "generated_tokens_per_s": median("perf/generated_tokens_per_s"),
               "model_tflops_per_s": (median("perf/model_flops_per_s") or 0) / 1e12,
               "decode": run.get("decode")}
    if evaluations:
        summary.update({f"{key}_{when}": evaluation.get(key) for when, evaluation
                        in (("before", evaluations[0]), ("after", evaluations[-1]))
                        for key in ("eval/pass@1", "eval/pass_auc", "eval/response_length",
                                    "eval/truncated_share")})
    for key in ("memory/peak_gpu_allocated_mib", "memory/peak_rss_mib"):
        values = [record[key] for record in records if key in record]
        if values:
            summary[key.split("/")[1]] = max(values)
    if peak_tflops:
        summary["mfu"] = summary["model_tflops_per_s"] / peak_tflops
    return summary


def metric_at(run: dict, metric: str, step: int | None) -> float:
    """A verdict metric of one run at `step` (None: its last evaluation); NaN if missing."""
    key = VERDICT_METRICS[metric]
    evaluations = run.get("evaluations") or []
    if step is None:
        step = evaluations[-1]["step"] if evaluations else -1
    if key.startswith("eval/"):
        found = [e[key] for e in evaluations if e["step"] == step and key in e]
        return float(found[0]) if found else math.nan
    window = [r[key] for r in run.get("records") or [] if step - WINDOW < r["step"] <= step
              and key in r]
    return float(np.mean(window)) if window else math.nan


def common_step(runs: dict) -> int:
    """The last evaluation step that every run with an evaluation after step 0 reached."""
    reached = [{e["step"] for e in run["evaluations"]} for run in runs.values()
               if len(run.get("evaluations") or []) > 1]
    shared = set.intersection(*reached) if reached else {0}
    return max(shared)


def verdict(runs: dict, methods: list, seeds: list, baseline: str) -> dict:
    """Each method against `baseline`, paired by seed: the difference's mean with its 95%
    t-interval for every VERDICT_METRICS entry, at equal steps (the last evaluation step that every
    run reached) and at equal time (each run's last evaluation, at the shared deadline)."""
    step = common_step(runs)
    result = {"baseline": baseline, "level": 0.95, "seeds": seeds, "equal_steps_step": step,
              "equal_steps": {}, "equal_time": {}}
    for method in methods:
        if method == baseline:
            continue
        for when, at in (("equal_steps", step), ("equal_time", None)):
            result[when][method] = {}
            for metric in VERDICT_METRICS:
                mine, theirs = ([metric_at(runs.get(f"{name}-seed{seed}", {}), metric, at)
                                 for seed in seeds] for name in (method, baseline))
                result[when][method][metric] = {
                    **paired_difference(mine, theirs), "method_mean": float(np.nanmean(mine))
                    if not np.all(np.isnan(mine)) else None,
                    "baseline_mean": float(np.nanmean(theirs))
                    if not np.all(np.isnan(theirs)) else None}
    return result


def describe(verdict_: dict) -> list:
    """The verdict in lines of text: one per method and metric, at equal steps."""
    lines = []
    for method, metrics in verdict_["equal_steps"].items():
        for metric, value in metrics.items():
            if value["half_width"] is None:
                lines.append(f"{method} - {verdict_['baseline']} {metric}: "
                             f"{value['mean']} ({value['pairs']} pair(s), no interval)")
                continue
            sign = "above" if value["low"] > 0 else "below" if value["high"] < 0 else \
                "no difference shown"
            lines.append(f"{method} - {verdict_['baseline']} {metric} at step "
                         f"{verdict_['equal_steps_step']}: {value['mean']:+.4g} "
                         f"[{value['low']:+.4g}, {value['high']:+.4g}] "
                         f"({value['pairs']} seeds; {sign})")
    return lines


if __name__ == "__main__":
    spec_path = Path(sys.argv[1])
    train_to_deadline(json.loads(spec_path.read_text()), spec_path.parent)

"""A prepared check of minimal/ngrpo_train.py on one GPU: speed, memory, learning, agreement.

One command that ends within --budget-s (420 s; under 8 minutes with start-up on one H100/H200)
and needs nothing from the network and no package beyond numpy, torch, transformers and tqdm
(matplotlib draws the figure where it is installed; `--plot` draws it later from the JSON):

1. builds a Qwen2 of 33.6M parameters (hidden 512, 8 layers) with the trainer's character
   tokenizer and pre-trains it on 3-digit addition until its sampled accuracy reaches 12%, so that
   most groups of 8 still fail;
2. scores one rollout batch on the GPU and on the CPU in fp32: the advantages, every answer token's
   log-probability, the loss and the gradient norm, in bf16 autocast (must agree within bf16
   rounding) and in fp32 (within fp32 rounding);
3. times decoding against its memory-bandwidth bound: a decode step reads every weight at least
   once, so at most bandwidth / weight bytes steps per second, one token per row each;
4. runs the trainer's own `train()` for 2 steps and resumes it from its checkpoint for a third
   (checkpoints, RNG states, figures on the device);
5. trains NGRPO and GRPO for up to 300 steps each in bf16 autocast, B = 64 prompts x G = 8 answers,
   4 minibatch updates per step: step time, generated and trained tokens/s, peak memory, model
   FLOP utilisation (MFU), held-out pass@k (512 prompts x 16 answers) before and after. Each method
   gets an equal share of the time left, so training may stop early; the steps run are recorded.

Writes OUT/gpu_check.json (every number and every step's log line) and OUT/gpu_check.png. Exits 1
if a phase failed or the devices disagree (all that was measured is written all the same).

    python3 benchmarks/gpu_check.py --out "$OUT"                          # on the GPU machine
    python3 benchmarks/gpu_check.py --out /tmp/check --device cpu --dry-run  # tiny sizes, a CPU
    python3 benchmarks/gpu_check.py --plot docs/gpu_check/gpu_check.json  # redraw the figure
"""
import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import transformers
from harness import ForwardCounter, load_trainer
from tqdm import tqdm

trainer = load_trainer()


@dataclasses.dataclass(frozen=True)
class Sizes:
    architecture: dict
    """Qwen2Config fields of the model."""
    digits: int
    prompts: int
    """B, prompts per rollout batch."""
    group_size: int
    max_new_tokens: int
    eval_prompts: int
    eval_samples: int
    compare_prompts: int
    """Prompts of the batch scored on both devices."""
    decode_tokens: int
    """Tokens per row in the decode timing."""
    sft_lr: float
    sft_accuracy: float
    steps: int | None
    """Most steps per method (None: --steps)."""


FULL = Sizes(dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=64,
                  tie_word_embeddings=True),
             digits=3, prompts=64, group_size=8, max_new_tokens=8, eval_prompts=512,
             eval_samples=16, compare_prompts=16, decode_tokens=32, sft_lr=3e-4, sft_accuracy=0.12,
             steps=None)
DRY_RUN = Sizes(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                     tie_word_embeddings=True),
                digits=1, prompts=4, group_size=4, max_new_tokens=4, eval_prompts=8,
                eval_samples=4, compare_prompts=2, decode_tokens=8, sft_lr=1e-2, sft_accuracy=0.05,
                steps=3)
# Dense bf16 tensor-core peak (TFLOP/s) and memory bandwidth (GB/s) from NVIDIA's data sheets, for
# the first entry whose words the device name contains; --peak-tflops and --bandwidth-gbs override.
DATASHEET = [(("H200",), 989.0, 4800.0), (("H100", "NVL"), 835.0, 3900.0),
             (("H100", "PCIe"), 756.0, 2000.0), (("H100",), 989.0, 3350.0),
             (("A100", "80GB"), 312.0, 2039.0), (("A100",), 312.0, 1555.0),
             (("L40S",), 362.0, 864.0), (("L4",), 121.0, 300.0), (("4090",), 165.0, 1008.0)]
# Agreement with the CPU in fp32: each answer token's log-probability (nats), the loss relative to
# its scale sum_t w_t |A_t| rho_t, the gradient norm relative. bf16 keeps 8 significant bits.
TOLERANCE = {"bf16": {"log_prob": 0.05, "loss": 0.03, "grad_norm": 0.05},
             "fp32": {"log_prob": 1e-3, "loss": 1e-4, "grad_norm": 1e-3}}
WARM_UP_STEPS = 3
"""Steps left out of the medians."""


def parse_options(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for gpu_check.json and gpu_check.png (created)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="where to train (default cuda)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes (a 1-layer model, 1-digit sums, 3 steps per method): "
                             "every code path in about a minute on a CPU, in bf16 autocast")
    parser.add_argument("--steps", type=int, default=300,
                        help="most training steps per method (default 300)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="seconds for the whole check; training stops early to keep it")
    parser.add_argument("--methods", default="ngrpo,grpo",
                        help="methods of the trainer, with commas")
    parser.add_argument("--learning-rate", type=float, default=3e-5,
                        help="AdamW learning rate of the RL runs (default 3e-5)")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's dense bf16 peak, where the table lacks the device")
    parser.add_argument("--bandwidth-gbs", type=float,
                        help="the device's memory bandwidth, where the table lacks the device")
    parser.add_argument("--work-dir",
                        help="where the model and the runs are built (default: a new temporary "
                             "folder)")
    parser.add_argument("--plot", metavar="JSON", help="only draw the figure of an earlier JSON")
    options = parser.parse_args(argv)
    if options.plot is None and options.out is None:
        parser.error("--out is required (or --plot JSON)")
    if options.plot is None and options.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; for a CPU check use "
                     "--device cpu --dry-run")
    if options.steps < 1 or options.budget_s <= 0:
        parser.error(f"--steps must be >= 1 and --budget-s > 0, got {options.steps} and "
                     f"{options.budget_s}")
    return options


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device, options) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        platform.processor() or platform.machine()
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__,
            "device": str(device), "device_name": name, "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(cuda=torch.version.cuda, gpu_memory_gib=properties.total_memory / 2 ** 30,
                    multiprocessors=properties.multi_processor_count,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    known = next(((tflops, bandwidth) for words, tflops, bandwidth in DATASHEET
                  if device.type == "cuda" and all(word in name for word in words)), (None, None))
    info["peak_bf16_tflops"] = options.peak_tflops or known[0]
    info["bandwidth_gb_s"] = options.bandwidth_gbs or known[1]
    info["peak_source"] = ("command line" if options.peak_tflops or options.bandwidth_gbs else
                           "NVIDIA data sheet (dense bf16)" if known[0] else
                           "unknown: pass --peak-tflops and --bandwidth-gbs")
    return info


def method_config(sizes: Sizes, options, folder: Path, method: str, **changes):
    settings = dict(model=str(folder), method=method, digits=sizes.digits,
                    prompts_per_step=sizes.prompts, group_size=sizes.group_size, minibatches=4,
                    max_new_tokens=sizes.max_new_tokens, learning_rate=options.learning_rate,
                    eval_prompts=sizes.eval_prompts, eval_samples=sizes.eval_samples,
                    device=options.device, precision="bf16", seed=1,
                    steps=sizes.steps or options.steps)
    return trainer.Config(**{**settings, **changes})


def build_model(sizes: Sizes, work: Path, device: torch.device) -> tuple:
    config = trainer.Config(digits=sizes.digits, sft_accuracy=sizes.sft_accuracy,
                            cache_dir=str(work))
    started = time.perf_counter()
    folder = trainer.build_tiny_model(config, sizes.architecture, sizes.sft_lr, device)
    model = trainer.load_policy(folder, torch.device("cpu"), "fp32").model
    return folder, {"architecture": sizes.architecture,
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                    "pretraining_s": time.perf_counter() - started,
                    "sft_accuracy_target": sizes.sft_accuracy}


def device_agreement(folder: Path, sizes: Sizes, options, device: torch.device) -> dict:
    """One NGRPO batch sampled on the device, then scored on the device (bf16 autocast, fp32) and
    on the CPU (fp32): the same inputs, so only the arithmetic differs."""
    config = method_config(sizes, options, folder, "ngrpo", prompts_per_step=sizes.compare_prompts,
                           minibatches=1)
    method, task = trainer.resolve_method(config), trainer.make_task(config)
    sampler = trainer.load_policy(folder, device, "bf16")
    examples = task.draw(np.random.default_rng(7), sizes.compare_prompts)
    rewards, batch, _ = trainer.rollout(sampler, task, examples, sizes.group_size, 1.0, 1.0,
                                        sizes.max_new_tokens,
                                        torch.Generator(device).manual_seed(7))
    advantages = trainer.group_advantages(rewards, method).ravel()
    scored = {}
    variants = (("cpu_fp32", torch.device("cpu"), "fp32"), ("device_fp32", device, "fp32"),
                ("device_bf16", device, "bf16"))
    for name, where, precision in variants:
        policy = trainer.load_policy(folder, where, precision)
        inputs = trainer.Batch(**{name: value.to(where) for name, value in vars(batch).items()
                                  if value is not None})
        inputs.advantages = torch.tensor(advantages, dtype=torch.float32, device=where)
        rows = torch.arange(len(advantages), device=where)
        with torch.no_grad():
            log_probs, _ = trainer.completion_log_probs(policy, policy.model, inputs, rows, 1.0)
        optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.0)  # keeps the weights
        stats = trainer.update_policy(policy, None, optimizer, inputs, method, config)
        scored[name] = dict(advantages=inputs.advantages.cpu(), log_probs=log_probs.cpu(),
                            loss=stats["loss"], grad_norm=stats["grad_norm"])
    mask, reference = batch.completion_mask.cpu().bool(), scored["cpu_fp32"]
    ratio = (reference["log_probs"] - batch.old_logp.cpu()).exp()
    loss_scale = float((mask / mask.sum() * ratio * reference["advantages"][:, None].abs()).sum())
    result = {"answers": len(advantages), "answer_tokens": int(mask.sum()),
              "mean_reward": float(rewards.mean()), "loss_scale": loss_scale,
              "advantages": "computed on the host in float64 on both sides (as the trainer does), "
                            "so they agree by construction; the loss is the check",
              "cpu_fp32": {"loss": reference["loss"], "grad_norm": reference["grad_norm"]}}
    for name, precision in (("device_fp32", "fp32"), ("device_bf16", "bf16")):
        mine, tolerance = scored[name], TOLERANCE[precision]
        loss_abs = abs(mine["loss"] - reference["loss"])
        differences = {
            "advantages_max_abs": float((mine["advantages"] - reference["advantages"]).abs().max()),
            "log_prob_max_abs": float((mine["log_probs"] - reference["log_probs"])[mask].abs()
                                      .max()),
            "loss_abs": loss_abs, "loss_relative_to_scale": loss_abs / max(loss_scale, 1e-12),
            "grad_norm_relative": abs(mine["grad_norm"] - reference["grad_norm"])
            / max(reference["grad_norm"], 1e-12)}
        agree = (differences["advantages_max_abs"] == 0.0
                 and differences["log_prob_max_abs"] <= tolerance["log_prob"]
                 and differences["loss_relative_to_scale"] <= tolerance["loss"]
                 and differences["grad_norm_relative"] <= tolerance["grad_norm"])
        result[name] = {"loss": mine["loss"], "grad_norm": mine["grad_norm"], **differences,
                        "tolerance": tolerance, "agree": bool(agree)}
    return result


def decode_speed(folder: Path, sizes: Sizes, options, device: torch.device, weight_bytes: int,
                 info: dict) -> dict:
    """Decode steps per second for B x G rows, against bandwidth / weight bytes. End tokens are
    banned here, so that every row decodes `decode_tokens` tokens."""
    policy = trainer.load_policy(folder, device, "bf16")
    banned = sorted({*policy.banned.tolist(), *policy.end_ids})
    policy = dataclasses.replace(policy, banned=torch.tensor(banned, device=device))
    task = trainer.make_task(method_config(sizes, options, folder, "ngrpo"))
    prompts = [example["prompt"] for example in task.draw(np.random.default_rng(3), sizes.prompts)]
    prompt_ids, prompt_mask = trainer.encode_prompts(policy.tokenizer, prompts, device)
    counter, generator = ForwardCounter(policy.model), torch.Generator(device).manual_seed(3)

    def timed(new_tokens):
        synchronize(device)
        counter.reset()
        started = time.perf_counter()
        with policy.autocast():
            trainer.sample(policy, prompt_ids, prompt_mask, sizes.group_size, new_tokens, 1.0, 1.0,
                           generator)
        synchronize(device)
        return time.perf_counter() - started, counter.calls["no_grad"]
    timed(sizes.decode_tokens)  # warm-up
    prefill_s, decode_s = [], []
    for _ in range(5):
        (prefill, prefill_calls), (full, full_calls) = timed(1), timed(sizes.decode_tokens)
        prefill_s.append(prefill)
        decode_s.append(full - prefill)
    counter.detach()
    rows, steps = sizes.prompts * sizes.group_size, full_calls - prefill_calls
    seconds = statistics.median(decode_s)
    result = {"rows": rows, "decode_steps": steps, "prefill_s": statistics.median(prefill_s),
              "decode_s": seconds, "decode_steps_per_s": steps / seconds,
              "decode_tokens_per_s": rows * steps / seconds, "weight_bytes": weight_bytes}
    if info["bandwidth_gb_s"]:
        bound = info["bandwidth_gb_s"] * 1e9 / weight_bytes
        result.update(bound_decode_steps_per_s=bound, bound_decode_tokens_per_s=rows * bound,
                      share_of_bound=result["decode_steps_per_s"] / bound)
    return result


def resume_through_train(folder: Path, sizes: Sizes, options, work: Path) -> dict:
    """trainer.train for 2 steps with a checkpoint at each, then resumed for a third."""
    if importlib.util.find_spec("matplotlib") is None:
        return {"ok": True, "skipped": "trainer.train draws curves.png with matplotlib, which is "
                                       "missing here"}
    config = method_config(sizes, options, folder, "ngrpo", steps=2, prompts_per_step=8,
                           minibatches=2, eval_prompts=16, eval_samples=2, eval_every=100,
                           checkpoint_every=1, run_dir=str(work / "resume"))
    trainer.train(config)
    run = trainer.train(dataclasses.replace(config, steps=3, resume=True))
    steps = [record["step"] for record in trainer.read_metrics(run)]
    return {"steps_logged": steps, "ok": steps == [0, 1, 2, 3] and (run / "curves.png").is_file()}


def train_method(method: str, folder: Path, sizes: Sizes, options, device: torch.device,
                 deadline: float, parameters: int) -> dict:
    """The trainer's own steps, each timed on the host after a device synchronisation. Model FLOPs
    per step: 2 N per token position read without a gradient (sampling, the KL reference) and
    6 N per position trained (forward and backward), N the parameters (Kaplan et al. 2020,
    arXiv 2001.08361, eq. 2.1; attention over these short contexts adds under 1%)."""
    config = method_config(sizes, options, folder, method)
    restated = trainer.resolve_method(config)
    policy = trainer.load_policy(folder, device, config.precision)
    reference = trainer.load_policy(folder, device).model.requires_grad_(False) \
        if restated.kl_coef else None
    optimizer = trainer.make_optimizer(policy.model, config)
    task = trainer.make_task(config)
    task = task._replace(reward=trainer.GuardedReward(task.reward))
    prompt_rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device).manual_seed(config.seed)
    counter = ForwardCounter(policy.model, *([reference] if reference is not None else []))
    started = time.perf_counter()
    before = trainer.evaluate(policy, task, config, 0)
    synchronize(device)
    evaluation_s = time.perf_counter() - started
    records, progress = [], tqdm(range(1, config.steps + 1), desc=f"{method} on {device}")
    for step in progress:
        counter.reset()
        started = time.perf_counter()
        record = trainer.training_step(policy, reference, optimizer, task, config, restated,
                                       prompt_rng, generator)
        synchronize(device)
        step_s = time.perf_counter() - started
        flops = 2 * parameters * counter.tokens["no_grad"] + 6 * parameters * counter.tokens["grad"]
        records.append({"step": step, **record, "time/step_s": step_s,
                        "work/forward_calls": sum(counter.calls.values()),
                        "work/tokens_no_grad": counter.tokens["no_grad"],
                        "work/tokens_grad": counter.tokens["grad"],
                        "perf/model_flops_per_s": flops / step_s})
        progress.set_postfix(reward=f"{record['reward']:.3f}", step_ms=f"{step_s * 1e3:.0f}")
        typical = statistics.median(r["time/step_s"] for r in records)
        if time.perf_counter() + typical + evaluation_s > deadline:
            break
    progress.close()
    after = trainer.evaluate(policy, task, config, len(records))
    counter.detach()
    return {"steps_requested": config.steps, "steps_run": len(records),
            "evaluation_s": evaluation_s, "before": before, "after": after, "records": records}


def summarise(run: dict, info: dict) -> dict:
    records = run["records"]
    timed = records[WARM_UP_STEPS:] or records

    def median(key):
        return statistics.median(record[key] for record in timed)
    summary = {"steps_run": run["steps_run"], "median_step_s": median("time/step_s"),
               "median_generation_s": median("time/generation_s"),
               "median_training_s": median("time/training_s"),
               "generated_tokens_per_s": median("perf/generated_tokens_per_s"),
               "trained_tokens_per_s": median("perf/trained_tokens_per_s"),
               "model_tflops_per_s": median("perf/model_flops_per_s") / 1e12,
               "pass@1_before": run["before"]["eval/pass@1"],
               "pass@1_after": run["after"]["eval/pass@1"],
               "pass_auc_before": run["before"].get("eval/pass_auc"),
               "pass_auc_after": run["after"].get("eval/pass_auc"),
               "share_all_wrong_first_10": float(np.mean([r["share_all_wrong"]
                                                           for r in records[:10]])),
               "share_all_wrong_last_10": float(np.mean([r["share_all_wrong"]
                                                          for r in records[-10:]]))}
    for key in ("memory/peak_rss_mib", "memory/peak_gpu_allocated_mib"):
        if key in records[0]:
            summary[key.split("/")[1]] = max(record[key] for record in records)
    if info["peak_bf16_tflops"]:
        summary["mfu"] = summary["model_tflops_per_s"] / info["peak_bf16_tflops"]
    return summary


def write_json(path: Path, result: dict) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(result, indent=1, default=float))
    os.replace(staging, path)  # a check killed while writing keeps the last complete file


def plot(result: dict, path: Path) -> bool:
    """The check's figure at `path`; False, with a message, where matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed here: draw the figure elsewhere with python3 "
              f"benchmarks/gpu_check.py --plot {path.with_suffix('.json')}")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = result.get("runs", {})
    on_gpu = any("memory/peak_gpu_allocated_mib" in run["records"][0] for run in runs.values())
    memory_key = "memory/peak_gpu_allocated_mib" if on_gpu else "memory/peak_rss_mib"
    figure, axes = plt.subplots(1, 4, figsize=(17, 3.8), constrained_layout=True)
    for method, run in runs.items():
        colour = trainer.METHOD_COLOURS.get(method, "#000000")
        steps = [record["step"] for record in run["records"]]
        axes[0].plot(*trainer.curve(run["records"], "sampled_accuracy"), color=colour, label=method)
        axes[1].plot(steps, [r["time/step_s"] * 1e3 for r in run["records"]], color=colour,
                     label=method)
        ks = sorted(int(key.split("@")[1]) for key in run["after"] if key.startswith("eval/pass@"))
        axes[2].plot(ks, [run["before"][f"eval/pass@{k}"] for k in ks], ":", color=colour,
                     marker="o")
        axes[2].plot(ks, [run["after"][f"eval/pass@{k}"] for k in ks], "-", color=colour,
                     marker="o", label=f"{method}, after {run['steps_run']} steps")
        axes[3].plot(steps, [r[memory_key] for r in run["records"]], color=colour, label=method)
    axes[0].set(title="training accuracy (20-step mean)", xlabel="step",
                ylabel="share of answers right")
    axes[1].set(title="step time (rollout + 4 updates)", xlabel="step", ylabel="ms")
    axes[2].set(title="held-out pass@k (dotted: before)", xlabel="k", ylabel="pass@k")
    axes[2].set_xscale("log", base=2)
    axes[3].set(title="peak GPU memory allocated" if on_gpu else "peak resident memory",
                xlabel="step", ylabel="MiB")
    for ax in axes:
        ax.legend(fontsize=7)
    notes = [f"{result['model']['parameters']:,} parameters, bf16 autocast"]
    notes += [f"{method} MFU {run['summary']['mfu']:.2%}" for method, run in runs.items()
              if "mfu" in run["summary"]]
    decode = result.get("decode") or {}
    if "share_of_bound" in decode:
        notes.append(f"decoding at {decode['share_of_bound']:.1%} of the bandwidth bound")
    figure.suptitle(f"minimal/ngrpo_train.py on {result['environment']['device_name']}: "
                    + "; ".join(notes))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def run_check(options) -> int:
    started = time.perf_counter()
    device, sizes = torch.device(options.device), DRY_RUN if options.dry_run else FULL
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(options.work_dir or tempfile.mkdtemp(prefix="gpu_check-"))
    info = environment(device, options)
    result = {"command": " ".join(sys.argv), "dry_run": options.dry_run,
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "sizes": dataclasses.asdict(sizes), "learning_rate": options.learning_rate,
              "budget_s": options.budget_s, "environment": info, "errors": {}, "runs": {}}
    print(f"gpu_check on {info['device_name']} ({device}), torch {torch.__version__}, "
          f"transformers {transformers.__version__}; budget {options.budget_s:.0f} s")

    def phase(name, function):
        try:
            return function()
        except Exception as error:  # keep going: one lent GPU session must bring back all it can
            result["errors"][name] = "".join(traceback.format_exception(error))
            print(f"{name} failed: {error!r}", file=sys.stderr)
            return None
        finally:
            result["elapsed_s"] = time.perf_counter() - started
            write_json(out / "gpu_check.json", result)

    built = phase("model", lambda: build_model(sizes, work, device))
    if built is None:
        return 1
    folder, result["model"] = built
    print(f"model: {result['model']['parameters']:,} parameters, pre-trained in "
          f"{result['model']['pretraining_s']:.0f} s")
    result["device_agreement"] = phase("device_agreement",
                                       lambda: device_agreement(folder, sizes, options, device))
    result["decode"] = phase("decode", lambda: decode_speed(
        folder, sizes, options, device, result["model"]["weight_bytes"], info))
    result["resume"] = phase("resume", lambda: resume_through_train(folder, sizes, options, work))
    methods = [name.strip() for name in options.methods.split(",") if name.strip()]
    for position, method in enumerate(methods):
        left = options.budget_s - (time.perf_counter() - started) - 5.0  # 5 s to write it all
        deadline = time.perf_counter() + left / (len(methods) - position)
        run = phase(f"train_{method}", lambda: train_method(
            method, folder, sizes, options, device, deadline, result["model"]["parameters"]))
        if run is not None:
            result["runs"][method] = {"summary": summarise(run, info), **run}
            print(f"{method}: {json.dumps(result['runs'][method]['summary'])}")
    agreement = result.get("device_agreement") or {}
    result["agree"] = all(agreement.get(name, {}).get("agree", False)
                          for name in ("device_fp32", "device_bf16"))
    result["ok"] = not result["errors"] and result["agree"] and \
        bool((result.get("resume") or {}).get("ok"))
    result["elapsed_s"] = time.perf_counter() - started
    write_json(out / "gpu_check.json", result)
    plot(result, out / "gpu_check.png")
    for name in ("device_fp32", "device_bf16"):
        print(f"{name} against cpu_fp32: {json.dumps(agreement.get(name))}")
    verdict = "ok" if result["ok"] else \
        f"FAILED ({', '.join(result['errors']) or 'see agree and resume in the JSON'})"
    print(f"{verdict} in {result['elapsed_s']:.0f} s; wrote {out / 'gpu_check.json'}")
    return 0 if result["ok"] else 1


def main(argv=None) -> int:
    options = parse_options(argv)
    if options.plot:
        path = Path(options.plot)
        return 0 if plot(json.loads(path.read_text()), path.with_suffix(".png")) else 1
    return run_check(options)


if __name__ == "__main__":
    sys.exit(main())

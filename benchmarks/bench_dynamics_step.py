"""Speed of the simulator: the vectorised training step against the plain-loop oracle, and the
report's sweep.

Both steps run on identical inputs (same task, state and rollout) in this process; the ratio of
their median times is the speed-up. Then the headline experiment and the sweep of
``ngrpo-sim report`` are timed end to end.

    .venv/bin/python benchmarks/bench_dynamics_step.py [--repeats 3] [--skip-sweep]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np

from ngrpo_sim import get_method
from ngrpo_sim.simulators.dynamics import DynamicsConfig, TrainState, apply_rollout, draw_rollout
from ngrpo_sim.simulators.reference_step import reference_apply_rollout


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_speedup(policy: str, repeats: int) -> dict:
    # The defaults: 16 seeds, 256 prompts, 16 answers, B 64, G 8, 4 minibatches.
    config = DynamicsConfig(policy=policy)
    method, task = get_method("ngrpo"), config.build_task()
    state = TrainState.start(task, config)
    reference = task.logits(state.params).copy()
    rollout = draw_rollout(task, method, state.params, config, np.random.default_rng(0))
    vectorised = median_seconds(lambda: apply_rollout(task, method, config, copy.deepcopy(state),
                                                      rollout, reference), max(repeats, 20))
    loops = median_seconds(lambda: reference_apply_rollout(task, method, config, state, rollout,
                                                           reference), repeats)
    return {"policy": policy, "vectorised_ms": 1e3 * vectorised, "loop_ms": 1e3 * loops,
            "speedup": loops / vectorised}


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repetitions of the loop oracle")
    parser.add_argument("--skip-sweep", action="store_true", help="time only the training step")
    args = parser.parse_args()
    for policy in ("tabular", "shared"):
        result = step_speedup(policy, args.repeats)
        print(f"{policy:8s} step (16 seeds x 64 groups x 8 answers, 4 minibatches): vectorised "
              f"{result['vectorised_ms']:.1f} ms, loops {result['loop_ms']:.0f} ms, "
              f"speed-up {result['speedup']:.0f}x")
    if not args.skip_sweep:
        from ngrpo_sim.experiments.runs import run_methods, with_mode
        from ngrpo_sim.reports.report import HEADLINE, HEADLINE_METHODS, sweep_configs

        methods = [get_method(name) for name in HEADLINE_METHODS]
        start = time.perf_counter()
        run_methods(methods, [HEADLINE, with_mode(HEADLINE, "expected")], "headline")
        headline = time.perf_counter() - start
        start = time.perf_counter()
        run_methods(methods, sweep_configs(), "sweep")
        sweep = time.perf_counter() - start
        print("headline experiment (5 methods x 16 seeds x 200 steps, plus expected): "
              f"{headline:.1f} s; "
              f"sweep (8 settings x 5 methods x 8 seeds x 150 steps): {sweep:.1f} s")


if __name__ == "__main__":
    main()

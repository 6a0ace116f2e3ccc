"""The simulators' cost as the work grows: step time and peak memory against prompts P, answers K,
group size G and seeds S of the bandit simulator and answer length L of the token simulator, for
sampled and expected mode, with the fitted exponent of each.

Bandit (`ngrpo-sim dynamics`): each of P, K, G and S is scaled by 1, 4, 16 and 64 from the
defaults (P 256, K 16, G 8, S 16, B 64 prompts per step, 4 minibatches, NGRPO) while the others
stay there. Token simulator (`ngrpo-sim tokens`): L runs from 2 to 6 at its defaults (P 128,
V = 4 content tokens and the end token, G 8, S 16). A policy there chooses a token at each of the
N = 1 + V + ... + V^(L-1) prefixes of a prompt, so its work grows with the P N (V + 1) logits, not
with L: for L the exponent is fitted against that number of logits.

The step time is the median CPU time over steps 2 to --steps of one `simulate` step (rollout,
update and the per-step metrics over all prompts), read from its progress callback. The exponent
is the slope of log(time) on log(work), fitted by least squares over all sizes but the smallest,
where fixed costs no longer hide the growth (1: linear). Peak memory is what the run allocates
(tracemalloc sees numpy's arrays) in 3 steps, plus the per-step records of a run of the default
length; fitted as a + b x, it gives the largest value of each factor that fits in --memory-gib
(24) with the others at their defaults, and one such prediction (P at 1 GiB) is checked by a
measurement.

    .venv/bin/python benchmarks/bench_simulator_scaling.py [--steps 6] [--out runs/benchmarks/...]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from ngrpo_sim.base.plotting import pyplot
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.sequence_config import SequenceConfig
from ngrpo_sim.simulators.sequences import prefix_count
from ngrpo_sim.simulators.training_loop import simulate

MODES = ("sampled", "expected")
POLICIES = ("tabular", "shared")


@dataclasses.dataclass(frozen=True)
class Factor:
    name: str
    config: type
    field: str
    sizes: tuple

    def work(self, config) -> float:
        """What the time is fitted against: the factor itself, or for L the logits per prompt."""
        if self.field == "max_length":
            return prefix_count(config.vocab_size, config.max_length) * (config.vocab_size + 1)
        return getattr(config, self.field)


FACTORS = [Factor(name, DynamicsConfig, field, tuple(getattr(DynamicsConfig, field) * m
                                                    for m in (1, 4, 16, 64)))
           for name, field in (("P", "num_prompts"), ("K", "num_answers"), ("G", "group_size"),
                               ("S", "seeds"))]
FACTORS.append(Factor("L", SequenceConfig, "max_length", (2, 3, 4, 5, 6)))


class StepClock:
    """Stands in for simulate's progress bar: notes the process's CPU time at the end of every
    step. The simulators run in one thread, so CPU time is their run time without the time that
    other jobs on the machine took."""

    def __init__(self):
        self.stamps = [time.process_time()]

    def update(self, steps: int) -> None:
        self.stamps.append(time.process_time())


def step_seconds(config) -> float:
    """Median time of one step after the first (which also pays for building the task)."""
    clock = StepClock()
    simulate("ngrpo", config, progress=clock)
    return statistics.median(np.diff(clock.stamps)[1:])


def peak_bytes(config) -> float:
    """Peak of 3 steps plus the records that the default number of steps would add."""
    steps, recorded = 3, type(config)().steps
    tracemalloc.start()
    run_record = simulate("ngrpo", dataclasses.replace(config, steps=steps), progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    records = sum(values.nbytes for values in run_record.metrics.values())
    if run_record.pass_at_k is not None:
        records += run_record.pass_at_k.nbytes
    return peak + records / (steps + 1) * (recorded - steps)


def exponent(work, values) -> float:
    """Slope of log(value) on log(work), least squares over all but the smallest size."""
    return float(np.polyfit(np.log(work[1:]), np.log(values[1:]), 1)[0])


def largest_within(sizes, values, budget: float) -> float:
    """The size at which a + b size, fitted to the measurements, reaches the budget."""
    slope, intercept = np.polyfit(np.asarray(sizes, dtype=float),
                                  np.asarray(values, dtype=float), 1)
    return (budget - intercept) / slope


def measure(steps: int, memory: bool) -> list[dict]:
    rows = []
    for policy in POLICIES:
        for mode in MODES:
            for factor in FACTORS:
                base = factor.config(policy=policy, mode=mode, steps=steps)
                for size in factor.sizes:
                    config = dataclasses.replace(base, **{factor.field: size})
                    row = {"policy": policy, "mode": mode, "factor": factor.name, "size": size,
                           "work": factor.work(config), "step_ms": 1e3 * step_seconds(config)}
                    if memory:
                        row["peak_mib"] = peak_bytes(config) / 2 ** 20
                    rows.append(row)
                    print(f"{policy:8s} {mode:9s} {factor.name}={size:<6d} {row['step_ms']:9.1f} ms"
                          + (f" {row['peak_mib']:9.1f} MiB" if memory else ""), flush=True)
    return rows


def select(rows, policy, mode, factor):
    return [row for row in rows
            if (row["policy"], row["mode"], row["factor"]) == (policy, mode, factor)]


def check_memory_predictions(rows: list[dict], target_mib: float) -> list[dict]:
    """Run P at the value predicted to need `target_mib` and measure what it needs."""
    checks = []
    for policy in POLICIES:
        for mode in MODES:
            chosen = select(rows, policy, mode, "P")
            size = int(largest_within([r["size"] for r in chosen], [r["peak_mib"] for r in chosen],
                                      target_mib))
            config = DynamicsConfig(policy=policy, mode=mode, num_prompts=size)
            checks.append({"policy": policy, "mode": mode, "P": size, "predicted_mib": target_mib,
                           "measured_mib": peak_bytes(config) / 2 ** 20})
            print(f"{policy:8s} {mode:9s} P={size}: predicted {target_mib:.0f} MiB, measured "
                  f"{checks[-1]['measured_mib']:.0f} MiB", flush=True)
    return checks


def tables(rows: list[dict], memory_gib: float, checks: list[dict]) -> str:
    columns = [(policy, mode) for policy in POLICIES for mode in MODES]
    header = ["| factor | " + " | ".join(f"{p} {m}" for p, m in columns) + " |",
              "|---" * (1 + len(columns)) + "|"]
    lines = ["Step time in ms, smallest -> largest size (exponent against the work: the factor, "
             "for L the logits per prompt):", "", *header]
    for factor in FACTORS:
        cells = []
        for policy, mode in columns:
            chosen = select(rows, policy, mode, factor.name)
            work, times = [r["work"] for r in chosen], [r["step_ms"] for r in chosen]
            cells.append(f"{times[0]:.1f} -> {times[-1]:.0f} ({exponent(work, times):.2f})")
        lines.append(f"| {factor.name} {factor.sizes[0]}-{factor.sizes[-1]} | "
                     + " | ".join(cells) + " |")
    if "peak_mib" not in rows[0]:
        return "\n".join(lines)
    lines += ["", f"Peak memory of a run of the default length in MiB, smallest -> largest size "
                  f"(exponent); the largest value that fits {memory_gib:g} GiB, the others at "
                  f"their defaults:", "", *header]
    for factor in FACTORS:
        cells = []
        for policy, mode in columns:
            chosen = select(rows, policy, mode, factor.name)
            sizes, peaks = [r["size"] for r in chosen], [r["peak_mib"] for r in chosen]
            work = [r["work"] for r in chosen]
            if factor.field == "max_length":  # memory grows with V^L: the largest L is a search
                fits = [size for size, peak in zip(sizes, peaks) if peak <= memory_gib * 2 ** 10]
                bound = f"{factor.name} <= {max(fits)} measured" if fits else "none measured fits"
            else:
                largest = largest_within(sizes, peaks, memory_gib * 2 ** 10)
                bound = f"{factor.name} <= {largest:,.0f}"
            cells.append(f"{peaks[0]:.1f} -> {peaks[-1]:.0f} ({exponent(work, peaks):.2f}); "
                         f"{bound}")
        lines.append(f"| {factor.name} | " + " | ".join(cells) + " |")
    if checks:
        lines += ["", "The linear memory model checked at the P predicted to need "
                      f"{checks[0]['predicted_mib']:.0f} MiB: " + "; ".join(
                          f"{c['policy']} {c['mode']} P = {c['P']:,}: {c['measured_mib']:.0f} MiB"
                          for c in checks)]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    columns = [(policy, mode) for policy in POLICIES for mode in MODES]
    figure, axes = plt.subplots(1, len(columns), figsize=(16, 3.9), sharey=True,
                                constrained_layout=True)
    figure.suptitle("NGRPO in the simulators: one step's CPU time as one factor grows from its "
                    "default (bandit P 256, K 16, G 8, S 16; token simulator L 2-6)")
    for ax, (policy, mode) in zip(axes, columns):
        for factor in FACTORS:
            chosen = select(rows, policy, mode, factor.name)
            work = np.array([r["work"] for r in chosen], dtype=float)
            label = f"{factor.name} (logits per prompt)" if factor.field == "max_length" else \
                factor.name
            ax.loglog(work / work[0], [r["step_ms"] for r in chosen], marker="o", label=label)
        start = min(r["step_ms"] for r in rows if (r["policy"], r["mode"]) == (policy, mode))
        ax.loglog([1, 1024], [start, start * 1024], ":", color="grey", label="linear")
        ax.set(title=f"{policy} policy, {mode}", xlabel="work / its smallest value",
               ylabel="ms per step (CPU)")
        ax.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per timed run (the first is "
                                                             "left out)")
    parser.add_argument("--memory-gib", type=float, default=24.0, help="the memory budget")
    parser.add_argument("--skip-memory", action="store_true", help="time only")
    parser.add_argument("--out", help="a new folder for scaling.csv, scaling.png and scaling.md "
                                      "(default runs/benchmarks/simulator_scaling-DATE-TIME)")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error(f"--steps must be >= 2 (the first step is left out), got {args.steps}")
    out = Path(args.out or time.strftime("runs/benchmarks/simulator_scaling-%Y%m%d-%H%M%S"))
    if out.exists():
        parser.error(f"--out {out} exists; give a new folder (no run overwrites another)")
    out.mkdir(parents=True)
    rows = measure(args.steps, not args.skip_memory)
    checks = [] if args.skip_memory else check_memory_predictions(rows, 1024.0)
    with (out / "scaling.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = tables(rows, args.memory_gib, checks)
    (out / "scaling.md").write_text(text + "\n")
    plot(rows, out / "scaling.png")
    print(text)
    print(f"wrote {out}/scaling.csv, scaling.md and scaling.png")


if __name__ == "__main__":
    main()

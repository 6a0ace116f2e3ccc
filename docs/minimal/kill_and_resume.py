"""Kill a real training process at random instants, resume it each time, and compare with an
uninterrupted run.

A small run of minimal/ngrpo_train.py (the tiny model, 30 steps, a checkpoint every 5, an
evaluation every 10, training samples every 3 steps) is trained once without interruption. A second
run of the same settings is started, killed with SIGKILL after a random delay (uniform over the
length of a whole run, start-up included), started again with --resume (without it when the kill
came before its config was written) and killed again, until one process reaches the end; such a
chain is compared with the uninterrupted run, and chains follow until `--kills` kills happened.
Compared: every line of metrics.jsonl and samples.jsonl (all fields but the wall-clock times) and
every tensor of the final model.

    .venv/bin/python docs/minimal/kill_and_resume.py --kills 20 --seed 0
"""
import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["--steps", "30", "--prompts-per-step", "8", "--minibatches", "2", "--eval-every", "10",
            "--eval-prompts", "64", "--eval-samples", "4", "--checkpoint-every", "5",
            "--samples-every", "3", "--threads", "1"]
LOGS = ("metrics.jsonl", "samples.jsonl")


def command(run_dir: Path, resume: bool) -> list:
    return [sys.executable, str(ROOT / "minimal" / "ngrpo_train.py"), *SETTINGS,
            "--run-dir", str(run_dir), *(["--resume"] if resume else [])]


def lines(path: Path) -> list:
    """The records of a run's JSONL file without their wall-clock and memory fields."""
    if not path.is_file():
        return []
    return [{key: value for key, value in json.loads(line).items()
             if not key.startswith(("time/", "perf/", "memory/"))}
            for line in path.read_text().splitlines()]


def last_step(run_dir: Path) -> int:
    """The last step logged so far (-1: none); a torn last line counts as not written."""
    path, steps = run_dir / "metrics.jsonl", []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            steps.append(json.loads(line)["step"])
        except json.JSONDecodeError:
            pass
    return max(steps, default=-1)


def same_as(killed: Path, straight: Path) -> dict:
    """Whether each log and the final weights equal those of the uninterrupted run."""
    same = {name: lines(killed / name) == lines(straight / name) for name in LOGS}
    ours, theirs = (load_file(run / "model" / "model.safetensors") for run in (killed, straight))
    same["model"] = ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k])
                                                         for k in ours)
    return same


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs in all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill instants")
    options = parser.parse_args()
    rng = random.Random(options.seed)
    with tempfile.TemporaryDirectory(prefix="ngrpo_kill_") as scratch:
        straight, killed = Path(scratch) / "straight", Path(scratch) / "killed"
        started = time.perf_counter()
        subprocess.run(command(straight, False), check=True, capture_output=True)
        duration = time.perf_counter() - started
        print(f"uninterrupted run: {duration:.1f} s")
        kills, results = [], []
        while len(kills) < options.kills:  # a chain: kill, resume, kill, ... until a run finishes
            shutil.rmtree(killed, ignore_errors=True)
            while True:
                process = subprocess.Popen(command(killed, (killed / "config.json").is_file()),
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                delay = rng.uniform(0, duration) if len(kills) < options.kills else None
                try:
                    process.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    kills.append((round(delay, 1), last_step(killed)))
                    continue
                if process.returncode:
                    error = process.stderr.read().decode()[-2000:]
                    raise RuntimeError(f"a resumed run failed:\n{error}")
                break
            results.append(same_as(killed, straight))
        print(f"{len(kills)} kills in {len(results)} chains of kill and resume (delay in s, last "
              f"step logged before the kill): {kills}")
        print("each chain against the uninterrupted run (metrics.jsonl, samples.jsonl, model "
              f"weights): {results}")
        sys.exit(0 if all(all(result.values()) for result in results) else 1)


if __name__ == "__main__":
    main()

"""Does NGRPO fail when each minibatch update sees one group? Three settings, NGRPO and GRPO, 8
seeds.

All runs: the trainer's defaults (tiny model, 3-digit addition, lr 1e-4, 400 steps, held-out 512
prompts x 16 samples) with 4 prompts per step. They differ only in how the 4 groups of a step are
cut into minibatch updates:

* one group: 4 minibatches of one group each (4 AdamW steps per rollout);
* four groups: 1 minibatch of all four groups (1 AdamW step per rollout);
* mixed: 4 minibatches, each with 2 answers of every group (4 AdamW steps per rollout, as in "one
  group", but no update sees a single group).

It writes a table (mean and 95% t-interval over seeds, paired differences NGRPO - GRPO) to
`<run-dir>/table.md`. Finished runs in `--run-dir` are reused (minimal/compare.py).

    .venv/bin/python docs/minimal/one_group_per_minibatch.py --run-dir runs/minimal/one_group
"""
import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from ngrpo_sim.experiments.runs import interval
from ngrpo_sim.experiments.trainer_runs import read_run

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"one group": dict(minibatches=4), "four groups": dict(minibatches=1),
            "mixed": dict(minibatches=4)}


def load(name: str):
    """minimal/NAME.py as the module NAME (compare.py imports ngrpo_train by that name)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "minimal" / f"{name}.py")
    sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def mixing(update_policy):
    """`update_policy` on the batch's rows reordered answer-major: the trainer cuts consecutive rows
    into minibatches, so each minibatch then holds the same number of answers of every group."""
    def mixed_update(policy, reference, optimizer, batch, method, config, *record):
        rows = len(batch.advantages)
        groups = rows // config.group_size
        order = torch.arange(rows).reshape(groups, config.group_size).T.reshape(-1)
        return update_policy(policy, reference, optimizer, batch.select(order), method, config,
                             *record)
    return mixed_update


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default="runs/minimal/one_group")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    trainer, compare = load("ngrpo_train"), load("compare")
    base, lines = Path(options.run_dir), []
    real_update = trainer.update_policy
    for name, changes in SETTINGS.items():
        config = trainer.Config(prompts_per_step=4, threads=options.threads,
                                run_dir=str(base / name.replace(" ", "-")), **changes)
        trainer.update_policy = mixing(real_update) if name == "mixed" else real_update
        folder = compare.compare(compare.Comparison(methods=["ngrpo", "grpo"], seeds=options.seeds,
                                                    config=config))
        runs = {method: [read_run(folder / f"{method}-seed{seed}")
                         for seed in range(1, options.seeds + 1)] for method in ("ngrpo", "grpo")}
        after = {method: np.array([records[-1]["eval/pass@1"] for records in seeds])
                 for method, seeds in runs.items()}
        cells = [f"{mean:.3f} ± {half:.3f}" for mean, half in
                 (interval(after[m]) for m in ("ngrpo", "grpo"))]
        difference = "{:+.3f} ± {:.3f}".format(*interval(after["ngrpo"] - after["grpo"]))
        wrong = np.mean([np.mean([r["share_all_wrong"] for r in records[1:101]])
                         for records in runs["ngrpo"]])
        lines.append(f"| {name} | {' | '.join(cells)} | {difference} | {wrong:.2f} |")
    before = read_run(base / "one-group" / "ngrpo-seed1")[0]["eval/pass@1"]
    table = [f"{options.seeds} seeds x 400 steps, 4 prompts x 8 answers per step, held-out pass@1 "
             f"(before training: {before:.3f}); mean ± 95% t-interval over seeds", "",
             "| minibatches | NGRPO pass@1 after | GRPO pass@1 after | NGRPO - GRPO (paired) | "
             "NGRPO all-wrong share, steps 1-100 |", "|---|---|---|---|---|", *lines]
    (base / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()

"""Why NGRPO at lr 1e-4 collapsed in a pilot: replay the pilot's two rollout shortcuts on top of the
trainer.

The pilot (a) let the model sample the padding token and (b) built the answer mask by comparing ids
with the pad id, so a sampled pad token was left out of the loss (and dropped from the decoded
text). The trainer does neither. This script trains with and without those shortcuts and records the
share of sampled answer tokens that are pad (arguments METHOD {pilot,fixed} SEED; `--plot` draws
docs/minimal/collapse.png from runs/collapse):

    .venv/bin/python docs/minimal/collapse_study.py ngrpo pilot 1
    .venv/bin/python docs/minimal/collapse_study.py --plot
"""
import importlib.util
import json
import sys
from pathlib import Path

import torch

from ngrpo_sim.experiments.trainer_runs import read_run

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ngrpo_train", ROOT / "minimal" / "ngrpo_train.py")
trainer = importlib.util.module_from_spec(_spec)
sys.modules["ngrpo_train"] = trainer
_spec.loader.exec_module(trainer)
RUNS = ROOT / "runs" / "collapse"


def replay_pilot(pad_shares: list) -> None:
    """Swap in the pilot's rollout: pad can be sampled, is dropped from the decoded text
    (skip_special_tokens) and, through a mask built by comparing ids with the pad id, left out of
    the loss."""
    original_rollout, original_wrap = trainer.rollout, trainer.Policy.wrap

    def pilot_wrap(model, tokenizer):
        policy = original_wrap(model, tokenizer)
        policy.banned = torch.tensor([], dtype=torch.long)
        return policy

    def pilot_rollout(policy, task, examples, group_size, temperature, *args):
        rewards, batch, texts = original_rollout(policy, task, examples, group_size, temperature,
                                                 *args)
        is_pad = (batch.completion_ids == policy.tokenizer.pad_token_id).float()
        if temperature == 1.0:  # training rollouts; the evaluation samples at 0.6
            answer_tokens = batch.completion_mask.sum()
            pad_shares.append(float((is_pad * batch.completion_mask).sum() / answer_tokens))
        batch.completion_mask = batch.completion_mask * (1 - is_pad)
        return rewards, batch, texts
    trainer.Policy.wrap = staticmethod(pilot_wrap)
    trainer.rollout = pilot_rollout


def run(method: str, variant: str, seed: int) -> None:
    pad_shares = []
    if variant == "pilot":
        replay_pilot(pad_shares)
    config = trainer.Config(method=method, seed=seed, learning_rate=1e-4, steps=450, eval_every=50,
                            eval_samples=8, threads=1,
                            run_dir=str(RUNS / f"{method}-{variant}-seed{seed}"))
    run_dir = trainer.train(config)
    (run_dir / "pad_shares.json").write_text(json.dumps(pad_shares))


def plot() -> None:
    plt = trainer.pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for run_dir in sorted(RUNS.glob("*-seed*")):
        method, variant, _ = run_dir.name.split("-")
        style = dict(color=trainer.METHOD_COLOURS[method],
                     linestyle="-" if variant == "fixed" else "--")
        records = read_run(run_dir)
        axes[0].plot(*trainer.curve(records, "eval/pass@1"), marker="o", label=run_dir.name,
                     **style)
        axes[1].plot(*trainer.curve(records, "share_all_wrong"), alpha=0.7, **style)
        shares = json.loads((run_dir / "pad_shares.json").read_text())
        if shares:
            axes[2].plot(shares, alpha=0.7, **style)
    axes[0].set(title="held-out pass@1 (lr 1e-4)", xlabel="step")
    axes[1].set(title="share of all-wrong groups", xlabel="step")
    axes[2].set(title="pilot: pad share of sampled tokens", xlabel="training rollout", yscale="log")
    axes[0].legend(fontsize=7)
    figure.savefig(ROOT / "docs" / "minimal" / "collapse.png", dpi=110)


if __name__ == "__main__":
    plot() if sys.argv[1:] == ["--plot"] else run(sys.argv[1], sys.argv[2], int(sys.argv[3]))

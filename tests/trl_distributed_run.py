"""NGRPOTrainer runs for tests/test_integration_trl.py, in one process or in each of a torchrun's.

    python tests/trl_distributed_run.py MODEL_DIR OUT_DIR
    torchrun --standalone --nproc_per_node 2 tests/trl_distributed_run.py MODEL_DIR OUT_DIR

Each layout of ``LAYOUTS`` trains on the same batches, whatever the number of processes: the global
batch sizes are fixed and each process gets an equal share of every micro-step. Decoding is
greedy, so every run generates the same completions, and a reward depends only on the prompt and
on the answer's place in its group (the gathered batch holds whole groups in order), so every run
gets the same rewards. Each process writes ``OUT_DIR/<layout>/rank<r>.json`` (what it generated,
its rewards, advantages and kept tokens, the logged losses) and ``rank<r>-weights.pt``.
"""

import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from datasets import Dataset  # noqa: E402

from ngrpo_sim.integrations.trl import NGRPOConfig, NGRPOTrainer  # noqa: E402

GROUP_SIZE = 4
PROMPTS = ["nil", "mix", "all"]  # one length: no padding, so batching cannot change a greedy token
REWARDS = {"nil": [0.0] * GROUP_SIZE, "mix": [0.0, 0.5, 0.0, 1.0], "all": [1.0] * GROUP_SIZE}
"""The reward of the j-th answer of each group: all wrong; graded with one right; all right."""
LAYOUTS = {
    # One group per generation batch, half of it on each process; a step per prompt, on-policy.
    "split": {"answers_per_micro_step": 2, "steps_per_generation": 2, "max_steps": 3,
              "num_iterations": 1},
    # Three groups per generation batch: "nil" on the first process, "mix" split, "all" (dropped)
    # on the second, which keeps 2 answers' tokens to the first's 6. Two updates on one batch: the
    # second is off-policy, where the clip acts.
    "uneven": {"answers_per_micro_step": 6, "steps_per_generation": 2, "max_steps": 2,
               "num_iterations": 2},
}
RANK, WORLD_SIZE = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class RecordingTrainer(NGRPOTrainer):
    """Keeps, for every generation batch, what this process handed to the loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation_batches, self.rewards = [], []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.generation_batches.append({
            "prompts": [example["prompt"] for example in inputs],
            "rewards": self.rewards.pop(0),
            "completion_ids": output["completion_ids"].tolist(),
            "kept_tokens": output["completion_mask"].sum(dim=1).tolist(),
            "advantages": output["advantages"].tolist(),
            "num_items_in_batch": output["num_items_in_batch"].item(),
        })
        return output


def train(model_dir: str, folder: Path, layout: dict) -> RecordingTrainer:
    trainer = None

    def positional_rewards(prompts, completions, **_):
        start = RANK * len(prompts)  # this process's share starts here in the gathered batch
        rewards = [REWARDS[prompt][(start + i) % GROUP_SIZE] for i, prompt in enumerate(prompts)]
        trainer.rewards.append(rewards)
        return rewards

    args = NGRPOConfig(
        output_dir=str(folder / "trainer"), num_generations=GROUP_SIZE,
        per_device_train_batch_size=layout["answers_per_micro_step"] // WORLD_SIZE,
        gradient_accumulation_steps=layout["steps_per_generation"],
        steps_per_generation=layout["steps_per_generation"],
        num_iterations=layout["num_iterations"], max_steps=layout["max_steps"],
        max_completion_length=4, generation_kwargs={"do_sample": False}, shuffle_dataset=False,
        entropy_coef=0.5, optim="sgd", learning_rate=0.5, logging_steps=1, report_to="none",
        use_cpu=True, bf16=False, save_strategy="no", seed=0, disable_tqdm=True)
    trainer = RecordingTrainer(model=model_dir, reward_funcs=positional_rewards, args=args,
                               train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    trainer.train()
    return trainer


def main(model_dir: str, out_dir: str) -> None:
    for name, layout in LAYOUTS.items():
        folder = Path(out_dir) / name
        trainer = train(model_dir, folder, layout)
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        record = {"rank": RANK, "world_size": WORLD_SIZE, "group_size": GROUP_SIZE,
                  "generation_batches": trainer.generation_batches, "losses": losses}
        (folder / f"rank{RANK}.json").write_text(json.dumps(record))
        weights = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        torch.save(weights, folder / f"rank{RANK}-weights.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])

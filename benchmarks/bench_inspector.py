"""The step inspector at the size of a real run, and what recording a step costs the trainer.

``render`` (the default): writes a run folder of 3 inspected steps of 16 groups x 8 answers x 1,024
tokens in the trainer's format (synthetic: BPE-like pieces, 2% of them a character split over two
or three tokens, ratios around 1 with the clip states they imply, rewards of a 30% success rate,
NGRPO's advantages, all-correct groups dropped), then times reading the records
(``trainer_runs.read_inspections``, the baseline of the same process) and rendering the page
(``inspector.render``), and prints the page's size and bytes per token.

``record``: one RL step of minimal/ngrpo_train.py with and without `--inspect-steps`, alternating
in the same process, on the same policy, prompts and seeds. One step = a rollout of 16 prompts x 8
answers (up to 8 new tokens) and 4 minibatch updates on the trainer's built-in tiny model, NGRPO.
An inspected step also decodes every answer token to text, copies the ratios and clip states of
every update to the CPU, builds the JSON record and writes it atomically. Prints the median time of
each, their ratio, and the median time spent in the recording functions themselves (decoding the
tokens, attaching ratios and clip states, writing the JSON), which a busy machine disturbs less
than the difference of two step times.

    .venv/bin/python benchmarks/bench_inspector.py render            # 3 x 128 answers x 1,024
    .venv/bin/python benchmarks/bench_inspector.py record --threads 1 # 3 rounds of 8 steps each
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PIECES = (" the", " answer", " is", " =", " 12", "3", " +", " Let", "'s", " compute", ".", "\n",
          " we", " get", " so", " step", ":", " 4", "5", " total", " of", " and", " <", ">", "&")
SPLIT = (("é", [b"\xc3", b"\xa9"]), ("→", [b" \xe2", b"\x86\x92"]),
         ("😀", [b"\xf0\x9f", b"\x98", b"\x80"]))
"""Characters a byte-level tokenizer splits: the text, and the bytes of each token."""


def synthetic_answer(rng, length: int, advantage, minibatch: int | None) -> dict:
    """One answer record as the trainer writes it: ``length`` tokens, the last one ``<eos>``."""
    tokens, spans = [], []
    while len(tokens) < length - 1:
        if rng.random() < 0.02:
            text, parts = SPLIT[rng.integers(len(SPLIT))]
            if len(tokens) + len(parts) <= length - 1:
                spans.append([len(tokens), len(tokens) + len(parts), text])
                tokens += [part.decode("utf-8", errors="replace") for part in parts]
                continue
        tokens.append(PIECES[rng.integers(len(PIECES))])
    tokens.append("<eos>")
    if minibatch is None:
        return dict(tokens=tokens, spans=spans, advantage=None, minibatch=None, ratio=None,
                    clip=None)
    ratio = np.exp(rng.normal(0.0, 0.04 * minibatch, length)).round(6)
    clip = ["low" if advantage < 0 and value < 1 - 0.16 else
            "high" if advantage > 0 and value > 1 + 0.24 else None for value in ratio]
    return dict(tokens=tokens, spans=spans, advantage=advantage, minibatch=minibatch,
                ratio=ratio.tolist(), clip=clip)


def synthetic_run(folder: Path, steps: int, groups: int, group_size: int, length: int) -> int:
    """Write a run folder of ``steps`` inspected steps; returns the number of tokens in it."""
    from ngrpo_sim.experiments import trainer_runs
    from ngrpo_sim.methods.presets import get_method

    rng = np.random.default_rng(0)
    (folder / trainer_runs.INSPECT_FOLDER).mkdir(parents=True)
    (folder / trainer_runs.CONFIG_FILE).write_text(json.dumps(dict(
        model="smollm2", task="reasoning-gym:countdown", group_size=group_size,
        prompts_per_step=groups, minibatches=4, learning_rate=1e-6, seed=1)))
    (folder / trainer_runs.METRICS_FILE).write_text('{"step": 0}\n')
    for step in range(1, steps + 1):
        record = dict(step=step, method="ngrpo", advantage="ngrpo", r_max=1.0, virtual_samples=1,
                      ddof=1, clip_low=0.16, clip_high=0.24, minibatches=4, groups=[])
        for group in range(groups):
            rewards = (rng.random(group_size) < 0.3).astype(float)
            trained = not rewards.all()
            advantages = get_method("ngrpo").advantages(rewards)
            answers = [synthetic_answer(rng, length, float(advantage),
                                        (group * group_size + index) % 4 if trained else None)
                       for index, advantage in enumerate(advantages)]
            for answer, reward in zip(answers, rewards):
                answer["reward"] = float(reward)
            record["groups"].append(dict(prompt=f"Use 3, 7, 25 and 50 to make {100 + group}.",
                                         trained=bool(trained), answers=answers))
        path = folder / trainer_runs.INSPECT_FOLDER / trainer_runs.inspection_file_name(step)
        path.write_text(json.dumps(record))
    return steps * groups * group_size * length


def bench_render(args) -> None:
    from ngrpo_sim.experiments import trainer_runs
    from ngrpo_sim.pages import inspector

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        tokens = synthetic_run(run, args.steps, args.groups, args.group_size, args.tokens)
        times = {}
        for name, work in (("reading", trainer_runs.read_inspections),
                           ("rendering", inspector.render)):
            started, cpu = time.perf_counter(), time.process_time()
            page = work(run)
            times[name] = (time.perf_counter() - started, time.process_time() - cpu)
    size = len(page.encode("utf-8"))
    (reading, reading_cpu), (rendering, rendering_cpu) = times.values()
    print(f"{args.steps} steps x {args.groups * args.group_size} answers x {args.tokens} tokens "
          f"= {tokens:,} tokens: reading the records {reading:.2f} s ({reading_cpu:.2f} s CPU), "
          f"rendering the page, reading included, {rendering:.2f} s ({rendering_cpu:.2f} s CPU, "
          f"{rendering_cpu / reading_cpu:.1f} x reading); page {size / 1e6:.1f} MB, "
          f"{size / tokens:.1f} bytes per token")


def bench_record(args) -> None:
    import torch
    from harness import load_trainer

    trainer = load_trainer()
    torch.set_num_threads(args.threads)
    config = trainer.with_task_defaults(trainer.Config(threads=args.threads, device="cpu"))
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = parser.add_subparsers(dest="part")
    render = parts.add_parser("render", help="the inspector page of a run of real size")
    render.add_argument("--steps", type=int, default=3, help="inspected steps")
    render.add_argument("--groups", type=int, default=16, help="groups per step")
    render.add_argument("--group-size", type=int, default=8, help="answers per group")
    render.add_argument("--tokens", type=int, default=1024, help="tokens per answer")
    record = parts.add_parser("record", help="what recording a step costs the trainer")
    record.add_argument("--steps", type=int, default=8,
                        help="steps per block (the first is warm-up)")
    record.add_argument("--rounds", type=int, default=3, help="alternating blocks of each kind")
    record.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] or ["render"])
    (bench_record if args.part == "record" else bench_render)(args)


if __name__ == "__main__":
    main()

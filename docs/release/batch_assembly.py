"""What the NGRPO release's trainer does to groups and to token weights, measured on synthetic
rollouts with the recipe's sizes.

The authors' release (github.com/nangongrui-ngr/NGRPO, branch ``ngr``, commit e7a3804) is a verl
fork. Its trainer loop (``verl/trainer/ppo/ray_trainer.py``, ``RayPPOTrainer.fit``) assembles each
training batch in this order, all of which this script re-implements in numpy (the line numbers are
those of that commit):

1. a generation batch of 1024 prompts, each answered n = 8 times, the 8 rows of a prompt next to
   each other and sharing one ``uid`` (ray_trainer.py 1142-1146);
2. the rows reordered by ``_balance_batch`` so that each of the 8 GPUs gets the same number of rows
   and similar token totals (ray_trainer.py 1017-1028, 1151; the partitioner is
   ``verl/utils/seqlen_balancing.py`` 25-130, 152-183);
3. the all-correct groups removed, judged on the whole generation batch (ray_trainer.py 1206-1268);
4. further generation batches until at least 1024 x 8 rows are collected (ray_trainer.py 1085);
5. the first 1024 x 8 rows trained, the rest carried to the next step, where they come first
   (ray_trainer.py 1082-1083, 1276-1283);
6. advantages computed on that cut batch, grouping rows by ``uid`` (ray_trainer.py 1291-1300,
   269-282; ``verl/trainer/ppo/core_algos.py`` 156-203: a uid with one row gets mean 0, std 1);
7. the batch cut into 8 equal contiguous shares, one per GPU (``verl/protocol.py`` 496-526,
   ``verl/single_controller/base/decorator.py`` 45-57, 272-276), each share into minibatches of
   256 x 8 / 8 = 256 rows (``verl/workers/fsdp_workers.py`` 119-120,
   ``verl/workers/actor/dp_actor.py`` 250), each minibatch into micro-batches of at most 36,000
   tokens by the same partitioner (dp_actor.py 261-263, seqlen_balancing.py 224-256);
8. per micro-batch, the token mean of the clipped loss (core_algos.py 414,
   ``verl/utils/torch_functional.py`` 118-120) scaled by the micro-batch's share of the
   minibatch's rows (dp_actor.py 320-322); FSDP then averages the gradients of the 8 GPUs.

The rollouts are synthetic (problem difficulty, prompt and answer lengths: see ``make_problems``),
so the numbers show what the mechanics do at the recipe's sizes, not what happened in the authors'
runs. Every figure comes from the loop above; nothing is fitted. With ``--check-against`` the
script imports the release's own ``seqlen_balancing.py`` (from a checkout of the release: ``git
show ngr:verl/utils/seqlen_balancing.py > FILE``; it needs torch and tensordict) and checks that
its partitions equal this re-implementation's on every generation batch and micro-batch split of a
run.

    PYTHONPATH=$PWD .venv/bin/python docs/release/batch_assembly.py [--check-against FILE]

writes ``docs/release/batch_assembly.json`` and ``docs/release/batch_assembly.md`` (about 10
minutes on two shared CPU cores with ``--check-against``, which it spends mostly in the release's
partitioner).
"""
from __future__ import annotations

import argparse
import heapq
import importlib.util
import json
import math
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ngrpo_sim.base.files import write_atomically
from ngrpo_sim.methods.advantages import NGRPOAdvantage
from ngrpo_sim.simulators.release_assembly import release_advantages

HERE = Path(__file__).resolve().parent
RELEASE = {"repository": "github.com/nangongrui-ngr/NGRPO", "branch": "ngr",
           "commit": "e7a380415a64cd8ac102504c38a5f86069022f35"}

# The recipe, from train_scripts/train_qwen2.5-math-7b_ngrpo.sh (lines in brackets) and the defaults
# of verl/trainer/config/ppo_trainer.yaml that it does not override.
PROMPTS_PER_BATCH = 1024      # data.train_batch_size [34]
ANSWERS_PER_PROMPT = 8        # rollout.n [12, 57]
GPUS = 8                      # trainer.n_gpus_per_node x nnodes [13, 66, 68]
MINIBATCH_PROMPTS = 256       # actor.ppo_mini_batch_size [47]
MICRO_TOKENS = 36_000         # actor.ppo_max_token_len_per_gpu, with use_dynamic_bsz=True [43-44]
MAX_PROMPT, MAX_RESPONSE = 1024, 3072  # [35-36]
EPOCHS = 20                   # trainer.total_epochs [71]
PROBLEMS = 7500               # MATH training set
ROWS = PROMPTS_PER_BATCH * ANSWERS_PER_PROMPT                     # target_batch_size, line 1081
ROWS_PER_GPU = ROWS // GPUS
MINIBATCH_ROWS = MINIBATCH_PROMPTS * ANSWERS_PER_PROMPT // GPUS   # fsdp_workers.py 119-120
BATCHES_PER_EPOCH = PROBLEMS // PROMPTS_PER_BATCH                 # drop_last=True, line 657
TOTAL_STEPS = BATCHES_PER_EPOCH * EPOCHS                          # ray_trainer.py 690-695


# --------------------------------------------------------------------------------------------
# The partitioner of seqlen_balancing.py (Karmarkar-Karp's largest differencing method).
# --------------------------------------------------------------------------------------------

class _Part:
    """One partition under construction: its token total and its (row, length) pairs in the
    order they joined. Parts order by (total, number of rows, pairs), as in lines 42-47."""

    __slots__ = ("total", "pairs")

    def __init__(self):
        self.total = 0
        self.pairs: list[tuple[int, int]] = []

    def rank(self):
        return self.total, len(self.pairs), self.pairs


class _Candidate:
    """k parts, largest first. The heap pops the candidate with the widest spread between its
    largest and smallest part, ties going to the larger largest part (lines 77-87)."""

    __slots__ = ("parts",)

    def __init__(self, pairs: list[tuple[int, int]], k: int):
        self.parts = [_Part() for _ in range(k)]
        for part, pair in zip(self.parts, pairs):
            part.pairs.append(pair)
            part.total += pair[1]
        self._order()

    def _order(self):
        self.parts.sort(key=_Part.rank, reverse=True)

    def spread(self) -> int:
        return self.parts[0].total - self.parts[-1].total

    def __lt__(self, other: "_Candidate") -> bool:
        mine, theirs = self.spread(), other.spread()
        if mine != theirs:
            return mine > theirs
        return self.parts[0].rank() > other.parts[0].rank()

    def absorb(self, other: "_Candidate"):
        """Join the largest part of one with the smallest of the other, and so on (72-75)."""
        for part, partner in zip(self.parts, reversed(other.parts)):
            part.pairs.extend(partner.pairs)
            part.total += partner.total
        self._order()


def balanced_partitions(lengths, k: int, equal_size: bool) -> list[list[int]]:
    """``get_seqlen_balanced_partitions(lengths, k, equal_size)`` of the release: k lists of row
    positions, largest token total first, each list sorted (seqlen_balancing.py 103-130, 170-183).

    With ``equal_size`` every part gets len(lengths) / k rows: the rows, sorted by (length,
    position), start in groups of k consecutive ones spread over the k parts."""
    ordered = sorted((int(length), row) for row, length in enumerate(lengths))
    width = k if equal_size else 1
    if equal_size and len(ordered) % k:
        raise ValueError(f"{len(ordered)} rows cannot be cut into {k} equal parts")
    heap = [_Candidate([(row, length) for length, row in ordered[at:at + width]], k)
            for at in range(0, len(ordered), width)]
    heapq.heapify(heap)
    while len(heap) > 1:
        first, second = heapq.heappop(heap), heapq.heappop(heap)
        first.absorb(second)
        heapq.heappush(heap, first)
    return [sorted(row for row, _ in part.pairs) for part in heap[0].parts]


class ReleasePartitioner:
    """The release's own ``get_seqlen_balanced_partitions``, imported from FILE, with a counter
    of the calls on which it agreed with ``balanced_partitions``."""

    def __init__(self, path: Path):
        spec = importlib.util.spec_from_file_location("release_seqlen_balancing", path)
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        self.calls = 0

    def __call__(self, lengths, k: int, equal_size: bool) -> list[list[int]]:
        ours = balanced_partitions(lengths, k, equal_size)
        theirs = self.module.get_seqlen_balanced_partitions(
            [int(x) for x in lengths], k_partitions=k, equal_size=equal_size)
        if theirs != ours:
            raise AssertionError(f"partitions differ from the release's on call {self.calls + 1}")
        self.calls += 1
        return ours


# --------------------------------------------------------------------------------------------
# Synthetic problems and rollouts.
# --------------------------------------------------------------------------------------------

DIFFICULTY = {"easy": (12.0, 1.0), "medium": (2.0, 2.0), "hard": (1.0, 8.0)}
"""Beta(a, b) of a problem's pass rate, for each kind of problem."""

SCENARIOS = {"early": (0.25, 0.45, 0.30), "middle": (0.45, 0.40, 0.15),
             "late": (0.65, 0.30, 0.05)}
"""Shares of easy, medium and hard problems: the training set as the policy improves."""


@dataclass
class Problems:
    pass_rate: np.ndarray        # (problems,) chance that one answer is correct
    prompt_tokens: np.ndarray    # (problems,) prompt length with the chat template, tokens
    answer_scale: np.ndarray     # (problems,) median answer length, tokens


def make_problems(mix, rng) -> Problems:
    """Problems with a pass rate from a mixture of Beta laws (``mix`` weighs easy, medium,
    hard), prompts of median 110 tokens (lognormal, sigma 0.45, within 25..1024) and answers whose
    median length grows with difficulty (250 tokens for a sure problem, 950 for a hopeless one,
    times a lognormal factor of sigma 0.3 per problem)."""
    kind = rng.choice(len(mix), size=PROBLEMS, p=mix)
    a, b = np.array(list(DIFFICULTY.values())).T
    pass_rate = rng.beta(a[kind], b[kind])
    prompt_tokens = np.clip(np.rint(rng.lognormal(np.log(110), 0.45, PROBLEMS)), 25, MAX_PROMPT)
    answer_scale = (250 + 700 * (1 - pass_rate)) * rng.lognormal(0.0, 0.3, PROBLEMS)
    return Problems(pass_rate, prompt_tokens.astype(int), answer_scale)


def roll_out(problems: Problems, prompt_ids, rng):
    """ANSWERS_PER_PROMPT answers per prompt, rows ordered prompt by prompt as ``repeat(...,
    interleave=True)`` orders them (ray_trainer.py 1145): answer lengths lognormal around the
    problem's scale (sigma 0.5, wrong answers 1.4 times longer), cut at MAX_RESPONSE tokens; an
    answer cut there has no final answer and is wrong."""
    rows = np.repeat(prompt_ids, ANSWERS_PER_PROMPT)
    correct = rng.random(rows.size) < problems.pass_rate[rows]
    scale = problems.answer_scale[rows] * np.where(correct, 1.0, 1.4)
    length = np.rint(rng.lognormal(np.log(scale), 0.5))
    truncated = length >= MAX_RESPONSE
    reward = np.where(correct & ~truncated, 1.0, 0.0)
    answer_tokens = np.clip(length, 16, MAX_RESPONSE).astype(int)
    return rows, reward, answer_tokens


# --------------------------------------------------------------------------------------------
# The trainer loop.
# --------------------------------------------------------------------------------------------

@dataclass
class Rows:
    """Rows of answers; every field is an array with one entry per row."""
    uid: np.ndarray
    reward: np.ndarray
    prompt_tokens: np.ndarray
    answer_tokens: np.ndarray
    rolled_out_at: np.ndarray     # the step whose policy sampled the row (and gave old_log_prob)
    whole_advantage: np.ndarray   # NGRPO's advantage over the row's whole group of 8

    def take(self, which) -> "Rows":
        return Rows(**{name: value[which] for name, value in vars(self).items()})

    @staticmethod
    def join(parts: list["Rows"]) -> "Rows":
        return Rows(**{name: np.concatenate([getattr(p, name) for p in parts])
                       for name in vars(parts[0])})

    def __len__(self):
        return self.uid.size


@dataclass
class Tally:
    """What the trained steps showed."""
    steps: int = 0
    partial_final_step_rows: int = 0    # rows of a last, short step (0: none)
    generation_batches: list[int] = field(default_factory=list)
    trained_rows: int = 0
    all_correct_groups: int = 0
    groups_rolled_out: int = 0
    groups: list[int] = field(default_factory=list)         # uids in each step's batch
    partial_groups: list[int] = field(default_factory=list)  # of those, with fewer than 8 rows
    single_groups: list[int] = field(default_factory=list)   # of those, with one row
    rows_in_partial: list[int] = field(default_factory=list)
    carried_rows: list[int] = field(default_factory=list)
    staleness: list[int] = field(default_factory=list)      # steps, per carried row
    kept_groups: int = 0                                    # groups that passed the filter
    groups_cut: int = 0                  # of those, with rows on both sides of a batch cut
    rows_present: np.ndarray = field(    # uids of a step's batch by rows present there (0..8)
        default_factory=lambda: np.zeros(ANSWERS_PER_PROMPT + 1, dtype=int))
    answer_tokens: list[np.ndarray] = field(default_factory=list)
    groups_over_gpus: list[float] = field(default_factory=list)
    groups_over_updates: list[float] = field(default_factory=list)
    advantage_changed: list[int] = field(default_factory=list)
    advantage_gap: list[np.ndarray] = field(default_factory=list)
    sign_flips: list[int] = field(default_factory=list)
    new_zero_advantage: list[int] = field(default_factory=list)
    micro_deviation: list[float] = field(default_factory=list)
    micro_tokens: list[int] = field(default_factory=list)
    micro_batches_per_update: list[int] = field(default_factory=list)


def token_weights(batch: Rows, partition, tally: Tally):
    """Each micro-batch's weight per response token relative to a true token mean over its
    minibatch (all GPUs), for every minibatch of a full batch (dp_actor.py 250-335)."""
    gpu_share = np.arange(len(batch)).reshape(GPUS, ROWS_PER_GPU)
    for start in range(0, ROWS_PER_GPU, MINIBATCH_ROWS):
        minibatch = gpu_share[:, start:start + MINIBATCH_ROWS]
        total = batch.prompt_tokens + batch.answer_tokens
        # Every rank takes the largest micro-batch count of all ranks (seqlen_balancing.py
        # 235-239), so the count is decided by the GPU with the most tokens.
        count = max(math.ceil(total[rows].sum() / MICRO_TOKENS) for rows in minibatch)
        minibatch_answer_tokens = batch.answer_tokens[minibatch].sum()
        tally.micro_batches_per_update.append(count)
        weight_sum = 0.0
        for rows in minibatch:
            for part in partition(total[rows], count, equal_size=False):
                tokens = batch.answer_tokens[rows[part]].sum()
                # The micro-batch's token mean, times its share of the GPU's minibatch rows,
                # averaged over the GPUs by FSDP.
                weight = len(part) / MINIBATCH_ROWS / GPUS / tokens
                weight_sum += weight * tokens
                tally.micro_deviation.append(weight * minibatch_answer_tokens - 1.0)
                tally.micro_tokens.append(tokens)
        # Like a true token mean, the release's weights add up to 1 over a full minibatch.
        assert abs(weight_sum - 1.0) < 1e-9, weight_sum


def train_step(batch: Rows, step: int, partition, tally: Tally):
    """Record what the release does with one cut batch."""
    uids, where, count = np.unique(batch.uid, return_inverse=True, return_counts=True)
    tally.trained_rows += len(batch)
    tally.groups.append(uids.size)
    tally.partial_groups.append(int((count < ANSWERS_PER_PROMPT).sum()))
    tally.single_groups.append(int((count == 1).sum()))
    tally.rows_in_partial.append(int((count[where] < ANSWERS_PER_PROMPT).sum()))
    carried = batch.rolled_out_at < step
    tally.carried_rows.append(int(carried.sum()))
    tally.staleness.extend((step - batch.rolled_out_at[carried]).tolist())
    tally.rows_present += np.bincount(count, minlength=ANSWERS_PER_PROMPT + 1)
    tally.answer_tokens.append(batch.answer_tokens)

    # NGRPO as the release computes it on a cut batch: statistics over the rows of each uid that
    # are present (with the virtual r_max answer); a uid with one row gets mean 0 and std 1, A = r
    # / (1 + eps) (core_algos.py 190-200).
    advantage = release_advantages(batch.reward, batch.uid, NGRPOAdvantage())
    gap = np.abs(advantage - batch.whole_advantage)
    changed = gap > 1e-9
    tally.advantage_changed.append(int(changed.sum()))
    tally.advantage_gap.append(gap[changed])
    tally.sign_flips.append(int((np.sign(advantage) * np.sign(batch.whole_advantage) < 0).sum()))
    tally.new_zero_advantage.append(int(((np.abs(advantage) < 1e-9)
                                         & (np.abs(batch.whole_advantage) >= 1e-9)).sum()))

    if len(batch) == ROWS:
        # GPU g holds rows g*1024 .. g*1024+1023 of the batch; update u takes, on every GPU, the
        # rows u*256 .. u*256+255 of its share.
        position = np.arange(len(batch))
        gpu, update = position // ROWS_PER_GPU, (position % ROWS_PER_GPU) // MINIBATCH_ROWS
        for place, record in ((gpu, tally.groups_over_gpus), (update, tally.groups_over_updates)):
            pairs = np.unique(np.stack([batch.uid, place]), axis=1)[0]
            _, places = np.unique(pairs, return_counts=True)
            record.append(float(np.mean(places > 1)))
        token_weights(batch, partition, tally)
    else:
        tally.partial_final_step_rows = len(batch)


def run(problems: Problems, filter_all_correct: bool, seed: int, partition,
        max_steps: int | None = None) -> Tally:
    """RayPPOTrainer.fit of the release (ray_trainer.py 1066-1358) on synthetic rollouts."""
    rng = np.random.default_rng(seed)
    estimator = NGRPOAdvantage()
    tally = Tally()

    def epoch_batches():
        order = rng.permutation(PROBLEMS)   # RandomSampler, a new order each epoch (648-657)
        return iter(order[:BATCHES_PER_EPOCH * PROMPTS_PER_BATCH].reshape(-1, PROMPTS_PER_BATCH))

    batches, epoch, step, next_uid = epoch_batches(), 0, 1, 0
    carried = None
    is_last_step = False
    while epoch < EPOCHS:
        collected = [] if carried is None else [carried]       # 1082-1084
        carried = None
        tally.generation_batches.append(0)
        while not collected or sum(map(len, collected)) < ROWS:  # 1085
            try:
                prompt_ids = next(batches)
            except StopIteration:                               # 1092-1097
                epoch += 1
                if epoch >= EPOCHS:
                    break
                batches = epoch_batches()
                prompt_ids = next(batches)
            is_last_step = step >= TOTAL_STEPS                  # 1118
            tally.generation_batches[-1] += 1
            rows, reward, answer_tokens = roll_out(problems, prompt_ids, rng)
            uid = next_uid + np.arange(rows.size) // ANSWERS_PER_PROMPT   # 1142-1145
            next_uid += prompt_ids.size
            whole = estimator(reward.reshape(-1, ANSWERS_PER_PROMPT)).ravel()
            generated = Rows(uid, reward, problems.prompt_tokens[rows], answer_tokens,
                             np.full(rows.size, step), whole)
            # _balance_batch: lengths are attention_mask sums, prompt plus answer (1019-1028).
            parts = partition(generated.prompt_tokens + generated.answer_tokens, GPUS,
                              equal_size=True)
            generated = generated.take(np.concatenate(parts))
            all_correct = reward.reshape(-1, ANSWERS_PER_PROMPT).min(axis=1) == 1.0
            tally.groups_rolled_out += all_correct.size
            tally.all_correct_groups += int(all_correct.sum())
            if filter_all_correct:                              # 1206-1268, strategy all_correct
                generated = generated.take(~all_correct[generated.uid - uid[0]])
            tally.kept_groups += np.unique(generated.uid).size
            if len(generated):
                collected.append(generated)                     # 1270-1271
        if not collected:
            continue
        batch = Rows.join(collected)                            # 1276
        if len(batch) > ROWS:                                   # 1278-1283
            carried = batch.take(np.arange(ROWS, len(batch)))
            batch = batch.take(np.arange(ROWS))
            tally.groups_cut += np.intersect1d(batch.uid, carried.uid).size
        train_step(batch, step, partition, tally)
        tally.steps += 1
        if is_last_step or (max_steps is not None and tally.steps >= max_steps):
            break
        step += 1
    if carried is None and max_steps is None:
        # Every answer that passed the filter was trained, once.
        kept_rows = tally.kept_groups * ANSWERS_PER_PROMPT
        assert tally.trained_rows == kept_rows, (tally.trained_rows, kept_rows)
    return tally


# --------------------------------------------------------------------------------------------
# Summaries.
# --------------------------------------------------------------------------------------------

def weighted_quantile(values, weights, q):
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][np.searchsorted(cumulative, q)])


def summarise(tally: Tally) -> dict:
    groups = np.array(tally.groups)
    answers = np.concatenate(tally.answer_tokens)
    deviation = np.array(tally.micro_deviation)
    tokens = np.array(tally.micro_tokens, dtype=float)
    gaps = np.concatenate(tally.advantage_gap) if tally.advantage_gap else np.zeros(0)
    trained_rows = tally.trained_rows
    summary = {
        "steps_trained": tally.steps,
        "final_step_rows": tally.partial_final_step_rows or ROWS,
        "generation_batches_per_step_mean": float(np.mean(tally.generation_batches)),
        "all_correct_group_share": tally.all_correct_groups / tally.groups_rolled_out,
        "answer_tokens": {"mean": float(answers.mean()),
                          "coefficient_of_variation": float(answers.std() / answers.mean()),
                          "at_max_response_share": float(np.mean(answers == MAX_RESPONSE))},
        "groups": {
            "groups_split_over_two_steps_share": tally.groups_cut / tally.kept_groups,
            "uids_per_batch_by_rows_present": {
                str(m): int(n) for m, n in enumerate(tally.rows_present) if m},
            "partial_groups_per_batch_share": float(np.sum(tally.partial_groups) / groups.sum()),
            "rows_in_partial_groups_share": float(np.sum(tally.rows_in_partial) / trained_rows),
            "groups_of_one_per_batch_share": float(np.sum(tally.single_groups) / groups.sum()),
            "rows_with_fallback_share": float(np.sum(tally.single_groups) / trained_rows),
            "steps_with_a_split_group_share": float(np.mean(np.array(tally.partial_groups) > 0)),
            "groups_on_several_gpus_share": float(np.mean(tally.groups_over_gpus)),
            "groups_in_several_updates_share": float(np.mean(tally.groups_over_updates)),
        },
        "carried_rows": {
            "share_of_trained_rows": float(np.sum(tally.carried_rows) / trained_rows),
            "per_step_mean": float(np.mean(tally.carried_rows)),
            "staleness_steps_min": int(min(tally.staleness)) if tally.staleness else None,
            "staleness_steps_max": int(max(tally.staleness)) if tally.staleness else None,
        },
        "advantages": {
            "rows_changed_share": float(np.sum(tally.advantage_changed) / trained_rows),
            "abs_change_mean_over_changed": float(gaps.mean()) if gaps.size else 0.0,
            "abs_change_max": float(gaps.max()) if gaps.size else 0.0,
            "sign_flips_share": float(np.sum(tally.sign_flips) / trained_rows),
            "newly_zero_share": float(np.sum(tally.new_zero_advantage) / trained_rows),
        },
    }
    if deviation.size:
        magnitude = np.abs(deviation)
        summary["token_weights"] = {
            "micro_batches_per_gpu_and_update_mean": float(np.mean(tally.micro_batches_per_update)),
            "micro_batches_per_gpu_and_update_range": [int(min(tally.micro_batches_per_update)),
                                                       int(max(tally.micro_batches_per_update))],
            "relative_deviation_abs_max": float(magnitude.max()),
            "relative_deviation_abs_p95": weighted_quantile(magnitude, tokens, 0.95),
            "relative_deviation_abs_median": weighted_quantile(magnitude, tokens, 0.5),
            "relative_deviation_abs_mean": float(np.average(magnitude, weights=tokens)),
            "relative_deviation_p05": weighted_quantile(deviation, tokens, 0.05),
            "relative_deviation_p95": weighted_quantile(deviation, tokens, 0.95),
            "relative_deviation_min": float(deviation.min()),
            "relative_deviation_max": float(deviation.max()),
        }
    return summary


def markdown(result: dict) -> str:
    def paragraph(text):
        return textwrap.fill(text, width=100)

    scenarios = result["scenarios"]
    control = result["control_no_filter"]
    lines = ["# What the release's batch assembly does (synthetic rollouts, recipe sizes)", "",
             paragraph(f"Release: {RELEASE['repository']}, branch `{RELEASE['branch']}`, commit "
                       f"`{RELEASE['commit'][:7]}`. Written by `docs/release/batch_assembly.py` "
                       f"(seed {result['seed']}); every number is in `batch_assembly.json`. The "
                       "rollouts are synthetic (see the script's docstrings); the mechanics are "
                       "the release's, with its recipe's sizes."), "",
             "## Groups at the advantage computation (NGRPO's script: all-correct filter)", "",
             "| scenario | all-correct groups | steps (of 140) | generation batches per step | "
             "groups split over two steps | partial groups in a step's batch | groups of one "
             "(A = r) | rows with A = r | rows carried (1 step stale) | rows newly A = 0 | "
             "mean abs. change of A |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in scenarios.items():
        g, c, a = s["groups"], s["carried_rows"], s["advantages"]
        lines.append(
            f"| {name} | {s['all_correct_group_share']:.1%} | {s['steps_trained']} | "
            f"{s['generation_batches_per_step_mean']:.2f} | "
            f"{g['groups_split_over_two_steps_share']:.1%} | "
            f"{g['partial_groups_per_batch_share']:.1%} | "
            f"{g['groups_of_one_per_batch_share']:.1%} | {g['rows_with_fallback_share']:.1%} | "
            f"{c['share_of_trained_rows']:.1%} | {a['newly_zero_share']:.1%} | "
            f"{a['abs_change_mean_over_changed']:.3f} |")
    lines += ["", "## Token weights of the loss, relative to a true token mean of the minibatch",
              "",
              "| run | micro-batches per GPU and update | median | 95th percentile | max | "
              "5th / 95th percentile (signed) |", "|---|---|---|---|---|---|"]
    for name, s in [*scenarios.items(), ("no filter (control)", control)]:
        w = s["token_weights"]
        lines.append(
            f"| {name} | {w['micro_batches_per_gpu_and_update_mean']:.1f} | "
            f"{w['relative_deviation_abs_median']:.1%} | {w['relative_deviation_abs_p95']:.1%} | "
            f"{w['relative_deviation_abs_max']:.1%} | {w['relative_deviation_p05']:+.1%} / "
            f"{w['relative_deviation_p95']:+.1%} |")
    lines += ["", paragraph(
        f"Control, no filter (the GRPO and PPO scripts): "
        f"{control['groups']['groups_split_over_two_steps_share']:.0%} of groups split and "
        f"{control['carried_rows']['share_of_trained_rows']:.0%} of rows carried, in "
        f"{control['steps_trained']} steps."), "", paragraph(
        "Definitions. *Groups split over two steps*: share of the groups kept by the filter whose "
        "8 answers were trained in two different steps (their rows then get advantages other "
        "than NGRPO's over the whole group). *Partial groups in a step's batch*: share of "
        "the uids of a step's batch with fewer than 8 rows there; their mean and std are taken "
        "over those rows (and the virtual answer). *Groups of one*: share of those uids with a "
        "single row, which gets mean 0 and std 1, so A = r. *Rows newly A = 0*: rows whose "
        "advantage is 0 where the whole group would give another value (a wrong answer alone in "
        "its step, or two or more correct answers without a wrong one beside them). *Mean abs. "
        "change of A*: over the rows "
        "whose advantage changed. *Token weight deviation*: a response token's weight in the "
        "release's loss divided by its weight in a token mean over its minibatch (all GPUs), "
        "minus 1; percentiles over tokens. The last step of a filtered run is short (data ran "
        "out) and is left out of the token weights.")]
    if result.get("checked_against_release"):
        lines += ["", paragraph(
            f"The partitioner was checked against the release's own `seqlen_balancing.py` on the "
            f"first scenario: {result['checked_against_release']} calls, identical partitions.")]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-against", type=Path, default=None, metavar="FILE",
                        help="the release's verl/utils/seqlen_balancing.py: check that its "
                             "partitions equal this script's on the first scenario")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop each run after this many steps (default: the whole schedule)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max-steps must be at least 1, got {args.max_steps}")
    if args.check_against is not None and not args.check_against.is_file():
        parser.error(f"--check-against: no file at {args.check_against}; write it with "
                     "`git show ngr:verl/utils/seqlen_balancing.py > FILE` in the release")

    started = time.time()
    result = {"release": RELEASE, "seed": args.seed,
              "recipe": {"prompts_per_batch": PROMPTS_PER_BATCH, "answers": ANSWERS_PER_PROMPT,
                         "gpus": GPUS, "minibatch_prompts": MINIBATCH_PROMPTS,
                         "micro_batch_max_tokens": MICRO_TOKENS, "epochs": EPOCHS,
                         "problems": PROBLEMS, "scheduled_steps": TOTAL_STEPS},
              "synthetic": {"difficulty_beta": DIFFICULTY, "scenario_mix": SCENARIOS,
                            "problems": " ".join(make_problems.__doc__.split()),
                            "answers": " ".join(roll_out.__doc__.split())},
              "scenarios": {}}
    checker = ReleasePartitioner(args.check_against) if args.check_against else None
    for number, (name, mix) in enumerate(SCENARIOS.items()):
        problems = make_problems(mix, np.random.default_rng([args.seed, number]))
        partition = checker if (checker and number == 0) else balanced_partitions
        tally = run(problems, True, args.seed, partition, args.max_steps)
        result["scenarios"][name] = summarise(tally)
        print(f"{name}: {time.time() - started:.0f} s", file=sys.stderr)
    problems = make_problems(SCENARIOS["middle"], np.random.default_rng([args.seed, 1]))
    result["control_no_filter"] = summarise(
        run(problems, False, args.seed, balanced_partitions, args.max_steps))
    if checker:
        result["checked_against_release"] = checker.calls
    write_atomically(args.out / "batch_assembly.json", json.dumps(result, indent=1) + "\n")
    write_atomically(args.out / "batch_assembly.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

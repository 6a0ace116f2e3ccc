"""``ngrpo-sim report``: the landscape plus a headline experiment that tests the paper's claims.

The paper claims that NGRPO (1) keeps entropy higher than GRPO, (2) learns hard prompts that GRPO
abandons, and (3) trains stably where PSR-NSR's fixed negative weights do not. We do not assume any
of them. The headline run trains GRPO, NGRPO, DAPO, PSR-NSR and PPO on the "base" profile (half the
prompts almost never solved) with the shared policy, Adam and 4 minibatch updates per rollout,
sampled and in expectation. A sweep then repeats the sampled run in all eight combinations of
{tabular, shared} x {Adam, SGD} x {1, 4 minibatches}, because the answer to each claim can depend on
the setting. Every verdict comes with its numbers and a 95% interval over seeds. A section
(``ngrpo_sim.reports.token_report``) retests the claims on answers made of tokens, where length,
loss aggregation and token entropy exist; one (``ngrpo_sim.reports.length_report``) on answers of
realistic length, where answers grow, meet the length cap and are truncated; another
(``ngrpo_sim.reports.rivals_report``) compares NGRPO with the rivals published for the same problem,
and a last one (``ngrpo_sim.reports.clipping_report``) asks what the clip bounds alone do to
entropy.

Each section also turns its numbers into ``claims.Finding``s; the verdict block made of them (one
line per claim and simulator, at most 100 columns) is what the command prints, with where the
report, the page, the figures and the run folders are and the total time (``terminal_summary``,
kept in ``summary.txt``), and it opens ``report.md``, where each figure stands beside its text and
the total time comes last.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
import time
from pathlib import Path

from ngrpo_sim.analysis import landscape
from ngrpo_sim.base import checks
from ngrpo_sim.base.files import write_atomically
from ngrpo_sim.experiments.runs import (difference_interval, final_values, format_summary, interval,
                                        with_mode, write_run)
from ngrpo_sim.experiments.sweep import Task, check_where_to_run, run_tasks, sweep_tasks
from ngrpo_sim.methods.presets import get_method
from ngrpo_sim.pages.page import PAGE_FILE, write_page
from ngrpo_sim.reports.claims import (ENTROPY, HARD_PROMPTS, HEADLINE, HEADLINE_METHODS,
                                      INSTABILITY, LEARNING_RATES, LINE_WIDTH, Finding,
                                      entropy_at_matched_accuracy, judged, verdict, verdict_block)
from ngrpo_sim.simulators.dynamics import DynamicsConfig, RunRecord

SWEEP_STEPS, SWEEP_SEEDS = 150, 8
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
"""A Markdown image; its group is the image's path."""
SUMMARY_FILE = "summary.txt"
"""What the command printed (``terminal_summary``), kept beside ``report.md`` so that a second run
of the same report prints it again."""


def sweep_configs(base: DynamicsConfig | None = None) -> list[DynamicsConfig]:
    """The eight settings of the sweep (based on the headline config unless told otherwise)."""
    base = base or HEADLINE
    return [dataclasses.replace(base, policy=policy, optimizer=optimizer, minibatches=minibatches,
                                learning_rate=LEARNING_RATES[policy, optimizer],
                                steps=SWEEP_STEPS, seeds=SWEEP_SEEDS)
            for policy in ("tabular", "shared") for optimizer in ("adam", "sgd")
            for minibatches in (1, 4)]


def _setting(config: DynamicsConfig) -> str:
    return (f"{config.policy}, {config.optimizer} (lr {config.learning_rate}), "
            f"{config.minibatches} minibatch" + ("es" if config.minibatches > 1 else ""))


def claims_table(groups: list[list[RunRecord]]) -> str:
    """One markdown table row per setting: each claim's measured difference, interval and
    verdict."""
    lines = ["| setting | entropy: NGRPO − GRPO (final) "
             "| entropy at equal accuracy (NGRPO / GRPO) | "
             "hard-prompt success: NGRPO − GRPO | abandoned: NGRPO / GRPO "
             "| regressed prompts: PSR-NSR / GRPO / "
             "NGRPO | worst accuracy drop: PSR-NSR / others |", "|---|---|---|---|---|---|---|"]
    for run_records in groups:
        by_name = {t.method: t for t in run_records}
        grpo, ngrpo, psr_nsr = by_name["grpo"], by_name["ngrpo"], by_name["psr_nsr"]

        def mean(run_record, name):
            return interval(final_values(run_record, name))[0]

        d_entropy = difference_interval(final_values(ngrpo, "entropy"),
                                        final_values(grpo, "entropy"))
        matched = 0.999 * min(mean(t, "accuracy") for t in (grpo, ngrpo))
        d_hard = difference_interval(final_values(ngrpo, "accuracy_hard"),
                                     final_values(grpo, "accuracy_hard"))
        others = max(mean(t, "max_drawdown") for name, t in by_name.items() if name != "psr_nsr")
        lines.append(
            f"| {_setting(grpo.config)} "
            f"| {d_entropy[0]:+.3f} ± {d_entropy[1]:.3f}: "
            f"{verdict(*d_entropy, 'higher', 'lower')} "
            f"| {entropy_at_matched_accuracy(ngrpo, matched):.3f} / "
            f"{entropy_at_matched_accuracy(grpo, matched):.3f}"
            f" at accuracy {matched:.3f} "
            f"| {d_hard[0]:+.3f} ± {d_hard[1]:.3f}: "
            f"{verdict(*d_hard, 'NGRPO better', 'GRPO better')} "
            f"| {mean(ngrpo, 'abandoned'):.1f} / {mean(grpo, 'abandoned'):.1f} "
            f"| {mean(psr_nsr, 'regressed'):.1f} / {mean(grpo, 'regressed'):.1f} / "
            f"{mean(ngrpo, 'regressed'):.1f} "
            f"| {mean(psr_nsr, 'max_drawdown'):.3f} / {others:.3f} |")
    return "\n".join(lines)


def report_plan() -> dict[str, list[Task]]:
    """Every simulation of the report, by section, in the order ``run_report`` reads them."""
    # These sections read this module's verdicts and settings.
    from ngrpo_sim.reports import clipping_report, length_report, rivals_report, token_report

    headline_configs = [HEADLINE, with_mode(HEADLINE, "expected")]
    token_shared = token_report.token_config("shared", token_report.TOKEN_HEADLINE)
    return {"headline and sweep": sweep_tasks([get_method(name) for name in HEADLINE_METHODS],
                                              headline_configs + sweep_configs()),
            "tokens": token_report.token_tasks(token_report.TOKEN_HEADLINE),
            "lengths": length_report.length_tasks(length_report.LENGTH_HEADLINE),
            "rivals": rivals_report.rival_tasks(HEADLINE, token_shared),
            "noise": clipping_report.noise_tasks(), "nsr": clipping_report.nsr_tasks()}


def bandit_findings(groups: list[list[RunRecord]]) -> list[Finding]:
    """The paper's three claims on one-token answers, from the runs of every setting (the headline
    first, as ``claims_table`` takes them)."""
    def differences(first, second, name):
        rows = []
        for number, run_records in enumerate(groups):
            by_name = {t.method: t for t in run_records}
            mean, half = difference_interval(final_values(by_name[first], name),
                                             final_values(by_name[second], name))
            config = run_records[0].config
            setting = ("headline" if number == 0 else
                       f"{config.policy}, {config.optimizer}, {config.minibatches} mb")
            rows.append((setting, mean, half))
        return rows

    where = "bandit (1 token)"
    return [judged(ENTROPY, where, differences("ngrpo", "grpo", "entropy"), "higher", "higher",
                   "lower", " nats"),
            judged(HARD_PROMPTS, where, differences("ngrpo", "grpo", "accuracy_hard"), "higher",
                   "higher", "lower", " success rate"),
            judged(INSTABILITY, where, differences("psr_nsr", "grpo", "regressed"), "more",
                   "more", "fewer", " prompts regressed", digits=1)]


def terminal_summary(out: Path, findings: list[Finding], figures: list[str], page: Path,
                     seconds: float) -> str:
    """What ``ngrpo-sim report`` prints: the verdict block, where the report, the page, the
    ``figures`` (paths relative to ``out``) and the run folders are, and the total time."""
    out = Path(out)
    folders = sorted({path.split("/")[0] for path in figures} | {"headline", "sweep"})
    where = [f"Written to {out}:",
             "  report.md: every table, with the figures beside the text",
             f"  {page.name}: the interactive page ({page.stat().st_size / 1e6:.1f} MB, any "
             "browser, no network)",
             *textwrap.wrap("figures: " + ", ".join(figures), LINE_WIDTH,
                            initial_indent="  ", subsequent_indent="    ",
                            break_long_words=False, break_on_hyphens=False),
             *textwrap.wrap("run folders (CSV of every metric): " + ", ".join(
                 f"{folder}/" for folder in folders), LINE_WIDTH, initial_indent="  ",
                 subsequent_indent="    ")]
    return "\n".join([*verdict_block(findings), "", *where, "", f"Total time {seconds:.0f} s."])


def run_report(out: Path, group_size: int = 8, workers: int = 1, ray_address: str | None = None,
               store: Path | None = None) -> str:
    """Run everything, write ``out``, and return what the command prints (``terminal_summary``:
    the verdict block, where everything is, the total time; also written to ``out/summary.txt``)
    while ``out/report.md``, written last, holds the same block, every table and the figures. The
    simulations run as ``sweep.run_tasks`` runs them: here, in ``workers`` local processes, or on
    the Ray cluster at ``ray_address``, with the same results; ``store`` keeps each as it
    finishes, and serves those it holds already. Every argument and the memory are checked before
    the first write; ``sweep.TasksFailed`` is raised, before anything but the store is written,
    when some simulations fail."""
    from ngrpo_sim.reports import clipping_report, length_report, rivals_report, token_report

    check_where_to_run(workers, ray_address)
    checks.integer("group_size", group_size, low=2)
    started = time.perf_counter()
    out = Path(out)
    plan = report_plan()
    # Every simulation in one pool, so that the workers stay busy from the first to the last.
    runs = run_tasks([task for tasks in plan.values() for task in tasks], workers=workers,
                     ray_address=ray_address, store=store, description="simulations")
    results = {}
    for name, tasks in plan.items():
        results[name], runs = runs[:len(tasks)], runs[len(tasks):]
    methods = [get_method(name) for name in landscape.DEFAULT_METHODS]
    landscape.write_csv(methods, group_size, out / "landscape")
    landscape.write_figures(methods, group_size, out / "landscape")
    split = 2 * len(HEADLINE_METHODS)  # sampled and expected
    headline, sweep = results["headline and sweep"][:split], results["headline and sweep"][split:]
    write_run(out / "headline", headline)
    groups = [sweep[i:i + len(HEADLINE_METHODS)]
              for i in range(0, len(sweep), len(HEADLINE_METHODS))]
    for number, run_records in enumerate(groups):
        config = run_records[0].config
        write_run(out / "sweep"
                  / f"{number}-{config.policy}-{config.optimizer}-mb{config.minibatches}",
                  run_records)
    token_runs = token_report.token_runs(results["tokens"])
    token_lines = token_report.token_section(out / "tokens", runs=token_runs)
    headline_sampled = [t for t in headline if t.config.mode == "sampled"]
    length_runs = length_report.length_runs(results["lengths"])
    length_lines = length_report.length_section(out / "lengths", runs=length_runs,
                                                one_token=headline_sampled,
                                                short_answers=token_runs)
    # After the run folders it draws: the headline's and the long answers'.
    page_started = time.perf_counter()
    page_path = write_page(out / PAGE_FILE, out)
    page_seconds = time.perf_counter() - page_started
    count = len(rivals_report.RIVALS)  # the bandit's rivals, then the token task's
    rival_groups = (headline_sampled + results["rivals"][:count],
                    token_runs.presets["shared"] + results["rivals"][count:])
    rival_lines = rivals_report.rivals_section(out / "rivals", *rival_groups)
    clipping_lines = clipping_report.clipping_section(out / "clipping", results["noise"],
                                                      results["nsr"])
    findings = [*bandit_findings([headline_sampled] + groups),
                *token_report.token_findings(token_runs),
                *length_report.length_findings(length_runs),
                *rivals_report.rival_findings(*rival_groups),
                *clipping_report.clipping_findings(results["noise"], results["nsr"])]
    elapsed = time.perf_counter() - started

    lines = [
        "# ngrpo-sim report", "",
        "```text", *verdict_block(findings), "```", "",
        f"The interactive page, [{PAGE_FILE}]({PAGE_FILE}) "
        f"({page_path.stat().st_size / 1e6:.1f} MB, written in {page_seconds:.1f} s), opens in "
        "any browser without a network. Below: one-token answers (the headline and the sweep), "
        "then answers made of tokens, long answers, the rivals and the clip bounds, each with its "
        "figure and its tables.", "",
        "## One-token answers: the headline and the sweep", "",
        "![Each method's advantages, the chance of a silent group and the gain c(p), G = "
        f"{group_size}](landscape/landscape.png)", "",
        f"Headline: {_setting(HEADLINE)}, P = {HEADLINE.num_prompts} prompts "
        f"({HEADLINE.profile} profile), "
        f"K = {HEADLINE.num_answers} answers, B = {HEADLINE.prompts_per_step}, "
        f"G = {HEADLINE.group_size}, "
        f"{HEADLINE.steps} steps, {HEADLINE.seeds} seeds. Final values, mean ± 95% interval "
        "over seeds "
        "(expected-mode runs are deterministic: one run, no interval).", "",
        "```", format_summary(headline), "```", "",
        "![The headline's training curves](headline/dynamics.png)", "",
        "Claims, headline setting first, then the sweep "
        f"({SWEEP_STEPS} steps, {SWEEP_SEEDS} seeds per setting; "
        "differences with 95% Welch intervals):", "",
        claims_table([headline_sampled] + groups), "",
        "Run folders: `headline/`, `sweep/` (one per setting), `landscape/` (CSV of the "
        "landscape).", "", *token_lines, "", *length_lines, "", *rival_lines, "",
        *clipping_lines, "", f"Total time {elapsed:.0f} s."]
    report = "\n".join(lines) + "\n"
    summary = terminal_summary(out, findings, IMAGE_LINK.findall(report), page_path, elapsed)
    write_atomically(out / SUMMARY_FILE, summary + "\n")
    write_atomically(out / "report.md", report)
    return summary

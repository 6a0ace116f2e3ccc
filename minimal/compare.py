"""Train several methods of minimal/ngrpo_train.py for several seeds; tabulate and plot the result.

    python minimal/compare.py --methods ngrpo,grpo --seeds 5           # table with 95% intervals
    python minimal/compare.py --methods ngrpo,grpo,dapo --steps 200 --run-dir runs/minimal/short

Every other flag is the trainer's (`python minimal/ngrpo_train.py --help`) and applies to every run.
Runs go to RUN_DIR/METHOD-seedSEED (default runs/minimal/compare), beside table.md, results.json
and comparison.png. Experiment management, not the method: the trainer never imports this file.
"""
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import ngrpo_train as trainer
import numpy as np

from ngrpo_sim.experiments.runs import interval
from ngrpo_sim.experiments.trainer_runs import (CONFIG_FILE, METRICS_FILE, MODEL_FOLDER, RUN_FOLDER,
                                                read_config, read_run)

DEFAULT_FOLDER = "runs/minimal/compare"
TABLE_FILES = ("table.md", "results.json", "comparison.png")


@dataclasses.dataclass
class Comparison:
    """Which methods and how many seeds; every run trains with `config` otherwise."""
    methods: list
    """Method names, the first the one the others are paired against."""
    seeds: int
    """Seeds 1..seeds per method."""
    config: trainer.Config
    """The settings of every run (method, seed and run_dir are set per run)."""


def parse_comparison(argv=None) -> Comparison:
    """The trainer's command line plus --methods and --seeds."""
    parser = trainer.command_line_parser()
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--methods", default="ngrpo,grpo",
                        help="Comma-separated methods, e.g. ngrpo,grpo,dapo (default: ngrpo,grpo)")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per method (default: 3)")
    settings = vars(parser.parse_args(argv))
    methods = [name.strip() for name in settings.pop("methods").split(",") if name.strip()]
    seeds = settings.pop("seeds")
    return Comparison(methods=methods, seeds=seeds, config=trainer.Config(**settings))


def check_comparison(comparison: Comparison) -> trainer.Config:
    """The runs' config with the task's defaults, after checking every method and the seeds."""
    if not comparison.methods:
        raise trainer.UsageError("methods must name at least one method, got ''; e.g. "
                                 "--methods ngrpo,grpo")
    repeated = sorted({name for name in comparison.methods if comparison.methods.count(name) > 1})
    if repeated:
        raise trainer.UsageError(f"methods names {', '.join(repeated)} more than once, got "
                                 f"{','.join(comparison.methods)}; name each method once")
    unknown = [name for name in comparison.methods if name not in trainer.METHODS]
    if unknown:
        raise trainer.UsageError(f"--methods names {', '.join(map(repr, unknown))}, not a method; "
                                 f"choose from {', '.join(trainer.METHODS)}")
    if comparison.seeds < 1:
        raise trainer.UsageError(f"--seeds must be >= 1, got {comparison.seeds}")
    defaults = trainer.Config()
    for flag in ("method", "seed"):  # one run's flags: the comparison sets them per run
        if getattr(comparison.config, flag) != getattr(defaults, flag):
            value = getattr(comparison.config, flag)
            raise trainer.UsageError(f"--{flag} {value} is the trainer's flag for one run; use "
                                     f"--{flag}s")
    base = Path(comparison.config.run_dir or DEFAULT_FOLDER)
    if (base / CONFIG_FILE).is_file():
        raise trainer.UsageError(f"run_dir={str(base)!r} holds one trainer run (config.json); give "
                                 "the comparison a folder of its own")
    check_earlier_table(base, comparison, comparison.config.overwrite)
    config = trainer.with_task_defaults(comparison.config)
    for name in comparison.methods:
        trainer.check_config(dataclasses.replace(config, method=name))
    return config


def check_earlier_table(base: Path, comparison: Comparison, overwrite: bool) -> None:
    """Refuse to replace an earlier table of `base` by one that holds less: a method it tabled or
    seeds it averaged (unless `overwrite`), or files of these names that compare.py did not write.
    Adding methods or seeds to a comparison is what the folder is for."""
    present = [name for name in TABLE_FILES if (base / name).exists()]
    if not present:
        return
    try:
        earlier = json.loads((base / "results.json").read_text())
        seeds = {len(columns["pass@1 after"]) for columns in earlier.values()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        raise trainer.UsageError(f"run_dir={str(base)!r} holds {', '.join(present)} that "
                                 "compare.py did not write; give the comparison a folder of its "
                                 "own") from None
    dropped = [name for name in earlier if name not in comparison.methods]
    fewer = comparison.seeds < max(seeds, default=0)
    if (dropped or fewer) and not overwrite:
        # The earlier methods first: the table pairs every method with the first.
        added = [name for name in comparison.methods if name not in earlier]
        methods = ",".join([*earlier, *added])
        left_out = [*dropped, *([f"seeds {comparison.seeds + 1}-{max(seeds)}"] if fewer else [])]
        raise trainer.UsageError(
            f"{base} holds the table of {','.join(earlier)} x {max(seeds)} seeds, and this "
            f"comparison's table would leave out {', '.join(left_out)}; add to it (--methods "
            f"{methods} --seeds {max(comparison.seeds, *seeds)}: finished runs are reused), give "
            "another --run-dir, or --overwrite to train the comparison anew")


def what_to_do(wanted: trainer.Config, overwrite: bool) -> str:
    """What one run of the comparison needs: "train" (anew), "resume" (an unfinished run) or
    "reuse" (a run finished with the same settings). A run with other settings is refused, with
    UsageError (give another run_dir), unless `overwrite`: then it is trained anew."""
    run = Path(wanted.run_dir)
    if overwrite or not (run / CONFIG_FILE).is_file():
        return "train"
    saved = read_config(run)
    settings = {**dataclasses.asdict(wanted), "answer_checker": trainer.answer_checker(wanted)}
    changed = trainer.changed_settings(saved, settings, allowed=("steps",))
    if saved.get("steps", wanted.steps) > wanted.steps:  # last evaluated after `steps`
        changed.append(f"steps={wanted.steps} (the run has {saved['steps']})")
    if changed:
        raise trainer.UsageError(f"compare: {run} was trained with other settings: "
                                 f"{', '.join(changed)}; give another --run-dir, or --overwrite "
                                 "to train the comparison anew")
    return "reuse" if finished(run, wanted.steps) else "resume"


def finished(run: Path, steps: int) -> bool:
    """Whether `run` holds a model and metrics up to `steps`."""
    return (run / MODEL_FOLDER).is_dir() and (run / METRICS_FILE).is_file() and \
        read_run(run)[-1]["step"] == steps


class RunsFailed(RuntimeError):
    """Some runs of the comparison raised; every other run was trained (or reused) and is kept in
    its folder. `kept` lists their folders, `failed` maps a failed run's folder to its error,
    `left_out` names the methods the table leaves out (all of them: no table was written)."""

    def __init__(self, kept: list, failed: dict, left_out: list, tabled: bool):
        super().__init__(f"{len(failed)} of {len(kept) + len(failed)} runs failed")
        self.kept, self.failed, self.left_out, self.tabled = kept, failed, left_out, tabled


class ComparisonInterrupted(KeyboardInterrupt):
    """Ctrl-C during a comparison: the runs finished before it, of `total`."""

    def __init__(self, kept: list, total: int):
        super().__init__(kept, total)
        self.kept, self.total = kept, total


def compare(comparison: Comparison) -> Path:
    """Train every method for seeds 1..seeds (or reuse or resume a run: what_to_do), then write a
    table of the final held-out numbers with 95% t-intervals over seeds, the paired differences to
    the first method, and a figure; returns the folder.

    Every run's folder is checked before the first is trained. A run that fails does not stop the
    others: the table then holds the methods whose every seed finished, and RunsFailed is raised
    after it; Ctrl-C raises ComparisonInterrupted, which names the runs kept."""
    config = check_comparison(comparison)
    base = Path(config.run_dir or DEFAULT_FOLDER)
    wanted = {(name, seed): dataclasses.replace(
                  config, method=name, seed=seed,
                  run_dir=str(base / RUN_FOLDER.format(method=name, seed=seed)))
              for name in comparison.methods for seed in range(1, comparison.seeds + 1)}
    actions = {key: what_to_do(run, config.overwrite) for key, run in wanted.items()}
    kept, failed = [], {}
    try:
        for key, run in wanted.items():
            try:
                if actions[key] != "reuse":
                    trainer.train(dataclasses.replace(run, resume=actions[key] == "resume"))
            except trainer.UsageError:
                raise
            except Exception as error:  # this run failed; the others still train
                failed[key] = error
            else:
                kept.append(key)
    except KeyboardInterrupt as stop:
        raise ComparisonInterrupted([Path(wanted[key].run_dir) for key in kept],
                                    len(wanted)) from stop
    failed_methods = {name for name, _ in failed}
    methods = [name for name in comparison.methods if name not in failed_methods]
    if methods:
        write_comparison(base, methods, comparison.seeds, config)
    if failed:
        raise RunsFailed([Path(wanted[key].run_dir) for key in kept],
                         {Path(wanted[key].run_dir): error for key, error in failed.items()},
                         sorted(failed_methods, key=comparison.methods.index), bool(methods))
    return base


def write_comparison(base: Path, methods: list, seeds: int, config: trainer.Config) -> None:
    """table.md, results.json and comparison.png of the finished runs of `methods`."""
    runs = {name: [read_run(base / RUN_FOLDER.format(method=name, seed=seed))
                   for seed in range(1, seeds + 1)] for name in methods}
    columns = {"pass@1 before": lambda r: r[0]["eval/pass@1"],
               "pass@1 after": lambda r: r[-1]["eval/pass@1"],
               f"pass@{config.eval_samples}": lambda r: r[-1][f"eval/pass@{config.eval_samples}"],
               "pass@k AUC": lambda r: r[-1]["eval/pass_auc"],
               "mean entropy": lambda r: np.mean([x["entropy"] for x in r if "entropy" in x]),
               "all-wrong groups learned from":
                   lambda r: np.mean([x["share_all_wrong_learned"] for x in r[1:]])}
    values = {name: {column: [f(r) for r in runs[name]] for column, f in columns.items()}
              for name in methods}
    spread = "mean ± 95% t-interval over seeds" if seeds > 1 else "one seed, so no interval"
    lines = [f"{seeds} seeds x {config.steps} steps, {config.eval_prompts} held-out "
             f"prompts x {config.eval_samples} samples; {spread}", "",
             "| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in methods:
        cells = [shown(*interval(values[name][column])) for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    # Same seed = same initial model, evaluation draws and first prompts: pair the runs.
    for name in methods[1:]:
        for column in ("pass@1 after", "pass@k AUC"):
            difference = shown(*interval(np.subtract(values[methods[0]][column],
                                                     values[name][column])), sign="+")
            lines.append(f"- {methods[0]} - {name}, {column}: {difference} (paired by seed)")
    trainer.write_atomically(base / "table.md", "\n".join(lines) + "\n")
    trainer.write_atomically(base / "results.json", json.dumps(values, indent=1))
    plot_comparison(base, runs)
    print("\n".join(lines))


def shown(mean: float, half: float, sign: str = "") -> str:
    """A mean with its 95% half-width; one seed has none (the table's first line says so)."""
    if np.isnan(half):
        return f"{mean:{sign}.3f}"
    return f"{mean:{sign}.3f} ± {half:.3f}"


def plot_comparison(base: Path, runs: dict) -> None:
    """comparison.png: held-out pass@1 and pass@k AUC, entropy and the share of all-wrong groups
    against steps, the mean over seeds with its 95% t-interval shaded."""
    plt = trainer.pyplot()
    keys = ["eval/pass@1", "eval/pass_auc", "entropy", "share_all_wrong"]
    figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6),
                                constrained_layout=True)
    for ax, key in zip(axes, keys):
        for name, records in runs.items():
            steps = trainer.curve(records[0], key)[0]
            if not len(steps):
                continue
            stacked = np.array([trainer.curve(r, key)[1] for r in records])
            mean, half = zip(*(interval(column) for column in stacked.T))
            colour = trainer.METHOD_COLOURS.get(name, "#000000")
            ax.plot(steps, mean, color=colour, label=name, marker="o" if "eval" in key else None)
            ax.fill_between(steps, np.subtract(mean, half), np.add(mean, half), color=colour,
                            alpha=0.2)
        title = {"eval/pass_auc": "held-out pass@k AUC"}.get(key, trainer.PANELS.get(key))
        ax.set(title=title if "eval" in key else title + " (20-step mean)", xlabel="step")
    axes[0].legend()
    figure.savefig(base / "comparison.png", dpi=110)
    plt.close(figure)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    comparison = parse_comparison(argv)
    command = shlex.join(trainer.command_line(__file__, argv))
    try:
        compare(comparison)
    except trainer.UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except RunsFailed as failure:
        lines = [f"kept {run}" for run in failure.kept]
        lines += [f"failed {run}: {type(error).__name__}: "
                  + (str(error).strip().splitlines() or [""])[0]
                  for run, error in failure.failed.items()]
        table = f"table.md leaves out {', '.join(failure.left_out)}, with a failed run" \
            if failure.tabled else "no method finished every seed, so no table.md"
        lines.append(f"{failure}; {table}; the same command trains only the failed runs again: "
                     f"{command}")
        print("\n".join(f"compare: {line}" for line in lines), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as stop:
        kept = f"{len(stop.kept)} of {stop.total} runs finished and are kept" \
            if isinstance(stop, ComparisonInterrupted) else "nothing had started"
        print(f"interrupted; {kept}, the stopped one resumes; continue with: {command}",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

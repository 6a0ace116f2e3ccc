"""The ``ngrpo-sim`` command line: each subcommand's parser and the function that runs it.

Over 500 lines, kept as one module because it is one idea, the user's entry: every flag, every
one-line refusal and exit code, and the shared claiming of run folders read together; the
settings' flags themselves are generated from the config dataclasses (``_config_cli``).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import sys
import textwrap
from pathlib import Path

from ngrpo_sim._config_cli import (add_config_arguments, add_config_grid_arguments, config_flags,
                                   config_from_args, config_grid_from_args)
from ngrpo_sim.analysis import landscape
from ngrpo_sim.base import checks
from ngrpo_sim.base.files import missing_folders, remove_if_empty
from ngrpo_sim.methods.presets import METHODS, parse_methods
from ngrpo_sim.simulators.dynamics import MODES, DynamicsConfig
from ngrpo_sim.simulators.long_answer_config import LongAnswerConfig
from ngrpo_sim.simulators.sequence_config import SequenceConfig


def _method_list_help() -> str:
    """Every preset with its one-line summary, escaped for argparse's %-formatting of help
    strings."""
    return "; ".join(f"{name}: {m.summary}" for name, m in METHODS.items()).replace("%", "%%")


def _add_landscape(subparsers) -> None:
    parser = subparsers.add_parser(
        "landscape",
        help="tables and figures of each method's advantages, silent groups and gain c(p)",
        description="Exact advantage landscape of group-based RL methods for binary rewards: "
                    "the advantage of a correct and of a wrong answer in a group of G with k "
                    "correct answers, the probability that a sampled group gives no gradient, "
                    "and the gain c(p) of the expected update of a softmax policy. Prints the "
                    "tables and writes CSV and PNG files to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--group-size", type=int, default=8,
                        help="G, answers sampled per prompt (the NGRPO release uses 8)")
    parser.add_argument("--methods", default=",".join(landscape.DEFAULT_METHODS),
                        help="comma-separated presets to compare (PPO has no landscape: its "
                             "advantage depends on a learned critic). Known: "
                             + _method_list_help())
    _add_method_knobs(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder for CSV and PNG files "
                             "(default: runs/landscape-G<group size>)")
    parser.add_argument("--no-figures", action="store_true",
                        help="print the tables and write CSV only")
    _add_overwrite(parser)
    parser.set_defaults(run=_run_landscape)


def _add_method_knobs(parser) -> None:
    """The method flags every command that runs methods shares: ``Method.retuned``'s knobs, each
    left as the preset has it unless given."""
    knobs = parser.add_argument_group(
        "method knobs", "retune every method of --methods (Method.retuned); a knob a method does "
                        "not have leaves it as it is; unset, each method keeps its preset's value")
    knobs.add_argument("--r-max", type=float, default=None,
                       help="the best reward the verifier gives: NGRPO's virtual answer and the "
                            "all-correct filter (presets: 1)")
    knobs.add_argument("--virtual-samples", type=int, default=None,
                       help="how many virtual r_max answers NGRPO adds to each group's statistics "
                            "(presets: 1)")
    knobs.add_argument("--ddof", type=int, default=None, choices=(0, 1),
                       help="std convention of the z-score estimators (GRPO, NGRPO, ...): 1 = "
                            "Bessel's correction (release), 0 = population std (presets: 1)")
    knobs.add_argument("--clip-low", type=float, default=None,
                       help="the PPO ratio's lower bound is 1 - clip_low (NGRPO 0.16, most 0.2)")
    knobs.add_argument("--clip-high", type=float, default=None,
                       help="the PPO ratio's upper bound is 1 + clip_high (NGRPO 0.24, DAPO 0.28)")


def _method_knobs(args) -> dict:
    """The method knobs given on the command line, by their ``Method.retuned`` names."""
    knobs = ("r_max", "virtual_samples", "ddof", "clip_low", "clip_high")
    return {knob: getattr(args, knob) for knob in knobs if getattr(args, knob) is not None}


def _methods_from_args(args) -> list:
    """The presets of ``--methods`` retuned by the method knobs."""
    return [method.retuned(**_method_knobs(args)) for method in parse_methods(args.methods)]


def _run_landscape(args) -> None:
    methods = _methods_from_args(args)
    for method in methods:
        landscape.check_method(method)
    checks.fits_in_memory(f"the landscape for groups of {args.group_size}",
                           landscape.memory_bytes(args.group_size), "use a smaller --group-size")
    out = _output_folder(args, args.out or Path("runs") / f"landscape-G{args.group_size}",
                         fresh=not args.overwrite)
    print(landscape.format_tables(methods, args.group_size))
    written = landscape.write_csv(methods, args.group_size, out)
    if not args.no_figures:
        written += landscape.write_figures(methods, args.group_size, out)
    print("\nwrote " + ", ".join(str(path) for path in written))


def _output_folder(args, folder: Path, fresh: bool = False) -> Path:
    """``checks.output_folder`` for ``--out``, remembering the folders it makes: ``main`` removes
    them again where the command stops before it writes into them."""
    args.created = missing_folders(Path(folder).expanduser())
    return checks.output_folder("--out", folder, fresh=fresh)


def _add_dynamics(subparsers) -> None:
    parser = subparsers.add_parser(
        "dynamics",
        help="train methods on a bandit task; accuracy, entropy and pass@k over steps",
        description="Simulate RL training of each method on a bandit stand-in for an LLM (P "
                    "prompts, K answers, softmax policies), vectorised over seeds. Writes a run "
                    "folder (config.json, metrics.csv, pass_at_k.csv, summary.csv, dynamics.png, "
                    "pass_at_k.png) and prints final values with 95% intervals over seeds.",
    )
    _add_training_options(parser, DynamicsConfig, "dynamics",
                          "sampled (real rollouts), expected (the deterministic expected update) "
                          "or sampled,expected for both side by side (default: sampled)")
    parser.set_defaults(run=_run_dynamics)


def _add_training_options(parser, config_class, command: str, mode_help: str) -> None:
    """The options of a command that trains methods: which, in which modes, the config's fields
    (CleanRL style, from their docstrings) and the run folder."""
    parser.add_argument("--methods", default="grpo,ngrpo,dapo,psr_nsr,ppo",
                        help="comma-separated presets. Known: " + _method_list_help())
    _add_method_knobs(parser)
    parser.add_argument("--mode", default="sampled", help=mode_help)
    add_config_arguments(parser, config_class, skip=("mode",))
    out = Path("runs") / command
    parser.set_defaults(default_out=out)  # see _claim
    parser.add_argument("--out", type=Path, default=out,
                        help=f"run folder for CSV and PNG files (default: runs/{command})")
    _add_overwrite(parser)


def _add_overwrite(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of an earlier run in --out (without it, a run "
                             "of the same settings there is continued, reusing what it finished, "
                             "and a folder of other settings or other files is refused)")


def _train(args, config_class) -> list:
    """Every method of ``--methods`` in every mode of ``--mode`` under the command's config, each
    run kept in ``--out`` as it finishes (``experiments.claim_folder``)."""
    from ngrpo_sim.experiments.runs import grid_settings, label_of_task, with_mode
    from ngrpo_sim.experiments.sweep import check_fits_in_memory, run_sweep, sweep_tasks

    methods = _methods_from_args(args)
    modes = [part.strip() for part in args.mode.split(",") if part.strip()]
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"--mode must be sampled, expected or both comma-separated, got "
                             f"{args.mode!r}")
    config = config_from_args(config_class, args, mode="sampled")
    configs = [with_mode(config, mode) for mode in modes]
    # Refused before the first progress bar: a method a mode cannot train, a run beyond the
    # memory, a folder it cannot write or that holds other runs.
    tasks = sweep_tasks(methods, configs)
    check_fits_in_memory(configs, len(configs) * len(methods))
    claim = _claim(args, grid_settings(methods, configs), tasks,
                   [label_of_task(*task) for task in tasks])
    _print_setting(args.command, [config])
    return run_sweep(methods, configs, store=claim.store, description="simulating")


def _claim(args, settings: dict, tasks: list, names: list[str], result: str | None = None):
    """``--out`` claimed for this command (``experiments.claim_folder``); ``main`` reads the claim
    and the tasks' ``names`` to say what was kept when the command fails or is stopped.

    A default ``--out`` that holds another run (made by an earlier version, or with other flags)
    is kept as it is: the command takes the first of ``runs/NAME-2``, ``-3``, ... that is free or
    holds this very run, and says so, so that ``make demo`` works again after an upgrade. A
    folder the user named is refused instead (``FolderTaken``)."""
    from ngrpo_sim.experiments.runs import FolderTaken, claim_folder

    default = Path(args.out) == Path(args.default_out) and not args.overwrite
    folder = Path(args.out)
    for number in range(2, 1000):
        try:
            args.claim = claim_folder("--out", folder, args.command, settings, tasks,
                                      overwrite=args.overwrite, result=result)
            break
        except FolderTaken:
            if not default:
                raise
            folder = Path(f"{args.default_out}-{number}")
    else:
        raise ValueError(f"--out: {args.default_out} and its 998 numbered siblings all hold other "
                         "runs; give a new --out")
    if folder != Path(args.out):
        print(f"{args.out} holds another ngrpo-sim run (kept as it is); this one goes to {folder}"
              " (--out names a folder, --overwrite replaces the old run)\n")
        args.out = folder
    args.task_names = names
    return args.claim


def _finished_runs(train) -> tuple[list, Exception | None]:
    """The runs ``train()`` returns, or, when some failed, those that finished and the failure."""
    from ngrpo_sim.experiments.sweep import TasksFailed

    try:
        return train(), None
    except TasksFailed as failure:
        return [failure.finished.get(index) for index in range(len(failure.tasks))], failure


def _train_and_write(args, config_class, summary=None, panels=None, figure: str = "") -> None:
    """Train (``_train``) and write the run folder of the runs that finished, also when some
    failed (their failure is raised after), with ``panels`` against steps in ``figure``."""
    from ngrpo_sim.experiments.runs import SUMMARY_METRICS, plot_dynamics, write_run

    run_records, failure = _finished_runs(lambda: _train(args, config_class))
    run_records = [run_record for run_record in run_records if run_record is not None]
    summary = summary or SUMMARY_METRICS
    if run_records:
        print(_fitting_summary(run_records, summary))
        written = write_run(args.out, run_records, summary, method_knobs=_method_knobs(args))
        if panels:
            written.append(plot_dynamics(run_records, args.out / figure, panels))
        print("\nwrote " + ", ".join(str(path) for path in written))
    if failure is not None:
        raise failure


SETTING_FIELDS = ("policy", "optimizer", "learning_rate", "minibatches", "steps", "seeds")
"""The fields a command's header always names, and its command for the story's setting always
gives."""


def _story(command: str):
    """(the setting the README and the docs tell about for ``command``, its name in words)."""
    from ngrpo_sim.reports.claims import HEADLINE, TOKEN_HEADLINE
    from ngrpo_sim.reports.length_report import LENGTH_HEADLINE

    return {"dynamics": (HEADLINE, "the headline the README quotes"),
            "sweep": (HEADLINE, "the headline the README quotes"),
            "tokens": (TOKEN_HEADLINE, "the token-level headline the README quotes"),
            "lengths": (LENGTH_HEADLINE, "the long-answer setting of the report")}[command]


def _story_command(command: str) -> list[str]:
    """The command line that runs the story's setting of ``command`` (``_story``)."""
    story, _ = _story(command)
    return ["ngrpo-sim", command, *config_flags(story, SETTING_FIELDS, grid=command == "sweep")]


def setting_header(command: str, configs: list) -> str:
    """The lines a command that trains prints before its first progress bar: the setting it runs
    (every value of a grid), and, unless one of ``configs`` is the setting that the README and the
    docs tell about for ``command``, how that one differs and the command that runs it."""
    from ngrpo_sim.reports.claims import LINE_WIDTH

    story, name = _story(command)

    def values(field):
        return "/".join(str(value) for value in dict.fromkeys(getattr(c, field) for c in configs))

    first = configs[0]
    setting = (f"Setting: {values('policy')} policy, {values('optimizer')} (lr "
               f"{values('learning_rate')}), {values('minibatches')} minibatches, "
               f"{values('steps')} steps, {values('seeds')} seeds, {values('num_prompts')} "
               f"prompts ({values('profile')} profile)"
               + (f", L = {values('max_length')} tokens" if hasattr(first, "max_length") else "")
               + ".")
    if story in configs:
        return "\n".join(textwrap.wrap(f"{setting} This is {name}.", LINE_WIDTH))
    differing = [f"{item.name} {getattr(story, item.name)}" for item in dataclasses.fields(story)
                 if all(getattr(c, item.name) != getattr(story, item.name) for c in configs)]
    there = f" (there: {', '.join(differing)})" if differing else ""
    lines = textwrap.wrap(f"{setting} This is not {name}{there}; that one runs with:",
                          LINE_WIDTH)
    # A flag and its value stay on one line; a line that goes on ends in a backslash, as a shell
    # reads it.
    command_words = _story_command(command)
    parts = command_words[:2] + [f"{flag} {shlex.quote(value)}" for flag, value
                                 in zip(command_words[2::2], command_words[3::2])]
    line = " "
    for part in parts:
        if len(line) + len(part) + 3 > LINE_WIDTH:
            lines.append(line + " \\")
            line = "   "
        line += " " + part
    return "\n".join(lines + [line])


def _print_setting(command: str, configs: list) -> None:
    # Flushed: the progress bar that follows writes to stderr, unbuffered.
    print(setting_header(command, configs), flush=True)


def _fitting_summary(run_records: list, metrics=None) -> str:
    """``runs.format_summary``'s table cut into tables of as many metrics as fit in
    ``LINE_WIDTH`` columns (at least one each), one under the other: the terminal's view of the
    run folder's summary.csv."""
    from ngrpo_sim.experiments.runs import SUMMARY_METRICS, format_summary
    from ngrpo_sim.reports.claims import LINE_WIDTH

    tables, chunk = [], []
    for name in metrics or SUMMARY_METRICS:
        widest = max(map(len, format_summary(run_records, [*chunk, name]).splitlines()))
        if chunk and widest > LINE_WIDTH:
            tables.append(format_summary(run_records, chunk))
            chunk = []
        chunk.append(name)
    return "\n\n".join(tables + [format_summary(run_records, chunk)])


def _run_dynamics(args) -> None:
    _train_and_write(args, DynamicsConfig)


def _add_tokens(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokens",
        help="train methods on answers made of tokens: lengths, loss aggregation, token entropy",
        description="Simulate RL training of each method on a task whose answers are token "
                    "sequences (at most L tokens from V content tokens and an end token; correct "
                    "when the final token is the prompt's key), with a tabular or shared "
                    "autoregressive softmax policy, vectorised over seeds. Writes a run folder "
                    "(config.json, metrics.csv, pass_at_k.csv, summary.csv, dynamics.png, "
                    "pass_at_k.png, tokens.png) and prints final values with 95% intervals over "
                    "seeds.",
    )
    _add_training_options(parser, SequenceConfig, "tokens",
                          "sampled (real rollouts), expected (the exact expected update, by passes "
                          "over every prefix) or sampled,expected (default: sampled)")
    parser.set_defaults(run=_run_tokens)


def _run_tokens(args) -> None:
    from ngrpo_sim.reports.token_report import SUMMARY, TOKEN_PANELS

    _train_and_write(args, SequenceConfig, SUMMARY, TOKEN_PANELS, "tokens.png")


def _add_lengths(subparsers) -> None:
    parser = subparsers.add_parser(
        "lengths",
        help="train methods on answers of hundreds of tokens: growth, truncation, the cap",
        description="Simulate RL training of each method on a task whose answers run to hundreds "
                    "of tokens (text, step and end tokens; correct with a probability that grows "
                    "with the work done; truncated at --max-length with reward 0), with one "
                    "log-linear policy over (position, work) for every prompt, vectorised over "
                    "seeds; every metric is exact. Writes a run folder (config.json, metrics.csv, "
                    "pass_at_k.csv, summary.csv, dynamics.png, pass_at_k.png, lengths.png) and "
                    "prints final values with 95%% intervals over seeds.",
    )
    _add_training_options(parser, LongAnswerConfig, "lengths",
                          "sampled (real rollouts), expected (the exact expected update, by a "
                          "backward and a forward pass over the positions) or sampled,expected "
                          "(default: sampled)")
    parser.set_defaults(run=_run_lengths, methods="grpo,ngrpo,dapo,dr_grpo,maxrl,psr_nsr")


def _run_lengths(args) -> None:
    from ngrpo_sim.reports.length_report import LENGTH_PANELS, SUMMARY

    _train_and_write(args, LongAnswerConfig, SUMMARY, LENGTH_PANELS, "lengths.png")


def _add_report(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="the landscape plus the headline experiment that tests the paper's claims "
             "(about 2 minutes on 2 idle cores)",
        description="Writes the advantage landscape, a headline dynamics experiment (GRPO, NGRPO, "
                    "DAPO, PSR-NSR, PPO on a shared policy with Adam, sampled and expected) and a "
                    "sweep over policy, optimiser and minibatch count, then prints a report of "
                    "what the simulation says about each of the paper's claims.",
    )
    out = Path("runs") / "report"
    parser.set_defaults(default_out=out)  # see _claim
    parser.add_argument("--out", type=Path, default=out,
                        help="folder for the report and its run folders; it keeps every finished "
                             "simulation, so the same command run again reuses them (and a "
                             "finished report) instead of running them again (default: "
                             "runs/report)")
    _add_where_to_run(parser)
    _add_overwrite(parser)
    parser.set_defaults(run=_run_report)


def _run_report(args) -> None:
    from ngrpo_sim.experiments.sweep import check_fits_in_memory, task_file
    from ngrpo_sim.reports import report

    _check_where_to_run(args)
    plan = report.report_plan()
    tasks = [task for section in plan.values() for task in section]
    configs = list(dict.fromkeys(config for _, config in tasks))
    check_fits_in_memory(configs, len(tasks), args.workers, args.ray)
    # The settings are the simulations themselves, each by the name the store gives its file.
    settings = {"simulations": [task_file(Path(), task).name for task in tasks]}
    names = [f"{method.name} ({section}: {config.policy} policy, {config.optimizer}, "
             f"{config.minibatches} minibatches, {config.mode})"
             for section, section_tasks in plan.items() for method, config in section_tasks]
    claim = _claim(args, settings, tasks, names, result="report.md")
    if claim.finished():
        print(f"Nothing to run: {claim.folder} holds this report with these settings (--overwrite "
              "redoes it).\n")
        summary = claim.folder / report.SUMMARY_FILE
        # Its time is the run's that made it, not this one's.
        print(summary.read_text().replace("\nTotal time ", "\nIt was made in ") if
              summary.is_file() else
              f"Its report, with every table and figure: {claim.folder / 'report.md'}\n", end="")
        return
    print(report.run_report(claim.folder, workers=args.workers, ray_address=args.ray,
                            store=claim.store))


def _check_where_to_run(args) -> None:
    from ngrpo_sim.experiments.sweep import check_where_to_run

    check_where_to_run(args.workers, args.ray, ("--workers", "--ray"))


def _add_where_to_run(parser) -> None:
    parser.add_argument("--workers", type=int, default=1,
                        help="local processes that run the simulations (default: 1, this one)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="run each simulation as a task on a Ray cluster instead: 'local' "
                             "starts one on this machine, 'auto' joins this machine's cluster, "
                             "'ray://HOST:10001' a remote one (needs pip install "
                             "'ngrpo-sim[ray]' and ngrpo-sim on every node)")


def _add_sweep(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="dynamics over a grid of settings, run here, in local processes or on Ray",
        description="Simulate every method under every combination of the values given to the "
                    "options below (each option takes one or more values: --policy tabular "
                    "shared --learning-rate 0.01 0.05 --seed 0 1). Each (method, setting) "
                    "pair is one task, run in this process, in --workers local processes or on "
                    "a Ray cluster (--ray), with the same results wherever it runs. Writes one "
                    "run folder per "
                    "setting and summary.csv to --out, and keeps every finished task in "
                    "--out/tasks: the same command, run again, resumes a stopped sweep.",
    )
    parser.add_argument("--methods", default="grpo,ngrpo",
                        help="comma-separated presets. Known: " + _method_list_help())
    _add_method_knobs(parser)
    add_config_grid_arguments(parser, DynamicsConfig)
    out = Path("runs") / "sweep"
    parser.set_defaults(default_out=out)  # see _claim
    parser.add_argument("--out", type=Path, default=out,
                        help="folder of the sweep; one that holds another sweep is refused "
                             "(the default one is kept, and the next free runs/sweep-N taken) "
                             "(default: runs/sweep)")
    _add_where_to_run(parser)
    _add_overwrite(parser)
    parser.set_defaults(run=_run_sweep)


def _run_sweep(args) -> None:
    from ngrpo_sim.experiments.runs import (grid_settings, label_of_task, setting_name,
                                            varying_fields, with_mode, write_sweep)
    from ngrpo_sim.experiments.sweep import check_fits_in_memory, run_sweep, sweep_tasks

    methods = _methods_from_args(args)
    configs = list(dict.fromkeys(with_mode(config, config.mode)
                                 for config in config_grid_from_args(DynamicsConfig, args)))
    _check_where_to_run(args)
    tasks = sweep_tasks(methods, configs)  # refuses a method a setting cannot train, before --out
    check_fits_in_memory(configs, len(configs) * len(methods), args.workers, args.ray)
    fields = varying_fields(configs)
    names = [f"{label_of_task(method, config)} in "
             f"{setting_name(index // len(methods), config, fields)}"
             for index, (method, config) in enumerate(tasks)]
    claim = _claim(args, grid_settings(methods, configs), tasks, names)
    _print_setting(args.command, configs)
    run_records, failure = _finished_runs(lambda: run_sweep(
        methods, configs, workers=args.workers, ray_address=args.ray, store=claim.store))
    for index, config in enumerate(configs):
        group = [run_record for run_record in run_records[index * len(methods):
                                                          (index + 1) * len(methods)]
                 if run_record is not None]
        if group:
            print(f"\n{setting_name(index, config, fields)}")
            print(_fitting_summary(group))
    if any(run_record is not None for run_record in run_records):
        written = write_sweep(args.out, configs, run_records)
        folders = len(written) - 1
        print(f"\nwrote {folders} run folder{'s' if folders != 1 else ''} and {written[-1]}")
    if failure is not None:
        raise failure


def _add_page(subparsers) -> None:
    parser = subparsers.add_parser(
        "page",
        help="write the interactive page (one HTML file that opens in any browser, no network)",
        description="Writes one self-contained HTML page: each method's advantages for a group "
                    "of G with k correct answers, the probability that a group gives no gradient "
                    "and the gain c(p), with sliders for G, k, r_max, virtual samples and the std "
                    "convention, and the headline and long-answer training curves of a report. "
                    "Every number is computed when the page is written; the page needs no "
                    "network and nothing installed.",
    )
    parser.add_argument("--report", type=Path, default=None,
                        help="folder of an `ngrpo-sim report` whose headline and long-answer "
                             "curves the page shows (default: runs/report if it holds one, else "
                             "the page shows none)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "page" / "index.html",
                        help="the HTML file to write (default: runs/page/index.html)")
    parser.set_defaults(run=_run_page)


def _run_page(args) -> None:
    from ngrpo_sim.pages.page import write_page

    report = args.report
    if report is None and (Path("runs") / "report" / "headline" / "metrics.csv").is_file():
        report = Path("runs") / "report"
    if report is not None and not (report / "headline").is_dir():
        raise ValueError(f"report={str(report)!r} holds no headline folder; give the folder that "
                         "`ngrpo-sim report --out` wrote")
    _output_folder(args, args.out.parent)
    path = write_page(args.out, report)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in any browser")


def _add_inspect(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="write the step inspector page of a run of minimal/ngrpo_train.py --inspect-steps",
        description="Writes an HTML page that shows the steps a trainer run recorded with "
                    "--inspect-steps: each group's prompt, rewards and statistics with NGRPO's "
                    "virtual answer, the all-wrong groups GRPO would have skipped, and each "
                    "answer's tokens coloured by advantage with clipped tokens marked.",
    )
    parser.add_argument("run_dir", type=Path,
                        help="a run folder of minimal/ngrpo_train.py trained with --inspect-steps")
    parser.add_argument("--out", type=Path, default=None,
                        help="the HTML file to write (default: RUN_DIR/inspector.html)")
    parser.set_defaults(run=_run_inspect)


def _run_inspect(args) -> None:
    from ngrpo_sim.pages.inspector import write_inspector

    if args.out is not None:
        _output_folder(args, args.out.parent)
    path = write_inspector(args.run_dir, args.out)
    print(f"wrote {path}; open it in any browser")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ngrpo-sim",
        description="Explore GRPO, NGRPO and their peers on bandit-style softmax policies: exact "
                    "advantage landscapes and training dynamics. Run `ngrpo-sim <command> --help` "
                    "for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command", required=True)
    _add_landscape(subparsers)
    _add_dynamics(subparsers)
    _add_tokens(subparsers)
    _add_lengths(subparsers)
    _add_report(subparsers)
    _add_sweep(subparsers)
    _add_page(subparsers)
    _add_inspect(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ngrpo_sim.experiments.sweep import TasksFailed

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ValueError as error:
        _release(args)
        parser.exit(2, f"ngrpo-sim {args.command}: error: {error}\n")
    except TasksFailed as failure:
        # A run refused on its settings (a ValueError, divergence included) fails again as it is:
        # that is the user's input to change (exit 2), not a failure to retry (exit 1).
        on_settings = all(isinstance(error, ValueError) for error in failure.errors.values())
        if on_settings and not failure.finished and len(failure.errors) == 1:
            _release(args)
            error, = failure.errors.values()
            parser.exit(2, f"ngrpo-sim {args.command}: error: {error}\n")
        parser.exit(2 if on_settings else 1, _failed(args, argv, failure, on_settings))
    except KeyboardInterrupt:
        parser.exit(130, f"\nngrpo-sim {args.command}: {_interrupted(args, argv)}\n")
    return 0


def _release(args) -> bool:
    """Undo the claim of ``--out`` where it kept nothing (``Claim.release``)."""
    claim = getattr(args, "claim", None)
    return claim is not None and claim.release()


def _continuing(argv: list[str]) -> str:
    """The command line that continues this one: the same, without --overwrite, which would
    replace what this one kept."""
    return shlex.join([_program(), *(argument for argument in argv if argument != "--overwrite")])


def _program() -> str:
    """The ngrpo-sim a user can type: the bare name where the shell finds this one, else its path
    relative to the working folder (`.venv/bin/ngrpo-sim` when .venv is not on PATH)."""
    here = Path(sys.argv[0]).absolute() if sys.argv and sys.argv[0] else None
    found = shutil.which("ngrpo-sim")
    if here is None or here.name != "ngrpo-sim" or (
            found and Path(found).resolve() == here.resolve()):
        return "ngrpo-sim"
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def _failed(args, argv: list[str], failure, on_settings: bool) -> str:
    """One line per run kept and per run failed, and one that says how to run the failed ones
    (``on_settings``: every failure was a refusal of its settings, which the user must change)."""
    from ngrpo_sim.experiments.sweep import describe_error

    claim, names = args.claim, args.task_names
    prefix = f"ngrpo-sim {args.command}: "
    if args.command == "report":
        lines = [f"kept {len(failure.finished)} of {len(failure.tasks)} simulations in "
                 f"{claim.store}; the report needs every one, so it is not written"]
    else:
        lines = [f"kept {names[index]}" for index in sorted(failure.finished)]
        if failure.finished:
            lines.append(f"the {len(failure.finished)} finished runs are written to {claim.folder} "
                         f"and kept in {claim.store}")
    lines += [f"failed {names[index]}: {describe_error(error)}"
              for index, error in sorted(failure.errors.items())]
    _release(args)
    if on_settings:
        lines.append(f"{len(failure.errors)} of {len(failure.tasks)} runs failed on their "
                     f"settings; change what the lines above name, then this runs only those "
                     f"again: {_continuing(argv)}")
    else:
        lines.append(f"{len(failure.errors)} of {len(failure.tasks)} runs failed; the same command "
                     f"runs only the failed ones again: {_continuing(argv)}")
    return "".join(prefix + line + "\n" for line in lines)


def _interrupted(args, argv: list[str]) -> str:
    """One line after Ctrl-C: what was kept and the command that continues."""
    claim = getattr(args, "claim", None)
    if claim is None:
        made = getattr(args, "created", [])
        removed = f", and {made[-1]} it had made is removed" if remove_if_empty(made) else ""
        return (f"interrupted; nothing of it was kept{removed}; start it again with: "
                f"{_continuing(argv)}")
    kept = claim.kept()
    if kept:
        return (f"interrupted; kept the {len(kept)} of {len(claim.tasks)} runs that finished, in "
                f"{claim.store}; continue with: {_continuing(argv)}")
    removed = f", and {claim.folder} it had made is removed" if claim.release() else ""
    return (f"interrupted before any run finished, so nothing was kept{removed}; start again "
            f"with: {_continuing(argv)}")


if __name__ == "__main__":
    sys.exit(main())

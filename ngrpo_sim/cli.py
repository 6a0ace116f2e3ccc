"""The ``ngrpo-sim`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ngrpo_sim import _checks, landscape
from ngrpo_sim._config_cli import add_config_arguments, config_from_args
from ngrpo_sim.dynamics import MODES, DynamicsConfig, check_memory
from ngrpo_sim.methods import METHODS, parse_methods


def _method_list_help() -> str:
    """Every preset with its one-line summary, escaped for argparse's %-formatting of help strings."""
    return "; ".join(f"{name}: {m.summary}" for name, m in METHODS.items()).replace("%", "%%")


def _add_landscape(subparsers) -> None:
    parser = subparsers.add_parser(
        "landscape",
        help="tables and figures of each method's advantages, silent groups and gain c(p)",
        description="Exact advantage landscape of group-based RL methods for binary rewards: the advantage of a "
                    "right and of a wrong answer in a group of G with k right answers, the probability that a "
                    "sampled group gives no gradient, and the gain c(p) of the expected update of a softmax "
                    "policy. Prints the tables and writes CSV and PNG files to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--group-size", type=int, default=8,
                        help="G, answers sampled per prompt (the NGRPO release uses 8)")
    parser.add_argument("--methods", default=",".join(landscape.DEFAULT_METHODS),
                        help="comma-separated presets to compare (PPO has no landscape: its advantage depends on "
                             "a learned critic). Known: " + _method_list_help())
    parser.add_argument("--r-max", type=float, default=1.0,
                        help="reward of NGRPO's virtual sample (the best reward the verifier gives)")
    parser.add_argument("--virtual-samples", type=int, default=1,
                        help="how many virtual r_max samples NGRPO adds to each group's statistics")
    parser.add_argument("--ddof", type=int, default=1, choices=(0, 1),
                        help="std convention of GRPO and NGRPO: 1 = Bessel's correction (release), "
                             "0 = population std")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder for CSV and PNG files (default: runs/landscape-G<group size>)")
    parser.add_argument("--no-figures", action="store_true", help="print the tables and write CSV only")
    parser.set_defaults(run=_run_landscape)


def _run_landscape(args) -> None:
    methods = [m.with_advantage_options(r_max=args.r_max, virtual_samples=args.virtual_samples, ddof=args.ddof)
               for m in parse_methods(args.methods)]
    for method in methods:
        landscape.check_method(method)
    _checks.fits_in_memory(f"the landscape for groups of {args.group_size}", landscape.memory_bytes(args.group_size),
                           "use a smaller --group-size")
    out = _checks.output_folder("--out", args.out or Path("runs") / f"landscape-G{args.group_size}")
    print(landscape.format_tables(methods, args.group_size))
    written = landscape.write_csv(methods, args.group_size, out)
    if not args.no_figures:
        written += landscape.write_figures(methods, args.group_size, out)
    print("\nwrote " + ", ".join(str(path) for path in written))


def _add_dynamics(subparsers) -> None:
    parser = subparsers.add_parser(
        "dynamics",
        help="train methods on a bandit task; accuracy, entropy and pass@k over steps",
        description="Simulate RL training of each method on a bandit stand-in for an LLM (P prompts, K answers, "
                    "softmax policies), vectorised over seeds. Writes a run folder (config.json, metrics.csv, "
                    "pass_at_k.csv, summary.csv, dynamics.png, pass_at_k.png) and prints final values with 95%% "
                    "intervals over seeds.",
    )
    parser.add_argument("--methods", default="grpo,ngrpo,dapo,psr_nsr,ppo",
                        help="comma-separated presets. Known: " + _method_list_help())
    parser.add_argument("--mode", default="sampled",
                        help="sampled (real rollouts), expected (the deterministic expected update) or "
                             "sampled,expected for both side by side (default: sampled)")
    add_config_arguments(parser, DynamicsConfig, skip=("mode",))
    parser.add_argument("--out", type=Path, default=Path("runs") / "dynamics",
                        help="run folder for CSV and PNG files (default: runs/dynamics)")
    parser.set_defaults(run=_run_dynamics)


def _run_dynamics(args) -> None:
    from ngrpo_sim.experiments import format_summary, run_methods, with_mode, write_run

    methods = parse_methods(args.methods)
    modes = [part.strip() for part in args.mode.split(",") if part.strip()]
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be sampled, expected or both comma-separated, got {args.mode!r}")
    config = config_from_args(DynamicsConfig, args, mode="sampled")
    configs = [with_mode(config, mode) for mode in modes]
    for each in configs:
        check_memory(each)
    out = _checks.output_folder("--out", args.out)
    trajectories = run_methods(methods, configs)
    print(format_summary(trajectories))
    written = write_run(out, trajectories)
    print("\nwrote " + ", ".join(str(path) for path in written))


def _add_report(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="the landscape plus the headline experiment that tests the paper's claims (about 1-2 minutes)",
        description="Writes the advantage landscape, a headline dynamics experiment (GRPO, NGRPO, DAPO, PSR-NSR, "
                    "PPO on a shared policy with Adam, sampled and expected) and a sweep over policy, optimiser "
                    "and minibatch count, then prints a report of what the simulation says about each of the "
                    "paper's claims.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs") / "report",
                        help="folder for the report and its run folders (default: runs/report)")
    parser.set_defaults(run=_run_report)


def _run_report(args) -> None:
    from ngrpo_sim.report import run_report

    print(run_report(_checks.output_folder("--out", args.out)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ngrpo-sim",
        description="Explore GRPO, NGRPO and their peers on bandit-style softmax policies: exact advantage "
                    "landscapes and training dynamics. Run `ngrpo-sim <command> --help` for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command", required=True)
    _add_landscape(subparsers)
    _add_dynamics(subparsers)
    _add_report(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ValueError as error:
        parser.exit(2, f"ngrpo-sim {args.command}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

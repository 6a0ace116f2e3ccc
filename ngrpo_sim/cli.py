"""The ``ngrpo-sim`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ngrpo_sim import landscape
from ngrpo_sim.methods import METHODS, parse_methods


def _method_list_help() -> str:
    return "; ".join(f"{name}: {m.summary}" for name, m in METHODS.items())


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
    print(landscape.format_tables(methods, args.group_size))
    out = args.out or Path("runs") / f"landscape-G{args.group_size}"
    written = landscape.write_csv(methods, args.group_size, out)
    if not args.no_figures:
        written += landscape.write_figures(methods, args.group_size, out)
    print("\nwrote " + ", ".join(str(path) for path in written))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ngrpo-sim",
        description="Explore GRPO, NGRPO and their peers on bandit-style softmax policies: exact advantage "
                    "landscapes and training dynamics. Run `ngrpo-sim <command> --help` for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command", required=True)
    _add_landscape(subparsers)
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

"""The long-answer study of docs/lengths.md: the report's long-answer section
(``ngrpo_sim.reports.length_report``: presets, loss aggregations and DAPO's remedies; five questions
with 95% intervals) on a larger config than ``make demo`` can afford.

Writes the section's run folders, ``lengths.png`` and ``lengths.md`` (the section's text) to
``--out``, which must be new or hold this study already: every finished run is kept in
``--out/tasks``, so the same command, run again, resumes a stopped study.

    .venv/bin/python docs/lengths_study.py --out runs/lengths-1024 --max-length 1024 --seeds 8 \\
        --steps 200 --workers 2
"""
import argparse
import dataclasses
from pathlib import Path

from ngrpo_sim.base import checks
from ngrpo_sim.base.files import write_atomically
from ngrpo_sim.reports.length_report import LENGTH_HEADLINE, length_section


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--out", type=Path, required=True, help="folder of the study")
    for name, kind in (("max_length", int), ("seeds", int), ("steps", int), ("num_prompts", int),
                       ("prompts_per_step", int), ("learning_rate", float)):
        parser.add_argument("--" + name.replace("_", "-"), type=kind,
                            default=getattr(LENGTH_HEADLINE, name),
                            help=f"(default: the report's {getattr(LENGTH_HEADLINE, name)})")
    parser.add_argument("--workers", type=int, default=1, help="local processes")
    args = parser.parse_args()
    try:
        base = dataclasses.replace(LENGTH_HEADLINE, max_length=args.max_length, seeds=args.seeds,
                                   steps=args.steps, num_prompts=args.num_prompts,
                                   prompts_per_step=args.prompts_per_step,
                                   learning_rate=args.learning_rate)
        out = checks.output_folder("--out", args.out)
        lines = length_section(out, base, workers=args.workers, store=out / "tasks")
    except ValueError as error:
        parser.exit(2, f"lengths_study.py: error: {error}\n")
    write_atomically(out / "lengths.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

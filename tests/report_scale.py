"""``ngrpo-sim report`` at a test's scale, defined once: the fixtures ``small_report`` and
``without_figures`` and the scripts that tests start in a process of their own shrink the report
with ``shrink_report`` and leave out its figures with ``stub_figures``."""

import dataclasses
from pathlib import Path


def shrink_report(setattr) -> None:
    """Every experiment of every section 2 or 3 steps of 2 seeds (the sizes of the prompts and
    batches stay), each set with ``setattr(module, name, value)``."""
    from ngrpo_sim.reports import clipping_report, length_report, report, token_report

    def small(config):
        return dataclasses.replace(config, steps=3, seeds=2)

    setattr(report, "HEADLINE", small(report.HEADLINE))
    setattr(report, "SWEEP_STEPS", 2)
    setattr(report, "SWEEP_SEEDS", 2)
    setattr(token_report, "TOKEN_HEADLINE",
            dataclasses.replace(token_report.TOKEN_HEADLINE, steps=2, seeds=2))
    setattr(length_report, "LENGTH_HEADLINE", small(length_report.LENGTH_HEADLINE))
    for name in ("NOISE_SETTINGS", "NSR_SETTINGS"):
        settings = getattr(clipping_report, name)
        setattr(clipping_report, name, {key: small(config) for key, config in settings.items()})


def stub_figures(setattr) -> None:
    """The report's figures and page as empty files, each set with ``setattr(module, name,
    value)``: for tests that read what is run and kept."""
    from ngrpo_sim.experiments import runs
    from ngrpo_sim.reports import (clipping_report, length_report, report, rivals_report,
                                   token_report)

    def empty(*args, **_):
        path = next(arg for arg in args if isinstance(arg, Path))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return path

    for module, name in ((runs, "plot_dynamics"), (runs, "plot_pass_at_k"),
                         (token_report, "plot_tokens"), (rivals_report, "plot_rivals"),
                         (clipping_report, "plot_clipping"), (length_report, "plot_lengths"),
                         (report, "write_page")):
        setattr(module, name, empty)
    setattr(report.landscape, "write_figures", lambda *_: [])

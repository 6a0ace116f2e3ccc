"""Fixtures shared by several test modules."""

import contextlib
import dataclasses
import io
from pathlib import Path

import pytest
from report_scale import shrink_report, stub_figures


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """Under pytest-xdist (``make test`` runs ``-n auto --dist loadgroup``) the tests that share a
    fixture of this suite made once per session (the Ray cluster, the made report) or per module
    (a trained tiny model, an executed notebook) run in one worker, so that it is made once; a
    session's fixture decides the group of a test that uses both kinds."""
    tests = Path(__file__).resolve().parent
    for item in items:
        info = getattr(item, "_fixtureinfo", None)  # pytest's own record of each fixture's scope
        if info is None:
            continue
        per_session, per_module = set(), set()
        for name in item.fixturenames:
            fixture = (info.name2fixturedefs.get(name) or [None])[-1]
            if fixture is None or fixture.scope not in ("module", "session"):
                continue
            if tests not in Path(fixture.func.__code__.co_filename).resolve().parents:
                continue  # pytest's own, such as tmp_path_factory
            if fixture.scope == "session":
                per_session.add(name)
            else:
                # No "]" in a group's name: pytest-xdist would take "@" before it for a
                # parameter's and run the test alone.
                param = getattr(item, "callspec", None) and item.callspec.params.get(name)
                per_module.add(item.module.__name__ + (f" {param}" if param else ""))
        if per_session or per_module:
            group = "+".join(sorted(per_session or per_module))
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_runtest_setup(item):
    """Fail where pytest-xdist ignored a test's group (it extends a grouped test's id with
    ``@group``): each worker would then make the session's fixture of its own."""
    mark = item.get_closest_marker("xdist_group")
    if (mark is not None and getattr(item.config.option, "loadgroup", False)
            and not item.nodeid.endswith(f"@{mark.args[0]}")):
        pytest.fail(f"pytest-xdist ignored the xdist_group of {item.nodeid} "
                    "(pytest-dev/pytest-xdist#1386); install the pytest that pyproject.toml's dev "
                    "extra names", pytrace=False)


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray cluster of its own on this machine (2 CPUs, no dashboard), started once per session.

    ``address="local"`` starts a new one even where another Ray instance runs on the machine. Ray
    gives its raylet a fixed 30 s to register; on a machine whose cores are all busy that can pass
    (measured: 32 s at a load of 10 on 2 cores), so a start that times out is tried once more.
    """
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    for attempt in (1, 2):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as error:  # Ray raises a bare Exception for this timeout
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(error):
                raise
    yield ray
    ray.shutdown()


@pytest.fixture
def small_report(monkeypatch):
    """``ngrpo-sim report`` at a test's scale (``report_scale.shrink_report``)."""
    shrink_report(monkeypatch.setattr)


@pytest.fixture
def without_figures(monkeypatch):
    """The report's figures and page as empty files (``report_scale.stub_figures``)."""
    stub_figures(monkeypatch.setattr)


@dataclasses.dataclass(frozen=True)
class MadeReport:
    folder: Path
    """What ``ngrpo-sim report --out folder`` wrote."""
    printed: str
    """What it printed on standard output."""
    problems: dict
    """Each figure's path in ``folder`` -> what keeps a reader from reading it
    (``readability_problems``), for the first figure of each file name and legend: the sweep's
    eight folders each save a dynamics.png of the same methods, and one is looked at."""


@pytest.fixture(scope="session")
def made_report(tmp_path_factory) -> MadeReport:
    """``ngrpo-sim report`` with its figures at a test's scale (``shrink_report``), made once per
    session: the tests that read it share one pytest-xdist worker."""
    from test_figures import figure_legends, readability_problems

    from ngrpo_sim.analysis import landscape
    from ngrpo_sim.base import plotting
    from ngrpo_sim.cli import main
    from ngrpo_sim.experiments import runs
    from ngrpo_sim.reports import clipping_report, length_report, rivals_report, token_report

    problems, seen = {}, set()

    def save_after_a_look(figure, path):
        layout = (Path(path).name, tuple(text.get_text() for legend in figure_legends(figure)
                                         for text in legend.get_texts()))
        if layout not in seen:
            seen.add(layout)
            problems[str(Path(path).relative_to(folder))] = readability_problems(figure)
        return plotting.save(figure, path)

    folder = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as out:
        shrink_report(patch.setattr)
        for module in (runs, landscape, rivals_report, clipping_report, token_report,
                       length_report):
            patch.setattr(module, "save", save_after_a_look)
        main(["report", "--out", str(folder)])
    return MadeReport(folder, out.getvalue(), problems)

"""Fixtures shared by several test modules."""

import pytest


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (``make test`` runs ``-n auto --dist loadgroup``) every test that uses
    the Ray cluster runs in the same worker, so that one cluster serves them all."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))


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
    """``ngrpo-sim report`` at a test's scale: every experiment of every section 2 or 3 steps of 2
    seeds (the sizes of the prompts and batches stay)."""
    import dataclasses

    from ngrpo_sim.reports import clipping_report, length_report, report, token_report

    def small(config):
        return dataclasses.replace(config, steps=3, seeds=2)

    monkeypatch.setattr(report, "HEADLINE", small(report.HEADLINE))
    monkeypatch.setattr(report, "SWEEP_STEPS", 2)
    monkeypatch.setattr(report, "SWEEP_SEEDS", 2)
    monkeypatch.setattr(token_report, "TOKEN_HEADLINE",
                        dataclasses.replace(token_report.TOKEN_HEADLINE, steps=2, seeds=2))
    monkeypatch.setattr(length_report, "LENGTH_HEADLINE", small(length_report.LENGTH_HEADLINE))
    for name in ("NOISE_SETTINGS", "NSR_SETTINGS"):
        settings = getattr(clipping_report, name)
        monkeypatch.setattr(clipping_report, name, {key: small(config)
                                                    for key, config in settings.items()})

"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray cluster of its own on this machine (2 CPUs, no dashboard), started once per session.

    ``address="local"`` starts a new one even where another Ray instance runs on the machine.
    """
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()

"""Shared fixtures. One Ray instance per test session (started only when a test asks)."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray on 2 CPUs shared by every test that needs one; shut down at the end."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        ray.init(num_cpus=2, namespace="evolution-tests", include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()

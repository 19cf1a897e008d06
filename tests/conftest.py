"""Shared fixtures. One Ray instance per test session (started only when a test asks)."""
from __future__ import annotations

import os
import tempfile

import pytest

from backtest.jit_cache import pin_jit_cache_dir

# real `evolve run`s logging to real `mlflow server`s for the lineage and registry tests
pytest_plugins = ("lineage_fixtures",)
# `evolve run` logs lineage to MLflow by default: every run of the session (Ray jobs included)
# logs to one SQLite store of the session's own, never to ./mlflow.db of the repository
os.environ.setdefault("MLFLOW_TRACKING_URI",
                      f"sqlite:///{tempfile.mkdtemp(prefix='evolve-test-mlflow-')}/mlflow.db")
# compiled numba kernels: where every run on this machine keeps them (~/.cache/evolve/numba,
# keyed by source content, see backtest/jit_cache.py), for the session and every process it
# starts (Ray jobs and clusters included), also where a test points EVOLVE_CACHE_DIR elsewhere
pin_jit_cache_dir()
# pyfunc model templates are cached between runs; the tests keep theirs out of ~/.cache
os.environ.setdefault("EVOLVE_CACHE_DIR", tempfile.mkdtemp(prefix="evolve-test-cache-"))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray on 2 CPUs shared by every test that needs one; shut down at the end."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, namespace="evolution-tests", include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# the Serve tests' session fixtures (one Serve instance and one shared app per session)
from serve_fixtures import serve_app, serve_port, serve_store  # noqa: E402,F401

"""Real parts for the Serve tests: an `mlflow server` with registered strategy versions and
Ray Serve apps on a free HTTP port of 127.0.0.1.

Strategies are registered as `evolve run` registers them: a logged pyfunc model of
``serving/model.py`` (models from code, genome artifact), a registered version tagged with its
``strategy_id``, stages through ``ModelRegistry``. One Serve instance is shared by the session
(on the session's Ray, ``ray_session``); each module that changes stages or kills replicas
gets an app and a registry of its own (``start_app(..., route_prefix=...)``).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow_server import MlflowServer, free_port

from backtest import strategy_id
from backtest.data import PlantedEdge, planted_edge_genome, synthetic_market
from backtest.families.rules import sma_crossover_genome
from serving.app_config import TOKEN_ENV

MODEL_CODE = Path(__file__).resolve().parents[1] / "serving" / "model.py"
SHADOW_METRICS = {"total_return": 0.031, "max_drawdown": 0.012, "win_rate": 0.55, "bars": 480, "trades": 9,
                  "at": 1_704_096_000_000}
TOKEN = "test-token-" + os.urandom(8).hex()


def rsi_genome(window: int = 14, low: float = 35.0, high: float = 65.0) -> dict:
    rsi = {"name": "rsi", "window": window}
    return {"entry": {"logic": "and", "conditions": [{"lhs": rsi, "op": "crosses_below", "rhs": low}]},
            "exit": {"logic": "or", "conditions": [{"lhs": rsi, "op": "crosses_above", "rhs": high}]},
            "direction": "both", "stop_loss": None, "take_profit": None}


def stop_genome() -> dict:
    genome = dict(sma_crossover_genome(5, 20, "long"))
    genome.update(stop_loss=0.005, take_profit=0.008)
    return genome


# champion, shadow, shadow: different indicators, directions and stops
GENOMES = (planted_edge_genome(PlantedEdge(fast=5, slow=20)), rsi_genome(), stop_genome())


def register_strategy(tracking_uri: str, model_name: str, genome: dict, *, experiment: str = "serve-tests",
                      artifact_location: str | None = None) -> str:
    """Log the pyfunc model of one genome and register it; returns the version (stage candidate).

    ``artifact_location``: where a new experiment keeps artifacts (needed for a ``sqlite:///``
    store, whose default is ``./mlruns`` in the working directory)."""
    import mlflow
    from mlflow import MlflowClient
    from serving.model import GENOME_ARTIFACT, model_signature
    from serving.registry import CANDIDATE, STRATEGY_ID_TAG, ModelRegistry

    sid = strategy_id(genome)
    client = MlflowClient(tracking_uri)
    experiment_obj = client.get_experiment_by_name(experiment)
    experiment_id = (experiment_obj.experiment_id if experiment_obj
                     else client.create_experiment(experiment, artifact_location=artifact_location))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=experiment_id, run_name=sid):
            genome_path = Path(tmp) / "genome.json"
            genome_path.write_text(json.dumps(genome, sort_keys=True), encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE),
                                               artifacts={GENOME_ARTIFACT: str(genome_path)},
                                               signature=model_signature(), pip_requirements=[],
                                               registered_model_name=model_name)
    finally:
        mlflow.set_tracking_uri(previous)
    version = str(info.registered_model_version)
    client.set_model_version_tag(model_name, version, STRATEGY_ID_TAG, sid)
    ModelRegistry(model_name, tracking_uri, client=client).set_stage(version, CANDIDATE, reason="registered by test")
    return version


@dataclass
class Store:
    """A running mlflow server and the versions registered in it (index i = GENOMES[i])."""

    server: MlflowServer
    model_name: str
    versions: list[str]
    genomes: list[dict]

    @property
    def url(self) -> str:
        return self.server.url

    def registry(self):
        from serving.registry import ModelRegistry

        return ModelRegistry(self.model_name, self.server.url)


def make_store(directory: Path, model_name: str, genomes=GENOMES, *, champion: int | None = 0,
               shadows: tuple[int, ...] = (1, 2)) -> Store:
    server = MlflowServer.sqlite(directory).start()
    try:
        versions = [register_strategy(server.url, model_name, g) for g in genomes]
        store = Store(server, model_name, versions, list(genomes))
        registry = store.registry()
        for i in shadows:
            registry.set_stage(versions[i], "shadow", reason="test")
        if champion is not None:
            registry.set_stage(versions[champion], "shadow", reason="test")
            registry.promote(versions[champion], reason="test")
        return store
    except BaseException:
        server.close()
        raise


@dataclass
class ServeApp:
    """One Serve application on the session's HTTP proxy."""

    name: str
    base: str  # http://127.0.0.1:PORT/prefix
    store: Store
    session: requests.Session = field(default_factory=requests.Session)

    def url(self, path: str) -> str:
        return self.base + path

    def predict(self, candles, **fields) -> requests.Response:
        rows = candles.tolist() if isinstance(candles, np.ndarray) else candles
        return self.session.post(self.url("/v1/predict"), json={"candles": rows, **fields}, timeout=60)


def start_serve(port: int) -> None:
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": port})


def start_app(name: str, route_prefix: str, store: Store, port: int, **options) -> ServeApp:
    """Deploy ``serving.app`` for a store; wait until it answers ``/healthz``."""
    from ray import serve

    from serving.app import application
    from serving.app_config import ServeAppConfig

    config = ServeAppConfig(tracking_uri=store.url, model_name=store.model_name,
                            **{k: options.pop(k) for k in list(options) if k in ServeAppConfig.model_fields})
    options.setdefault("ray_actor_options", {"num_cpus": 0.1, "runtime_env": {"env_vars": {TOKEN_ENV: TOKEN}}})
    serve.run(application(config, **options), name=name, route_prefix=route_prefix, blocking=False)
    app = ServeApp(name, f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}", store)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if app.session.get(app.url("/healthz"), timeout=5).status_code == 200:
                return app
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"serve app {name} did not answer on {app.base}/healthz: {serve.status()}")


def held_out_rows(n: int = 400, seed: int = 77) -> np.ndarray:
    """Candles the strategies never saw (another seed, another generator setting)."""
    return synthetic_market(n, seed=seed, planted_edge=PlantedEdge(fast=7, slow=30, strength=0.02)).to_rows()


@pytest.fixture(scope="session")
def serve_port(ray_session):
    """Serve's HTTP proxy on a free port, shared by every Serve test; shut down at the end."""
    from ray import serve

    port = free_port()
    start_serve(port)
    yield port
    serve.shutdown()


@pytest.fixture(scope="session")
def serve_store(tmp_path_factory):
    """The shared registry: GENOMES as versions 1-3, version 1 champion, 2 and 3 in shadow."""
    from mlflow import MlflowClient
    from serving.registry import LATEST_METRICS_TAG

    store = make_store(tmp_path_factory.mktemp("serve-store"), "serve-test")
    MlflowClient(store.url).set_model_version_tag(store.model_name, store.versions[1], LATEST_METRICS_TAG,
                                                  json.dumps(SHADOW_METRICS))
    yield store
    store.server.close()


@pytest.fixture(scope="session")
def serve_app(serve_port, serve_store):
    """The shared app (read-only tests only: nothing here changes stages or kills replicas)."""
    from ray import serve

    app = start_app("evolve-shared", "/", serve_store, serve_port, alias_poll_s=0.2,
                    autoscaling_config=None, num_replicas=2)
    yield app
    serve.delete("evolve-shared")

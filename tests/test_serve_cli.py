"""`evolve serve` and `serve run serving/serve_config.yaml`: the two ways to start the Serve app,
as subprocesses on a SQLite registry (the embedded default) and a free port."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from mlflow_server import free_port
from serve_fixtures import GENOMES, held_out_rows, register_strategy

from backtest import positions, strategy_id
from serving.app import AUTOSCALING, DEPLOYMENT_NAME, StrategyServer
from serving.app_config import ServeAppConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "serving" / "serve_config.yaml"
BIN = Path(sys.executable).parent


def test_serve_config_is_ray_s_schema_and_matches_the_app_defaults():
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    (app,) = schema.applications
    assert app.import_path == "serving.app:build_app" and schema.http_options.host == "127.0.0.1"
    config = load_config(app.args)
    assert config.model_dump(exclude={"tracking_uri"}) == ServeAppConfig().model_dump(exclude={"tracking_uri"})
    (deployment,) = raw["applications"][0]["deployments"]
    assert deployment["name"] == DEPLOYMENT_NAME
    assert deployment["autoscaling_config"] == AUTOSCALING
    defaults = StrategyServer.options()
    assert deployment["ray_actor_options"] == defaults.ray_actor_options
    assert deployment["max_ongoing_requests"] == defaults.max_ongoing_requests
    with pytest.raises(ValueError, match="did you mean 'alias_poll_s'"):
        load_config({"alias_poll": 1})


@pytest.fixture(scope="module")
def sqlite_registry(tmp_path_factory):
    """A SQLite registry with one champion (as `evolve run` leaves mlflow.db)."""
    from serving.registry import ModelRegistry

    base = tmp_path_factory.mktemp("sqlite-registry")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    version = register_strategy(uri, "strategy-evolution", GENOMES[0], artifact_location=str(base / "artifacts"))
    ModelRegistry("strategy-evolution", uri).promote(version)
    return uri, version


def _start(command: list[str], tmp_path: Path, env_extra: dict) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "serve.log"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", **env_extra}
    env.pop("RAY_ADDRESS", None)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                   start_new_session=True)
    return process, log


def _answer(base: str, process: subprocess.Popen, log: Path, timeout: float = 300) -> requests.Response:
    rows = held_out_rows(120, seed=3)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            response = requests.post(base + "/v1/predict", json={"candles": rows.tolist()}, timeout=10)
            if response.status_code == 200:
                assert response.json()["signal"] == int(positions(GENOMES[0], rows)[-1])
                assert response.json()["strategy_id"] == strategy_id(GENOMES[0])
                return response
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no answer from {base}: {log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> int:
    try:
        os.killpg(process.pid, signal.SIGINT)
        return process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.slow
def test_evolve_serve_answers_with_the_champion_and_stops_on_ctrl_c(sqlite_registry, tmp_path):
    uri, version = sqlite_registry
    port = free_port()
    process, log = _start([str(BIN / "evolve"), "serve", "--port", str(port), "--tracking-uri", uri,
                           "--min-replicas", "1", "--max-replicas", "1"], tmp_path, {})
    try:
        response = _answer(f"http://127.0.0.1:{port}", process, log)
        assert response.json()["model_version"] == version
        deadline = time.monotonic() + 120
        while "Stop with Ctrl-C" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        text = log.read_text()
        assert f"on http://127.0.0.1:{port}" in text and "curl -s" in text and f"champion: version {version}" in text
    finally:
        assert _stop(process) == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_serve_run_with_the_declarative_config(sqlite_registry, tmp_path):
    uri, version = sqlite_registry
    port = free_port()
    raw = yaml.safe_load(CONFIG.read_text())
    raw["http_options"]["port"] = port
    raw["applications"][0]["args"]["tracking_uri"] = uri
    raw["applications"][0]["deployments"][0]["autoscaling_config"].update(min_replicas=1, initial_replicas=1)
    config = tmp_path / "serve_config.yaml"
    config.write_text(yaml.safe_dump(raw))
    process, log = _start([str(BIN / "serve"), "run", "--address", "local", str(config)], tmp_path, {})
    try:
        assert _answer(f"http://127.0.0.1:{port}", process, log).json()["model_version"] == version
    finally:
        _stop(process)

"""`evolve run` logs its lineage to MLflow (embedded SQLite default) and spools when the server is down."""
from __future__ import annotations

import json

import pytest
import yaml

from evolution.cli import main

pytestmark = pytest.mark.slow


def _tiny_config(tmp_path):
    config = yaml.safe_load(open("configs/demo.yaml"))
    config.update(islands=1, population=12, generations=2, hall_of_fame=3)
    config["market"]["synthetic"]["n_bars"] = 6000
    config["runtime"] = {"backend": "local", "progress": False}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_logs_one_mlflow_run_with_nested_strategies(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("EVOLVE_TRACKING", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    assert main(["run", "--config", str(_tiny_config(tmp_path)), "--out", str(out), "--tracking-uri", uri]) == 0
    result = json.loads((out / "result.json").read_text())
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    assert {r.data.tags["strategy_id"] for r in children} == {h["strategy_id"] for h in result["hall_of_fame"]}
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)


def test_unreachable_server_spools_and_the_run_succeeds(tmp_path, monkeypatch):
    monkeypatch.delenv("EVOLVE_TRACKING", raising=False)
    out = tmp_path / "run"
    code = main(["run", "--config", str(_tiny_config(tmp_path)), "--out", str(out),
                 "--tracking-uri", "http://127.0.0.1:9"])  # nothing listens on the discard port
    assert code == 0
    assert (out / "result.json").exists()
    assert any((out / "mlflow_spool").iterdir())

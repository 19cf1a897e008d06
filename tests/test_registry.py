"""Stages through aliases and tags on a real `mlflow server`, on the versions a real `evolve run`
registered; the champion's pyfunc model predicts the backtest positions bar for bar."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from mlflow_server import MlflowServer

import mlflow
from backtest import positions
from backtest.data import PlantedEdge, synthetic_market
from evolution.cli import main
from evolution.lineage.ops import RUN_RECORD_FILE
from mlflow import MlflowClient
from serving.registry import (
    CHAMPION,
    PREVIOUS_CHAMPION,
    ModelRegistry,
    RegistryError,
)

MODEL = "strategy-evolution"


@pytest.fixture(scope="module")
def store(sqlite_logged_run, tmp_path_factory):
    """A fresh server holding the shared run (tests/lineage_fixtures.py), logged after the fact
    with `evolve sync --log-run`: the registry's changes stay out of the shared store."""
    base = tmp_path_factory.mktemp("registry")
    run_dir = base / "run"
    shutil.copytree(sqlite_logged_run.run_dir, run_dir)
    (run_dir / RUN_RECORD_FILE).unlink()
    with MlflowServer.sqlite(base / "store") as server:
        assert main(["sync", str(run_dir), "--log-run", "--tracking-uri", server.url]) == 0
        record = json.loads((run_dir / RUN_RECORD_FILE).read_text())
        result = sqlite_logged_run.result
        assert len(record["model_versions"]) == len(result["promoted"]) >= 3
        yield server, result, record


def test_promote_moves_aliases_and_keeps_the_previous_champion(store):
    server, result, record = store
    registry = ModelRegistry(MODEL, server.url)
    v1, v2, v3 = (record["model_versions"][s] for s in result["promoted"][:3])
    t0 = 1_800_000_000_000
    registry.set_stage(v1, "shadow", at=t0 + 1_000, reason="paper trading")
    registry.promote(v1, at=t0 + 2_000)
    assert registry.champion().version == v1 and registry.previous_champion() is None
    registry.set_stage(v2, "shadow", at=t0 + 3_000)
    registry.promote(v2, at=t0 + 4_000)
    assert registry.champion().version == v2
    assert registry.previous_champion().version == v1
    assert registry.version(v1).stage == "retired" and registry.version(v2).stage == "live"
    assert registry.version(v3).stage == "candidate"
    # the version's own history is append-only, with timestamps
    assert [(h["stage"], h["at"]) for h in registry.version(v1).history][1:] == [
        ("shadow", t0 + 1_000), ("live", t0 + 2_000), ("retired", t0 + 4_000)]
    # rollback: the previous champion is live again, the failed one retired
    registry.rollback(reason="drawdown limit breached", at=t0 + 5_000)
    assert registry.champion().version == v1 and registry.version(v2).stage == "retired"
    assert registry.previous_champion() is None
    with pytest.raises(RegistryError, match="previous-champion"):
        registry.rollback(at=t0 + 6_000)
    # which version was live at time t
    expected = {t0: None, t0 + 1_500: None, t0 + 2_000: v1, t0 + 3_999: v1, t0 + 4_000: v2, t0 + 4_500: v2,
                t0 + 5_000: v1, t0 + 9_000: v1}
    assert {t: registry.live_version_at(t) for t in expected} == expected
    history = registry.history()
    assert [e.at for e in history] == sorted(e.at for e in history)
    assert sum(e.stage == "candidate" for e in history) == len(result["promoted"])  # the registrations come first


def test_bad_stage_requests_say_what_is_wrong(store):
    server, result, record = store
    registry = ModelRegistry(MODEL, server.url)
    with pytest.raises(RegistryError, match="unknown stage 'production'"):
        registry.set_stage(next(iter(record["model_versions"].values())), "production")
    with pytest.raises(RegistryError, match="no version '999'"):
        registry.promote("999")


def test_champion_pyfunc_predicts_the_backtest_positions_bar_for_bar(store, monkeypatch):
    server, result, record = store
    registry = ModelRegistry(MODEL, server.url)
    client = MlflowClient(server.url)
    sid = result["promoted"][0]
    version = record["model_versions"][sid]
    if registry.champion() is None or registry.champion().version != version:
        registry.promote(version)
    genome = next(e["genome"] for e in result["hall_of_fame"] if e["strategy_id"] == sid)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.url)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = mlflow.pyfunc.load_model(f"models:/{MODEL}@{CHAMPION}")
        # the model's predict has type hints MLflow accepts: no "add type hints" warning
        assert not [w for w in caught if "type hint" in str(w.message).lower()], [str(w.message) for w in caught]
        _predicts_positions(model, genome)
        _carries_signature_example_and_genome(client, genome)
    finally:
        mlflow.set_tracking_uri(previous)
    assert registry.load_model(PREVIOUS_CHAMPION if registry.previous_champion() else CHAMPION) is not None


def _predicts_positions(model, genome) -> None:
    for seed in (1, 2):
        candles = synthetic_market(3000, seed=seed, planted_edge=PlantedEdge()).to_frame()
        predicted = np.asarray(model.predict(candles))
        expected = positions(genome, candles)
        assert predicted.dtype == np.int64 and predicted.shape == expected.shape
        np.testing.assert_array_equal(predicted, expected)
        assert set(np.unique(predicted)) <= {-1, 0, 1}


def _carries_signature_example_and_genome(client, genome) -> None:
    mv = client.get_model_version_by_alias(MODEL, CHAMPION)
    info = mlflow.models.get_model_info(f"models:/{MODEL}/{mv.version}")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["timestamp", "open", "high", "low", "close",
                                                                    "volume"]
    assert info.signature.outputs.to_dict()[0]["name"] == "signal"
    assert info.saved_input_example_info is not None
    genome_file = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{mv.version}/artifacts/genome.json")
    with open(genome_file, encoding="utf-8") as handle:
        assert json.load(handle) == json.loads(json.dumps(genome))

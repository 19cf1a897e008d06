"""Lineage logging against a real `mlflow server` (SQLite, and PostgreSQL where it runs)."""
from __future__ import annotations

import json

import pytest
from mlflow_server import MlflowServer, dump_store, list_artifacts, postgres_available

from evolution.lineage import LineageLogger, log_run_directory
from evolution.lineage_data import check_lineage, read_result
from evolution.lineage_fixture import record_fixture_run, replay_fixture_run
from mlflow import MlflowClient

EXPERIMENT = "lineage-test"
MODEL = "strategy-evolution-test"
BACKENDS = ["sqlite", pytest.param("postgres", marks=[pytest.mark.slow, pytest.mark.skipif(
    not postgres_available(), reason="PostgreSQL is not running on 127.0.0.1:5432 (database test)")])]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    source = tmp_path_factory.mktemp("recorded")
    result, generations = record_fixture_run(source, seed=5, n_bars=4000, population=8, generations=3,
                                             hall_of_fame=4, promoted=2)
    return source, result, generations


@pytest.fixture(scope="module", params=BACKENDS)
def logged(request, recorded, tmp_path_factory):
    """A run logged live to a fresh server; yields (server, run_dir, report, result)."""
    source, result, generations = recorded
    base = tmp_path_factory.mktemp(f"server-{request.param}")
    server = (MlflowServer.sqlite if request.param == "sqlite" else MlflowServer.postgres)(base / "store")
    with server:
        logger = LineageLogger(server.url, experiment=EXPERIMENT, registered_model=MODEL)
        report = replay_fixture_run(logger, source, base / "run", generations)
        yield server, base / "run", report, result


def test_the_run_is_one_mlflow_run_with_config_tags_and_generation_metrics(logged):
    server, run_dir, report, result = logged
    assert not report.spooled and report.mlflow_run_id
    client = MlflowClient(server.url)
    run = client.get_run(report.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["population"] == str(result["config"]["population"])
    assert run.data.params["market.planted_edge.fast"] == "10"
    assert run.data.tags["seed"] == str(result["seed"])
    assert run.data.tags["config_id"] == result["config_id"]
    assert run.data.tags["run_id"] == result["run_id"]
    assert run.data.tags["lineage_complete"] == "true"
    assert "git_commit" in run.data.tags
    history = client.get_metric_history(report.mlflow_run_id, "island_1/best_fitness")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2]
    for name in ("island_0/median_fitness", "island_0/diversity", "best_fitness"):
        assert len(client.get_metric_history(report.mlflow_run_id, name)) == 3
    assert run.data.metrics["n_trials"] == result["n_trials"]
    artifacts = list_artifacts(client, report.mlflow_run_id)
    for expected in ("result.json", "trial_log/trials.parquet", "lineage/fitness.png", "lineage/lineage.png",
                     "lineage/lineage.json"):
        assert expected in artifacts
    record = json.loads((run_dir / "mlflow_run.json").read_text())
    assert record["mlflow_run_id"] == report.mlflow_run_id


def test_hall_of_fame_strategies_are_nested_runs_with_lineage_tags(logged):
    server, run_dir, report, result = logged
    client = MlflowClient(server.url)
    nested = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{report.mlflow_run_id}'")
    by_sid = {r.data.tags["strategy_id"]: r for r in nested}
    assert set(by_sid) == {e["strategy_id"] for e in result["hall_of_fame"]}
    lineage = check_lineage(run_dir)
    assert lineage.complete
    for entry in result["hall_of_fame"]:
        run = by_sid[entry["strategy_id"]]
        tags, metrics = run.data.tags, run.data.metrics
        assert int(tags["generation"]) == entry["generation"]
        assert int(tags["island"]) == entry["island"]
        assert tags["operator"] == entry["operator"]
        assert json.loads(tags["parents"]) == entry["parents"]
        # every parent tag points at a strategy of the trial log, back to generation 0
        for parent in json.loads(tags["parents"]):
            assert parent in lineage.nodes
        assert metrics["walk_forward/sharpe"] == pytest.approx(entry["metrics"]["walk_forward"]["sharpe"])
        assert metrics["holdout/total_return"] == pytest.approx(entry["metrics"]["holdout"]["total_return"])
        assert metrics["holdout/n_trades"] == entry["metrics"]["holdout"]["n_trades"]
        assert "genome.json" in list_artifacts(client, run.info.run_id)
        if entry["dsr"] is not None:
            assert metrics["dsr"] == pytest.approx(entry["dsr"])


def test_each_promoted_strategy_is_a_candidate_model_version(logged):
    server, run_dir, report, result = logged
    client = MlflowClient(server.url)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(v.tags["strategy_id"] for v in versions) == sorted(result["promoted"])
    for version in versions:
        assert version.tags["stage"] == "candidate"
        assert [h["stage"] for h in json.loads(version.tags["stage_history"])] == ["candidate"]
        assert client.get_run(version.run_id).data.tags["strategy_id"] == version.tags["strategy_id"]
    assert report.model_versions == {v.tags["strategy_id"]: v.version for v in versions}


def test_logging_a_run_directory_again_changes_nothing(logged):
    """A resumed or repeated logging of the same run finds its runs and versions again."""
    server, run_dir, report, result = logged
    before = dump_store(server.url, EXPERIMENT, MODEL)
    again = log_run_directory(run_dir, server.url, experiment=EXPERIMENT, registered_model=MODEL)
    after = dump_store(server.url, EXPERIMENT, MODEL)
    assert again.mlflow_run_id == report.mlflow_run_id
    assert set(after["runs"]) == set(before["runs"])
    assert after["versions"].keys() == before["versions"].keys()
    assert read_result(run_dir)["run_id"] == result["run_id"]

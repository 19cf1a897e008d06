"""A real `evolve run` logs its lineage to a real `mlflow server` (SQLite, and PostgreSQL where it
runs), read back through MlflowClient: the same store as before lineage moved to
evolution/lineage/, one MLflow run with nested hall-of-fame runs, candidate versions."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lineage_fixtures import EXPERIMENT, MODEL, before_shape
from store_shape import store_content, store_shape

from evolution.cli import main
from evolution.lineage.data import check_lineage
from evolution.lineage.logger import flatten_config
from evolution.lineage.ops import RUN_RECORD_FILE
from mlflow import MlflowClient
from serving.registry import parse_events


def _experiment(client: MlflowClient) -> str:
    return client.get_experiment_by_name(EXPERIMENT).experiment_id


def test_the_store_holds_what_it_held_before_the_lineage_package(logged_run):
    """The tag, param, metric, artifact and model sets of the run and its nested runs, the logged
    models' files and the versions' tags are those of the same run before the change."""
    shape = store_shape(logged_run.uri, EXPERIMENT, MODEL)
    before = before_shape("mixed_server")
    result = logged_run.result
    counts = ("nested_runs", "logged_models", "versions", "version_numbers", "nested_run_tags_promoted")
    assert {k: v for k, v in shape.items() if k not in counts} == {k: v for k, v in before.items() if k not in counts}
    # the counts follow the run: a nested run and a logged model per hall-of-fame strategy, a
    # version per promoted one, numbered 1..n
    promoted = result["promoted"]
    assert 0 < len(promoted) < len(result["hall_of_fame"])  # both kinds of nested run are there
    assert shape["nested_runs"] == shape["logged_models"] == len(result["hall_of_fame"])
    assert shape["versions"] == len(promoted) and shape["version_numbers"] == list(range(1, len(promoted) + 1))
    assert shape["nested_run_tags_promoted"] == ["false", "true"]


def test_the_run_is_one_mlflow_run_with_config_tags_and_generation_metrics(logged_run):
    client = MlflowClient(logged_run.uri)
    record = json.loads((logged_run.run_dir / RUN_RECORD_FILE).read_text())
    assert record["tracking_uri"] == logged_run.uri and record["experiment_name"] == EXPERIMENT
    run = client.get_run(record["mlflow_run_id"])
    result = logged_run.result
    assert run.info.status == "FINISHED"
    assert run.data.params == flatten_config(result["config"])
    assert run.data.tags["seed"] == str(result["seed"]) and run.data.tags["config_id"] == result["config_id"]
    assert run.data.tags["run_id"] == result["run_id"] == run.data.tags["lineage.key"]
    assert run.data.tags["lineage_complete"] == "true"
    assert json.loads(run.data.tags["promoted"]) == result["promoted"]
    for island in (0, 1):
        for name in ("best_fitness", "median_fitness", "diversity", "evaluations"):
            history = client.get_metric_history(run.info.run_id, f"island_{island}/{name}")
            assert sorted(m.step for m in history) == list(range(result["config"]["generations"])), name
    assert run.data.metrics["n_trials"] == result["n_trials"]
    assert run.data.metrics["n_promoted"] == len(result["promoted"])
    # the trial log in MLflow is the run directory's, part for part
    copy = client.download_artifacts(run.info.run_id, "trial_log", str(logged_run.run_dir.parent / "trial-log-copy"))
    parts = sorted((logged_run.run_dir / "trials").glob("*.parquet"))
    assert sorted(p.name for p in parts) == sorted(p.name for p in Path(copy).iterdir())
    for part in parts:
        assert (Path(copy) / part.name).read_bytes() == part.read_bytes()
    # the run says where its lineage went, on one line; nothing else on stderr
    assert f"lineage: MLflow run {run.info.run_id} at {logged_run.uri}" in logged_run.stdout
    assert logged_run.stderr.strip() == "", logged_run.stderr


def test_hall_of_fame_strategies_are_nested_runs_with_lineage_tags(logged_run):
    client = MlflowClient(logged_run.uri)
    record = json.loads((logged_run.run_dir / RUN_RECORD_FILE).read_text())
    nested = client.search_runs([_experiment(client)],
                                filter_string=f"tags.`mlflow.parentRunId` = '{record['mlflow_run_id']}'")
    by_sid = {r.data.tags["strategy_id"]: r for r in nested}
    result = logged_run.result
    assert set(by_sid) == {e["strategy_id"] for e in result["hall_of_fame"]} == set(record["nested_runs"])
    lineage = check_lineage(logged_run.run_dir)
    assert lineage.complete
    models = {m.source_run_id: m for m in client.search_logged_models([_experiment(client)])}
    for rank, entry in enumerate(result["hall_of_fame"]):
        run = by_sid[entry["strategy_id"]]
        tags, metrics = run.data.tags, run.data.metrics
        assert run.info.status == "FINISHED"
        assert (int(tags["generation"]), int(tags["island"]), tags["operator"]) == (
            entry["generation"], entry["island"], entry["operator"])
        assert json.loads(tags["parents"]) == entry["parents"]
        assert all(parent in lineage.nodes for parent in entry["parents"])
        assert tags["hall_of_fame_rank"] == str(rank)
        assert tags["promoted"] == str(entry["strategy_id"] in result["promoted"]).lower()
        assert metrics["walk_forward/sharpe"] == pytest.approx(entry["metrics"]["walk_forward"]["sharpe"])
        assert metrics["holdout/total_return"] == pytest.approx(entry["metrics"]["holdout"]["total_return"])
        assert metrics["holdout/n_trades"] == entry["metrics"]["holdout"]["n_trades"]
        assert models[run.info.run_id].tags["strategy_id"] == entry["strategy_id"]
        genome = client.download_artifacts(run.info.run_id, "genome.json", str(logged_run.run_dir.parent / f"g{rank}"))
        assert json.loads(open(genome).read()) == entry["genome"]


def test_promoted_strategies_are_candidate_versions_numbered_in_hall_of_fame_order(logged_run):
    client = MlflowClient(logged_run.uri)
    result = logged_run.result
    versions = sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
    promoted_in_order = [e["strategy_id"] for e in result["hall_of_fame"] if e["strategy_id"] in result["promoted"]]
    assert [v.tags["strategy_id"] for v in versions] == promoted_in_order  # stable version numbers
    record = json.loads((logged_run.run_dir / RUN_RECORD_FILE).read_text())
    assert record["model_versions"] == {v.tags["strategy_id"]: v.version for v in versions}
    for version in versions:
        assert version.tags["stage"] == "candidate" and version.source.startswith("models:/m-")
        assert [h["stage"] for h in json.loads(version.tags["stage_history"])] == ["candidate"]
        assert client.get_run(version.run_id).data.tags["strategy_id"] == version.tags["strategy_id"]
    # the registrations are stage events serving's registry reads (one format, backtest/tracking_names.py)
    events = parse_events(dict(client.get_registered_model(MODEL).tags))
    assert [(e.version, e.stage, e.strategy_id) for e in events] == [
        (v.version, "candidate", v.tags["strategy_id"]) for v in versions]


def test_logging_the_run_directory_again_changes_nothing(logged_run, tmp_path):
    """Logging a finished run again (`evolve sync --log-run`) finds its runs, models and versions."""
    before = store_content(logged_run.uri, EXPERIMENT, MODEL)
    copy = tmp_path / "run"
    shutil.copytree(logged_run.run_dir, copy)
    (copy / RUN_RECORD_FILE).unlink()
    assert main(["sync", str(copy), "--log-run", "--tracking-uri", logged_run.uri]) == 0
    after = store_content(logged_run.uri, EXPERIMENT, MODEL)
    assert after["runs"].keys() == before["runs"].keys()
    assert after["versions"] == before["versions"]
    assert json.loads((copy / RUN_RECORD_FILE).read_text())["mlflow_run_id"] == json.loads(
        (logged_run.run_dir / RUN_RECORD_FILE).read_text())["mlflow_run_id"]

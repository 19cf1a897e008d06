"""`evolve run` logs its lineage to MLflow (embedded SQLite default) and spools when the server is down."""
from __future__ import annotations

import json
from pathlib import Path

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


def test_trial_log_parts_reach_mlflow_while_the_search_runs(tmp_path):
    """Each generation's trial-log part is sent when the generation is logged, not at the end;
    after finish the MLflow copy of the trial log equals the run directory's, part for part."""
    from evolution_helpers import small_config

    from evolution.lineage import LineageLogger
    from evolution.lineage_data import island_stats_from_rows
    from evolution.pools import LocalPool
    from evolution.runner import execute, plan
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = small_config(generations=3)
    run = plan(config, out_dir=tmp_path / "run")
    logger = LineageLogger(uri, experiment="parts", registered_model="parts", asynchronous=False)
    logger.start(run.run_dir, config.search_dict(), run_id=run.run_id, seed=config.seed, config_id=config.config_id)
    client = MlflowClient(uri)
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("parts").experiment_id])
    seen = []

    def on_generation(generation, _pool):
        logger.log_generation(generation, island_stats_from_rows(run.last_rows, 1.0))
        seen.append(sorted(a.path for a in client.list_artifacts(mlflow_run.info.run_id, "trial_log")))

    execute(run, LocalPool(config, run.spec.market, run.spec.split.test_ranges()), on_generation=on_generation)
    report = logger.finish(run.run_dir, market=run.spec.market)
    assert not report.spooled
    assert seen == [[f"trial_log/generation-{h:05d}.parquet" for h in range(g + 1)] for g in range(3)]
    copy = client.download_artifacts(mlflow_run.info.run_id, "trial_log", str(tmp_path / "copy"))
    parts = sorted((run.run_dir / "trials").glob("*.parquet"))
    assert [p.name for p in parts] == sorted(p.name for p in Path(copy).iterdir())
    for part in parts:
        assert (Path(copy) / part.name).read_bytes() == part.read_bytes()


def test_every_hall_of_fame_strategy_gets_its_run_scores_and_model_and_promoted_ones_a_version(tmp_path, monkeypatch):
    """`evolve run` queues the hall of fame's nested runs and models while it judges them, and
    adds the judged scores after: each nested run ends with both, every member has a logged
    model of its own run, and exactly the promoted members have a registered version."""
    from mlflow import MlflowClient

    monkeypatch.delenv("EVOLVE_TRACKING", raising=False)
    config = yaml.safe_load(open("configs/demo.yaml"))  # a market with an edge, and a drawdown gate that
    config.update(generations=10, hall_of_fame=6)        # some of the hall of fame fails
    config["gates"]["max_drawdown"] = 0.05
    config["runtime"] = {"backend": "local", "progress": False}
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    assert main(["run", "--config", str(tmp_path / "mixed.yaml"), "--out", str(out), "--tracking-uri", uri]) == 0
    result = json.loads((out / "result.json").read_text())
    assert 0 < len(result["promoted"]) < len(result["hall_of_fame"])
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    children = {r.data.tags["strategy_id"]: r for r in client.search_runs(experiments)
                if "mlflow.parentRunId" in r.data.tags}
    assert len(children) == len(result["hall_of_fame"]) >= 1
    models = client.search_logged_models(experiments)
    by_run = {m.source_run_id: m for m in models}
    for rank, member in enumerate(result["hall_of_fame"]):
        child = children[member["strategy_id"]]
        assert child.info.status == "FINISHED"
        assert child.data.tags["promoted"] == str(member["promoted"]).lower()
        assert child.data.tags["hall_of_fame_rank"] == str(rank)
        assert child.data.metrics["walk_forward/sharpe"] == pytest.approx(member["metrics"]["walk_forward"]["sharpe"])
        assert child.data.metrics["holdout/sharpe"] == pytest.approx(member["metrics"]["holdout"]["sharpe"])
        assert "genome.json" in {a.path for a in client.list_artifacts(child.info.run_id)}
        assert by_run[child.info.run_id].tags["strategy_id"] == member["strategy_id"]
    versions = client.search_model_versions("name = 'strategy-evolution'")
    assert sorted(v.tags["strategy_id"] for v in versions) == sorted(result["promoted"])


def test_what_was_queued_when_the_driver_is_killed_still_reaches_mlflow(tmp_path):
    """The logger sends from a child process that drains its queue on its own: a driver killed
    with SIGKILL right after queuing loses none of it."""
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = "\n".join([
        "import os, signal",
        "from evolution.lineage import LineageLogger",
        f"logger = LineageLogger({uri!r}, experiment='killed', registered_model='killed')",
        f"logger.start({str(tmp_path / 'run')!r}, {{'population': 12}}, run_id='killed-run', seed=1)",
        "logger.log_generation(0, [{'island': 0, 'best_fitness': 1.5}, {'island': 1, 'best_fitness': 2.5}])",
        "os.kill(os.getpid(), signal.SIGKILL)",
    ])
    client = MlflowClient(uri)
    client.search_experiments()  # the store's tables exist before two processes open it
    driver = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert driver.returncode == -9, driver.stderr
    deadline = time.monotonic() + 90
    metrics = {}
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name("killed")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and "best_fitness" in runs[0].data.metrics:
            metrics, params = runs[0].data.metrics, runs[0].data.params
            break
        time.sleep(0.5)
    assert metrics == {"island_0/best_fitness": 1.5, "island_1/best_fitness": 2.5, "best_fitness": 2.5}
    assert params == {"population": "12"}
    assert runs[0].data.tags["lineage.key"] == "killed-run"

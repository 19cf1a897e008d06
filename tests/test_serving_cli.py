"""evolve shadow / promote / rollback / status, through the `evolve` command line."""
from __future__ import annotations

import json
import urllib.request

import numpy as np
import pandas as pd
import pytest
from serving_helpers import delete_prefix, shared_redis_url, unique_prefix
from serving_registry import register_genome

from backtest.data import PlantedEdge, planted_edge_genome
from backtest.families.rules import sma_crossover_genome
from evolution.cli import main
from evolution.report_data import SHADOW_EQUITY_FILE
from serving.bus import STAGES, BusConfig
from serving.redis_bus import RedisBus
from serving.registry import ModelRegistry
from serving.state import FileStateStore

SMALL_RUN = """
seed: 3
market:
  synthetic: {n_bars: 8000, seed: 11, regimes: false, planted_edge: {fast: 10, slow: 40, strength: 0.1}}
islands: 2
population: 12
generations: 4
migration: {interval: 2, size: 2}
operators: {max_conditions: 1}
walk_forward: {folds: 3, holdout_fraction: 0.25, train_fraction: 0.2, bucket_bars: 20}
costs: {fees: 0.0005, slippage: 0.0002}
hall_of_fame: 4
runtime: {backend: local, progress: false}
"""


@pytest.fixture(autouse=True)
def no_redis(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)  # the in-process bus unless a test says otherwise


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    (base / "small.yaml").write_text(SMALL_RUN)
    assert main(["run", "--config", str(base / "small.yaml"), "--out", str(base / "run"), "--local", "--no-progress",
                 "--no-tracking"]) == 0
    return base / "run"


def test_shadow_replays_a_runs_holdout_with_its_costs(run_dir, tmp_path, capsys):
    """--all --top 3: the hall of fame's first three; --metrics-port: the bars they traded as
    Prometheus reads them; the paper equity left for the run's report."""
    from backtest.telemetry import install

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    state = tmp_path / "state"
    args = ["shadow", str(run_dir), "--all", "--top", "3", "--local", "--tracking-uri", uri, "--state-dir", str(state)]
    try:
        assert main([*args, "--metrics-port", "0"]) == 0
        out = capsys.readouterr().out
        url = next(line.split()[1] for line in out.splitlines() if line.startswith("metrics: "))
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        install(None)
    result = json.loads((run_dir / "result.json").read_text())
    start, end = result["market"]["holdout"]
    store = FileStateStore(state)
    ids = [m["strategy_id"] for m in result["hall_of_fame"]]
    for entry in result["hall_of_fame"][:3]:
        sid = entry["strategy_id"]
        assert f"shadow-{sid}" in out
        saved, records = store.load(sid)
        traded = records[records[:, 6] == 0]
        assert traded.shape[0] == end - start and saved["bars"] == end - start
        # the paper book over the holdout ends where the run's own holdout evaluation ended
        assert traded[-1, 8] == pytest.approx(1.0 + entry["metrics"]["holdout"]["total_return"], rel=1e-9)
    assert not any(f"shadow-{sid}" in out for sid in ids[3:]) and store.load(ids[3])[0] is None
    assert f"shadow_bars_processed_total {3 * (end - start)}.0" in text
    assert "# TYPE serving_rollbacks_total counter" in text
    equity = pd.read_parquet(run_dir / SHADOW_EQUITY_FILE)  # what the run's report draws
    assert list(equity.groupby("strategy_id", sort=False).size().items()) == [(sid, end - start) for sid in ids[:3]]
    assert equity[equity["strategy_id"] == ids[0]]["equity"].iloc[-1] == pytest.approx(traded_equity(store, ids[0]))
    # a second run finds every bar traded already: nothing changes
    assert main(args) == 0
    again, records_again = store.load(ids[2])
    assert again["bars"] == end - start
    np.testing.assert_array_equal(records_again, records)
    assert main(["shadow", str(run_dir), "--top", "0", "--local"]) == 2
    assert "--top must be at least 1" in capsys.readouterr().err


def traded_equity(store, strategy_id):
    _, records = store.load(strategy_id)
    return records[records[:, 6] == 0][-1, 8]


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-registry")
    registry = ModelRegistry("serving-cli-test", f"sqlite:///{base}/mlflow.db")
    found = [register_genome(registry, g, fees=0.0005) for g in
             (planted_edge_genome(PlantedEdge()), sma_crossover_genome(12, 50, "long"))]
    return registry, found


def cli(registry, *args):
    return main([*args, "--tracking-uri", registry.tracking_uri, "--model-name", registry.name])


def test_promote_rollback_and_status(versions, capsys):
    registry, (v1, v2) = versions
    prefix = unique_prefix("cli")
    try:
        redis_args = ("--redis-url", shared_redis_url(), "--bus-prefix", prefix)
        assert cli(registry, "promote", v1, *redis_args) == 0
        assert cli(registry, "promote", v2, "--reason", "better in shadow", *redis_args) == 0
        assert f"version {v2}" in capsys.readouterr().out.splitlines()[-1]
        registry.set_latest_metrics(v2, {"bars": 900, "total_return": 0.0123, "max_drawdown": 0.05, "win_rate": 0.6,
                                         "trades": 12, "drift": 0.0, "at": 1_704_067_200_000})
        assert cli(registry, "status", "--json") == 0
        status = json.loads(capsys.readouterr().out)
        rows = {r["version"]: r for r in status["strategies"]}
        assert rows[v2]["stage"] == "live" and rows[v2]["aliases"] == ["champion"]
        assert rows[v1]["stage"] == "retired" and rows[v1]["aliases"] == ["previous-champion"]
        assert rows[v2]["metrics"]["total_return"] == 0.0123
        assert status["strategies"][0]["version"] == v2  # live first
        assert cli(registry, "status") == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split()[:4] == ["version", "strategy_id", "stage", "aliases"]
        assert table[1].split()[:3] == [v2, rows[v2]["strategy_id"], "live"] and "0.0123" in table[1]
        assert cli(registry, "rollback", *redis_args) == 0
        assert registry.champion().version == v1
        events = RedisBus(BusConfig(redis_url=shared_redis_url(), prefix=prefix)).range(STAGES)
        assert [(e.data["kind"], e.data["version"]) for e in events] == [("promotion", v1), ("promotion", v2),
                                                                          ("rollback", v1)]
        assert events[1].data["reason"] == "better in shadow"
    finally:
        delete_prefix(shared_redis_url(), prefix)


@pytest.mark.parametrize("args,message", [
    (("promote", "999"), "has no version '999'"),
    (("rollback",), "no 'previous-champion' version to roll back to"),
    (("shadow", "not-a-thing"), "neither a run directory nor a model version"),
    (("shadow", "1"), "versions need a bar source"),
    (("shadow", "1", "--data", "missing.csv"), "--data missing.csv: no such file"),
    (("shadow", "1", "--exchange", "binance"), "--exchange needs --symbol and --timeframe"),
])
def test_bad_input_is_one_line_and_exit_2(versions, args, message, capsys, monkeypatch, tmp_path):
    registry, _ = versions
    monkeypatch.chdir(tmp_path)
    if args[0] == "rollback":
        while registry.previous_champion() is not None:
            registry.rollback()
    assert cli(registry, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith(f"evolve {args[0]}: error:")


def test_a_run_directory_that_is_not_one(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["shadow", str(tmp_path / "empty"), "--local", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "no config.json or result.json" in capsys.readouterr().err
    assert main(["shadow", str(tmp_path / "empty"), "--speed", "0", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2

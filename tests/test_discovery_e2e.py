"""End to end (slow) on markets from backtest/data/planted.py, not the demo's generator:
other bar intervals, noise levels and rules. `evolve run --data` with the demo's budget and
gates finds and promotes a planted edge, and promotes nothing on random walks."""
from __future__ import annotations

from pathlib import Path

import pytest

from backtest.data.planted import HOUR_MS, PlantedSpec, planted_market, rule_sharpe
from evolution.config import load_config
from evolution.pools import LocalPool
from evolution.runner import execute, plan

pytestmark = pytest.mark.slow


def search(planted, tmp_path: Path, seed: int) -> tuple[dict, object]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "market.parquet"
    planted.market.to_frame().to_parquet(data)
    config = load_config().with_overrides(**{"seed": seed, "runtime.backend": "local", "runtime.progress": False})
    run = plan(config, data_path=data, out_dir=tmp_path / "run")
    return execute(run, LocalPool(config, run.spec.market, run.spec.split.test_ranges())), run


@pytest.mark.parametrize("seed", range(2))
def test_a_trend_planted_on_four_hour_bars_is_promoted_near_the_planted_rule(seed, tmp_path):
    """EMA(24)/EMA(96) trend, 4-hour bars, GARCH-t noise of 0.8% a bar, 13.7 years."""
    planted = planted_market(PlantedSpec(rule="trend", sharpe=6.0, n_bars=30_000, interval_ms=4 * HOUR_MS,
                                         sigma=0.008, noise="garch_t", seed=seed))
    result, run = search(planted, tmp_path, seed)
    assert result["n_effective_trials"] < result["n_trials"]
    promoted = [m for m in result["hall_of_fame"] if m["promoted"]]
    assert promoted, f"nothing promoted: {[m['gates'] for m in result['hall_of_fame'][:3]]}"
    rule = rule_sharpe(planted, run.spec.split.holdout_start, run.spec.split.holdout_end)
    assert promoted[0]["metrics"]["holdout"]["sharpe"] >= 0.75 * rule


@pytest.mark.parametrize("noise", ["gbm", "garch_t"])
def test_random_walks_on_fifteen_minute_bars_promote_nothing(noise, tmp_path):
    promoted = []
    for seed in range(2):
        planted = planted_market(PlantedSpec(sharpe=0.0, n_bars=60_000, interval_ms=HOUR_MS // 4, sigma=0.002,
                                             noise=noise, seed=700 + seed))
        result, _ = search(planted, tmp_path / str(seed), seed)
        assert result["n_trials"] > 1000
        promoted += result["promoted"]
    assert promoted == []

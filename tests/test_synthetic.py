"""Synthetic markets: reproducible, valid, regime-shaped, and with a findable planted edge."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.data import (
    REGIME_NAMES,
    PlantedEdge,
    planted_edge_genome,
    synthetic_market,
    validate,
)
from backtest.data.synthetic import BASE_SIGMA

MINUTES_PER_YEAR = 525_600


def sma(values: np.ndarray, window: int) -> np.ndarray:
    """Simple moving average by cumulative sums, NaN until the window is full."""
    total = np.concatenate([[0.0], np.cumsum(values)])
    out = np.full(len(values), np.nan)
    out[window - 1 :] = (total[window:] - total[:-window]) / window
    return out


def momentum_sign(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """s_t = sign(SMA_fast - SMA_slow) from closes up to t; 0 before both exist."""
    return np.nan_to_num(np.sign(sma(close, fast) - sma(close, slow)))


def rule_sharpe(close: np.ndarray, fast: int = 10, slow: int = 40) -> float:
    """Annualized Sharpe of the per-bar rule returns s_t * r_{t+1} (log returns)."""
    returns = momentum_sign(close, fast, slow)[:-1] * np.diff(np.log(close))
    return float(returns.mean() / returns.std() * np.sqrt(MINUTES_PER_YEAR))


def test_same_seed_same_bytes_different_seed_differs():
    first, first_regimes = synthetic_market(5_000, seed=7, planted_edge=PlantedEdge(), return_regimes=True)
    again, again_regimes = synthetic_market(5_000, seed=7, planted_edge=PlantedEdge(), return_regimes=True)
    other = synthetic_market(5_000, seed=8, planted_edge=PlantedEdge())
    assert first.fingerprint() == again.fingerprint()
    assert first.close.tobytes() == again.close.tobytes()
    assert np.array_equal(first_regimes, again_regimes)
    assert first.fingerprint() != other.fingerprint()
    assert not np.allclose(first.close, other.close)


def test_output_passes_validation_and_has_the_requested_shape():
    market = synthetic_market(20_000, seed=1, interval_ms=300_000, start_ms=1_600_000_000_000, start_price=25.0)
    assert validate(market.to_frame()) == market  # no gaps, every candle consistent
    assert len(market) == 20_000
    assert market.timestamp[0] == 1_600_000_000_000
    assert market.interval_ms == 300_000
    assert market.open[0] == 25.0
    assert np.array_equal(market.open[1:], market.close[:-1])
    assert (market.high >= np.maximum(market.open, market.close)).all()
    assert (market.low > 0).all() and (market.volume > 0).all()
    # wicks: high/low extend beyond the body somewhere, not always flat
    assert (market.high > np.maximum(market.open, market.close)).mean() > 0.9


def test_regimes_present_with_the_expected_volatility_ordering():
    market, regimes = synthetic_market(400_000, seed=3, return_regimes=True)
    assert regimes.dtype == np.int8 and len(regimes) == len(market)
    returns = np.diff(np.log(market.close))
    labels = regimes[1:]
    present = {REGIME_NAMES[k] for k in np.unique(regimes)}
    assert present == {"range", "trend_up", "trend_down", "volatile"}
    # runs last hundreds to thousands of bars
    switches = np.count_nonzero(np.diff(regimes))
    assert 100 < len(regimes) / (switches + 1) < 5_000

    def stat(name, values):
        return values[labels == REGIME_NAMES.index(name)]

    range_sigma = stat("range", returns).std()
    assert 0.001 < range_sigma < 0.003  # per-bar sigma of minute bars
    assert stat("volatile", returns).std() > 3 * range_sigma
    for trend in ("trend_up", "trend_down"):
        assert stat(trend, returns).std() == pytest.approx(range_sigma, rel=0.1)
    assert stat("trend_up", returns).mean() > 0 > stat("trend_down", returns).mean()
    volume = market.volume[1:]
    assert stat("volatile", volume).mean() > 2 * stat("range", volume).mean()


def test_no_regimes_is_a_driftless_constant_sigma_walk():
    market, regimes = synthetic_market(200_000, seed=4, regimes=False, return_regimes=True)
    assert set(np.unique(regimes)) == {REGIME_NAMES.index("random_walk")}
    returns = np.diff(np.log(market.close))
    first, second = returns[:100_000].std(), returns[100_000:].std()
    assert first == pytest.approx(BASE_SIGMA, rel=0.02)
    assert second == pytest.approx(BASE_SIGMA, rel=0.02)
    assert abs(returns.mean()) < 4 * BASE_SIGMA / np.sqrt(len(returns))


def test_edge_adds_exactly_the_planted_drift():
    """Same seed, same shocks: the log returns differ by strength * sigma * s_t."""
    edge = PlantedEdge(fast=5, slow=20, strength=0.05)
    with_edge = synthetic_market(20_000, seed=11, regimes=False, planted_edge=edge)
    without = synthetic_market(20_000, seed=11, regimes=False)
    extra = np.diff(np.log(with_edge.close)) - np.diff(np.log(without.close))
    signal = momentum_sign(with_edge.close, edge.fast, edge.slow)[:-1]  # s_t, for bar t+1
    assert np.abs(signal[: edge.slow - 1]).sum() == 0  # nothing before both averages exist
    assert np.allclose(extra, edge.strength * BASE_SIGMA * signal, rtol=0, atol=1e-10)
    assert np.count_nonzero(signal) > 19_000


def test_planted_rule_earns_and_the_no_edge_market_does_not():
    seeds = range(5)
    planted = [rule_sharpe(synthetic_market(100_000, seed=s, planted_edge=PlantedEdge()).close) for s in seeds]
    no_edge = [rule_sharpe(synthetic_market(100_000, seed=s, regimes=False).close) for s in seeds]
    assert 3.0 < np.mean(planted) < 8.0, planted
    assert abs(np.mean(no_edge)) < 2.0, no_edge
    assert np.mean(planted) - np.mean(no_edge) > 3.0


def test_planted_edge_genome_is_the_rule():
    genome = planted_edge_genome(PlantedEdge(fast=7, slow=30))
    assert genome == {
        "entry": {
            "logic": "and",
            "conditions": [
                {"lhs": {"name": "sma", "window": 7}, "op": "crosses_above", "rhs": {"name": "sma", "window": 30}}
            ],
        },
        "exit": {
            "logic": "and",
            "conditions": [
                {"lhs": {"name": "sma", "window": 7}, "op": "crosses_below", "rhs": {"name": "sma", "window": 30}}
            ],
        },
        "direction": "both",
        "stop_loss": None,
        "take_profit": None,
    }
    assert planted_edge_genome(PlantedEdge())["entry"]["conditions"][0]["lhs"]["window"] == 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fast": 40, "slow": 10}, "fast < slow"),
        ({"fast": 0}, "positive int"),
        ({"strength": -0.1}, ">= 0"),
        ({"strength": float("nan")}, "finite"),
    ],
)
def test_planted_edge_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PlantedEdge(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_bars": 0, "seed": 1}, "n_bars"),
        ({"n_bars": 10, "seed": -1}, "seed"),
        ({"n_bars": 10, "seed": 1, "start_price": 0.0}, "start_price"),
        ({"n_bars": 10, "seed": 1, "interval_ms": 0}, "interval_ms"),
    ],
)
def test_synthetic_market_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_market(**kwargs)

"""The bar feed: live polling through the market-data layer against the local Binance stub with a
real ccxt client, and replays of files and of a run's holdout."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from binance_stub import DEFAULT_START_MS, HOUR_MS, BinanceStub, make_series

from backtest.data import PlantedEdge, save_csv, synthetic_market
from backtest.data.fetch import BreakerConfig, Fetcher, FetcherConfig, RetryPolicy
from serving.bus import BusConfig, InProcessBus, bar_stream
from serving.feed import FeedError, LivePoller, replay, run_holdout


def fetcher_at(now_ms: list[int], waits: list[float]) -> Fetcher:
    config = FetcherConfig(timeout_ms=2000, enable_rate_limit=False, retry=RetryPolicy(max_attempts=4, base_delay=0.01),
                           breaker=BreakerConfig(failure_threshold=5, cooldown_seconds=0.2))
    return Fetcher(config, sleep=waits.append, now_ms=lambda: now_ms[0])


def test_live_polling_publishes_each_closed_bar_once_through_retries():
    series = make_series(n_bars=400)
    bus = InProcessBus(BusConfig())
    stream = bar_stream("binance", "BTC/USDT", "1h")
    now = [DEFAULT_START_MS + 200 * HOUR_MS + HOUR_MS // 2]  # bar 200 is still forming
    waits: list[float] = []
    with BinanceStub([series]) as stub:
        with fetcher_at(now, waits) as fetcher:
            poller = LivePoller(bus, fetcher, "binance", "BTC/USDT", "1h", base_url=stub.url, warmup_bars=50)
            assert poller.poll() == 50                     # the last 50 closed bars, as warm-up
            assert poller.poll() == 0                      # nothing closed since
            now[0] += 3 * HOUR_MS
            stub.inject("5xx", status=503, times=2)        # the exchange hiccups: the fetcher retries
            assert poller.poll() == 3
            assert len(waits) == 2
        with fetcher_at(now, waits) as fetcher:            # a restarted feed goes on from the stream's last bar
            now[0] += 2 * HOUR_MS
            again = LivePoller(bus, fetcher, "binance", "BTC/USDT", "1h", base_url=stub.url, warmup_bars=50)
            assert again.poll() == 2
    bars = [m.data for m in bus.range(stream)]
    expected = series.rows[150:205]
    assert [b["timestamp"] for b in bars] == [r[0] for r in expected]
    assert [[b[k] for k in ("open", "high", "low", "close", "volume")] for b in bars] == [list(r[1:]) for r in expected]
    assert [b["warmup"] for b in bars] == [True] * 50 + [False] * 5


def test_live_polling_keeps_going_when_a_poll_fails():
    series = make_series(n_bars=100)
    bus = InProcessBus(BusConfig())
    now = [DEFAULT_START_MS + 60 * HOUR_MS]
    with BinanceStub([series]) as stub, fetcher_at(now, []) as fetcher:
        poller = LivePoller(bus, fetcher, "binance", "BTC/USDT", "1h", base_url=stub.url)
        stub.inject("5xx", status=503, times=6)            # more failures than the retry budget: the breaker opens
        stop = threading.Event()
        thread = threading.Thread(target=poller.run, args=(stop, 0.05))
        thread.start()
        try:
            for _ in range(200):
                if bus.length(poller.stream) and poller.stats.errors:
                    break
                stop.wait(0.05)
        finally:
            stop.set()
            thread.join(10)
    assert poller.stats.errors and "failed 4 times" in poller.stats.errors[0]  # recorded, then polled again
    assert bus.tail(poller.stream, 1)[0].data["timestamp"] == series.rows[59][0]


def test_replay_of_a_file_at_a_speed(tmp_path):
    market = synthetic_market(300, seed=2)
    save_csv(market, tmp_path / "bars.csv")
    bus = InProcessBus(BusConfig())
    from backtest.data import load

    candles = load(tmp_path / "bars.csv")
    stats = replay(bus, "bars:replay:file", candles[100:], warmup=candles[:100], speed=2000.0)
    assert (stats.published, stats.warmup, stats.repeated) == (200, 100, 0)
    got = bus.range("bars:replay:file")
    assert [m.data["close"] for m in got] == candles.close.tolist()
    with pytest.raises(FeedError, match="speed"):
        replay(bus, "x", candles, speed=0)


def test_run_holdout_rebuilds_the_runs_bars_and_refuses_changed_data(tmp_path):
    market = synthetic_market(1200, seed=4, planted_edge=PlantedEdge())
    save_csv(market, tmp_path / "m.csv")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"costs": {"fees": 0.001, "slippage": 0.0}},
                                                 "data": str(tmp_path / "m.csv")}))
    result = {"run_id": "abc", "market": {"n_bars": 1200, "holdout": [900, 1200]}, "hall_of_fame": [], "promoted": []}
    (run / "result.json").write_text(json.dumps(result))
    holdout = run_holdout(run)
    assert (holdout.start, holdout.end, holdout.fees, holdout.stream) == (900, 1200, 0.001, "bars:replay:abc")
    np.testing.assert_array_equal(holdout.holdout.close, market.close[900:])
    assert len(holdout.warmup) == 900
    save_csv(market[:1100], tmp_path / "m.csv")
    with pytest.raises(FeedError, match="the run had 1200 bars, its data now gives 1100"):
        run_holdout(run)
    (tmp_path / "m.csv").unlink()
    with pytest.raises(FeedError, match="is gone"):
        run_holdout(run)

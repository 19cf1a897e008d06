"""The Parquet store: incremental updates, resume after an interrupted fetch, atomic writes;
and ExchangeMarket / load_exchange_market on top of it."""
from __future__ import annotations

import datetime as dt
import os

import pytest
from binance_stub import DEFAULT_START_MS, HOUR_MS, BinanceStub, make_series
from pydantic import ValidationError

from backtest.data import loaders
from backtest.data.fetch import (
    BreakerConfig,
    Fetcher,
    FetcherConfig,
    RetriesExhaustedError,
    RetryPolicy,
    rows_to_ohlcv,
)
from backtest.data.sources import ExchangeMarket, load_exchange_market
from backtest.data.store import OHLCVStore, merge, read_store_file

N_BARS = 1000
PAGE = 150


@pytest.fixture
def stub():
    with BinanceStub([make_series(n_bars=N_BARS)]) as server:
        yield server


def make_store(root, **config) -> OHLCVStore:
    config.setdefault("timeout_ms", 400)
    config.setdefault("page_limit", PAGE)
    fetcher = Fetcher(FetcherConfig(**config), sleep=lambda s: None)
    return OHLCVStore(root, fetcher, checkpoint_pages=3)


def served(stub, lo=0, hi=None):
    series = stub.series()
    return rows_to_ohlcv([list(r) for r in series.rows[lo:hi]])


def test_update_stores_the_served_series(stub, tmp_path):
    store = make_store(tmp_path)
    result = store.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert result.path == tmp_path / "binance" / "BTC-USDT" / "1h.parquet"
    assert result.bars_added == N_BARS
    assert store.load("binance", "BTC/USDT", "1h") == served(stub)
    assert not [p for p in result.path.parent.iterdir() if p.name.endswith(".tmp")]


def test_incremental_update_fetches_only_what_is_missing(stub, tmp_path):
    store = make_store(tmp_path)
    until = DEFAULT_START_MS + 400 * HOUR_MS
    store.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, until, base_url=stub.url)
    assert len(stub.kline_requests()) == 3  # 150 + 150 + 100

    stub.reset_log()
    again = store.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, until, base_url=stub.url)
    assert again.bars_added == 0 and again.ranges_fetched == ()
    assert stub.kline_requests() == []

    stub.reset_log()
    later = store.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, until + 200 * HOUR_MS, base_url=stub.url)
    assert later.bars_added == 200
    assert [int(r.params["startTime"]) for r in stub.kline_requests()] == [until, until + PAGE * HOUR_MS]
    assert store.load("binance", "BTC/USDT", "1h") == served(stub, 0, 600)


def test_an_earlier_since_fetches_only_the_head(stub, tmp_path):
    store = make_store(tmp_path)
    middle = DEFAULT_START_MS + 500 * HOUR_MS
    store.update("binance", "BTC/USDT", "1h", middle, DEFAULT_START_MS + 700 * HOUR_MS, base_url=stub.url)
    stub.reset_log()
    result = store.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS + 300 * HOUR_MS,
                          DEFAULT_START_MS + 700 * HOUR_MS, base_url=stub.url)
    assert result.bars_added == 200
    requests = stub.kline_requests()
    assert all(int(r.params["endTime"]) < middle for r in requests)
    assert store.load("binance", "BTC/USDT", "1h") == served(stub, 300, 700)


@pytest.mark.parametrize("good_pages", [1, 4])
def test_interrupted_fetch_resumed_later_ends_with_the_same_store(stub, tmp_path, good_pages):
    reference = make_store(tmp_path / "reference")
    reference.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)

    stub.fail_after(good_pages)  # the exchange goes down after k good pages
    interrupted = make_store(tmp_path / "interrupted", retry=RetryPolicy(max_attempts=2),
                             breaker=BreakerConfig(failure_threshold=100))
    with pytest.raises(RetriesExhaustedError):
        interrupted.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    partial = interrupted.load("binance", "BTC/USDT", "1h")
    assert partial == served(stub, 0, good_pages * PAGE)  # progress saved when the fetch failed

    stub.clear_faults()
    stub.reset_log()
    interrupted.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert int(stub.kline_requests()[0].params["startTime"]) == DEFAULT_START_MS + good_pages * PAGE * HOUR_MS
    resumed = interrupted.load("binance", "BTC/USDT", "1h")
    assert resumed == reference.load("binance", "BTC/USDT", "1h")
    assert resumed.fingerprint() == served(stub).fingerprint()


def test_a_crash_mid_write_leaves_the_previous_file_intact(stub, tmp_path, monkeypatch):
    store = make_store(tmp_path)
    until = DEFAULT_START_MS + 300 * HOUR_MS
    store.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, until, base_url=stub.url)
    path = store.path("binance", "BTC/USDT", "1h")
    before = path.read_bytes()

    def crash(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(loaders.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        store.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, until + 300 * HOUR_MS, base_url=stub.url)
    assert path.read_bytes() == before
    assert read_store_file(path) == served(stub, 0, 300)
    assert sorted(p.name for p in path.parent.iterdir()) == ["1h.parquet", "1h.parquet.lock"]


def test_exchange_gaps_are_stored_as_gaps(tmp_path):
    series = make_series(n_bars=400, omit=frozenset(range(200, 210)))
    with BinanceStub([series]) as stub:
        store = make_store(tmp_path)
        store.update("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    stored = store.load("binance", "BTC/USDT", "1h")
    assert len(stored) == 390
    assert [(g.missing_bars) for g in stored.gaps(HOUR_MS)] == [10]


@pytest.mark.parametrize(
    "existing, since, until, expected",
    [
        (None, 0, 100, [(0, 100)]),
        ((10, 50), 10, 60, []),  # 10..50 held: the next bar (60) is already past until
        ((10, 50), 10, 100, [(60, 100)]),
        ((10, 50), 0, 100, [(0, 10), (60, 100)]),
        ((10, 50), 0, 30, [(0, 10)]),
        ((10, 50), 20, None, [(60, None)]),
        ((10, 50), 0, None, [(0, 10), (60, None)]),
    ],
)
def test_missing_ranges(existing, since, until, expected):
    frame = None
    if existing is not None:
        ts = list(range(existing[0], existing[1] + 1, 10))
        frame = rows_to_ohlcv([[t, 1.0, 1.0, 1.0, 1.0, 0.0] for t in ts])
    assert OHLCVStore.missing_ranges(frame, since, until, 10) == expected


def test_merge_prefers_the_second_frame_and_sorts():
    a = rows_to_ohlcv([[t, 1.0, 1.0, 1.0, 1.0, 1.0] for t in (0, 10, 20)])
    b = rows_to_ohlcv([[t, 2.0, 2.0, 2.0, 2.0, 2.0] for t in (20, 30)])
    merged = merge(a, b)
    assert merged.timestamp.tolist() == [0, 10, 20, 30]
    assert merged.close.tolist() == [1.0, 1.0, 2.0, 2.0]


# --------------------------------------------------------------------------- ExchangeMarket


def test_exchange_market_parses_dates_and_is_frozen(tmp_path):
    market = ExchangeMarket(exchange="binance", symbol="BTC/USDT", timeframe="1h",
                            since="2024-01-01", until=dt.date(2024, 2, 1), store_dir=tmp_path)
    assert market.since == DEFAULT_START_MS
    assert market.until == DEFAULT_START_MS + 31 * 24 * HOUR_MS
    with pytest.raises(ValidationError):
        market.symbol = "ETH/USDT"
    same = ExchangeMarket.model_validate(market.model_dump())
    assert same == market


@pytest.mark.parametrize(
    "change, message",
    [
        ({"exchange": "binanse"}, "Did you mean 'binance'"),
        ({"symbol": "BTCUSDT"}, "BASE/QUOTE"),
        ({"timeframe": "hourly"}, "not a timeframe"),
        ({"since": "yesterday"}, "not a date"),
        ({"until": "2023-12-31"}, "must be after since"),
        ({"since": "2024-01-01T00:30:00Z"}, "bar boundary"),
        ({"base_url": "ftp://x"}, "http"),
        ({"exchnage": "binance"}, "Extra inputs are not permitted"),
    ],
)
def test_exchange_market_rejects_bad_input_with_a_clear_message(change, message):
    fields = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", "since": "2024-01-01"}
    with pytest.raises(ValidationError, match=message):
        ExchangeMarket(**{**fields, **change})


def test_load_exchange_market_updates_the_store_and_returns_the_range(stub, tmp_path):
    market = ExchangeMarket(exchange="binance", symbol="BTC/USDT", timeframe="1h", since=DEFAULT_START_MS + 100 * HOUR_MS,
                            until=DEFAULT_START_MS + 900 * HOUR_MS, base_url=stub.url, store_dir=tmp_path)
    fetcher = Fetcher(FetcherConfig(timeout_ms=400), sleep=lambda s: None)
    candles = load_exchange_market(market, fetcher=fetcher)
    assert candles == served(stub, 100, 900)
    stub.reset_log()
    assert load_exchange_market(market, fetcher=fetcher) == candles
    assert stub.kline_requests() == []  # second time: all from the store
    assert os.path.exists(tmp_path / "binance" / "BTC-USDT" / "1h.parquet")


def test_load_exchange_market_can_fill_gaps(tmp_path):
    series = make_series(n_bars=50, omit=frozenset({20, 21}))
    with BinanceStub([series]) as stub:
        market = ExchangeMarket(exchange="binance", symbol="BTC/USDT", timeframe="1h", since=DEFAULT_START_MS,
                                until=DEFAULT_START_MS + 50 * HOUR_MS, base_url=stub.url, store_dir=tmp_path,
                                fill_gaps=True)
        candles = load_exchange_market(market, fetcher=Fetcher(FetcherConfig(timeout_ms=400)))
    assert len(candles) == 50 and candles.gaps() == []
    assert candles.volume[20] == candles.volume[21] == 0.0
    assert candles.close[20] == candles.close[19]

"""The recent-candles cache: Redis (real, db 15, unique prefix) and its in-process twin."""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from binance_stub import DEFAULT_START_MS, HOUR_MS, BinanceStub, make_series
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.data.cache import (
    CacheStats,
    CandleCache,
    InProcessCandleCache,
    RecentCandles,
    RedisCandleCache,
    decode,
    encode,
    make_cache,
)
from backtest.data.fetch import Fetcher, FetcherConfig, rows_to_ohlcv

REDIS_URL = "redis://127.0.0.1:6379/15"


def frame(n: int, start: int = DEFAULT_START_MS):
    rows = [[start + i * HOUR_MS, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 1.0 + i] for i in range(n)]
    return rows_to_ohlcv(rows)


@pytest.fixture
def redis_client():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield client
    client.close()


@pytest.fixture
def redis_cache(redis_client):
    cache = RedisCandleCache(redis_client, ttl_seconds=60, prefix=f"test-candles-{uuid.uuid4().hex}")
    yield cache
    cache.clear()


@pytest.fixture(params=["in_process", "redis"])
def cache(request) -> CandleCache:
    if request.param == "in_process":
        return InProcessCandleCache(ttl_seconds=60)
    return request.getfixturevalue("redis_cache")


def test_miss_then_hit_with_counters(cache):
    assert isinstance(cache, CandleCache)
    assert cache.get("binance", "BTC/USDT", "1h") is None
    cache.put("binance", "BTC/USDT", "1h", frame(10))
    assert cache.get("binance", "BTC/USDT", "1h") == frame(10)
    assert cache.get("binance", "ETH/USDT", "1h") is None  # another market is another key
    assert cache.stats() == CacheStats(hits=1, misses=2)
    assert cache.stats().hit_rate == pytest.approx(1 / 3)


def test_n_bars_returns_the_latest_or_misses(cache):
    cache.put("binance", "BTC/USDT", "1h", frame(10))
    last3 = cache.get("binance", "BTC/USDT", "1h", n_bars=3)
    assert last3 == frame(10)[7:]
    assert cache.get("binance", "BTC/USDT", "1h", n_bars=11) is None
    assert cache.stats() == CacheStats(hits=1, misses=1)


def test_get_or_fetch_calls_the_loader_only_on_a_miss(cache):
    calls = []

    def loader():
        calls.append(1)
        return frame(5)

    assert cache.get_or_fetch("binance", "BTC/USDT", "1h", loader) == frame(5)
    assert cache.get_or_fetch("binance", "BTC/USDT", "1h", loader) == frame(5)
    assert len(calls) == 1
    assert cache.stats() == CacheStats(hits=1, misses=1)


def test_invalidate(cache):
    cache.put("binance", "BTC/USDT", "1h", frame(3))
    cache.invalidate("binance", "BTC/USDT", "1h")
    assert cache.get("binance", "BTC/USDT", "1h") is None


def test_in_process_entries_expire_after_their_ttl():
    now = [0.0]
    cache = InProcessCandleCache(ttl_seconds=30, clock=lambda: now[0])
    cache.put("binance", "BTC/USDT", "1h", frame(3))
    cache.put("binance", "ETH/USDT", "1h", frame(3), ttl=5)
    now[0] = 29.9
    assert cache.get("binance", "BTC/USDT", "1h") is not None
    assert cache.get("binance", "ETH/USDT", "1h") is None
    now[0] = 30.0
    assert cache.get("binance", "BTC/USDT", "1h") is None
    assert cache.stats() == CacheStats(hits=1, misses=2)


def test_redis_sets_the_ttl_and_redis_expires_the_entry(redis_cache, redis_client):
    redis_cache.put("binance", "BTC/USDT", "1h", frame(3), ttl=20)
    key = redis_cache.key("binance", "BTC/USDT", "1h")
    assert 0 < redis_client.pttl(key) <= 20_000
    redis_cache.put("binance", "BTC/USDT", "1h", frame(3), ttl=0.05)
    time.sleep(0.2)
    assert redis_cache.get("binance", "BTC/USDT", "1h") is None


def test_redis_counters_are_shared_between_instances(redis_cache, redis_client):
    other = RedisCandleCache(redis_client, prefix=redis_cache.prefix)
    redis_cache.put("binance", "BTC/USDT", "1h", frame(4))
    assert other.get("binance", "BTC/USDT", "1h") == frame(4)
    other.get("binance", "XRP/USDT", "1h")
    assert redis_cache.stats() == CacheStats(hits=1, misses=1)


def test_a_corrupt_redis_value_is_a_miss(redis_cache, redis_client):
    redis_client.set(redis_cache.key("binance", "BTC/USDT", "1h"), b"not candles")
    assert redis_cache.get("binance", "BTC/USDT", "1h") is None
    assert redis_client.exists(redis_cache.key("binance", "BTC/USDT", "1h")) == 0


def test_make_cache_follows_redis_url(redis_client):
    assert isinstance(make_cache(env={}), InProcessCandleCache)
    prefix = f"test-make-{uuid.uuid4().hex}"
    cache = make_cache(env={"REDIS_URL": REDIS_URL}, prefix=prefix)
    try:
        assert isinstance(cache, RedisCandleCache)
        cache.put("binance", "BTC/USDT", "1h", frame(2))
        assert redis_client.exists(f"{prefix}:ohlcv:binance:BTC/USDT:1h") == 1
    finally:
        cache.clear()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-6, 1e9, allow_nan=False), min_size=0, max_size=40))
def test_encode_decode_round_trip(prices):
    rows = [[DEFAULT_START_MS + i * 60_000, p, p, p, p, float(i)] for i, p in enumerate(prices)]
    candles = rows_to_ohlcv(rows)
    back = decode(encode(candles))
    assert back == candles
    assert back.timestamp.dtype == np.int64 and back.close.dtype == np.float64


def test_recent_candles_fetches_once_then_serves_from_the_cache():
    series = make_series(n_bars=300)
    now = DEFAULT_START_MS + 300 * HOUR_MS + 60_000  # one minute into the bar after the last
    with BinanceStub([series]) as stub:
        fetcher = Fetcher(FetcherConfig(timeout_ms=400), sleep=lambda s: None, now_ms=lambda: now)
        recent = RecentCandles.from_fetcher(InProcessCandleCache(ttl_seconds=60), fetcher, base_url=stub.url)
        first = recent.latest("binance", "BTC/USDT", "1h", 24)
        requests = len(stub.kline_requests())
        second = recent.latest("binance", "BTC/USDT", "1h", 24)
        assert len(stub.kline_requests()) == requests  # the second answer came from the cache
    assert first == second
    assert np.array_equal(first.timestamp, series.timestamps[-24:])
    assert recent.cache.stats() == CacheStats(hits=1, misses=1)

"""ccxt fetching against a local Binance stub: completeness, retries, breaker, fatal errors."""
from __future__ import annotations

import random

import ccxt
import numpy as np
import pytest
from binance_stub import DEFAULT_START_MS, HOUR_MS, BinanceStub, make_series
from hypothesis import given
from hypothesis import strategies as st

from backtest.data.fetch import (
    BASE_URL_ENV,
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    FatalExchangeError,
    Fetcher,
    FetcherConfig,
    RetriesExhaustedError,
    RetryPolicy,
    UnknownExchangeError,
    UnknownSymbolError,
    apply_base_url,
    clean_page,
    parse_retry_after,
    resolve_base_url,
)

N_BARS = 2500  # three pages of 1000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def stub():
    with BinanceStub([make_series(n_bars=N_BARS)]) as server:
        yield server


def make_fetcher(**config) -> tuple[Fetcher, list[float], FakeClock]:
    waits: list[float] = []
    clock = FakeClock()
    config.setdefault("timeout_ms", 400)
    fetcher = Fetcher(FetcherConfig(**config), sleep=waits.append, clock=clock, rng=random.Random(0))
    return fetcher, waits, clock


def assert_equals_series(candles, series) -> None:
    assert np.array_equal(candles.timestamp, series.timestamps)
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        assert np.array_equal(getattr(candles, name), series.column(i)), name


# --------------------------------------------------------------------------- completeness


def test_fetch_equals_the_served_series_exactly(stub):
    fetcher, waits, _ = make_fetcher()
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert_equals_series(candles, stub.series())
    assert len(np.unique(candles.timestamp)) == len(candles) == N_BARS
    assert candles.gaps() == []
    assert waits == []
    # three full-ish pages, then one empty page that says "no more"
    starts = [int(r.params["startTime"]) for r in stub.kline_requests()]
    assert starts == [DEFAULT_START_MS + k * 1000 * HOUR_MS for k in range(3)] + [DEFAULT_START_MS + N_BARS * HOUR_MS]


def test_out_of_order_and_duplicate_candles_are_sorted_and_deduplicated(stub):
    stub.shuffle = True
    stub.duplicate = True
    fetcher, _, _ = make_fetcher()
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert_equals_series(candles, stub.series())


def test_until_is_exclusive_and_only_the_range_is_returned(stub):
    fetcher, _, _ = make_fetcher(page_limit=300)
    since = DEFAULT_START_MS + 10 * HOUR_MS
    until = DEFAULT_START_MS + 1210 * HOUR_MS
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", since, until, base_url=stub.url)
    series = stub.series()
    assert np.array_equal(candles.timestamp, series.timestamps[10:1210])
    assert np.array_equal(candles.close, series.column(4)[10:1210])
    assert len(stub.kline_requests()) == fetcher.expected_requests(HOUR_MS, since, until, 300) == 4


def test_exchange_gaps_are_kept_not_invented():
    series = make_series(n_bars=600, omit=frozenset({100, 101, 102, 400}))
    with BinanceStub([series]) as stub:
        fetcher, _, _ = make_fetcher(page_limit=250)
        candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert_equals_series(candles, series)
    assert [g.missing_bars for g in candles.gaps(HOUR_MS)] == [3, 1]


def test_default_until_leaves_out_the_bar_still_forming(stub):
    # "now" is 30 minutes into bar 1200: bars 0..1199 are closed
    now = DEFAULT_START_MS + 1200 * HOUR_MS + 30 * 60_000
    fetcher = Fetcher(FetcherConfig(timeout_ms=400), sleep=lambda s: None, now_ms=lambda: now)
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert len(candles) == 1200
    recent = fetcher.fetch_recent("binance", "BTC/USDT", "1h", 5, base_url=stub.url)
    assert np.array_equal(recent.timestamp, stub.series().timestamps[1195:1200])


# --------------------------------------------------------------------------- retries


def test_429_with_retry_after_is_honoured(stub):
    stub.inject("429", retry_after="7")
    fetcher, waits, _ = make_fetcher()
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert waits == [7.0]
    assert [r.status for r in stub.kline_requests()][:2] == [429, 200]
    assert_equals_series(candles, stub.series())


def test_retry_after_is_capped_by_the_policy(stub):
    stub.inject("429", retry_after="5000")
    fetcher, waits, _ = make_fetcher(retry=RetryPolicy(max_retry_after=60))
    fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert waits == [60.0]


def test_server_errors_back_off_exponentially(stub):
    stub.inject("5xx", times=3, status=502)
    fetcher, waits, _ = make_fetcher(retry=RetryPolicy(base_delay=0.5, multiplier=2.0, jitter=0.0))
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert waits == [0.5, 1.0, 2.0]
    assert_equals_series(candles, stub.series())


def test_timeout_is_retried(stub):
    stub.inject("timeout", delay=0.8)  # the client gives up after 0.3 s
    fetcher, waits, _ = make_fetcher(timeout_ms=300)
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert len(waits) == 1
    assert_equals_series(candles, stub.series())


def test_truncated_json_is_retried_not_taken_for_the_end_of_data(stub):
    # ccxt turns invalid JSON into an empty page; without the check the fetch would stop here
    stub.inject("truncated")
    fetcher, waits, _ = make_fetcher()
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert len(waits) == 1
    assert_equals_series(candles, stub.series())


def test_truncated_markets_response_is_retried(stub):
    stub.inject("truncated", path="exchangeInfo")
    fetcher, waits, _ = make_fetcher()
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert len(waits) == 1 and len(candles) == N_BARS


def test_rate_limit_exceeded_is_retried_though_not_a_ddos_protection(stub, monkeypatch):
    assert not issubclass(ccxt.RateLimitExceeded, ccxt.DDoSProtection)
    fetcher, waits, _ = make_fetcher(retry=RetryPolicy(jitter=0.0, base_delay=1.5))
    exchange = fetcher.exchange("binance", stub.url)
    real = exchange.fetch_ohlcv
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise ccxt.RateLimitExceeded("binance 429 too many requests")
        return real(*args, **kwargs)

    monkeypatch.setattr(exchange, "fetch_ohlcv", flaky)
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert waits == [1.5]
    assert len(candles) == N_BARS


def test_retries_are_bounded(stub):
    stub.inject("5xx", times=10)
    fetcher, waits, _ = make_fetcher(retry=RetryPolicy(max_attempts=3), breaker=BreakerConfig(failure_threshold=50))
    with pytest.raises(RetriesExhaustedError, match="failed 3 times"):
        fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert len(waits) == 2
    assert len(stub.kline_requests()) == 3


@given(attempt=st.integers(1, 30), jitter=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_backoff_stays_within_its_jitter_band_and_cap(attempt, jitter, seed):
    policy = RetryPolicy(base_delay=0.5, multiplier=2.0, max_delay=30.0, jitter=jitter)
    wait = policy.backoff(attempt, random.Random(seed))
    nominal = min(30.0, 0.5 * 2.0 ** (attempt - 1))
    assert nominal * (1 - jitter) - 1e-9 <= wait <= min(30.0, nominal * (1 + jitter)) + 1e-9


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == pytest.approx(30.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0


# --------------------------------------------------------------------------- errors that surface at once


def test_unknown_symbol_fails_at_once_with_a_clear_message(stub):
    fetcher, waits, _ = make_fetcher()
    with pytest.raises(UnknownSymbolError, match=r"no market 'BTC/USDX'.*Did you mean 'BTC/USDT'"):
        fetcher.fetch_ohlcv("binance", "BTC/USDX", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert waits == []
    assert stub.kline_requests() == []


def test_symbol_the_server_rejects_fails_at_once(stub):
    stub.delist("BTCUSDT")  # listed in markets, but klines answer -1121 Invalid symbol
    fetcher, waits, _ = make_fetcher()
    with pytest.raises(UnknownSymbolError, match="unknown symbol"):
        fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert waits == []
    assert len(stub.kline_requests()) == 1
    assert fetcher.breaker("binance", stub.url).consecutive_failures == 0


@pytest.mark.parametrize("error", [ccxt.AuthenticationError, ccxt.BadRequest, ccxt.PermissionDenied])
def test_errors_retrying_cannot_fix_surface_at_once(stub, monkeypatch, error):
    fetcher, waits, _ = make_fetcher()
    exchange = fetcher.exchange("binance", stub.url)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise error("binance says no")

    monkeypatch.setattr(exchange, "fetch_ohlcv", refuse)
    with pytest.raises(FatalExchangeError, match="binance says no"):
        fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    assert len(calls) == 1 and waits == []


def test_unknown_timeframe_and_exchange_say_what_to_do(stub):
    fetcher, _, _ = make_fetcher()
    with pytest.raises(ValueError, match="no timeframe '1hr'.*Did you mean"):
        fetcher.fetch_ohlcv("binance", "BTC/USDT", "1hr", DEFAULT_START_MS, base_url=stub.url)
    with pytest.raises(UnknownExchangeError, match="Did you mean 'binance'"):
        fetcher.exchange("binanse")


# --------------------------------------------------------------------------- circuit breaker


def test_breaker_opens_after_n_failures_and_closes_after_a_successful_probe(stub):
    stub.inject("5xx", times=4)
    fetcher, waits, clock = make_fetcher(
        retry=RetryPolicy(max_attempts=10), breaker=BreakerConfig(failure_threshold=3, cooldown_seconds=30)
    )
    breaker = fetcher.breaker("binance", stub.url)
    fetch = lambda: fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)  # noqa: E731

    with pytest.raises(CircuitOpenError, match="circuit breaker is open"):
        fetch()
    assert len(stub.kline_requests()) == 3  # opened on the third consecutive failure
    assert breaker.state == "open"

    with pytest.raises(CircuitOpenError):  # still cooling down: fails fast, no request
        fetch()
    assert len(stub.kline_requests()) == 3

    clock.advance(30)
    assert breaker.state == "half_open"
    with pytest.raises(CircuitOpenError):  # the probe hits the fourth fault: open again
        fetch()
    assert len(stub.kline_requests()) == 4

    clock.advance(29)
    with pytest.raises(CircuitOpenError):
        fetch()
    clock.advance(1)
    candles = fetch()  # the probe succeeds: closed, and the fetch completes
    assert breaker.state == "closed"
    assert breaker.transitions == ["open", "half_open", "open", "half_open", "closed"]
    assert_equals_series(candles, stub.series())


def test_breaker_counts_only_consecutive_failures():
    clock = FakeClock()
    breaker = CircuitBreaker("x", BreakerConfig(failure_threshold=3, cooldown_seconds=5), clock)
    for _ in range(5):
        breaker.before_call()
        breaker.record_failure()
        breaker.before_call()
        breaker.record_failure()
        breaker.before_call()
        breaker.record_success()
    assert breaker.state == "closed"
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_failure()
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.retry_in == pytest.approx(5.0)


# --------------------------------------------------------------------------- instances and URLs


def test_one_instance_per_exchange_is_reused(stub):
    fetcher, _, _ = make_fetcher()
    first = fetcher.exchange("binance", stub.url)
    fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, base_url=stub.url)
    fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS + 5 * HOUR_MS, base_url=stub.url)
    assert fetcher.exchange("binance", stub.url) is first
    assert [r.path for r in stub.requests].count("/api/v3/exchangeInfo") == 1  # markets loaded once
    assert fetcher.exchange("binance", "http://127.0.0.1:9") is not first


def test_only_spot_markets_are_requested(stub):
    fetcher, _, _ = make_fetcher()
    fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS, DEFAULT_START_MS + 10 * HOUR_MS, base_url=stub.url)
    assert {r.path for r in stub.requests} == {"/api/v3/exchangeInfo", "/api/v3/klines"}


def test_base_url_from_environment(stub, monkeypatch):
    monkeypatch.setenv(BASE_URL_ENV, stub.url)
    fetcher, _, _ = make_fetcher()
    candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", "1h", DEFAULT_START_MS)
    assert_equals_series(candles, stub.series())
    assert fetcher.exchange("binance").urls["api"]["public"] == f"{stub.url}/api/v3"


def test_base_url_precedence():
    env = {BASE_URL_ENV: "http://any:1", "EVOLVE_BINANCE_BASE_URL": "http://binance-proxy:2/"}
    assert resolve_base_url("binance", "http://arg:3/", env) == "http://arg:3"
    assert resolve_base_url("binance", None, env) == "http://binance-proxy:2"
    assert resolve_base_url("kraken", None, env) == "http://any:1"
    assert resolve_base_url("kraken", None, {}) is None


def test_apply_base_url_keeps_each_path():
    exchange = ccxt.binance()
    apply_base_url(exchange, "http://proxy:8080/binance/")
    assert exchange.urls["api"]["public"] == "http://proxy:8080/binance/api/v3"
    assert exchange.urls["api"]["fapiPublic"] == "http://proxy:8080/binance/fapi/v1"
    assert ccxt.binance().urls["api"]["public"] == "https://api.binance.com/api/v3"  # class left alone


def test_clean_page_sorts_dedupes_and_clips():
    rows = [[30, 1, 1, 1, 1, 1], [10, 2, 2, 2, 2, 2], [20, 3, 3, 3, 3, 3], [10, 4, 4, 4, 4, 4], [40, 5, 5, 5, 5, 5]]
    assert clean_page(rows, since=10, until=40) == [[10, 4.0, 4.0, 4.0, 4.0, 4.0], [20, 3.0, 3.0, 3.0, 3.0, 3.0],
                                                    [30, 1.0, 1.0, 1.0, 1.0, 1.0]]

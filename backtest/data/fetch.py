"""Fetch OHLCV candles from any ccxt exchange, without silent truncation.

- One ccxt instance per (exchange id, base URL) is created by a :class:`Fetcher` and reused:
  ccxt's rate limiter lives on the instance, so a fresh instance per call would defeat it.
- Pagination is done by hand (``since`` advances past the last candle received), each page
  is sorted, deduplicated and clipped to ``[since, until)``, so the result is complete and
  strictly increasing; the frame's own validation runs on the result.
- Transient errors (ccxt's ``OperationFailed`` family: ``NetworkError``, ``RequestTimeout``,
  ``ExchangeNotAvailable``, ``DDoSProtection``, ``RateLimitExceeded`` -- which is *not* a
  ``DDoSProtection`` subclass in current ccxt -- and ``BadResponse``, raised here for a body
  that is not valid JSON) are retried with exponential backoff and jitter; a ``Retry-After``
  header is honoured. A circuit breaker per exchange opens after N consecutive failures and
  lets one half-open probe through after a cool-down.
- Errors that retrying cannot fix (``BadSymbol``, ``AuthenticationError``, ``BadRequest``,
  any other ``ExchangeError``) surface at once as :class:`DataFetchError` subclasses with a
  message that says what to do.
- The REST base URL can be overridden per call, or by the environment variables
  ``EVOLVE_<EXCHANGE>_BASE_URL`` (e.g. ``EVOLVE_BINANCE_BASE_URL``) and
  ``EVOLVE_EXCHANGE_BASE_URL`` (any exchange), in that order of precedence.
"""
from __future__ import annotations

import difflib
import email.utils
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import ccxt
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from backtest.data.frame import COLUMNS, OHLCV
from backtest.telemetry.market_data import record_circuit, record_request, record_retry

BASE_URL_ENV = "EVOLVE_EXCHANGE_BASE_URL"
DEFAULT_PAGE_LIMIT = 500

#: Errors worth retrying. RateLimitExceeded is listed on its own: it no longer inherits
#: from DDoSProtection, and code that only catches DDoSProtection misses it.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    ccxt.RateLimitExceeded,
    ccxt.DDoSProtection,
    ccxt.RequestTimeout,
    ccxt.ExchangeNotAvailable,
    ccxt.NetworkError,
    ccxt.BadResponse,
    ccxt.OperationFailed,
)
#: Errors no retry can fix; they surface at once.
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    ccxt.BadSymbol,
    ccxt.AuthenticationError,
    ccxt.BadRequest,
    ccxt.ExchangeError,
    ccxt.NotSupported,
)

Row = list  # [timestamp_ms, open, high, low, close, volume]


# --------------------------------------------------------------------------- errors


class DataFetchError(Exception):
    """Base of every error this module raises on purpose; the message says what to do."""


class UnknownExchangeError(DataFetchError, ValueError):
    pass


class UnknownSymbolError(DataFetchError, ccxt.BadSymbol):
    pass


class UnknownTimeframeError(DataFetchError, ValueError):
    pass


class FatalExchangeError(DataFetchError):
    """The exchange refused the request in a way no retry fixes (auth, bad request, ...)."""


class RetriesExhaustedError(DataFetchError):
    pass


class CircuitOpenError(DataFetchError):
    def __init__(self, exchange_id: str, retry_in: float, last_failure: str | None = None) -> None:
        self.exchange_id = exchange_id
        self.retry_in = retry_in
        self.last_failure = last_failure
        cause = f", the last: {last_failure}" if last_failure else ""
        super().__init__(
            f"{exchange_id}: circuit breaker is open after repeated failures{cause}; "
            f"the next probe is allowed in {retry_in:.1f} s. Check that the exchange (or --base-url) "
            "is reachable and try again later (whatever was already fetched is kept)."
        )


def describe_failure(error: BaseException) -> str:
    """``Type: message``, plus the operating system's reason when one is further down the chain
    (ccxt's NetworkError names the URL, the refused or timed-out connection is its cause)."""
    text = f"{type(error).__name__}: {error}"
    reason, seen, link = None, set(), error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError):
            reason = link.strerror or str(link) or type(link).__name__
        link = link.__cause__ or link.__context__
    if reason and reason not in text:
        text += f" ({reason})"
    return text


# --------------------------------------------------------------------------- configs


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter: attempt k waits ``base * multiplier**(k-1)``,
    capped at ``max_delay``, scaled by a random factor in ``[1 - jitter, 1 + jitter]``.
    A ``Retry-After`` header replaces the computed wait (capped at ``max_retry_after``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(6, ge=1, le=100)
    base_delay: float = Field(0.5, ge=0.0)
    multiplier: float = Field(2.0, ge=1.0)
    max_delay: float = Field(30.0, ge=0.0)
    jitter: float = Field(0.25, ge=0.0, le=1.0)
    max_retry_after: float = Field(300.0, ge=0.0)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        raw = min(self.max_delay, self.base_delay * self.multiplier ** (attempt - 1))
        factor = 1.0 + self.jitter * (2.0 * rng.random() - 1.0)
        return min(self.max_delay, raw * factor)


class BreakerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(5, ge=1)
    cooldown_seconds: float = Field(30.0, ge=0.0)


class FetcherConfig(BaseModel):
    """Settings shared by every exchange a :class:`Fetcher` talks to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_ms: int = Field(10_000, ge=1)
    enable_rate_limit: bool = True
    rate_limit_ms: float | None = Field(None, ge=0.0, description="override ccxt's per-exchange rateLimit")
    page_limit: int | None = Field(None, ge=1, description="candles per request; default: the exchange's maximum")
    market_types: tuple[str, ...] = Field(("spot",), min_length=1)
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerConfig = BreakerConfig()

    @model_validator(mode="after")
    def _check(self) -> FetcherConfig:
        unknown = set(self.market_types) - {"spot", "linear", "inverse", "option"}
        if unknown:
            raise ValueError(f"market_types: unknown {sorted(unknown)}; use spot, linear, inverse or option")
        return self


# --------------------------------------------------------------------------- circuit breaker


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (cool-down) -> half_open -> one probe:
    success closes it, failure opens it again for another cool-down."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, name: str, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self.last_failure: str | None = None  # what the latest failure was, for the open breaker's message
        self._lock = threading.Lock()
        self.transitions: list[str] = []
        record_circuit(name, self.CLOSED)

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == self.OPEN and self._cooled_down():
                return self.HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.config.cooldown_seconds

    def _move(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.transitions.append(state)
            record_circuit(self.name, state)

    def before_call(self) -> None:
        """Raise :class:`CircuitOpenError` unless a request may go out now."""
        with self._lock:
            if self._state == self.OPEN:
                if not self._cooled_down():
                    remaining = self.config.cooldown_seconds - (self._clock() - self._opened_at)
                    raise CircuitOpenError(self.name, max(0.0, remaining), self.last_failure)
                self._move(self.HALF_OPEN)

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._move(self.CLOSED)

    def record_failure(self, error: BaseException | None = None) -> None:
        with self._lock:
            if error is not None:
                self.last_failure = describe_failure(error)
            self._failures += 1
            if self._state == self.HALF_OPEN or self._failures >= self.config.failure_threshold:
                self._opened_at = self._clock()
                self._move(self.OPEN)


# --------------------------------------------------------------------------- helpers


def resolve_base_url(exchange_id: str, base_url: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """Argument, then ``EVOLVE_<EXCHANGE>_BASE_URL``, then ``EVOLVE_EXCHANGE_BASE_URL``."""
    if base_url:
        return base_url.rstrip("/")
    env = os.environ if env is None else env
    for key in (f"EVOLVE_{exchange_id.upper()}_BASE_URL", BASE_URL_ENV):
        value = env.get(key)
        if value:
            return value.rstrip("/")
    return None


def apply_base_url(exchange: ccxt.Exchange, base_url: str) -> None:
    """Point every REST URL of ``exchange`` at ``base_url``, keeping each URL's path.

    ``https://api.binance.com/api/v3`` becomes ``{base_url}/api/v3``,
    ``https://fapi.binance.com/fapi/v1`` becomes ``{base_url}/fapi/v1``.
    """
    from urllib.parse import urlsplit

    base = base_url.rstrip("/")

    def rewrite(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            parts = urlsplit(value)
            return base + parts.path + (f"?{parts.query}" if parts.query else "")
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        return value

    exchange.urls = dict(exchange.urls)
    exchange.urls["api"] = rewrite(exchange.urls["api"])


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def timeframe_ms(exchange: ccxt.Exchange, timeframe: str) -> int:
    return int(exchange.parse_timeframe(timeframe) * 1000)


def clean_page(rows: list[Row], since: int, until: int | None) -> list[Row]:
    """Sort by timestamp, drop duplicates (the last copy wins) and clip to ``[since, until)``."""
    by_ts: dict[int, Row] = {}
    for row in rows:
        ts = int(row[0])
        if ts < since or (until is not None and ts >= until):
            continue
        by_ts[ts] = [ts, *(float(x) for x in row[1:6])]
    return [by_ts[ts] for ts in sorted(by_ts)]


def rows_to_ohlcv(rows: list[Row]) -> OHLCV:
    """Clean rows (sorted, unique) to a frame. Gaps the exchange has are kept (and
    reported by ``OHLCV.gaps()``); every other invariant of the frame is checked."""
    array = np.asarray(rows, dtype=np.float64).reshape(-1, len(COLUMNS))
    timestamp = np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=len(rows))
    return OHLCV(timestamp=timestamp, **{name: array[:, i] for i, name in enumerate(COLUMNS) if i})


@dataclass
class FetchStats:
    requests: int = 0
    retries: int = 0
    pages: int = 0
    candles: int = 0
    waits: list[float] = field(default_factory=list)


@dataclass
class _Handle:
    exchange: ccxt.Exchange
    breaker: CircuitBreaker


# --------------------------------------------------------------------------- fetcher


class Fetcher:
    """Fetches candles; holds one ccxt instance and one circuit breaker per exchange.

    ``sleep``, ``clock`` (monotonic seconds, for the breaker), ``now_ms`` (wall time, for the
    default ``until``) and ``rng`` (for jitter) are injectable so tests control time.
    """

    def __init__(
        self,
        config: FetcherConfig | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or FetcherConfig()
        self._sleep = sleep
        self._clock = clock
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._rng = rng or random.Random()
        self._handles: dict[tuple[str, str | None], _Handle] = {}
        self._lock = threading.Lock()
        self.stats = FetchStats()

    # -- instances --------------------------------------------------------------

    def _handle(self, exchange_id: str, base_url: str | None) -> _Handle:
        key = (exchange_id, resolve_base_url(exchange_id, base_url))
        with self._lock:
            handle = self._handles.get(key)
            if handle is None:
                handle = _Handle(self._create(exchange_id, key[1]),
                                 CircuitBreaker(exchange_id, self.config.breaker, self._clock))
                self._handles[key] = handle
            return handle

    def _create(self, exchange_id: str, base_url: str | None) -> ccxt.Exchange:
        if exchange_id not in ccxt.exchanges:
            raise UnknownExchangeError(
                f"unknown exchange {exchange_id!r}.{_suggest(exchange_id, list(ccxt.exchanges))} "
                "ccxt.exchanges lists the supported ids."
            )
        settings: dict[str, Any] = {
            "enableRateLimit": self.config.enable_rate_limit,
            "timeout": self.config.timeout_ms,
            "enableLastHttpResponse": True,
            "enableLastJsonResponse": True,
            "enableLastResponseHeaders": True,
        }
        if self.config.rate_limit_ms is not None:
            settings["rateLimit"] = self.config.rate_limit_ms
        exchange = getattr(ccxt, exchange_id)(settings)
        fetch_markets = exchange.options.get("fetchMarkets")
        if isinstance(fetch_markets, dict) and "types" in fetch_markets:
            exchange.options["fetchMarkets"] = {**fetch_markets, "types": list(self.config.market_types)}
        if base_url:
            apply_base_url(exchange, base_url)
        return exchange

    def exchange(self, exchange_id: str, base_url: str | None = None) -> ccxt.Exchange:
        """The shared ccxt instance for this exchange (created on first use)."""
        return self._handle(exchange_id, base_url).exchange

    def breaker(self, exchange_id: str, base_url: str | None = None) -> CircuitBreaker:
        return self._handle(exchange_id, base_url).breaker

    # -- one request, with retries and the breaker --------------------------------

    def _call(self, handle: _Handle, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        exchange, policy = handle.exchange, self.config.retry
        attempt = 0
        while True:
            handle.breaker.before_call()
            exchange.last_http_response = None
            exchange.last_json_response = None
            exchange.last_response_headers = None
            self.stats.requests += 1
            try:
                result = fn(*args, **kwargs)
                raw = exchange.last_http_response
                if raw and exchange.last_json_response is None:
                    # ccxt turns a body that is not valid JSON into None, and then into
                    # an empty page: that would end pagination silently.
                    raise ccxt.BadResponse(f"{exchange.id} {what}: response is not valid JSON: {raw[:80]!r}")
            except ccxt.BadSymbol as error:
                record_request(exchange.id, "fatal_error")
                raise UnknownSymbolError(f"{exchange.id}: {what}: unknown symbol ({error}).") from error
            except ccxt.AuthenticationError as error:
                record_request(exchange.id, "fatal_error")
                raise FatalExchangeError(
                    f"{exchange.id}: {what}: authentication failed ({error}); check API keys and permissions."
                ) from error
            except RETRYABLE_ERRORS as error:
                record_request(exchange.id, "retryable_error")
                handle.breaker.record_failure(error)
                attempt += 1
                if attempt >= policy.max_attempts:
                    raise RetriesExhaustedError(
                        f"{exchange.id}: {what} failed {attempt} times, last with "
                        f"{describe_failure(error)}. The exchange may be down or rate-limiting; "
                        "try again later (data fetched so far is kept)."
                    ) from error
                wait = self._wait(exchange, attempt, error)
                self.stats.retries += 1
                record_retry(exchange.id)
                self.stats.waits.append(wait)
                self._sleep(wait)
                continue
            except FATAL_ERRORS as error:
                record_request(exchange.id, "fatal_error")
                raise FatalExchangeError(f"{exchange.id}: {what} was refused: {type(error).__name__}: {error}") from error
            record_request(exchange.id, "ok")
            handle.breaker.record_success()
            return result

    def _wait(self, exchange: ccxt.Exchange, attempt: int, error: BaseException) -> float:
        policy = self.config.retry
        headers = exchange.last_response_headers or {}
        retry_after = parse_retry_after(headers.get("Retry-After") if hasattr(headers, "get") else None)
        if retry_after is not None:
            return min(retry_after, policy.max_retry_after)
        return policy.backoff(attempt, self._rng)

    # -- markets ----------------------------------------------------------------

    def check_market(self, exchange_id: str, symbol: str, timeframe: str, base_url: str | None = None) -> int:
        """Load markets (once per instance), check symbol and timeframe; return the bar length in ms."""
        handle = self._handle(exchange_id, base_url)
        exchange = handle.exchange
        if not exchange.markets:
            self._call(handle, "load_markets", exchange.load_markets)
        if symbol not in exchange.markets:
            raise UnknownSymbolError(
                f"{exchange_id} has no market {symbol!r}.{_suggest(symbol, list(exchange.markets))} "
                f"Symbols are unified ccxt symbols like 'BTC/USDT' (market types loaded: "
                f"{', '.join(self.config.market_types)})."
            )
        if exchange.timeframes and timeframe not in exchange.timeframes:
            raise UnknownTimeframeError(
                f"{exchange_id} has no timeframe {timeframe!r}.{_suggest(timeframe, list(exchange.timeframes))} "
                f"Supported: {', '.join(exchange.timeframes)}."
            )
        return timeframe_ms(exchange, timeframe)

    def page_limit(self, exchange_id: str, base_url: str | None = None) -> int:
        if self.config.page_limit is not None:
            return self.config.page_limit
        exchange = self.exchange(exchange_id, base_url)
        features = getattr(exchange, "features", None) or {}
        for market_type in self.config.market_types:
            limit = ((features.get(market_type) or {}).get("fetchOHLCV") or {}).get("limit")
            if isinstance(limit, int) and limit > 0:
                return limit
        return DEFAULT_PAGE_LIMIT

    def default_until(self, interval_ms: int) -> int:
        """The open time just past the last *closed* bar: the bar still forming is left out."""
        return (self._now_ms() // interval_ms) * interval_ms

    # -- candles ----------------------------------------------------------------

    def iter_pages(
        self,
        exchange_id: str,
        symbol: str,
        timeframe: str,
        since: int,
        until: int | None = None,
        *,
        base_url: str | None = None,
    ) -> Iterator[list[Row]]:
        """Yield clean pages covering ``[since, until)``, oldest first, never overlapping.

        Stops at ``until`` or at the first page with no new candles (the exchange has no
        more). ``until`` defaults to the end of the last closed bar.
        """
        interval = self.check_market(exchange_id, symbol, timeframe, base_url)
        handle = self._handle(exchange_id, base_url)
        exchange = handle.exchange
        end = self.default_until(interval) if until is None else int(until)
        limit = self.page_limit(exchange_id, base_url)
        cursor = int(since)
        while cursor < end:
            params = {"until": end - 1}
            what = f"fetch_ohlcv({symbol!r}, {timeframe!r}, since={cursor})"
            raw = self._call(handle, what, exchange.fetch_ohlcv, symbol, timeframe, cursor, limit, params)
            page = clean_page(raw or [], cursor, end)
            if not page:
                return
            self.stats.pages += 1
            self.stats.candles += len(page)
            yield page
            cursor = page[-1][0] + interval

    def fetch_ohlcv(
        self,
        exchange_id: str,
        symbol: str,
        timeframe: str,
        since: int,
        until: int | None = None,
        *,
        base_url: str | None = None,
        on_page: Callable[[list[Row]], None] | None = None,
    ) -> OHLCV:
        """All candles in ``[since, until)`` as a validated :class:`OHLCV` frame (gaps kept)."""
        rows: list[Row] = []
        for page in self.iter_pages(exchange_id, symbol, timeframe, since, until, base_url=base_url):
            rows.extend(page)
            if on_page is not None:
                on_page(page)
        return rows_to_ohlcv(rows)

    def fetch_recent(
        self,
        exchange_id: str,
        symbol: str,
        timeframe: str,
        n_bars: int,
        *,
        base_url: str | None = None,
    ) -> OHLCV:
        """The last ``n_bars`` closed bars (fewer if the exchange has fewer)."""
        if n_bars < 1:
            raise ValueError("n_bars must be at least 1")
        interval = self.check_market(exchange_id, symbol, timeframe, base_url)
        end = self.default_until(interval)
        return self.fetch_ohlcv(exchange_id, symbol, timeframe, end - n_bars * interval, end, base_url=base_url)

    def expected_requests(self, interval_ms: int, since: int, until: int, page_limit: int) -> int:
        """Klines requests a complete fetch of ``[since, until)`` needs (markets not counted)."""
        bars = max(0, math.ceil((until - since) / interval_ms))
        return math.ceil(bars / page_limit)

    def close(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                session = getattr(handle.exchange, "session", None)
                if session is not None:
                    session.close()
            self._handles.clear()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

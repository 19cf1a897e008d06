"""A cache of recent candles for the live feed, with hit and miss counters.

Two implementations behind one interface (:class:`CandleCache`):

- :class:`RedisCandleCache`: candles under ``{prefix}:ohlcv:{exchange}:{symbol}:{timeframe}``
  with a TTL (Redis expires them), counters in the hash ``{prefix}:stats`` (fields
  ``hits`` and ``misses``), shared by every process using the same Redis and prefix.
- :class:`InProcessCandleCache`: the in-process twin with the same behaviour, for when
  ``REDIS_URL`` is unset; expiry follows an injectable monotonic clock.

:func:`make_cache` picks one: Redis when a URL is given or ``REDIS_URL`` is set and that Redis
answers; when it does not, the in-process cache with a warning on the ``backtest.data.cache``
logger (``fallback=False``: :class:`CacheUnavailableError` instead).
:class:`RecentCandles` puts a :class:`~backtest.data.fetch.Fetcher` behind a cache.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from backtest.data.frame import COLUMNS, OHLCV
from backtest.telemetry.market_data import record_cache_lookup

log = logging.getLogger(__name__)

REDIS_URL_ENV = "REDIS_URL"
PING_TIMEOUT_SECONDS = 2.0
DEFAULT_TTL_SECONDS = 60.0
DEFAULT_PREFIX = "evolve:candles"
_MAGIC = b"OHLCV1"
_HEADER = struct.Struct("<6sQ")  # magic, number of bars


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def encode(candles: OHLCV) -> bytes:
    """Bytes of a frame: header, int64 timestamps, then five float64 columns (little-endian)."""
    parts = [_HEADER.pack(_MAGIC, len(candles)), np.asarray(candles.timestamp, dtype="<i8").tobytes()]
    parts += [np.asarray(getattr(candles, name), dtype="<f8").tobytes() for name in COLUMNS[1:]]
    return b"".join(parts)


def decode(payload: bytes) -> OHLCV:
    magic, n = _HEADER.unpack_from(payload, 0)
    if magic != _MAGIC or len(payload) != _HEADER.size + 48 * n:
        raise ValueError("cache entry is not an encoded OHLCV frame")
    offset = _HEADER.size
    columns = {"timestamp": np.frombuffer(payload, dtype="<i8", count=n, offset=offset).astype(np.int64)}
    offset += 8 * n
    for name in COLUMNS[1:]:
        columns[name] = np.frombuffer(payload, dtype="<f8", count=n, offset=offset).astype(np.float64)
        offset += 8 * n
    return OHLCV(**columns)


@runtime_checkable
class CandleCache(Protocol):
    ttl_seconds: float

    def get(self, exchange: str, symbol: str, timeframe: str, n_bars: int | None = None) -> OHLCV | None: ...

    def put(self, exchange: str, symbol: str, timeframe: str, candles: OHLCV, ttl: float | None = None) -> None: ...

    def invalidate(self, exchange: str, symbol: str, timeframe: str) -> None: ...

    def stats(self) -> CacheStats: ...

    def get_or_fetch(
        self, exchange: str, symbol: str, timeframe: str, loader: Callable[[], OHLCV],
        n_bars: int | None = None, ttl: float | None = None,
    ) -> OHLCV: ...


class _Base:
    """get / get_or_fetch / counting on top of raw read, write, delete and count."""

    ttl_seconds: float

    def __init__(self, ttl_seconds: float) -> None:
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self.ttl_seconds = float(ttl_seconds)

    # hooks
    def _read(self, key: str) -> OHLCV | None:
        raise NotImplementedError

    def _write(self, key: str, candles: OHLCV, ttl: float) -> None:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    def _count(self, field: str) -> None:
        raise NotImplementedError

    def key(self, exchange: str, symbol: str, timeframe: str) -> str:
        return f"ohlcv:{exchange}:{symbol}:{timeframe}"

    def get(self, exchange: str, symbol: str, timeframe: str, n_bars: int | None = None) -> OHLCV | None:
        """The cached candles (the last ``n_bars`` of them), or None: a miss if absent,
        expired, or holding fewer than ``n_bars`` bars."""
        candles = self._read(self.key(exchange, symbol, timeframe))
        if candles is None or (n_bars is not None and len(candles) < n_bars):
            self._count("misses")
            record_cache_lookup(False)
            return None
        self._count("hits")
        record_cache_lookup(True)
        return candles if n_bars is None else candles[len(candles) - n_bars:]

    def put(self, exchange: str, symbol: str, timeframe: str, candles: OHLCV, ttl: float | None = None) -> None:
        ttl = self.ttl_seconds if ttl is None else float(ttl)
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self._write(self.key(exchange, symbol, timeframe), candles, ttl)

    def invalidate(self, exchange: str, symbol: str, timeframe: str) -> None:
        self._delete(self.key(exchange, symbol, timeframe))

    def get_or_fetch(
        self, exchange: str, symbol: str, timeframe: str, loader: Callable[[], OHLCV],
        n_bars: int | None = None, ttl: float | None = None,
    ) -> OHLCV:
        cached = self.get(exchange, symbol, timeframe, n_bars)
        if cached is not None:
            return cached
        candles = loader()
        self.put(exchange, symbol, timeframe, candles, ttl)
        return candles if n_bars is None or len(candles) <= n_bars else candles[len(candles) - n_bars:]


class InProcessCandleCache(_Base):
    """The in-process twin of :class:`RedisCandleCache` (one process, same behaviour)."""

    def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl_seconds)
        self._clock = clock
        self._entries: dict[str, tuple[float, OHLCV]] = {}
        self._counts = {"hits": 0, "misses": 0}
        self._lock = threading.Lock()

    def _read(self, key: str) -> OHLCV | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, candles = entry
            if self._clock() >= expires:
                del self._entries[key]
                return None
            return candles

    def _write(self, key: str, candles: OHLCV, ttl: float) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + ttl, candles)

    def _delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def _count(self, field: str) -> None:
        with self._lock:
            self._counts[field] += 1

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._counts["hits"], self._counts["misses"])


class RedisCandleCache(_Base):
    """Candles in Redis with a TTL; counters shared through ``{prefix}:stats``."""

    def __init__(
        self,
        client_or_url: object | str | None = None,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        super().__init__(ttl_seconds)
        import redis  # imported here: the in-process cache needs no Redis client

        if client_or_url is None:
            client_or_url = os.environ.get(REDIS_URL_ENV)
            if not client_or_url:
                raise ValueError(f"no Redis URL: pass one or set {REDIS_URL_ENV} (or use InProcessCandleCache)")
        self.client = redis.Redis.from_url(client_or_url) if isinstance(client_or_url, str) else client_or_url
        self.prefix = prefix.rstrip(":")

    def key(self, exchange: str, symbol: str, timeframe: str) -> str:
        return f"{self.prefix}:{super().key(exchange, symbol, timeframe)}"

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}:stats"

    def _read(self, key: str) -> OHLCV | None:
        payload = self.client.get(key)
        if payload is None:
            return None
        try:
            return decode(payload)
        except (ValueError, struct.error):
            self.client.delete(key)  # a foreign or corrupt value: drop it, count a miss
            return None

    def _write(self, key: str, candles: OHLCV, ttl: float) -> None:
        self.client.set(key, encode(candles), px=max(1, int(round(ttl * 1000))))

    def _delete(self, key: str) -> None:
        self.client.delete(key)

    def _count(self, field: str) -> None:
        self.client.hincrby(self.stats_key, field, 1)

    def stats(self) -> CacheStats:
        raw = self.client.hgetall(self.stats_key)
        values = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
        return CacheStats(values.get("hits", 0), values.get("misses", 0))

    def clear(self) -> None:
        """Delete every key under this cache's prefix (candles and counters)."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=500))
        if keys:
            self.client.delete(*keys)


class CacheUnavailableError(ConnectionError):
    """The Redis of the candle cache does not answer (``make_cache(..., fallback=False)``)."""


def _unreachable(url: str) -> str | None:
    """Why the Redis at ``url`` does not answer a PING within a couple of seconds, or None."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=PING_TIMEOUT_SECONDS,
                                      socket_timeout=PING_TIMEOUT_SECONDS)
    except ValueError as error:  # not a redis:// URL
        return str(error)
    try:
        client.ping()
    except redis.RedisError as error:
        return f"{type(error).__name__}: {error}"
    finally:
        client.close()
    return None


def make_cache(
    redis_url: str | None = None,
    *,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    prefix: str = DEFAULT_PREFIX,
    env: dict[str, str] | None = None,
    fallback: bool = True,
) -> CandleCache:
    """Redis if ``redis_url`` is given or ``REDIS_URL`` is set, else the in-process cache.

    A Redis that does not answer gives the in-process cache and a warning (the cache is then
    not shared between processes), or with ``fallback=False`` a :class:`CacheUnavailableError`."""
    url = redis_url or (os.environ if env is None else env).get(REDIS_URL_ENV)
    if not url:
        return InProcessCandleCache(ttl_seconds)
    problem = _unreachable(url)
    if problem is None:
        return RedisCandleCache(url, ttl_seconds, prefix=prefix)
    if not fallback:
        raise CacheUnavailableError(
            f"candle cache: Redis at {url} does not answer ({problem}); start it, fix {REDIS_URL_ENV}, "
            "or unset it for the in-process cache"
        )
    log.warning("candle cache: Redis at %s does not answer (%s); using an in-process cache instead "
                "(not shared between processes)", url, problem)
    return InProcessCandleCache(ttl_seconds)


class RecentCandles:
    """The last ``n_bars`` closed candles of a market, through a cache.

    ``fetch`` is called on a miss with ``(exchange, symbol, timeframe, n_bars)``; by
    default it is :meth:`Fetcher.fetch_recent` of the given fetcher.
    """

    def __init__(
        self,
        cache: CandleCache,
        fetch: Callable[[str, str, str, int], OHLCV],
    ) -> None:
        self.cache = cache
        self._fetch = fetch

    @classmethod
    def from_fetcher(cls, cache: CandleCache, fetcher: object, base_url: str | None = None) -> RecentCandles:
        def fetch(exchange: str, symbol: str, timeframe: str, n_bars: int) -> OHLCV:
            return fetcher.fetch_recent(exchange, symbol, timeframe, n_bars, base_url=base_url)  # type: ignore[attr-defined]

        return cls(cache, fetch)

    def latest(self, exchange: str, symbol: str, timeframe: str, n_bars: int) -> OHLCV:
        return self.cache.get_or_fetch(
            exchange, symbol, timeframe, lambda: self._fetch(exchange, symbol, timeframe, n_bars), n_bars=n_bars
        )

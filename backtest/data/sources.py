"""Market data named by config: an exchange market, kept in the local Parquet store.

Evolution configs embed :class:`ExchangeMarket`, e.g. in YAML::

    market:
      exchange: binance
      symbol: BTC/USDT
      timeframe: 1h
      since: 2024-01-01
      until: 2025-01-01        # optional, exclusive; default: up to the last closed bar
      base_url: http://127.0.0.1:8080   # optional REST base URL (proxy, local server)
      store_dir: data/ohlcv    # optional

:func:`load_exchange_market` brings the store up to date (fetching only what is missing)
and returns the candles of ``[since, until)`` as an :class:`~backtest.data.frame.OHLCV`.
"""
from __future__ import annotations

import datetime as dt
import difflib
import re
from pathlib import Path
from typing import Any

import ccxt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backtest.data.fetch import Fetcher, FetcherConfig
from backtest.data.frame import OHLCV, validate
from backtest.data.store import OHLCVStore, default_store_dir, interval_ms

_TIMEFRAME = re.compile(r"^[1-9][0-9]*[smhdwMy]$")
_SYMBOL = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+(-[A-Za-z0-9._-]+)*)?$")


def to_ms(value: Any, name: str | None = None) -> int:
    """Epoch ms from an int (ms), a date, a datetime (naive means UTC) or an ISO 8601 string."""
    where = f"{name}: " if name else ""
    if isinstance(value, bool):
        raise ValueError(f"{where}expected a date, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{where}{value} is before 1970")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{where}{value!r} is not a date; use ISO 8601 like 2024-01-01 or 2024-01-01T12:00:00Z, "
                "or epoch milliseconds"
            ) from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(round(value.timestamp() * 1000))
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp() * 1000)
    raise ValueError(f"{where}expected a date, got {type(value).__name__} {value!r}")


class ExchangeMarket(BaseModel):
    """One market on one exchange over a time range; times are stored as epoch ms (UTC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exchange: str = Field(min_length=1, description="ccxt exchange id, e.g. binance")
    symbol: str = Field(description="unified ccxt symbol, e.g. BTC/USDT")
    timeframe: str = Field(description="ccxt timeframe, e.g. 1m, 1h, 1d")
    since: int = Field(ge=0, description="first bar open time; a date, ISO string or epoch ms")
    until: int | None = Field(None, ge=0, description="exclusive end; None: up to the last closed bar")
    base_url: str | None = Field(None, description="REST base URL override (proxy or local server)")
    store_dir: Path = Field(default_factory=default_store_dir)
    fill_gaps: bool = Field(False, description="forward-fill the exchange's missing bars (volume 0)")

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, value: str) -> str:
        if value not in ccxt.exchanges:
            close = difflib.get_close_matches(value.lower(), ccxt.exchanges, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown exchange {value!r}.{hint}")
        return value

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        if not _SYMBOL.match(value):
            raise ValueError(f"{value!r} is not a unified ccxt symbol; write BASE/QUOTE, e.g. BTC/USDT")
        return value

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        if not _TIMEFRAME.match(value):
            raise ValueError(f"{value!r} is not a timeframe; use e.g. 1m, 15m, 1h, 4h, 1d")
        return value

    @field_validator("since", "until", mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        return None if value is None else to_ms(value)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"base_url {value!r} must start with http:// or https:// and name a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _range(self) -> ExchangeMarket:
        if self.until is not None and self.until <= self.since:
            raise ValueError(f"until ({self.until}) must be after since ({self.since})")
        step = interval_ms(self.timeframe)
        if self.since % step:
            raise ValueError(
                f"since ({self.since}) is not on a {self.timeframe} bar boundary; "
                f"use a multiple of {step} ms (e.g. midnight UTC)"
            )
        return self


def load_exchange_market(
    cfg: ExchangeMarket,
    *,
    fetcher: Fetcher | None = None,
    store: OHLCVStore | None = None,
) -> OHLCV:
    """Update the store for ``cfg`` (fetching only what is missing) and return its candles.

    Pass a long-lived ``fetcher`` to reuse exchange instances (and their rate limiters)
    across calls; by default a new one is made for this call.
    """
    own = fetcher is None
    fetcher = fetcher or Fetcher(FetcherConfig())
    try:
        store = store or OHLCVStore(cfg.store_dir, fetcher)
        if store.fetcher is None:
            store.fetcher = fetcher
        store.update(cfg.exchange, cfg.symbol, cfg.timeframe, cfg.since, cfg.until, base_url=cfg.base_url)
        candles = store.read_range(cfg.exchange, cfg.symbol, cfg.timeframe, cfg.since, cfg.until)
    finally:
        if own:
            fetcher.close()
    if cfg.fill_gaps and len(candles) >= 2:
        candles = validate(candles.to_frame(), fill_gaps=True, interval_ms=interval_ms(cfg.timeframe))
    return candles

"""The bar feed: every closed candle of a market, published once on its bar stream.

Sources:

* :func:`replay` of candles (a file through ``backtest.data.load``, or a run's holdout, see
  :func:`run_holdout`) at a chosen speed in bars per second (``None``: as fast as possible);
  bars before the replayed range can go first as warm-up bars (``"warmup": true``), which
  traders keep as history and do not trade;
* :class:`LivePoller`: closed candles polled from an exchange through the market-data layer
  (``backtest.data.fetch.Fetcher``, which retries and breaks the circuit).

Each bar is one entry ``{"timestamp", "open", "high", "low", "close", "volume", "warmup"}``
whose id is its candle timestamp (:func:`serving.bus.bar_id`), so publishing a bar again, e.g.
after a feed restart, adds nothing. When the bus is away the feed waits and retries
(:class:`serving.bus.Backoff`): no bar is dropped.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backtest.data import OHLCV, PlantedEdge, load, synthetic_market
from backtest.data.frame import COLUMNS
from serving.bus import Backoff, EventBus, bar_id, bar_stream, retrying

CANDLE_FIELDS = COLUMNS  # the data layer's candle columns, in its order


class FeedError(ValueError):
    """A feed source that cannot be read (missing run files, changed data); the message says what to do."""


@dataclass
class FeedStats:
    published: int = 0
    repeated: int = 0          # already in the stream (a restarted feed)
    warmup: int = 0
    bus_retries: int = 0
    last_timestamp: int | None = None
    errors: list[str] = field(default_factory=list)


def bars_of(candles: OHLCV, *, warmup: bool = False) -> Iterator[dict]:
    """Bar events of a candle frame, oldest first."""
    columns = [np.asarray(getattr(candles, name)) for name in CANDLE_FIELDS]
    for i in range(len(columns[0])):
        bar = {name: (int(col[i]) if name == "timestamp" else float(col[i])) for name, col in zip(CANDLE_FIELDS, columns)}
        bar["warmup"] = warmup
        yield bar


def publish_bar(bus: EventBus, stream: str, bar: dict, stats: FeedStats, backoff: Backoff,
                stop: threading.Event | None = None) -> bool:
    """Publish one bar, waiting out a bus outage; False when it was already in the stream."""
    def count_retry(_error: BaseException) -> None:
        stats.bus_retries += 1

    added = retrying(lambda: bus.publish(stream, bar, entry_id=bar_id(bar["timestamp"])), backoff, stop=stop,
                     on_retry=count_retry)
    if added is None:
        stats.repeated += 1
    elif bar.get("warmup"):
        stats.warmup += 1
    else:
        stats.published += 1
    stats.last_timestamp = int(bar["timestamp"])
    return added is not None


def replay(bus: EventBus, stream: str, candles: OHLCV, *, warmup: OHLCV | None = None, speed: float | None = None,
           stop: threading.Event | None = None) -> FeedStats:
    """Publish ``warmup`` bars (flagged, at full speed), then ``candles`` at ``speed`` bars per second."""
    if speed is not None and speed <= 0:
        raise FeedError(f"speed: expected bars per second > 0 (or None for as fast as possible), got {speed!r}")
    stats = FeedStats()
    backoff = Backoff(bus.config.backoff_base_s, bus.config.backoff_cap_s)
    if warmup is not None:
        for bar in bars_of(warmup, warmup=True):
            publish_bar(bus, stream, bar, stats, backoff, stop)
    started = time.monotonic()
    for i, bar in enumerate(bars_of(candles)):
        if stop is not None and stop.is_set():
            break
        if speed is not None:
            delay = started + i / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        publish_bar(bus, stream, bar, stats, backoff, stop)
    return stats


# ---------------------------------------------------------------------------- a run's holdout


@dataclass(frozen=True)
class RunHoldout:
    """What ``evolve shadow RUN_DIR`` replays: the run's bars, its holdout range, costs and winners."""

    run_id: str
    market: OHLCV
    start: int
    end: int
    fees: float
    slippage: float
    result: dict

    @property
    def warmup(self) -> OHLCV:
        """The bars before the holdout (the traders' history)."""
        return self.market[: self.start]

    @property
    def holdout(self) -> OHLCV:
        return self.market[self.start:self.end]

    @property
    def stream(self) -> str:
        from serving.bus import replay_stream

        return replay_stream(self.run_id)

    def genomes(self, promoted_only: bool = True) -> list[dict]:
        entries = self.result.get("hall_of_fame", [])
        chosen = set(self.result.get("promoted", [])) if promoted_only else {e["strategy_id"] for e in entries}
        return [e["genome"] for e in entries if e["strategy_id"] in chosen]


def _run_market(run_dir: Path, meta: dict) -> OHLCV:
    """The run's bars from its config.json: ``--data`` file, else the config's market."""
    data = meta.get("data")
    market = (meta.get("config") or {}).get("market") or {}
    if data:
        path = Path(data)
        if not path.exists():
            raise FeedError(f"{run_dir}/config.json: its data file {path} is gone; restore it to replay the holdout")
        return load(path)
    if market.get("synthetic"):
        s = market["synthetic"]
        edge = PlantedEdge(**s["planted_edge"]) if s.get("planted_edge") else None
        return synthetic_market(s["n_bars"], seed=s["seed"], interval_ms=s.get("interval_ms", 60_000),
                                regimes=s.get("regimes", True), planted_edge=edge)
    if market.get("file"):
        if not Path(market["file"]).exists():
            raise FeedError(f"{run_dir}/config.json: market.file {market['file']} is gone; restore it to replay")
        return load(market["file"])
    if market.get("exchange"):
        from backtest.data.sources import ExchangeMarket, load_exchange_market

        return load_exchange_market(ExchangeMarket(**market["exchange"]))
    raise FeedError(f"{run_dir}/config.json names no market (synthetic, file or exchange)")


def run_holdout(run_dir: str | Path) -> RunHoldout:
    """Read a finished run directory (``config.json``, ``result.json``) and rebuild its bars."""
    run_dir = Path(run_dir)
    files = {name: run_dir / name for name in ("config.json", "result.json")}
    missing = [name for name, path in files.items() if not path.exists()]
    if missing:
        raise FeedError(f"{run_dir}: no {' or '.join(missing)}; pass a finished `evolve run` directory")
    meta = json.loads(files["config.json"].read_text(encoding="utf-8"))
    result = json.loads(files["result.json"].read_text(encoding="utf-8"))
    market = _run_market(run_dir, meta)
    info = result.get("market", {})
    if int(info.get("n_bars", len(market))) != len(market):
        raise FeedError(f"{run_dir}: the run had {info.get('n_bars')} bars, its data now gives {len(market)}; "
                        "the data changed since the run")
    start, end = (int(x) for x in info["holdout"])
    costs = (meta.get("config") or {}).get("costs") or {}
    return RunHoldout(str(result["run_id"]), market, start, end, float(costs.get("fees", 0.0)),
                      float(costs.get("slippage", 0.0)), result)


# ---------------------------------------------------------------------------- live polling


class LivePoller:
    """Polls an exchange for closed candles and publishes each new one on its bar stream.

    The first poll publishes the last ``warmup_bars`` closed bars as warm-up; later polls
    fetch from the bar after the newest one published. ``fetcher`` is a
    ``backtest.data.fetch.Fetcher`` (its retries and circuit breaker apply to every poll).
    """

    def __init__(self, bus: EventBus, fetcher, exchange: str, symbol: str, timeframe: str, *,
                 base_url: str | None = None, warmup_bars: int = 0, stream: str | None = None):
        self.bus, self.fetcher = bus, fetcher
        self.exchange, self.symbol, self.timeframe, self.base_url = exchange, symbol, timeframe, base_url
        self.warmup_bars = warmup_bars
        self.stream = stream or bar_stream(exchange, symbol, timeframe)
        self.stats = FeedStats()
        self._backoff = Backoff(bus.config.backoff_base_s, bus.config.backoff_cap_s)
        tail = bus.tail(self.stream, 1)
        self._next: int | None = tail[0].timestamp_ms + 1 if tail else None

    def poll(self, stop: threading.Event | None = None) -> int:
        """Publish every candle closed since the last poll; returns how many were new."""
        interval = self.fetcher.check_market(self.exchange, self.symbol, self.timeframe, self.base_url)
        end = self.fetcher.default_until(interval)
        warm = self._next is None
        since = end - max(self.warmup_bars, 1) * interval if warm else self._next
        if since >= end:
            return 0
        candles = self.fetcher.fetch_ohlcv(self.exchange, self.symbol, self.timeframe, since, end, base_url=self.base_url)
        new = 0
        for bar in bars_of(candles, warmup=warm and self.warmup_bars > 0):
            new += publish_bar(self.bus, self.stream, bar, self.stats, self._backoff, stop)
        if len(candles):
            self._next = int(candles.timestamp[-1]) + interval
        return new

    def run(self, stop: threading.Event, every_s: float) -> None:
        """Poll every ``every_s`` seconds until ``stop``; a failed poll is recorded and retried next time."""
        while not stop.is_set():
            try:
                self.poll(stop)
            except Exception as error:  # the fetcher already retried; keep polling (failures are values)
                self.stats.errors.append(f"{type(error).__name__}: {error}")
            stop.wait(every_s)

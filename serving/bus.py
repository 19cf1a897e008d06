"""The event bus: streams of JSON events read through consumer groups, at least once.

Two implementations of one interface, :class:`EventBus`:

* :class:`serving.redis_bus.RedisBus`: Redis streams (XADD with ``MAXLEN ~``, XREADGROUP,
  XACK, XAUTOCLAIM), used when a Redis URL is configured (``REDIS_URL``);
* :class:`InProcessBus`: the same semantics in one process (threads), the embedded default.

Streams (names below; the Redis key is ``<prefix><name>``, prefix ``evolve:`` by default):

==========================================  =====================================  ===============
stream                                      one entry per                          MAXLEN (~)
==========================================  =====================================  ===============
``bars:<exchange>:<symbol>:<timeframe>``    closed candle (entry id = candle ms)   100,000
``bars:replay:<name>``                      replayed candle (a file, a holdout)    100,000
``signals``                                 bar a shadow or live trader processed  200,000
``stages``                                  stage change / promotion decision      10,000
``alerts``                                  risk breach, rollback, trader error    10,000
==========================================  =====================================  ===============

Bounds are approximate (Redis trims whole macro nodes); an entry trimmed before a lagging
group read it is gone, so a bound must exceed the longest backlog a consumer may build
(100,000 one-minute bars are about 69 days). Bars are added with their candle timestamp as
the entry id (``<ms>-0``): publishing a bar twice is a no-op, so a restarted feed never
duplicates one. Delivery is at least once: an entry stays pending in its group until acked,
and :class:`GroupReader` re-reads its own pending entries and claims (XAUTOCLAIM) those a
dead consumer left behind; consumers make processing idempotent themselves (a shadow
trader skips bars at or before its last processed candle).
"""
from __future__ import annotations

import bisect
import json
import random
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

SIGNALS = "signals"
STAGES = "stages"
ALERTS = "alerts"
BARS_PREFIX = "bars"
DEFAULT_PREFIX = "evolve:"
DEFAULT_MAXLEN = {BARS_PREFIX: 100_000, SIGNALS: 200_000, STAGES: 10_000, ALERTS: 10_000}
DATA_FIELD = "data"


def bar_stream(exchange: str, symbol: str, timeframe: str) -> str:
    """The bar stream of one market, e.g. ``bars:binance:BTC/USDT:1m``."""
    return f"{BARS_PREFIX}:{exchange}:{symbol}:{timeframe}"


def replay_stream(name: str) -> str:
    """The bar stream of a replay (a file, a run's holdout), e.g. ``bars:replay:<run_id>``."""
    return f"{BARS_PREFIX}:replay:{name}"


def bar_id(timestamp_ms: int) -> str:
    """The entry id of a bar: its candle timestamp, so a bar is in its stream at most once."""
    return f"{int(timestamp_ms)}-0"


class BusUnavailable(ConnectionError):
    """The bus cannot be reached (Redis down or restarting); retry with backoff."""


class BusConfig(BaseModel):
    """Where the events go. ``redis_url`` None: the in-process bus."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str | None = None
    prefix: str = Field(DEFAULT_PREFIX, min_length=1)
    maxlen: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MAXLEN))
    block_ms: int = Field(500, ge=1, le=60_000)
    claim_idle_ms: int = Field(30_000, ge=0)
    backoff_base_s: float = Field(0.05, gt=0)
    backoff_cap_s: float = Field(2.0, gt=0)
    socket_timeout_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BusConfig:
        unknown = sorted(set(self.maxlen) - set(DEFAULT_MAXLEN))
        if unknown:
            raise ValueError(f"maxlen: unknown stream kind(s) {unknown}; known: {sorted(DEFAULT_MAXLEN)}")
        if any(v < 1 for v in self.maxlen.values()):
            raise ValueError("maxlen: every bound must be at least 1")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be at least backoff_base_s")
        return self

    def bound(self, stream: str) -> int:
        kind = stream.split(":", 1)[0]
        return self.maxlen.get(kind, DEFAULT_MAXLEN.get(kind, DEFAULT_MAXLEN[SIGNALS]))


@dataclass(frozen=True)
class Message:
    """One stream entry: its id and its JSON payload."""

    id: str
    data: dict

    @property
    def timestamp_ms(self) -> int:
        return int(self.id.split("-", 1)[0])


def encode(data: dict) -> str:
    return json.dumps(data, sort_keys=True, allow_nan=False, separators=(",", ":"))


def decode(entry_id: Any, fields: dict) -> Message:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    raw = {text(k): text(v) for k, v in fields.items()}
    return Message(text(entry_id), json.loads(raw.get(DATA_FIELD, "{}")))


class EventBus(ABC):
    """Streams with consumer groups. Every method may raise :class:`BusUnavailable`."""

    config: BusConfig

    @abstractmethod
    def publish(self, stream: str, data: dict, *, entry_id: str | None = None) -> str | None:
        """Append an entry; returns its id. With ``entry_id`` (e.g. :func:`bar_id`), an entry
        at or after that id already in the stream makes this a no-op that returns None."""

    @abstractmethod
    def ensure_group(self, stream: str, group: str, *, start: str = "0") -> None:
        """Create the group (and the stream) if missing; ``start`` "0": from the first entry, "$": new
        ones, an entry id: the entries after it."""

    @abstractmethod
    def read_new(self, stream: str, group: str, consumer: str, *, count: int = 100, block_ms: int | None = None
                 ) -> list[Message]:
        """Entries never delivered to the group (XREADGROUP ``>``); they become pending for ``consumer``."""

    @abstractmethod
    def read_pending(self, stream: str, group: str, consumer: str, *, count: int = 100) -> list[Message]:
        """Entries delivered to ``consumer`` and not yet acked (XREADGROUP ``0``)."""

    @abstractmethod
    def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[Message]:
        """Take over entries other consumers left pending for at least ``min_idle_ms`` (XAUTOCLAIM)."""

    @abstractmethod
    def ack(self, stream: str, group: str, ids: Iterable[str]) -> int:
        """Acknowledge processed entries; returns how many were pending."""

    @abstractmethod
    def consumers(self, stream: str, group: str) -> dict[str, int]:
        """Consumer name -> its pending count."""

    @abstractmethod
    def remove_consumer(self, stream: str, group: str, consumer: str) -> None:
        """Forget a consumer (after its pending entries were claimed)."""

    @abstractmethod
    def pending_count(self, stream: str, group: str) -> int:
        """Entries delivered to the group and not acked."""

    @abstractmethod
    def range(self, stream: str, start: str = "-", end: str = "+", count: int | None = None) -> list[Message]:
        """Entries oldest first (XRANGE)."""

    @abstractmethod
    def tail(self, stream: str, count: int) -> list[Message]:
        """The last ``count`` entries, oldest first (XREVRANGE reversed)."""

    @abstractmethod
    def length(self, stream: str) -> int:
        ...

    @abstractmethod
    def delete(self, *streams: str) -> None:
        """Remove streams (their groups too). Only for streams the caller owns."""

    def close(self) -> None:  # noqa: B027 - nothing to release in-process
        pass


# ---------------------------------------------------------------------------- reconnecting


class Backoff:
    """Exponential backoff with full jitter, capped: 0.05 s, 0.1 s, ... up to ``cap_s``."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None):
        self.base_s, self.cap_s = base_s, cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        self.attempt += 1
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.attempt, 30))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


def retrying(call: Callable[[], Any], backoff: Backoff, *, stop: threading.Event | None = None,
             sleep: Callable[[float], None] = time.sleep, on_retry: Callable[[BaseException], None] | None = None) -> Any:
    """Run ``call`` until it does not raise :class:`BusUnavailable` (or ``stop`` is set: then re-raise)."""
    while True:
        try:
            result = call()
        except BusUnavailable as error:
            if stop is not None and stop.is_set():
                raise
            if on_retry is not None:
                on_retry(error)
            sleep(backoff.next())
            continue
        backoff.reset()
        return result


class GroupReader:
    """Reads one stream for one consumer group, at least once, surviving dead consumers.

    Each incarnation has a fresh consumer name (``<group>-<8 hex>``). Its first reads take
    over what earlier incarnations of the group left pending (XAUTOCLAIM with idle 0: a
    group belongs to one reader at a time, e.g. one shadow trader) and then remove those dead
    consumers; afterwards it reads new entries, claiming entries idle for
    ``claim_idle_ms`` now and then. Nothing is acked here: call :meth:`ack` after processing.
    """

    def __init__(self, bus: EventBus, stream: str, group: str, *, start: str = "0", consumer: str | None = None,
                 count: int = 100):
        self.bus, self.stream, self.group = bus, stream, group
        self.start = start
        self.consumer = consumer or f"{group}-{uuid.uuid4().hex[:8]}"
        self.count = count
        self._recovered = False
        self._last_claim = 0.0

    def _recover(self) -> list[Message]:
        self.bus.ensure_group(self.stream, self.group, start=self.start)
        found = self.bus.read_pending(self.stream, self.group, self.consumer, count=10**9)
        others = [c for c in self.bus.consumers(self.stream, self.group) if c != self.consumer]
        if others:
            found += self.bus.claim(self.stream, self.group, self.consumer, min_idle_ms=0, count=10**9)
            for name in others:
                self.bus.remove_consumer(self.stream, self.group, name)
        self._recovered = True
        self._last_claim = time.monotonic()
        return sorted({m.id: m for m in found}.values(), key=lambda m: _id_key(m.id))

    def read(self, block_ms: int | None = None) -> list[Message]:
        """The next batch: recovered entries first, then new ones (blocks up to ``block_ms``).

        After :class:`BusUnavailable` (a reply lost with the connection may have delivered
        entries to this consumer), the next call reads this consumer's pending entries again.
        """
        try:
            return self._read(block_ms)
        except BusUnavailable:
            self.rewind()
            raise

    def rewind(self) -> None:
        """The next read starts with this consumer's pending entries again: a batch read but not
        processed (its processing failed with the bus) stays pending, and ``>`` never returns it."""
        self._recovered = False

    def _read(self, block_ms: int | None) -> list[Message]:
        if not self._recovered:
            recovered = self._recover()
            if recovered:
                return recovered
        idle = self.bus.config.claim_idle_ms
        if idle and time.monotonic() - self._last_claim > idle / 1000:
            self._last_claim = time.monotonic()
            claimed = self.bus.claim(self.stream, self.group, self.consumer, min_idle_ms=idle, count=self.count)
            if claimed:
                return claimed
        return self.bus.read_new(self.stream, self.group, self.consumer, count=self.count,
                                 block_ms=self.bus.config.block_ms if block_ms is None else block_ms)

    def ack(self, ids: Iterable[str]) -> int:
        return self.bus.ack(self.stream, self.group, ids)


# ---------------------------------------------------------------------------- in-process


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Group:
    last: tuple[int, int]
    pending: OrderedDict  # id -> [consumer, delivered_at_monotonic, deliveries]
    consumers: set


class _Stream:
    """Entries in id order: parallel lists from ``head`` on (ids only grow, so a read after an
    id is a bisection, not a scan) and a dict id -> payload for pending lookups."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []
        self.ids: list[str] = []
        self.head = 0  # entries before it were trimmed
        self.entries: dict[str, dict] = {}
        self.last: tuple[int, int] = (0, 0)
        self.groups: dict[str, _Group] = {}

    def append(self, key: tuple[int, int], entry_id: str, payload: dict) -> None:
        self.keys.append(key)
        self.ids.append(entry_id)
        self.entries[entry_id] = payload

    def trim(self, bound: int) -> None:
        while len(self.entries) > bound:
            del self.entries[self.ids[self.head]]
            self.head += 1
        if self.head > 1024 and self.head * 2 > len(self.ids):
            del self.keys[:self.head], self.ids[:self.head]
            self.head = 0

    def after(self, key: tuple[int, int], count: int | None = None) -> list[Message]:
        """Entries with ids greater than ``key``, oldest first."""
        lo = bisect.bisect_right(self.keys, key, lo=self.head)
        hi = len(self.ids) if count is None else min(len(self.ids), lo + count)
        return [Message(i, self.entries[i]) for i in self.ids[lo:hi]]


class InProcessBus(EventBus):
    """The bus inside one process: the same streams, groups, pending entries and bounds
    (trimmed exactly) as :class:`serving.redis_bus.RedisBus`, for threads of one program."""

    def __init__(self, config: BusConfig | None = None):
        self.config = config or BusConfig()
        self._streams: dict[str, _Stream] = {}
        self._changed = threading.Condition()

    def _stream(self, name: str) -> _Stream:
        return self._streams.setdefault(name, _Stream())

    def publish(self, stream: str, data: dict, *, entry_id: str | None = None) -> str | None:
        payload = json.loads(encode(data))
        with self._changed:
            s = self._stream(stream)
            if entry_id is None:
                ms = int(time.time() * 1000)
                key = (ms, 0) if ms > s.last[0] else (s.last[0], s.last[1] + 1)
            else:
                key = _id_key(entry_id)
                if key <= s.last:
                    return None
            s.last = key
            new_id = f"{key[0]}-{key[1]}"
            s.append(key, new_id, payload)
            s.trim(self.config.bound(stream))
            self._changed.notify_all()
            return new_id

    def ensure_group(self, stream: str, group: str, *, start: str = "0") -> None:
        with self._changed:
            s = self._stream(stream)
            if group not in s.groups:
                last = s.last if start == "$" else (0, 0) if start == "0" else _id_key(start)
                s.groups[group] = _Group(last, OrderedDict(), set())

    def _group(self, stream: str, group: str) -> _Group:
        s = self._streams.get(stream)
        if s is None or group not in s.groups:
            raise KeyError(f"no consumer group {group!r} on stream {stream!r}; call ensure_group first")
        return s.groups[group]

    def read_new(self, stream: str, group: str, consumer: str, *, count: int = 100, block_ms: int | None = None
                 ) -> list[Message]:
        deadline = time.monotonic() + (block_ms or 0) / 1000
        with self._changed:
            while True:
                s = self._streams[stream]
                g = self._group(stream, group)
                g.consumers.add(consumer)
                out = s.after(g.last, count)
                if out:
                    now = time.monotonic()
                    for m in out:
                        g.pending[m.id] = [consumer, now, 1]
                    g.last = _id_key(out[-1].id)
                    return out
                remaining = deadline - time.monotonic()
                if not block_ms or remaining <= 0:
                    return []
                self._changed.wait(remaining)

    def read_pending(self, stream: str, group: str, consumer: str, *, count: int = 100) -> list[Message]:
        with self._changed:
            s = self._streams[stream]
            g = self._group(stream, group)
            g.consumers.add(consumer)
            ids = [i for i, p in g.pending.items() if p[0] == consumer][:count]
            return [Message(i, s.entries[i]) for i in ids if i in s.entries]

    def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[Message]:
        with self._changed:
            s = self._streams[stream]
            g = self._group(stream, group)
            g.consumers.add(consumer)
            now = time.monotonic()
            out = []
            for entry_id in sorted(g.pending, key=_id_key):
                info = g.pending[entry_id]
                if (now - info[1]) * 1000 < min_idle_ms:
                    continue
                if entry_id not in s.entries:  # trimmed while pending: dropped, as XAUTOCLAIM does
                    del g.pending[entry_id]
                    continue
                g.pending[entry_id] = [consumer, now, info[2] + 1]
                out.append(Message(entry_id, s.entries[entry_id]))
                if len(out) >= count:
                    break
            return out

    def ack(self, stream: str, group: str, ids: Iterable[str]) -> int:
        with self._changed:
            g = self._group(stream, group)
            return sum(g.pending.pop(i, None) is not None for i in ids)

    def consumers(self, stream: str, group: str) -> dict[str, int]:
        with self._changed:
            g = self._group(stream, group)
            counts = dict.fromkeys(g.consumers, 0)
            for consumer, _, _ in g.pending.values():
                counts[consumer] = counts.get(consumer, 0) + 1
            return counts

    def remove_consumer(self, stream: str, group: str, consumer: str) -> None:
        with self._changed:
            g = self._group(stream, group)
            g.consumers.discard(consumer)
            for entry_id in [i for i, p in g.pending.items() if p[0] == consumer]:
                del g.pending[entry_id]

    def pending_count(self, stream: str, group: str) -> int:
        with self._changed:
            return len(self._group(stream, group).pending)

    def range(self, stream: str, start: str = "-", end: str = "+", count: int | None = None) -> list[Message]:
        lo = (0, 0) if start == "-" else _id_key(start)
        hi = (2**63, 2**63) if end == "+" else _id_key(end) if "-" in end else (int(end), 2**63)  # "ms": all of ms
        with self._changed:
            s = self._streams.get(stream)
            if s is None:
                return []
            first = bisect.bisect_left(s.keys, lo, lo=s.head)
            last = bisect.bisect_right(s.keys, hi, lo=first)
            if count is not None:
                last = min(last, first + count)
            return [Message(i, s.entries[i]) for i in s.ids[first:last]]

    def tail(self, stream: str, count: int) -> list[Message]:
        with self._changed:
            s = self._streams.get(stream)
            if s is None or count <= 0:
                return []
            return [Message(i, s.entries[i]) for i in s.ids[max(s.head, len(s.ids) - count):]]

    def length(self, stream: str) -> int:
        with self._changed:
            s = self._streams.get(stream)
            return 0 if s is None else len(s.entries)

    def delete(self, *streams: str) -> None:
        with self._changed:
            for name in streams:
                self._streams.pop(name, None)


def open_bus(config: BusConfig | None = None) -> EventBus:
    """Redis when ``config.redis_url`` is set, else the in-process bus."""
    config = config or BusConfig()
    if config.redis_url:
        from serving.redis_bus import RedisBus

        return RedisBus(config)
    return InProcessBus(config)

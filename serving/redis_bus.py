"""The event bus on Redis streams (see :mod:`serving.bus` for streams, bounds and semantics).

Every entry is ``{"data": <JSON>}`` under ``<prefix><stream>``. Entries are added with
``XADD ... MAXLEN ~ <bound>``; groups read with XREADGROUP, ack with XACK and take over a
dead consumer's pending entries with XAUTOCLAIM. A connection error or timeout becomes
:class:`serving.bus.BusUnavailable`; redis-py reconnects on the next command, and callers
retry with :class:`serving.bus.Backoff` (a Redis restart with persistence loses nothing).
redis-py's own retries are off (:func:`no_retry`): a silently repeated XREADGROUP ``>`` whose
first reply was lost with the connection would leave that batch pending and unseen, where the
caller, told, reads its pending entries again.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from serving.bus import DATA_FIELD, BusConfig, BusUnavailable, EventBus, Message, decode, encode

_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


def no_retry() -> Retry:
    """redis-py retries a command after a connection error (10 times by default): not here, the
    caller must know (see the module doc)."""
    return Retry(NoBackoff(), 0)


class RedisBus(EventBus):
    """Streams in Redis at ``config.redis_url``, keys under ``config.prefix``."""

    def __init__(self, config: BusConfig, client: redis.Redis | None = None):
        if not config.redis_url and client is None:
            raise ValueError("RedisBus needs BusConfig.redis_url (e.g. redis://127.0.0.1:6379/0)")
        self.config = config
        timeout = config.socket_timeout_s
        self.client = client or redis.Redis.from_url(
            config.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout + config.block_ms / 1000,
            health_check_interval=10, retry=no_retry())

    def key(self, stream: str) -> str:
        return f"{self.config.prefix}{stream}"

    def _do(self, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _UNAVAILABLE as error:
            raise BusUnavailable(f"Redis at {self.config.redis_url} unavailable: {error}") from error
        except redis.BusyLoadingError as error:  # a restarted server still reading its AOF
            raise BusUnavailable(f"Redis at {self.config.redis_url} is loading its data: {error}") from error

    def publish(self, stream: str, data: dict, *, entry_id: str | None = None) -> str | None:
        try:
            new_id = self._do(self.client.xadd, self.key(stream), {DATA_FIELD: encode(data)},
                              id=entry_id or "*", maxlen=self.config.bound(stream), approximate=True)
        except redis.ResponseError as error:
            if entry_id is not None and "equal or smaller" in str(error):
                return None  # already there (a bar published twice)
            raise
        return new_id.decode() if isinstance(new_id, bytes) else str(new_id)

    def ensure_group(self, stream: str, group: str, *, start: str = "0") -> None:
        try:
            self._do(self.client.xgroup_create, self.key(stream), group, id=start, mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _messages(self, reply: Any) -> list[Message]:
        out = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                if fields is not None:  # an entry trimmed while pending comes back empty
                    out.append(decode(entry_id, fields))
        return out

    def read_new(self, stream: str, group: str, consumer: str, *, count: int = 100, block_ms: int | None = None
                 ) -> list[Message]:
        reply = self._do(self.client.xreadgroup, group, consumer, {self.key(stream): ">"}, count=count,
                         block=block_ms or None)
        return self._messages(reply)

    def read_pending(self, stream: str, group: str, consumer: str, *, count: int = 100) -> list[Message]:
        reply = self._do(self.client.xreadgroup, group, consumer, {self.key(stream): "0"}, count=count)
        return self._messages(reply)

    def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[Message]:
        out: list[Message] = []
        start = "0-0"
        while len(out) < count:
            reply = self._do(self.client.xautoclaim, self.key(stream), group, consumer, min_idle_ms,
                             start_id=start, count=min(count - len(out), 1000))
            next_id, entries = reply[0], reply[1]
            out += [decode(i, f) for i, f in entries if f is not None]
            next_id = next_id.decode() if isinstance(next_id, bytes) else str(next_id)
            if next_id == "0-0":
                break
            start = next_id
        return out

    def ack(self, stream: str, group: str, ids: Iterable[str]) -> int:
        ids = list(ids)
        return int(self._do(self.client.xack, self.key(stream), group, *ids)) if ids else 0

    def consumers(self, stream: str, group: str) -> dict[str, int]:
        found = self._do(self.client.xinfo_consumers, self.key(stream), group)
        return {(c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): int(c["pending"]) for c in found}

    def remove_consumer(self, stream: str, group: str, consumer: str) -> None:
        self._do(self.client.xgroup_delconsumer, self.key(stream), group, consumer)

    def pending_count(self, stream: str, group: str) -> int:
        return int(self._do(self.client.xpending, self.key(stream), group)["pending"])

    def range(self, stream: str, start: str = "-", end: str = "+", count: int | None = None) -> list[Message]:
        return [decode(i, f) for i, f in self._do(self.client.xrange, self.key(stream), start, end, count=count)]

    def tail(self, stream: str, count: int) -> list[Message]:
        if count <= 0:
            return []
        found = self._do(self.client.xrevrange, self.key(stream), "+", "-", count=count)
        return [decode(i, f) for i, f in reversed(found)]

    def length(self, stream: str) -> int:
        return int(self._do(self.client.xlen, self.key(stream)))

    def delete(self, *streams: str) -> None:
        if streams:
            self._do(self.client.delete, *(self.key(s) for s in streams))

    def close(self) -> None:
        self.client.close()

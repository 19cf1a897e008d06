"""Where a shadow trader keeps its state, so that a restarted trader resumes exactly.

A trader's state is a small JSON document (its book, counters and the last processed
candle) plus an append-only log of records, one per bar it has seen: ``RECORD_FIELDS``
as float64 (the candle, whether it was a warm-up bar, the position held after it and the
equity). Each bar is committed as one step: the record and the new state together.

* :class:`FileStateStore` (no Redis configured): ``<dir>/<strategy_id>/records.f64`` (appended)
  and ``state.json`` (written to a temporary file, then renamed: atomic). The state names how
  many records are valid, so a record appended by a trader killed before its state was
  renamed is cut off on load.
* :class:`RedisStateStore`: ``<prefix>shadow:<strategy_id>:records`` (a list of packed records)
  and ``...:state``, written in one MULTI/EXEC transaction.
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from backtest.data.frame import COLUMNS
from serving.bus import BusUnavailable

RECORD_FIELDS = (*COLUMNS, "warmup", "position", "equity")
RECORD_WIDTH = len(RECORD_FIELDS)
N_RECORDS = "n_records"


def empty_records() -> np.ndarray:
    return np.empty((0, RECORD_WIDTH), dtype=np.float64)


class StateStore(ABC):
    """Loads and commits one trader's state and records."""

    @abstractmethod
    def load(self, strategy_id: str) -> tuple[dict | None, np.ndarray]:
        """(state or None, records (n, RECORD_WIDTH)); records beyond the state's count are dropped."""

    @abstractmethod
    def commit(self, strategy_id: str, records: np.ndarray, state: dict) -> None:
        """Append ``records`` and replace the state (which must hold the new ``n_records``)."""

    @abstractmethod
    def clear(self, strategy_id: str) -> None:
        ...

    def close(self) -> None:  # noqa: B027 - nothing to release for files
        pass


class FileStateStore(StateStore):
    """State files under ``directory`` (one folder per strategy)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _paths(self, strategy_id: str) -> tuple[Path, Path]:
        folder = self.directory / strategy_id
        return folder / "state.json", folder / "records.f64"

    def load(self, strategy_id: str) -> tuple[dict | None, np.ndarray]:
        state_path, records_path = self._paths(strategy_id)
        if not state_path.exists():
            return None, empty_records()
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise ValueError(f"{state_path}: not valid JSON; the shadow state is damaged (remove the folder to "
                             "start this shadow over)") from None
        n = int(state[N_RECORDS])
        raw = np.fromfile(records_path, dtype=np.float64) if records_path.exists() else np.empty(0)
        if raw.size < n * RECORD_WIDTH:
            raise ValueError(f"{records_path}: {raw.size // RECORD_WIDTH} records, the state names {n}; "
                             "the shadow state is damaged (remove the folder to start over)")
        if raw.size > n * RECORD_WIDTH:  # appended by a trader that died before its state was written
            with open(records_path, "r+b") as handle:
                handle.truncate(n * RECORD_WIDTH * 8)
        return state, raw[: n * RECORD_WIDTH].reshape(n, RECORD_WIDTH)

    def commit(self, strategy_id: str, records: np.ndarray, state: dict) -> None:
        state_path, records_path = self._paths(strategy_id)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(records_path, "ab") as handle:
            handle.write(np.ascontiguousarray(records, dtype=np.float64).tobytes())
        tmp = state_path.with_name(f"state.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, state_path)

    def clear(self, strategy_id: str) -> None:
        for path in self._paths(strategy_id):
            path.unlink(missing_ok=True)


class RedisStateStore(StateStore):
    """State in Redis under ``prefix``; each commit is one transaction."""

    def __init__(self, redis_url: str, prefix: str, client=None):
        import redis

        from serving.redis_bus import no_retry

        self.prefix = prefix
        self.client = client or redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=10,
                                                      retry=no_retry())

    def _keys(self, strategy_id: str) -> tuple[str, str]:
        base = f"{self.prefix}shadow:{strategy_id}"
        return f"{base}:state", f"{base}:records"

    def load(self, strategy_id: str) -> tuple[dict | None, np.ndarray]:
        state_key, records_key = self._keys(strategy_id)
        raw_state = self._do(self.client.get, state_key)
        if raw_state is None:
            return None, empty_records()
        state = json.loads(raw_state)
        n = int(state[N_RECORDS])
        chunks = self._do(self.client.lrange, records_key, 0, -1)
        records = np.frombuffer(b"".join(chunks), dtype=np.float64).reshape(-1, RECORD_WIDTH)
        if records.shape[0] < n:
            raise ValueError(f"Redis {records_key}: {records.shape[0]} records, the state names {n}; damaged state")
        return state, records[:n].copy()

    def commit(self, strategy_id: str, records: np.ndarray, state: dict) -> None:
        """Idempotent: a commit retried after a lost reply (the server applied it) changes nothing."""
        state_key, records_key = self._keys(strategy_id)
        n_new = int(state[N_RECORDS])
        n_before = n_new - len(records)
        payload = np.ascontiguousarray(records, dtype=np.float64).tobytes()

        def apply(pipe) -> None:
            raw = pipe.get(state_key)
            current = int(json.loads(raw)[N_RECORDS]) if raw is not None else 0
            if current >= n_new:
                return  # already committed
            if current != n_before:
                raise ValueError(f"Redis {state_key}: holds {current} records, this commit expects {n_before}; "
                                 "two traders write the same shadow state")
            pipe.multi()
            pipe.rpush(records_key, payload)
            pipe.set(state_key, json.dumps(state, sort_keys=True))

        self._do(self.client.transaction, apply, state_key)

    def _do(self, fn, *args, **kwargs):
        import redis

        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ConnectionError, TimeoutError) as error:
            raise BusUnavailable(f"Redis state store unavailable: {error}") from error

    def clear(self, strategy_id: str) -> None:
        self.client.delete(*self._keys(strategy_id))

    def close(self) -> None:
        self.client.close()

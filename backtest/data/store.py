"""A local Parquet store of candles: one file per (exchange, symbol, timeframe).

``OHLCVStore.update`` fetches only what the file does not hold yet (before its first
bar, after its last bar), saves progress every few pages and when a fetch fails, and
writes atomically (temporary file, fsync, ``os.replace``) under a per-file lock, so a
crash mid-write never corrupts the store and an interrupted fetch resumed later ends
with the very same file contents as an uninterrupted one.

Gaps the exchange itself has (outages) are kept as gaps: the frame allows them and
:meth:`OHLCV.gaps` reports them; nothing is invented. Interior gaps are not re-fetched.

Layout: ``{root}/{exchange}/{BASE-QUOTE}/{timeframe}.parquet`` (``/`` in the symbol
becomes ``-``, ``:`` becomes ``_``).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ccxt
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.data.fetch import Fetcher, Row, rows_to_ohlcv
from backtest.data.frame import COLUMNS, OHLCV, DataValidationError
from backtest.data.loaders import save_parquet

DEFAULT_STORE_DIR = Path("data/ohlcv")
STORE_DIR_ENV = "EVOLVE_DATA_DIR"


def default_store_dir() -> Path:
    return Path(os.environ.get(STORE_DIR_ENV) or DEFAULT_STORE_DIR)


def interval_ms(timeframe: str) -> int:
    """Bar length of a ccxt timeframe string (``1m``, ``1h``, ``1d`` ...) in ms."""
    try:
        seconds = ccxt.Exchange.parse_timeframe(timeframe)
    except (ValueError, KeyError, IndexError, TypeError):
        seconds = 0
    if not seconds or seconds <= 0:
        raise ValueError(f"timeframe {timeframe!r} is not a ccxt timeframe; use e.g. 1m, 15m, 1h, 4h, 1d")
    return int(seconds * 1000)


def merge(a: OHLCV, b: OHLCV) -> OHLCV:
    """Union of two frames by timestamp; where both have a bar, ``b`` wins."""
    if len(a) == 0:
        return b
    if len(b) == 0:
        return a
    timestamp = np.concatenate([b.timestamp, a.timestamp])
    _, first = np.unique(timestamp, return_index=True)  # first occurrence: b before a
    columns = {name: np.concatenate([getattr(b, name), getattr(a, name)])[first] for name in COLUMNS}
    return OHLCV(**columns)


def read_store_file(path: str | os.PathLike[str]) -> OHLCV:
    """Read a file written by :func:`save_parquet` (named columns), keeping gaps."""
    path = Path(path)
    try:
        table = pq.read_table(path, columns=list(COLUMNS))
    except (pa.ArrowException, OSError, KeyError) as error:
        raise DataValidationError(
            f"cannot read the store file ({error})",
            remedy="Delete the file and fetch again, or check that it is an OHLCV Parquet file",
            source=str(path),
        ) from None
    try:
        return OHLCV(**{name: table.column(name).to_numpy() for name in COLUMNS})
    except DataValidationError as error:
        raise error.located(str(path)) from None


@dataclass(frozen=True)
class UpdateResult:
    path: Path
    bars_before: int
    bars_after: int
    ranges_fetched: tuple[tuple[int, int | None], ...]

    @property
    def bars_added(self) -> int:
        return self.bars_after - self.bars_before


class OHLCVStore:
    """Parquet files of candles under ``root``, updated incrementally through a :class:`Fetcher`."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        fetcher: Fetcher | None = None,
        *,
        checkpoint_pages: int = 10,
    ) -> None:
        if checkpoint_pages < 1:
            raise ValueError("checkpoint_pages must be at least 1")
        self.root = Path(root) if root is not None else default_store_dir()
        self.fetcher = fetcher
        self.checkpoint_pages = checkpoint_pages

    # -- paths and reads -------------------------------------------------------------

    def path(self, exchange: str, symbol: str, timeframe: str) -> Path:
        safe = symbol.replace("/", "-").replace(":", "_")
        if not safe or any(part in ("", ".", "..") for part in (exchange, safe, timeframe)) or "/" in exchange:
            raise ValueError(f"cannot store exchange={exchange!r} symbol={symbol!r} timeframe={timeframe!r}")
        return self.root / exchange / safe / f"{timeframe}.parquet"

    def load(self, exchange: str, symbol: str, timeframe: str) -> OHLCV | None:
        """The stored candles, or None if nothing is stored yet."""
        path = self.path(exchange, symbol, timeframe)
        return read_store_file(path) if path.exists() else None

    @staticmethod
    def missing_ranges(
        existing: OHLCV | None, since: int, until: int | None, interval: int
    ) -> list[tuple[int, int | None]]:
        """Half-open ranges ``[start, end)`` to fetch; ``end`` None means up to now."""
        if existing is None or len(existing) == 0:
            return [(since, until)]
        first, last = int(existing.timestamp[0]), int(existing.timestamp[-1])
        ranges: list[tuple[int, int | None]] = []
        if since < first:
            ranges.append((since, first if until is None else min(first, until)))
        tail = max(since, last + interval)
        if until is None or tail < until:
            ranges.append((tail, until))
        return [(s, e) for s, e in ranges if e is None or s < e]

    # -- writes ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def update(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        since: int,
        until: int | None = None,
        *,
        base_url: str | None = None,
        on_page: Callable[[list[Row]], None] | None = None,
    ) -> UpdateResult:
        """Fetch what is missing from ``[since, until)`` and save it; return what changed.

        If the fetch fails part-way, the pages fetched so far are saved before the error
        propagates, so calling ``update`` again resumes where it stopped.
        """
        if self.fetcher is None:
            raise RuntimeError("this store has no fetcher; pass OHLCVStore(root, Fetcher())")
        if until is not None and until <= since:
            raise ValueError(f"until ({until}) must be after since ({since})")
        step = interval_ms(timeframe)
        path = self.path(exchange, symbol, timeframe)
        with self._locked(path):
            stored = read_store_file(path) if path.exists() else None
            before = 0 if stored is None else len(stored)
            current = stored if stored is not None else rows_to_ohlcv([])
            ranges = self.missing_ranges(stored, since, until, step)
            pending: list[Row] = []
            pages = 0

            def flush() -> None:
                nonlocal current, pending
                if pending:
                    current = merge(current, rows_to_ohlcv(pending))
                    save_parquet(current, path)
                    pending = []

            try:
                for start, end in ranges:
                    for page in self.fetcher.iter_pages(exchange, symbol, timeframe, start, end, base_url=base_url):
                        pending.extend(page)
                        pages += 1
                        if on_page is not None:
                            on_page(page)
                        if pages % self.checkpoint_pages == 0:
                            flush()
                    # ranges are fetched in order (head first), so merge before the next one
                    flush()
            finally:
                flush()
            return UpdateResult(path, before, len(current), tuple(ranges))

    def read_range(self, exchange: str, symbol: str, timeframe: str, since: int, until: int | None = None) -> OHLCV:
        """Stored bars with ``since <= timestamp < until``."""
        stored = self.load(exchange, symbol, timeframe)
        if stored is None:
            return rows_to_ohlcv([])
        lo = int(np.searchsorted(stored.timestamp, since, side="left"))
        hi = len(stored) if until is None else int(np.searchsorted(stored.timestamp, until, side="left"))
        return stored[lo:hi]

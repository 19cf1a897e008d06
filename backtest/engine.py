"""The thin Python layer over the kernels: simulate(), evaluate() and positions()."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from backtest import events, kernels
from backtest.allocator import tune_allocator
from backtest.data.frame import COLUMNS, OHLCV, DataValidationError, validate
from backtest.families import family_name, family_of, get_family
from backtest.families.base import GenomeError
from backtest.indicators import fill_indicator_table
from backtest.metrics import METRIC_INDEX, METRIC_NAMES, periods_per_year
from backtest.strategy import normalize_genome, normalized_strategy_id

#: simulate()'s ``direction`` argument -> kernel code (a genome's direction is families.base.GENOME_DIRECTIONS)
SIMULATE_DIRECTIONS = {"longonly": kernels.LONG, "shortonly": kernels.SHORT, "both": kernels.BOTH}


# ---------------------------------------------------------------- input checks


def _as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, (pd.Series, pd.DataFrame)):
        value = value.to_numpy()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(value).__name__}; pass np.asarray(...) of the right dtype")
    return value


def _check_prices(name: str, close: np.ndarray) -> None:
    if close.dtype != np.float64:
        raise ValueError(f"{name}: expected dtype float64, got {close.dtype}; pass {name}.astype(np.float64)")
    if close.ndim not in (1, 2) or close.shape[0] == 0:
        raise ValueError(f"{name}: expected shape (T,) or (T, N) with T >= 1, got {close.shape}")
    bad = ~np.isfinite(close) | (close <= 0)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}: prices must be finite and positive; found {close[tuple(idx)]!r} at index {tuple(int(i) for i in idx)}. "
            "Clean or forward-fill the data before simulating"
        )


def _check_signals(name: str, sig: np.ndarray) -> None:
    if sig.dtype != np.bool_:
        raise ValueError(f"{name}: expected dtype bool, got {sig.dtype}; pass a boolean array (e.g. {name} > 0 or {name}.astype(bool))")
    if sig.ndim not in (1, 2):
        raise ValueError(f"{name}: expected shape (T,) or (T, N), got {sig.shape}")


def _check_fraction(name: str, value: Any, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or value >= upper:
        raise ValueError(f"{name}: expected a fraction in [0, {upper}), got {value!r} (e.g. 0.001 for 0.1%)")
    return value


def _check_init_cash(init_cash: Any) -> None:
    if isinstance(init_cash, bool) or not isinstance(init_cash, (int, float, np.integer, np.floating)) or not (
        np.isfinite(init_cash) and init_cash > 0
    ):
        raise ValueError(f"init_cash: expected a positive finite number, got {init_cash!r}")


def _stop_array(name: str, value: Any, n: int) -> np.ndarray:
    if value is None:
        return np.full(n, np.nan)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        arr = np.full(n, float(value))
    else:
        arr = _as_array(name, value)
        if arr.dtype.kind != "f":
            raise ValueError(f"{name}: expected a float or a float64 array of shape ({n},), got dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ValueError(f"{name}: expected a scalar or one stop per strategy, shape ({n},); got {arr.shape}")
        arr = arr.astype(np.float64)
    finite = arr[~np.isnan(arr)]
    if (finite < 0).any() or not np.isfinite(finite).all():
        raise ValueError(f"{name}: stops are non-negative fractions of the entry price (e.g. 0.05 for 5%); got {value!r}")
    return arr


# ---------------------------------------------------------------- simulate


@dataclass
class SimulationResult:
    """What simulate() returns. ``equity`` (T, N) is computed on first access."""

    total_return: np.ndarray
    final_value: np.ndarray
    n_trades: np.ndarray
    _inputs: tuple = field(repr=False)
    _equity: np.ndarray | None = field(default=None, repr=False)

    @property
    def equity(self) -> np.ndarray:
        if self._equity is None:
            close, entries, exits, direction, fees, slippage, init_cash, sl, tp = self._inputs
            out = np.empty(entries.shape, dtype=np.float64)
            kernels.simulate_nb(close, entries, exits, direction, fees, slippage, init_cash, sl, tp, True, out)
            self._equity = out
        return self._equity


def simulate(
    close,
    entries,
    exits,
    *,
    fees: float = 0.0,
    slippage: float = 0.0,
    init_cash: float = 1.0,
    direction: str = "longonly",
    sl_stop=None,
    tp_stop=None,
) -> SimulationResult:
    """Simulate signals with the semantics of vectorbt's ``Portfolio.from_signals``.

    close: float64 (T,) or (T, N); entries, exits: bool (T, N) (a (T,) array is one strategy).
    All-in sizing, no accumulation, fills at the close of the signal bar, conflicting
    signals ignored, ``direction`` longonly / shortonly / both, stops (fractions of the
    entry close, scalar or one per strategy) checked against close.
    Returns total_return (N,), final_value (N,), n_trades (N,) and equity (T, N).
    """
    close = _as_array("close", close)
    entries = _as_array("entries", entries)
    exits = _as_array("exits", exits)
    _check_prices("close", close)
    _check_signals("entries", entries)
    _check_signals("exits", exits)
    if entries.shape != exits.shape:
        raise ValueError(f"entries and exits must have the same shape; got {entries.shape} and {exits.shape}")
    if entries.ndim == 1:
        if close.ndim != 1:
            raise ValueError(
                f"entries of shape {entries.shape} is one strategy, but close has shape {close.shape}; "
                "pass 2-D entries/exits of shape (T, N) to match a 2-D close"
            )
        entries = entries[:, None]
        exits = exits[:, None]
    if close.ndim == 1:
        close = close[:, None]
    n_bars, n_cols = entries.shape
    if close.shape[0] != n_bars:
        raise ValueError(f"close has {close.shape[0]} bars but entries/exits have {n_bars}; pass arrays over the same bars")
    if close.shape[1] not in (1, n_cols):
        raise ValueError(f"close has {close.shape[1]} columns but entries/exits have {n_cols}; pass close as (T,) or (T, {n_cols})")
    if direction not in SIMULATE_DIRECTIONS:
        raise ValueError(f"direction: expected one of {sorted(SIMULATE_DIRECTIONS)}, got {direction!r}")
    fees = _check_fraction("fees", fees)
    slippage = _check_fraction("slippage", slippage)
    _check_init_cash(init_cash)
    sl = _stop_array("sl_stop", sl_stop, n_cols)
    tp = _stop_array("tp_stop", tp_stop, n_cols)
    close = np.ascontiguousarray(close)
    entries = np.ascontiguousarray(entries)
    exits = np.ascontiguousarray(exits)
    dummy = np.empty((0, 0), dtype=np.float64)
    inputs = (close, entries, exits, SIMULATE_DIRECTIONS[direction], fees, slippage, float(init_cash), sl, tp)
    total_return, final_value, n_trades = kernels.simulate_nb(*inputs, False, dummy)
    return SimulationResult(total_return, final_value, n_trades, inputs)


# ---------------------------------------------------------------- markets and folds


@dataclass(frozen=True)
class MarketArrays:
    """The arrays evaluate() needs; anything with timestamp/high/low/close works as a market."""

    timestamp: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    interval_ms: int


def market_arrays(market: Any) -> MarketArrays:
    for attr in ("timestamp", "high", "low", "close"):
        if not hasattr(market, attr):
            raise ValueError(
                f"market: expected an OHLCV frame (backtest.data.OHLCV) with a {attr!r} array; got {type(market).__name__}"
            )
    close = np.ascontiguousarray(market.close)
    _check_prices("market.close", close)
    if close.ndim != 1:
        raise ValueError(f"market.close must be 1-D, got shape {close.shape}")
    high = np.ascontiguousarray(market.high, dtype=np.float64)
    low = np.ascontiguousarray(market.low, dtype=np.float64)
    ts = np.asarray(market.timestamp)
    interval = getattr(market, "interval_ms", None)
    if not interval:
        interval = int(np.median(np.diff(ts))) if ts.shape[0] > 1 else 60_000
    interval = max(int(interval), 1)
    return MarketArrays(ts, high, low, close, int(interval))


def fold_ranges(folds: Any, n_bars: int) -> np.ndarray:
    """Normalize folds to an (F, 2) int64 array of sorted, non-overlapping [start, end)."""
    if folds is None:
        arr = np.array([[0, n_bars]], dtype=np.int64)
    elif hasattr(folds, "test_ranges"):
        arr = np.asarray(folds.test_ranges(), dtype=np.int64)
    else:
        arr = np.asarray(folds)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"folds: expected integer [start, end) bar ranges, got dtype {arr.dtype}")
        arr = arr.astype(np.int64).reshape(-1, 2) if arr.ndim == 1 and arr.shape[0] == 2 else arr.astype(np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"folds: expected an (F, 2) array of [start, end) ranges, got shape {arr.shape}")
    if (arr[:, 0] < 0).any() or (arr[:, 1] > n_bars).any() or (arr[:, 1] - arr[:, 0] < 2).any():
        raise ValueError(f"folds: every range must lie in [0, {n_bars}] and hold at least 2 bars; got {arr.tolist()}")
    if (arr[1:, 0] < arr[:-1, 1]).any():
        raise ValueError(f"folds: ranges must be sorted and must not overlap; got {arr.tolist()}")
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------- evaluate


@dataclass
class EvaluationResult:
    """Metrics for every genome (N, F, M), in input order; failed genomes are NaN rows."""

    strategy_ids: list[str | None]
    metrics: np.ndarray
    folds: np.ndarray
    errors: dict[int, str]
    buckets: np.ndarray | None = None

    def metric(self, name: str) -> np.ndarray:
        """(N, F) values of one metric, e.g. result.metric("sharpe")."""
        if name not in METRIC_INDEX:
            raise KeyError(f"unknown metric {name!r}; choose one of {list(METRIC_NAMES)}")
        return self.metrics[:, :, METRIC_INDEX[name]]

    def ok(self) -> np.ndarray:
        return np.array([i not in self.errors for i in range(len(self.strategy_ids))])


def _chunks(genomes: list[dict], n_bars: int, memory_bytes: int, max_chunk: int):
    """Greedy chunks of one family each whose shared table rows (the family's ``resources``)
    fit in the memory budget; families in order of first appearance."""
    limit = max(1, memory_bytes // (8 * max(n_bars, 1)))
    by_family: dict[str, list[int]] = {}
    for i, genome in enumerate(genomes):
        by_family.setdefault(family_name(genome), []).append(i)
    for name, members in by_family.items():
        family = get_family(name)
        chunk: list[int] = []
        keys: set[str] = set()
        for i in members:
            mine = family.resources(genomes[i])
            if chunk and (len(keys | mine) > limit or len(chunk) >= max_chunk):
                yield family, chunk
                chunk, keys = [], set()
            chunk.append(i)
            keys |= mine
        if chunk:
            yield family, chunk


class Evaluator:
    """Scores populations; keeps one indicator-table buffer alive between calls.

    An island evaluates every generation with the same Evaluator, so the table memory
    (at most ``memory_bytes``) is allocated and faulted in once, not per generation.
    Genomes are scored in chunks of one family each (``backtest/families/``): the
    family's ``run`` gets this Evaluator as its workspace (:meth:`indicator_table`,
    :meth:`market_summary`).
    """

    def __init__(self, memory_bytes: int = 256 * 2**20, max_chunk: int = 512):
        if memory_bytes < 8:
            raise ValueError(f"memory_bytes must be positive, got {memory_bytes}")
        self.memory_bytes = int(memory_bytes)
        self.max_chunk = int(max_chunk)
        tune_allocator()
        self._buffer = np.empty(0, dtype=np.float64)
        self._summary_of: np.ndarray | None = None
        self._summary_cache = None

    def indicator_table(self, indicators, m: MarketArrays) -> np.ndarray:
        """(U, T) rows of the given indicators on the market, in the kept buffer (valid until the next call)."""
        size = len(indicators) * m.close.shape[0]
        if self._buffer.shape[0] < size:
            self._buffer = np.empty(size, dtype=np.float64)
        table = self._buffer[:size].reshape(len(indicators), m.close.shape[0])
        fill_indicator_table(indicators, m.high, m.low, m.close, table, m.timestamp)
        return table

    def market_summary(self, m: MarketArrays):
        """Per-market prefix sums and close blocks (events.market_summary_nb), computed once
        per market (cached by array identity)."""
        if self._summary_of is not m.close:
            self._summary_cache = events.market_summary_nb(m.close)
            self._summary_of = m.close
        return self._summary_cache

    def evaluate(
        self,
        population: Sequence[Mapping],
        market: Any,
        folds: Any = None,
        *,
        fees: float = 0.0,
        slippage: float = 0.0,
        init_cash: float = 1.0,
        bucket_bars: int = 0,
        normalized: bool = False,
        strategy_ids: Sequence[str] | None = None,
    ) -> EvaluationResult:
        """See :func:`evaluate`. ``normalized=True``: every genome was returned by
        ``normalize_genome`` (as the GA's operators return them), so validation is skipped;
        with it, ``strategy_ids`` may pass their already computed ids (one per genome)."""
        m = market_arrays(market)
        n_bars = m.close.shape[0]
        fr = fold_ranges(folds, n_bars)
        fees = _check_fraction("fees", fees)
        slippage = _check_fraction("slippage", slippage)
        _check_init_cash(init_cash)
        if isinstance(bucket_bars, bool) or not isinstance(bucket_bars, (int, np.integer)) or bucket_bars < 0:
            raise ValueError(f"bucket_bars: expected a non-negative integer, got {bucket_bars!r}")
        ppy = periods_per_year(m.interval_ms)
        n = len(population)
        normalized_genomes: list[dict | None] = [None] * n
        ids: list[str | None] = [None] * n
        errors: dict[int, str] = {}
        if strategy_ids is not None:
            if not normalized:
                raise ValueError("strategy_ids: only with normalized=True (ids of genomes normalize_genome returned)")
            if len(strategy_ids) != n:
                raise ValueError(f"strategy_ids: expected one id per genome ({n}), got {len(strategy_ids)}")
        for i, genome in enumerate(population):
            try:
                normalized_genomes[i] = genome if normalized else normalize_genome(genome)
                ids[i] = strategy_ids[i] if strategy_ids is not None else normalized_strategy_id(normalized_genomes[i])
            except GenomeError as exc:
                errors[i] = str(exc)
            except Exception as exc:  # failures are values: a bad genome never aborts a generation
                errors[i] = f"{type(exc).__name__}: {exc}"
        first: dict[str, int] = {}  # each distinct strategy is evaluated once
        for i, sid in enumerate(ids):
            if sid is not None and sid not in first:
                first[sid] = i
        unique_idx = list(first.values())
        metrics = np.full((n, fr.shape[0], kernels.N_METRICS), np.nan)
        origin = int(fr[0, 0])
        n_buckets = -(-(int(fr[-1, 1]) - origin) // bucket_bars) if bucket_bars > 0 else 0
        buckets = np.full((n, n_buckets), np.nan) if bucket_bars > 0 else None
        unique_genomes = [normalized_genomes[i] for i in unique_idx]
        for family, chunk in _chunks(unique_genomes, n_bars, self.memory_bytes, self.max_chunk):
            idx = [unique_idx[c] for c in chunk]
            try:
                chunk_metrics, chunk_buckets = family.run(
                    [normalized_genomes[i] for i in idx], self, m, fr, fees, slippage, float(init_cash), ppy,
                    bucket_bars, origin, n_buckets,
                )
            except Exception as exc:  # pragma: no cover - a kernel failure marks the chunk, never aborts
                for i in idx:
                    errors[i] = f"{type(exc).__name__}: {exc}"
                continue
            metrics[idx] = chunk_metrics
            if buckets is not None:
                buckets[idx] = chunk_buckets
        for i, sid in enumerate(ids):
            if sid is not None and first[sid] != i:
                metrics[i] = metrics[first[sid]]
                if buckets is not None:
                    buckets[i] = buckets[first[sid]]
        return EvaluationResult(ids, metrics, fr, errors, buckets)


def evaluate(
    population: Sequence[Mapping],
    market: Any,
    folds: Any = None,
    *,
    fees: float = 0.0,
    slippage: float = 0.0,
    init_cash: float = 1.0,
    bucket_bars: int = 0,
    memory_bytes: int = 256 * 2**20,
    max_chunk: int = 512,
) -> EvaluationResult:
    """Score a population of genomes on the folds of a market in fused numba kernels.

    ``folds``: None (all bars), an (F, 2) array of sorted, non-overlapping [start, end)
    bar ranges, or a ``validation.Split`` (its test windows). Each fold is simulated from
    a flat book with ``init_cash``; signals are computed over the full history, so they
    equal ``positions()`` on the same bars. Indicators with the same parameters are
    computed once per chunk; chunks keep the indicator table under ``memory_bytes``.
    With ``bucket_bars > 0`` the result also holds each genome's growth factor per bucket
    of that many bars (from the first fold's start): the out-of-sample return series for
    the deflated Sharpe ratio and PBO. A genome that fails validation gets a NaN row and
    an entry in ``errors``; it never aborts the call. Use an :class:`Evaluator` to keep
    buffers between calls.
    """
    return Evaluator(memory_bytes, max_chunk).evaluate(
        population, market, folds, fees=fees, slippage=slippage, init_cash=init_cash, bucket_bars=bucket_bars
    )

# ---------------------------------------------------------------- positions


def _candles_arrays(candles: Any) -> MarketArrays:
    """Candles checked by the data layer (backtest.data.frame: the same rules and messages as
    every loader), without its regular-grid rule: a feed's candles may have gaps."""
    if isinstance(candles, OHLCV) or (hasattr(candles, "close") and hasattr(candles, "timestamp")):
        return market_arrays(candles)
    try:
        if isinstance(candles, pd.DataFrame):
            bars = validate(candles, regular=False)
        else:
            rows = _candle_rows(candles)
            bars = validate(pd.DataFrame(rows, columns=list(COLUMNS)), regular=False)
    except DataValidationError as exc:
        raise ValueError(f"candles: {exc}") from None
    return market_arrays(bars)


def _candle_rows(candles: Any) -> np.ndarray:
    try:
        rows = np.asarray(candles, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"candles: expected a DataFrame with columns {'/'.join(COLUMNS)} or rows "
            "[[ts_ms, open, high, low, close, volume], ...] of numbers"
        ) from None
    if rows.ndim != 2 or rows.shape[1] != len(COLUMNS) or rows.shape[0] == 0:
        raise ValueError(f"candles: expected rows of [ts_ms, open, high, low, close, volume]; got shape {rows.shape}")
    return rows


def positions(genome: Any, candles: Any) -> np.ndarray:
    """Target positions -1/0/1 at the close of each bar (T,), using bars up to that bar only.

    ``genome``: any registered family's genome (``family`` defaults to ``rules``).
    ``candles``: a DataFrame with columns timestamp, open, high, low, close, volume, or
    ccxt-style rows ``[[ts_ms, open, high, low, close, volume], ...]`` oldest first.
    The same positions the backtest holds (stops included), so the backtest, shadow
    traders, the MLflow model and the Serve endpoint all agree bar for bar.
    """
    g = normalize_genome(genome)
    m = _candles_arrays(candles)
    out = np.zeros(m.close.shape[0], dtype=np.int8)
    no_folds = np.empty((0, 2), dtype=np.int64)
    family_of(g).run([g], Evaluator(), m, no_folds, 0.0, 0.0, 1.0, periods_per_year(m.interval_ms), 0, 0, 0, out)
    return out.astype(np.int64)


def signals(genome: Any, candles: Any) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit signals (bool (T,) each) of a genome on bars, as the kernels see them.

    Feed them to :func:`simulate` with ``direction=SIMULATE_DIRECTION_OF[genome["direction"]]``
    (``backtest.families.base``: "long" -> "longonly", "short" -> "shortonly") and the
    genome's stops to reproduce what :func:`evaluate` scores. A family whose positions
    entry/exit signals cannot express raises GenomeError saying so.
    """
    g = normalize_genome(genome)
    return family_of(g).signals(g, Evaluator(), _candles_arrays(candles))

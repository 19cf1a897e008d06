"""The validated OHLCV frame: the one shape market data takes inside the backtest.

An :class:`OHLCV` holds six read-only, C-contiguous 1-D numpy arrays of the same
length: ``timestamp`` (int64 epoch milliseconds, strictly increasing) and ``open``,
``high``, ``low``, ``close``, ``volume`` (float64). Constructing one checks every
invariant with cheap vectorized numpy, so an ``OHLCV`` in hand is always valid.

:func:`validate` is the boundary for outside data (a pandas DataFrame): it names the
first offending row and says what to do, converts a datetime64 timestamp column to
int64 milliseconds explicitly, and rejects gaps (missing bars) unless asked to
forward-fill them. Nothing is silently coerced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "COLUMNS",
    "PRICE_COLUMNS",
    "DataValidationError",
    "Gap",
    "OHLCV",
    "validate",
]

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = ("open", "high", "low", "close", "volume")

# Epoch-millisecond plausibility: a timestamp series whose values all lie in
# [1e8, 1e11) is 1973..5138 in seconds but only 1970-01-02..1973-03 in milliseconds,
# so it is taken for seconds. 1e14 ms is the year 5138, so anything at or beyond it
# is micro- or nanoseconds. Small values (< 1e8) are allowed as millisecond offsets.
_SECONDS_LOW = 10**8
_SECONDS_HIGH = 10**11
_MS_HIGH = 10**14
_NS_LOW = 10**17
_MAX_FILLED_BARS = 100_000_000
_GAPS_SHOWN = 3


def _format_timestamp(timestamp_ms: int) -> str:
    try:
        text = pd.Timestamp(int(timestamp_ms), unit="ms", tz="UTC").isoformat()
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
        return str(int(timestamp_ms))
    return f"{int(timestamp_ms)} = {text.replace('+00:00', 'Z')}"


class DataValidationError(ValueError):
    """Market data that breaks an OHLCV invariant.

    The message names the row (0-based position, and its timestamp where known),
    the problem, and what to do about it. The parts are also kept as attributes
    (``problem``, ``remedy``, ``row``, ``timestamp``, ``source``, ``line``) so a
    loader can re-raise the error with the file name and line number.
    """

    def __init__(
        self,
        problem: str,
        *,
        remedy: str,
        row: int | None = None,
        timestamp: int | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.problem = problem
        self.remedy = remedy
        self.row = row
        self.timestamp = timestamp
        self.source = source
        self.line = line
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.source is not None:
            where.append(str(self.source))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.timestamp is not None:
            where.append(f"timestamp {_format_timestamp(self.timestamp)}")
        prefix = ", ".join(where)
        body = f"{self.problem}. {self.remedy}"
        return f"{prefix}: {body}" if prefix else body

    def located(self, source: str, *, line_offset: int | None = None) -> DataValidationError:
        """The same error, placed in a file: ``line = row + line_offset`` if given."""
        line = None
        if line_offset is not None and self.row is not None:
            line = self.row + line_offset
        return DataValidationError(
            self.problem,
            remedy=self.remedy,
            row=self.row,
            timestamp=self.timestamp,
            source=source,
            line=line,
        )


@dataclass(frozen=True)
class Gap:
    """Missing bars between two consecutive rows.

    ``start_ms`` is the last timestamp before the gap, ``end_ms`` the first after it,
    ``missing_bars`` how many bars of the interval fit strictly between them.
    """

    start_ms: int
    end_ms: int
    missing_bars: int


# --------------------------------------------------------------------------- checks


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _timestamp_at(timestamp: np.ndarray | None, row: int) -> int | None:
    if timestamp is None or row >= len(timestamp):
        return None
    return int(timestamp[row])


def _check_timestamps(timestamp: np.ndarray) -> None:
    """Units, sign and strict increase of an int64 millisecond column."""
    if len(timestamp) == 0:
        return
    negative = timestamp < 0
    if negative.any():
        row = _first(negative)
        raise DataValidationError(
            f"timestamp {int(timestamp[row])} is negative (before 1970)",
            remedy="Timestamps must be epoch milliseconds, UTC; fix or drop this row",
            row=row,
        )
    lowest, highest = int(timestamp.min()), int(timestamp.max())
    if highest >= _MS_HIGH:
        row = int(np.argmax(timestamp >= _MS_HIGH))
        if highest >= _NS_LOW:
            unit, factor = "nanoseconds", "1_000_000"
        else:
            unit, factor = "microseconds", "1000"
        raise DataValidationError(
            f"timestamp {int(timestamp[row])} is too large for epoch milliseconds "
            f"(beyond the year 5000); it looks like {unit}",
            remedy=f"Divide the timestamp column by {factor} (integer division) to get milliseconds",
            row=row,
        )
    if _SECONDS_LOW <= lowest and highest < _SECONDS_HIGH:
        raise DataValidationError(
            f"timestamp {int(timestamp[0])} is not epoch milliseconds (as milliseconds every "
            f"row would fall between 1970 and 1973): it looks like seconds, multiply by 1000",
            remedy="Multiply the timestamp column by 1000 (e.g. df['timestamp'] * 1000)",
            row=0,
        )
    if len(timestamp) < 2:
        return
    step = np.diff(timestamp)
    bad = step <= 0
    if bad.any():
        row = _first(bad) + 1
        if step[row - 1] == 0:
            raise DataValidationError(
                f"duplicate timestamp: the same as row {row - 1}",
                remedy="Drop duplicate candles (e.g. df.drop_duplicates('timestamp', keep='last'))",
                row=row,
                timestamp=int(timestamp[row]),
            )
        raise DataValidationError(
            f"timestamps are not sorted: this one is earlier than row {row - 1} "
            f"({_format_timestamp(int(timestamp[row - 1]))})",
            remedy="Sort the candles by timestamp, oldest first (e.g. df.sort_values('timestamp'))",
            row=row,
            timestamp=int(timestamp[row]),
        )


def _check_values(
    timestamp: np.ndarray | None,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
) -> None:
    """Finite, positive prices, non-negative volume, and consistent high/low."""
    values = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    for name, array in values.items():
        bad = ~np.isfinite(array)
        if bad.any():
            row = _first(bad)
            raise DataValidationError(
                f"{name} is {float(array[row])} (NaN or infinite)",
                remedy="Fill or drop this candle before loading; missing values are never guessed",
                row=row,
                timestamp=_timestamp_at(timestamp, row),
            )
    for name in PRICE_COLUMNS:
        array = values[name]
        bad = array <= 0
        if bad.any():
            row = _first(bad)
            raise DataValidationError(
                f"{name} is {float(array[row])!r}, but prices must be strictly positive",
                remedy="Fix or drop this candle",
                row=row,
                timestamp=_timestamp_at(timestamp, row),
            )
    bad = volume < 0
    if bad.any():
        row = _first(bad)
        raise DataValidationError(
            f"volume is {float(volume[row])!r}, but volume may not be negative (0 is fine)",
            remedy="Fix or drop this candle",
            row=row,
            timestamp=_timestamp_at(timestamp, row),
        )
    rules = (
        (high < low, "high ({high!r}) is below low ({low!r})"),
        (high < open_, "high ({high!r}) is below open ({open!r})"),
        (high < close, "high ({high!r}) is below close ({close!r})"),
        (low > open_, "low ({low!r}) is above open ({open!r})"),
        (low > close, "low ({low!r}) is above close ({close!r})"),
    )
    for bad, text in rules:
        if bad.any():
            row = _first(bad)
            problem = text.format(
                high=float(high[row]), low=float(low[row]),
                open=float(open_[row]), close=float(close[row]),
            )
            raise DataValidationError(
                problem,
                remedy="Every candle needs low <= open, close <= high; fix or drop this candle",
                row=row,
                timestamp=_timestamp_at(timestamp, row),
            )


def _most_common_step(timestamp: np.ndarray) -> int:
    if len(timestamp) < 2:
        raise ValueError(
            f"the bar interval needs at least 2 bars, this frame has {len(timestamp)}"
        )
    step = np.diff(timestamp)
    first = step[0]
    if 2 * np.count_nonzero(step == first) > len(step):
        return int(first)
    values, counts = np.unique(step, return_counts=True)
    return int(values[np.argmax(counts)])  # ties: the smallest step


def _check_interval(interval_ms: Any) -> int | None:
    if interval_ms is None:
        return None
    if isinstance(interval_ms, (bool, np.bool_)) or not isinstance(interval_ms, (int, np.integer)):
        raise TypeError(f"interval_ms must be a positive int (milliseconds), got {interval_ms!r}")
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be a positive number of milliseconds, got {interval_ms}")
    return int(interval_ms)


def _gap_rows(timestamp: np.ndarray, interval: int) -> np.ndarray:
    """Rows i (>= 1) whose step from row i-1 exceeds the interval."""
    return np.flatnonzero(np.diff(timestamp) > interval) + 1


def _check_grid(timestamp: np.ndarray, interval: int, chosen: bool) -> None:
    """Every step must be a whole number of intervals (no misaligned bars)."""
    step = np.diff(timestamp)
    bad = step % interval != 0
    if bad.any():
        row = _first(bad) + 1
        source = "the interval_ms you passed" if chosen else "the most common step"
        raise DataValidationError(
            f"the step from row {row - 1} is {int(step[row - 1])} ms, not a whole number of "
            f"bars of {interval} ms ({source})",
            remedy="Resample the data to one regular bar interval, or pass the right interval_ms",
            row=row,
            timestamp=int(timestamp[row]),
        )


def _gap_error(timestamp: np.ndarray, rows: np.ndarray, interval: int) -> DataValidationError:
    missing = (timestamp[rows] - timestamp[rows - 1]) // interval - 1
    shown = []
    for row, count in zip(rows[:_GAPS_SHOWN], missing[:_GAPS_SHOWN]):
        shown.append(
            f"{int(count)} bar(s) missing between row {int(row) - 1} "
            f"({_format_timestamp(int(timestamp[row - 1]))}) and row {int(row)} "
            f"({_format_timestamp(int(timestamp[row]))})"
        )
    more = f"; and {len(rows) - _GAPS_SHOWN} more" if len(rows) > _GAPS_SHOWN else ""
    return DataValidationError(
        f"{len(rows)} gap(s), {int(missing.sum())} missing bar(s) in all, at a bar interval of "
        f"{interval} ms: " + "; ".join(shown) + more,
        remedy="Pass fill_gaps=True to forward-fill them (flat bars at the previous close, "
        "volume 0), or interval_ms=... if the interval is wrong",
        row=int(rows[0]),
        timestamp=int(timestamp[rows[0]]),
    )


def _fill_gaps(columns: dict[str, np.ndarray], interval: int) -> dict[str, np.ndarray]:
    """Insert flat bars (open=high=low=close=previous close, volume 0) into gaps."""
    timestamp = columns["timestamp"]
    slot = (timestamp - timestamp[0]) // interval
    length = int(slot[-1]) + 1
    if length == len(timestamp):
        return columns
    if length > _MAX_FILLED_BARS:
        raise DataValidationError(
            f"filling the gaps would make {length:,} bars out of {len(timestamp):,}",
            remedy="Check interval_ms, or split the data at its long gaps",
        )
    filled_timestamp = timestamp[0] + np.arange(length, dtype=np.int64) * interval
    present = np.zeros(length, dtype=bool)
    present[slot] = True
    source = np.full(length, -1, dtype=np.int64)
    source[slot] = np.arange(len(timestamp))
    source = np.maximum.accumulate(source)
    previous_close = columns["close"][source]
    out = {"timestamp": filled_timestamp, "close": previous_close}
    for name in ("open", "high", "low"):
        out[name] = np.where(present, columns[name][source], previous_close)
    out["volume"] = np.where(present, columns["volume"][source], 0.0)
    return out


# --------------------------------------------------------------------------- frame


def _as_array(name: str, value: Any, dtype: type) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1:
        raise DataValidationError(
            f"{name} must be a 1-D array, got shape {array.shape}",
            remedy="Pass one array per column",
        )
    kind = array.dtype.kind
    if dtype is np.int64:
        if kind not in "iu":
            raise DataValidationError(
                f"timestamp must be an integer array of epoch milliseconds, got dtype {array.dtype}",
                remedy="Convert it explicitly (e.g. validate(df) accepts integral floats and "
                "datetime64), or cast with .astype(np.int64)",
            )
        if kind == "u" and len(array) and array.max() > np.iinfo(np.int64).max:
            raise DataValidationError(
                "timestamp does not fit in int64 milliseconds",
                remedy="Timestamps must be epoch milliseconds",
            )
    elif kind not in "iuf":
        raise DataValidationError(
            f"{name} must be a numeric array, got dtype {array.dtype}",
            remedy="Convert the column to float64 explicitly",
        )
    view = np.ascontiguousarray(array, dtype=dtype).view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)  # __eq__ below compares the arrays
class OHLCV:
    """Validated candles as six read-only 1-D arrays of one length.

    ``timestamp`` is int64 epoch milliseconds (UTC), strictly increasing; ``open``,
    ``high``, ``low``, ``close``, ``volume`` are float64. Prices are strictly positive,
    volume is non-negative, ``low <= open, close <= high``. Gaps (missing bars) are
    allowed here and reported by :meth:`gaps`; :func:`validate` is stricter.
    Integer price arrays are converted to float64; the stored arrays are read-only
    views (no copy when the input is already float64 and contiguous).
    """

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        arrays = {
            name: _as_array(name, getattr(self, name), np.int64 if name == "timestamp" else np.float64)
            for name in COLUMNS
        }
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise DataValidationError(
                f"columns have different lengths: {lengths}",
                remedy="Every column needs one value per candle",
            )
        _check_timestamps(arrays["timestamp"])
        _check_values(
            arrays["timestamp"], arrays["open"], arrays["high"],
            arrays["low"], arrays["close"], arrays["volume"],
        )
        for name, array in arrays.items():
            object.__setattr__(self, name, array)

    @classmethod
    def _trusted(cls, columns: dict[str, np.ndarray]) -> OHLCV:
        """Build from arrays known to be valid (slices of a valid frame): no checks."""
        self = object.__new__(cls)
        for name in COLUMNS:
            array = columns[name].view()
            array.flags.writeable = False
            object.__setattr__(self, name, array)
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling (e.g. from Ray) keeps the arrays read-only."""
        for name, value in state.items():
            if name in COLUMNS:
                value = np.asarray(value).view()
                value.flags.writeable = False
            self.__dict__[name] = value

    # ------------------------------------------------------------- container

    def __len__(self) -> int:
        return len(self.timestamp)

    def __getitem__(self, key: slice) -> OHLCV:
        if not isinstance(key, slice):
            raise TypeError(
                f"OHLCV supports only slices (e.g. bars[100:200]), got {type(key).__name__}; "
                "index the arrays instead (bars.close[i])"
            )
        if key.step is not None and key.step <= 0:
            raise ValueError(f"OHLCV slices need a positive step, got {key.step}")
        return OHLCV._trusted({name: getattr(self, name)[key] for name in COLUMNS})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OHLCV):
            return NotImplemented
        return all(np.array_equal(getattr(self, n), getattr(other, n)) for n in COLUMNS)

    __hash__ = None  # type: ignore[assignment]  # arrays are not hashable; use fingerprint()

    def __repr__(self) -> str:
        if len(self) == 0:
            return "OHLCV(0 bars)"
        return (
            f"OHLCV({len(self)} bars, {_format_timestamp(int(self.timestamp[0]))} .. "
            f"{_format_timestamp(int(self.timestamp[-1]))})"
        )

    # ------------------------------------------------------------- views

    @cached_property
    def interval_ms(self) -> int:
        """The most common step between timestamps, in ms (ties: the smallest); 0 for
        fewer than 2 bars, where there is no step."""
        if len(self.timestamp) < 2:
            return 0
        return _most_common_step(self.timestamp)

    def gaps(self, interval_ms: int | None = None) -> list[Gap]:
        """Every step longer than the bar interval (default :attr:`interval_ms`).

        ``missing_bars`` is the number of whole bars that fit strictly inside the step
        (rounded up for steps that are not a whole number of bars).
        """
        if len(self) < 2:
            return []
        interval = _check_interval(interval_ms) or self.interval_ms
        rows = _gap_rows(self.timestamp, interval)
        start = self.timestamp[rows - 1]
        end = self.timestamp[rows]
        missing = -(-(end - start) // interval) - 1
        return [Gap(int(s), int(e), int(m)) for s, e, m in zip(start, end, missing)]

    def to_frame(self) -> pd.DataFrame:
        """A pandas DataFrame with :data:`COLUMNS` (timestamp as int64 ms), copied."""
        return pd.DataFrame({name: np.array(getattr(self, name)) for name in COLUMNS})

    def to_rows(self) -> np.ndarray:
        """A float64 ``(T, 6)`` array in ccxt row order (timestamps exact below 2**53)."""
        return np.column_stack([getattr(self, name).astype(np.float64) for name in COLUMNS])

    def fingerprint(self) -> str:
        """A sha256 hex digest of the contents (the columns' bytes in :data:`COLUMNS` order):
        the identity of this data. A run id is built from its first 16 characters."""
        digest = hashlib.sha256()
        for name in COLUMNS:
            digest.update(getattr(self, name).tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------- constructors

    @classmethod
    def from_frame(
        cls, df: pd.DataFrame, *, fill_gaps: bool = False, interval_ms: int | None = None
    ) -> OHLCV:
        """Validate a DataFrame with :data:`COLUMNS` (see :func:`validate`)."""
        return validate(df, fill_gaps=fill_gaps, interval_ms=interval_ms)

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Sequence[float]] | np.ndarray,
        *,
        fill_gaps: bool = False,
        interval_ms: int | None = None,
    ) -> OHLCV:
        """Validate ccxt-style rows ``[[ts_ms, open, high, low, close, volume], ...]``.

        ``rows`` is a list of rows or a 2-D array with 6 columns, oldest first.
        """
        if isinstance(rows, np.ndarray):
            if rows.ndim != 2 or rows.shape[1] != len(COLUMNS):
                raise DataValidationError(
                    f"rows must be a 2-D array of shape (T, 6), got shape {rows.shape}",
                    remedy="Pass rows as [ts_ms, open, high, low, close, volume], oldest first",
                )
            df = pd.DataFrame(rows, columns=list(COLUMNS))
        else:
            rows = list(rows)
            for row, values in enumerate(rows):
                if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
                    raise DataValidationError(
                        f"expected a row [ts_ms, open, high, low, close, volume], got {values!r}",
                        remedy="Pass a list of 6-value rows, oldest first",
                        row=row,
                    )
                if len(values) != len(COLUMNS):
                    raise DataValidationError(
                        f"row has {len(values)} values, expected 6",
                        remedy="Each row must be [ts_ms, open, high, low, close, volume]",
                        row=row,
                    )
            df = pd.DataFrame(rows, columns=list(COLUMNS))
        return validate(df, fill_gaps=fill_gaps, interval_ms=interval_ms)


# --------------------------------------------------------------------------- validate


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric_column(df: pd.DataFrame, name: str) -> np.ndarray:
    """A column as a numpy array of numbers, or an error naming the first bad row."""
    series = df[name]
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise DataValidationError(
            f"column {name!r} holds booleans, not numbers",
            remedy=f"Fix the {name} column",
            row=0,
        )
    if pd.api.types.is_numeric_dtype(dtype):
        if isinstance(dtype, np.dtype):
            return series.to_numpy()
        # pandas nullable dtypes (Int64, Float64): missing values become NaN
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = series.to_numpy(dtype=object)
    bad = np.array(
        [
            isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating))
            for v in values
        ],
        dtype=bool,
    )
    if bad.any():
        row = _first(bad)
        value = values[row]
        if isinstance(value, str) and _parses_as_number(value):
            raise DataValidationError(
                f"{name} is the text {value!r}, not a number",
                remedy=f"Convert the column explicitly, e.g. df[{name!r}] = pd.to_numeric(df[{name!r}])",
                row=row,
            )
        raise DataValidationError(
            f"{name} is {value!r}, not a number",
            remedy=f"Fix the {name} value (numbers only, '.' as the decimal point) or drop this row",
            row=row,
        )
    return values.astype(np.float64)


def _timestamp_column(df: pd.DataFrame) -> np.ndarray:
    """The timestamp column as int64 epoch ms; datetime64 is converted explicitly."""
    series = df["timestamp"]
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        missing = series.isna().to_numpy()
        if missing.any():
            row = _first(missing)
            raise DataValidationError(
                "timestamp is missing (NaT)",
                remedy="Fill or drop this row",
                row=row,
            )
        if getattr(dtype, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        as_ns = series.astype("datetime64[ns]").to_numpy().view(np.int64)
        fractional = as_ns % 1_000_000 != 0
        if fractional.any():
            row = _first(fractional)
            raise DataValidationError(
                f"timestamp {series.iloc[row]} has a sub-millisecond part",
                remedy="Round timestamps to whole milliseconds first (e.g. .dt.floor('ms'))",
                row=row,
            )
        return as_ns // 1_000_000
    if pd.api.types.is_timedelta64_dtype(dtype):
        raise DataValidationError(
            "timestamp is a timedelta column, not points in time",
            remedy="Pass epoch milliseconds (int64) or datetime64 values",
            row=0,
        )
    values = _numeric_column(df, "timestamp")
    if values.dtype.kind == "u":
        too_big = values > np.iinfo(np.int64).max
        if too_big.any():
            row = _first(too_big)
            raise DataValidationError(
                f"timestamp {int(values[row])} does not fit in int64",
                remedy="Timestamps must be epoch milliseconds",
                row=row,
            )
        return values.astype(np.int64)
    if values.dtype.kind == "i":
        return values.astype(np.int64, copy=False)
    values = values.astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first(bad)
        raise DataValidationError(
            f"timestamp is {float(values[row])} (NaN or infinite)",
            remedy="Fill or drop this row; timestamps must be epoch milliseconds",
            row=row,
        )
    bad = (values != np.floor(values)) | (np.abs(values) >= 2.0**63)
    if bad.any():
        row = _first(bad)
        raise DataValidationError(
            f"timestamp {float(values[row])!r} is not a whole number of milliseconds",
            remedy="Timestamps must be integer epoch milliseconds; fix the column "
            "(if they are fractional seconds, multiply by 1000 and round deliberately)",
            row=row,
        )
    return values.astype(np.int64)


def validate(
    df: pd.DataFrame, *, fill_gaps: bool = False, interval_ms: int | None = None, regular: bool = True
) -> OHLCV:
    """Check a DataFrame of candles and return an :class:`OHLCV`.

    ``df`` needs the columns :data:`COLUMNS` (extra columns are ignored), one row per
    candle, oldest first. ``timestamp`` is int64 epoch milliseconds (UTC); integral
    floats are accepted, and a datetime64 column (naive means UTC) is converted to
    milliseconds. Every problem raises :class:`DataValidationError` naming the first
    offending row (0-based position in ``df``): missing columns, non-numeric, NaN or
    infinite values, non-positive prices, negative volume, high/low inconsistent with
    open/close, duplicate or decreasing timestamps, timestamps in seconds or
    micro/nanoseconds, steps that are not whole bars, and gaps.

    Gaps are missing bars relative to ``interval_ms`` (default: the most common step).
    With ``fill_gaps=True`` they are filled with flat bars at the previous close
    (open = high = low = close, volume 0) instead of raising. ``regular=False`` skips the
    bar-grid and gap rules (any strictly increasing timestamps, as a live feed may deliver:
    ``backtest.positions`` reads candles so).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"validate() takes a pandas DataFrame, got {type(df).__name__}; "
            "for ccxt-style rows use OHLCV.from_rows(rows)"
        )
    interval = _check_interval(interval_ms)
    names = [str(c) for c in df.columns]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        lowered = {n.strip().lower(): n for n in names}
        hints = [f"{lowered[c]!r} -> {c!r}" for c in missing if c in lowered]
        hint = f" Rename {', '.join(hints)}." if hints else ""
        index_name = str(df.index.name).strip().lower() if df.index.name is not None else ""
        if "timestamp" in missing and (
            isinstance(df.index, pd.DatetimeIndex) or index_name in ("timestamp", "time", "date", "datetime")
        ):
            hint += " The timestamps look like the index: call df.reset_index() first."
        raise DataValidationError(
            f"missing column(s) {missing}; found {names}",
            remedy=f"Expected columns {list(COLUMNS)} (extra columns are ignored).{hint}",
        )
    duplicated = sorted({n for n in names if n in COLUMNS and names.count(n) > 1})
    if duplicated:
        raise DataValidationError(
            f"column(s) {duplicated} appear more than once",
            remedy="Keep one column of each name",
        )
    if len(df) == 0:
        raise DataValidationError(
            "there are no candles (0 rows)",
            remedy="Load data with at least one row",
        )
    df = df.rename(columns=dict(zip(df.columns, names)))

    timestamp = _timestamp_column(df)
    values = {name: _numeric_column(df, name).astype(np.float64, copy=False) for name in VALUE_COLUMNS}
    _check_values(timestamp, values["open"], values["high"], values["low"], values["close"], values["volume"])
    _check_timestamps(timestamp)

    columns = {"timestamp": timestamp, **values}
    if len(timestamp) >= 2 and regular:
        step = interval if interval is not None else _most_common_step(timestamp)
        _check_grid(timestamp, step, chosen=interval is not None)
        rows = _gap_rows(timestamp, step)
        if len(rows):
            if not fill_gaps:
                raise _gap_error(timestamp, rows, step)
            columns = _fill_gaps(columns, step)
    return OHLCV(**columns)

"""Read and write OHLCV files: CSV (optionally gzipped) and Parquet.

Two layouts are understood, for both formats:

* **named columns**: ``timestamp, open, high, low, close, volume`` in any order and
  any letter case; extra columns are ignored. If there is no ``timestamp`` column,
  exactly one of ``time``, ``date`` or ``datetime`` is taken as the timestamp.
  A timestamp column of text (e.g. ISO 8601 ``2024-01-01T00:00:00Z``; naive means
  UTC) or of Parquet timestamp type is converted to epoch milliseconds explicitly.
* **headerless ccxt row order**: ``ts_ms, open, high, low, close, volume``, exactly
  six columns, no header line. A CSV file is headerless when its first line is all
  numbers; a Parquet file when its column names are all integers (``"0"`` .. ``"5"``,
  as ``pd.DataFrame(rows).to_parquet`` writes them).

Every problem raises :class:`~backtest.data.frame.DataValidationError` naming the
file, the line (CSV, 1-based, counting the header) or row (Parquet, 0-based) and
what to do. Writers are atomic: they write a temporary file in the target directory
and ``os.replace`` it over the target, so a failed write never leaves a half file.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.data.frame import COLUMNS, OHLCV, DataValidationError, validate

__all__ = [
    "SUFFIXES",
    "TIMESTAMP_ALIASES",
    "load",
    "load_csv",
    "load_parquet",
    "save_csv",
    "save_parquet",
]

TIMESTAMP_ALIASES = ("time", "date", "datetime")
SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _existing_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; check the path (cwd is {os.getcwd()})")
    if not path.is_file():
        raise IsADirectoryError(f"{path}: is not a file; pass the path of a CSV or Parquet file")
    return path


def load(
    path: str | os.PathLike[str], *, fill_gaps: bool = False, interval_ms: int | None = None
) -> OHLCV:
    """Load a ``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq`` file of candles.

    See :func:`load_csv` and :func:`load_parquet` for the layouts understood, and
    :func:`~backtest.data.frame.validate` for ``fill_gaps`` and ``interval_ms``.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix is None:
        raise ValueError(
            f"{path}: unknown file type; expected one of {', '.join(SUFFIXES)} "
            "(rename the file if it is one of these formats)"
        )
    _existing_file(path)
    if suffix in (".csv", ".csv.gz"):
        return load_csv(path, fill_gaps=fill_gaps, interval_ms=interval_ms)
    return load_parquet(path, fill_gaps=fill_gaps, interval_ms=interval_ms)


# --------------------------------------------------------------------------- naming


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _normalize_names(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Lower-case, stripped column names; a time/date/datetime alias for timestamp."""
    names = [str(c).strip().lower() for c in df.columns]
    for name in COLUMNS:
        if names.count(name) > 1:
            raise DataValidationError(
                f"column {name!r} appears {names.count(name)} times (names are case-insensitive)",
                remedy="Keep one column of each name",
                source=source,
            )
    if "timestamp" not in names:
        aliases = [a for a in TIMESTAMP_ALIASES if a in names]
        if len(aliases) > 1:
            raise DataValidationError(
                f"no 'timestamp' column, and several candidates {aliases}",
                remedy="Name the timestamp column 'timestamp'",
                source=source,
            )
        if aliases:
            names[names.index(aliases[0])] = "timestamp"
    df = df.copy(deep=False)
    df.columns = names
    return df


def _parse_text_timestamps(df: pd.DataFrame, source: str, line_offset: int | None) -> pd.DataFrame:
    """Convert a text timestamp column (dates) to datetime64; numbers are left as they are."""
    if "timestamp" not in df.columns:
        return df
    series = df["timestamp"]
    if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_datetime64_any_dtype(series.dtype):
        return df
    text = series.astype("string")
    if text.dropna().map(_is_number).all():
        return df  # numbers stored as text: validate() reports them precisely
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = (parsed.isna() & text.notna()).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataValidationError(
            f"timestamp {text.iloc[row]!r} is neither epoch milliseconds nor an ISO 8601 date",
            remedy="Use epoch milliseconds or ISO 8601 dates (2024-01-01T00:00:00Z) throughout",
            row=row,
        ).located(source, line_offset=line_offset)
    df = df.copy(deep=False)
    df["timestamp"] = parsed
    return df


def _parse_text_numbers(df: pd.DataFrame, source: str, line_offset: int | None) -> pd.DataFrame:
    """Value columns read as text (one bad cell makes a CSV column text): name the bad cell."""
    converted = {}
    for name in ("open", "high", "low", "close", "volume"):
        if name not in df.columns or pd.api.types.is_numeric_dtype(df[name].dtype):
            continue
        text = df[name]
        if not all(isinstance(v, str) or v is None or (isinstance(v, float) and np.isnan(v)) for v in text):
            continue  # mixed Python objects: validate() reports them
        numbers = pd.to_numeric(text, errors="coerce")
        bad = (numbers.isna() & text.notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                f"{name} is {text.iloc[row]!r}, not a number",
                remedy=f"Fix the {name} value (numbers only, '.' as the decimal point) or drop this row",
                row=row,
            ).located(source, line_offset=line_offset)
        converted[name] = numbers.astype(np.float64)
    if converted:
        df = df.assign(**converted)
    return df


def _validated(
    df: pd.DataFrame, source: str, line_offset: int | None, fill_gaps: bool, interval_ms: int | None
) -> OHLCV:
    try:
        return validate(df, fill_gaps=fill_gaps, interval_ms=interval_ms)
    except DataValidationError as error:
        raise error.located(source, line_offset=line_offset) from None


# --------------------------------------------------------------------------- CSV


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="")  # type: ignore[return-value]
    return open(path, newline="")


def _first_line(path: Path) -> list[str] | None:
    with _open_text(path) as handle:
        for line in handle:
            if line.strip():
                return next(csv.reader([line]))
            return []  # a blank first line
    return None


def load_csv(
    path: str | os.PathLike[str], *, fill_gaps: bool = False, interval_ms: int | None = None
) -> OHLCV:
    """Load candles from a CSV file (gzip if the name ends in ``.gz``), comma-separated.

    Named columns (case-insensitive; ``time``, ``date`` or ``datetime`` stand in for a
    missing ``timestamp``; ISO 8601 text dates are converted to epoch ms, naive means
    UTC) or, when the first line is all numbers, headerless ccxt row order
    ``ts_ms, open, high, low, close, volume``. Errors name the file and the 1-based
    line. Blank lines are only allowed at the end of the file.
    """
    path = _existing_file(path)
    source = str(path)
    try:
        first = _first_line(path)
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise DataValidationError(
            f"cannot read the file as text CSV ({error})",
            remedy="Check that it is a CSV file (gzip-compressed only if named .gz)",
            source=source,
        ) from None
    if first is None:
        raise DataValidationError(
            "the file is empty",
            remedy="Write a header line and at least one candle",
            source=source,
        )
    if not first:
        raise DataValidationError(
            "the first line is blank",
            remedy="Start the file with the header line or the first candle",
            source=source,
            line=1,
        )
    headerless = all(_is_number(cell) for cell in first)
    try:
        df = pd.read_csv(
            path,
            header=None if headerless else 0,
            skip_blank_lines=False,
            compression="gzip" if path.name.lower().endswith(".gz") else None,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as error:
        raise DataValidationError(
            f"cannot parse the CSV ({str(error).strip()})",
            remedy="Every line needs the same number of comma-separated fields",
            source=source,
        ) from None
    except pd.errors.EmptyDataError:
        raise DataValidationError(
            "the file has no data", remedy="Write at least one candle", source=source
        ) from None
    line_offset = 1 if headerless else 2  # line = row + offset
    if df.empty:
        raise DataValidationError(
            "the file has a header line but no candles",
            remedy="Write at least one candle below the header",
            source=source,
        )

    # Blank lines read as all-missing rows: trailing ones are dropped, others named.
    blank = df.isna().all(axis=1).to_numpy()
    if blank.any():
        keep = len(df)
        while keep and blank[keep - 1]:
            keep -= 1
        df = df.iloc[:keep]
        blank = blank[:keep]
        if blank.any():
            row = int(np.flatnonzero(blank)[0])
            raise DataValidationError(
                "the line is blank",
                remedy="Remove blank lines between candles",
                row=row,
            ).located(source, line_offset=line_offset)

    if headerless:
        if df.shape[1] != len(COLUMNS):
            raise DataValidationError(
                f"the first line is all numbers, so the file is read as headerless ccxt rows, "
                f"but it has {df.shape[1]} columns instead of 6",
                remedy="Use ts_ms,open,high,low,close,volume per line, or add a header line "
                f"naming the columns {', '.join(COLUMNS)}",
                source=source,
            )
        df.columns = list(COLUMNS)
    else:
        df = _normalize_names(df, source)
    df = _parse_text_timestamps(df, source, line_offset)
    df = _parse_text_numbers(df, source, line_offset)
    return _validated(df, source, line_offset, fill_gaps, interval_ms)


# --------------------------------------------------------------------------- Parquet


def load_parquet(
    path: str | os.PathLike[str], *, fill_gaps: bool = False, interval_ms: int | None = None
) -> OHLCV:
    """Load candles from a Parquet file.

    Named columns (case-insensitive; ``time``, ``date`` or ``datetime`` stand in for a
    missing ``timestamp``; a Parquet timestamp or ISO 8601 text column is converted to
    epoch ms) or, when every column name is an integer, ccxt row order
    ``ts_ms, open, high, low, close, volume``. Errors name the file and the 0-based row.
    """
    path = _existing_file(path)
    source = str(path)
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as error:
        raise DataValidationError(
            f"cannot read the file as Parquet ({error})",
            remedy="Check that it is a Parquet file",
            source=source,
        ) from None
    if df.empty:
        raise DataValidationError(
            "the file has no rows", remedy="Write at least one candle", source=source
        )
    names = [str(c).strip() for c in df.columns]
    if names and all(n.lstrip("-").isdigit() for n in names):
        if len(names) != len(COLUMNS):
            raise DataValidationError(
                f"the columns are unnamed ({names}), so they are read in ccxt row order, "
                f"but there are {len(names)} instead of 6",
                remedy=f"Name the columns {', '.join(COLUMNS)}, or write exactly 6 in ccxt order",
                source=source,
            )
        order = sorted(range(len(names)), key=lambda i: int(names[i]))
        df = df.iloc[:, order]
        df.columns = list(COLUMNS)
    else:
        df = _normalize_names(df, source)
        df = _parse_text_timestamps(df, source, None)
    return _validated(df, source, None, fill_gaps, interval_ms)


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success move it over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(handle)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _check_ohlcv(ohlcv: object, writer: Callable[..., None]) -> OHLCV:
    if not isinstance(ohlcv, OHLCV):
        raise TypeError(
            f"{writer.__name__}() takes an OHLCV, got {type(ohlcv).__name__}; "
            "build one with validate(df) or OHLCV.from_rows(rows)"
        )
    return ohlcv


def save_csv(ohlcv: OHLCV, path: str | os.PathLike[str]) -> None:
    """Write candles as CSV with a header of :data:`COLUMNS`, atomically.

    Gzip-compressed if the name ends in ``.gz``. Floats are written with full
    precision, so :func:`load_csv` reads back the very same values.
    """
    ohlcv = _check_ohlcv(ohlcv, save_csv)
    compression = "gzip" if str(path).lower().endswith(".gz") else None
    frame = ohlcv.to_frame()
    with _atomic_target(path) as temporary:
        if compression:
            with gzip.open(temporary, "wt", newline="") as handle:
                frame.to_csv(handle, index=False, lineterminator="\n")
        else:
            with open(temporary, "w", newline="") as handle:
                frame.to_csv(handle, index=False, lineterminator="\n")


def save_parquet(ohlcv: OHLCV, path: str | os.PathLike[str]) -> None:
    """Write candles as Parquet (timestamp int64 ms, prices float64), atomically."""
    ohlcv = _check_ohlcv(ohlcv, save_parquet)
    table = pa.table({name: pa.array(np.asarray(getattr(ohlcv, name))) for name in COLUMNS})
    with _atomic_target(path) as temporary:
        pq.write_table(table, temporary)

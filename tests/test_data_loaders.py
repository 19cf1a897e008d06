"""CSV and Parquet loaders: layouts, round trips, file-located errors, atomic writes."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from backtest.data import (
    OHLCV,
    DataValidationError,
    load,
    load_csv,
    load_parquet,
    loaders,
    save_csv,
    save_parquet,
)

START = 1_704_067_200_000
MINUTE = 60_000


@pytest.fixture
def bars() -> OHLCV:
    """Awkward floats that only survive a round trip written at full precision."""
    close = np.array([0.1 + 0.2, 1 / 3, 2 / 3, 123456.789012345678, 1e-7 * 3])
    open_ = np.array([0.3, 0.1 + 0.2, 1 / 3, 2 / 3, 123456.789012345678])
    return OHLCV(
        timestamp=START + MINUTE * np.arange(5, dtype=np.int64),
        open=open_,
        high=np.maximum(open_, close) * (1 + 1e-12),
        low=np.minimum(open_, close) / 7 * 3,
        close=close,
        volume=np.array([0.0, 1e-9, 5.5, 1e12, np.pi]),
    )


ROWS = [
    [START + MINUTE * k, 10.0 + k, 11.0 + k, 9.0 + k, 10.5 + k, 100.0 + k] for k in range(4)
]


def write_text(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_round_trip_is_exact(tmp_path, bars):
    path = tmp_path / "bars.csv"
    save_csv(bars, path)
    assert path.read_text().splitlines()[0] == "timestamp,open,high,low,close,volume"
    loaded = load_csv(path)
    assert loaded == bars
    assert load(path) == bars
    assert os.listdir(tmp_path) == ["bars.csv"]  # no temporary file left behind


def test_gzipped_csv_round_trip(tmp_path, bars):
    path = tmp_path / "bars.csv.gz"
    save_csv(bars, path)
    with gzip.open(path, "rt") as handle:
        assert handle.readline().strip() == "timestamp,open,high,low,close,volume"
    assert load(path) == bars


@pytest.mark.parametrize("name", ["bars.parquet", "bars.pq"])
def test_parquet_round_trip_is_exact(tmp_path, bars, name):
    path = tmp_path / name
    save_parquet(bars, path)
    assert load_parquet(path) == bars
    assert load(path) == bars
    assert pq.read_schema(path).field("timestamp").type == "int64"
    assert os.listdir(tmp_path) == [name]


def test_headerless_csv_in_ccxt_order(tmp_path):
    text = "\n".join(",".join(repr(v) for v in row) for row in ROWS) + "\n"
    path = write_text(tmp_path / "rows.csv", text)
    loaded = load(path)
    assert loaded.timestamp.tolist() == [START + MINUTE * k for k in range(4)]
    assert loaded.open.tolist() == [10.0, 11.0, 12.0, 13.0]
    assert loaded.volume.tolist() == [100.0, 101.0, 102.0, 103.0]


def test_headerless_parquet_in_ccxt_order(tmp_path):
    path = tmp_path / "rows.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    loaded = load(path)
    assert loaded == OHLCV.from_rows(ROWS)
    assert loaded.high.tolist() == [11.0, 12.0, 13.0, 14.0]


def test_named_columns_any_case_any_order_with_extras(tmp_path):
    text = "Close,VOLUME,Open,High,Low,Timestamp,symbol\n" + "".join(
        f"{c},{v},{o},{h},{lo},{t},BTC\n" for t, o, h, lo, c, v in ROWS
    )
    assert load(write_text(tmp_path / "named.csv", text)) == OHLCV.from_rows(ROWS)


@pytest.mark.parametrize("alias", ["time", "Date", "datetime"])
def test_timestamp_aliases_with_iso_dates(tmp_path, alias):
    text = f"{alias},open,high,low,close,volume\n" + "".join(
        f"{pd.Timestamp(t, unit='ms').isoformat()}Z,{o},{h},{lo},{c},{v}\n" for t, o, h, lo, c, v in ROWS
    )
    assert load(write_text(tmp_path / "dates.csv", text)) == OHLCV.from_rows(ROWS)


def test_time_alias_with_milliseconds(tmp_path):
    text = "time,open,high,low,close,volume\n" + "".join(",".join(map(repr, row)) + "\n" for row in ROWS)
    assert load(write_text(tmp_path / "ms.csv", text)) == OHLCV.from_rows(ROWS)


def test_parquet_with_datetime_timestamp_column(tmp_path):
    frame = OHLCV.from_rows(ROWS).to_frame()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    path = tmp_path / "dt.parquet"
    frame.to_parquet(path)
    assert load(path) == OHLCV.from_rows(ROWS)


def test_seconds_in_a_file_are_detected(tmp_path):
    text = "timestamp,open,high,low,close,volume\n" + "".join(
        f"{t // 1000},{o},{h},{lo},{c},{v}\n" for t, o, h, lo, c, v in ROWS
    )
    path = write_text(tmp_path / "seconds.csv", text)
    with pytest.raises(DataValidationError, match="looks like seconds, multiply by 1000"):
        load(path)


def test_csv_error_names_file_and_line(tmp_path):
    lines = ["timestamp,open,high,low,close,volume"] + [",".join(map(repr, row)) for row in ROWS]
    lines[3] = lines[3].replace("12.0,", "oops,", 1)  # third candle, line 4 of the file
    path = write_text(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 4, row 2")
    assert "open is 'oops', not a number" in message


def test_headerless_csv_error_line_numbers(tmp_path):
    rows = [list(row) for row in ROWS]
    rows[2][3] = 12.2  # low above open (12.0), third line of a headerless file
    path = write_text(tmp_path / "bad.csv", "".join(",".join(map(repr, r)) + "\n" for r in rows))
    with pytest.raises(DataValidationError, match=r"bad.csv, line 3, row 2, timestamp .*low \(12.2\) is above open \(12.0\)"):
        load(path)


def test_parquet_error_names_file_and_row(tmp_path):
    frame = OHLCV.from_rows(ROWS).to_frame()
    frame.loc[1, "volume"] = -5.0
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataValidationError, match=r"bad.parquet, row 1, .*volume is -5.0"):
        load(path)


def test_gaps_in_a_file_and_fill_gaps(tmp_path):
    path = write_text(
        tmp_path / "gap.csv",
        "".join(",".join(map(repr, row)) + "\n" for row in (ROWS[0], ROWS[3])),
    )
    with pytest.raises(DataValidationError, match="gap.csv, line 2, row 1.*2 bar.*fill_gaps=True"):
        load(path, interval_ms=MINUTE)
    filled = load(path, interval_ms=MINUTE, fill_gaps=True)
    assert filled.timestamp.tolist() == [row[0] for row in ROWS]
    assert filled.close.tolist() == [10.5, 10.5, 10.5, 13.5]
    assert filled.volume.tolist() == [100.0, 0.0, 0.0, 103.0]


def test_blank_lines(tmp_path):
    body = [",".join(map(repr, row)) for row in ROWS]
    trailing = write_text(tmp_path / "trailing.csv", "\n".join(body) + "\n\n\n")
    assert load(trailing) == OHLCV.from_rows(ROWS)
    inner = write_text(tmp_path / "inner.csv", "\n".join(body[:2] + [""] + body[2:]) + "\n")
    with pytest.raises(DataValidationError, match=r"inner.csv, line 3, row 2: the line is blank"):
        load(inner)


def test_headerless_with_wrong_column_count(tmp_path):
    path = write_text(tmp_path / "five.csv", "".join(",".join(map(repr, row[:5])) + "\n" for row in ROWS))
    with pytest.raises(DataValidationError, match="5 columns instead of 6"):
        load(path)


def test_missing_columns_in_a_file(tmp_path):
    path = write_text(tmp_path / "cols.csv", "timestamp,open,high,low,close\n1704067200000,1,1,1,1\n")
    with pytest.raises(DataValidationError, match=r"cols.csv: missing column\(s\) \['volume'\]"):
        load(path)


def test_empty_file(tmp_path):
    with pytest.raises(DataValidationError, match="empty"):
        load(write_text(tmp_path / "empty.csv", ""))


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"unknown file type; expected one of .csv, .csv.gz, .parquet, .pq"):
        load(tmp_path / "bars.json")
    with pytest.raises(FileNotFoundError, match="nothere.csv: no such file"):
        load(tmp_path / "nothere.csv")


def test_not_a_parquet_file(tmp_path):
    with pytest.raises(DataValidationError, match="cannot read the file as Parquet"):
        load(write_text(tmp_path / "fake.parquet", "not parquet"))


def test_failed_parquet_write_keeps_the_old_file(tmp_path, bars, monkeypatch):
    path = tmp_path / "bars.parquet"
    old = OHLCV.from_rows(ROWS)
    save_parquet(old, path)
    before = path.read_bytes()

    def broken_write(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(loaders.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_parquet(bars, path)
    assert path.read_bytes() == before
    assert load(path) == old
    assert os.listdir(tmp_path) == ["bars.parquet"]


def test_failed_csv_write_keeps_the_old_file(tmp_path, bars, monkeypatch):
    path = tmp_path / "bars.csv"
    old = OHLCV.from_rows(ROWS)
    save_csv(old, path)
    before = path.read_bytes()

    def broken_to_csv(self, handle, **kwargs):
        handle.write("timestamp,open,high,low,close,volume\n1704067200000,1,")
        raise KeyboardInterrupt  # even an interrupt mid-write leaves the old file

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    with pytest.raises(KeyboardInterrupt):
        save_csv(bars, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["bars.csv"]


def test_save_takes_an_ohlcv(tmp_path):
    with pytest.raises(TypeError, match="takes an OHLCV"):
        save_csv(pd.DataFrame(), tmp_path / "x.csv")

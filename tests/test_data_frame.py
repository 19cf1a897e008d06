"""The OHLCV frame and validate(): hand-built tiny frames for every rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.data import COLUMNS, OHLCV, DataValidationError, Gap, validate

START = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000


def tiny(n: int = 5) -> pd.DataFrame:
    """n one-minute candles, hand-checkable: close = 100 + i, open = previous close."""
    close = 100.0 + np.arange(n)
    open_ = np.concatenate([[99.5], close[:-1]])
    return pd.DataFrame(
        {
            "timestamp": START + MINUTE * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) + 0.5,
            "low": np.minimum(open_, close) - 0.5,
            "close": close,
            "volume": 10.0 + np.arange(n),
        }
    )


def set_value(df: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    df = df.copy()
    if isinstance(value, str):
        df[column] = df[column].astype(object)
    df.loc[row, column] = value
    return df


def test_valid_frame_becomes_read_only_contiguous_arrays():
    bars = validate(tiny())
    assert len(bars) == 5
    assert bars.timestamp.dtype == np.int64 and bars.close.dtype == np.float64
    assert bars.timestamp[2] == 1_704_067_320_000
    assert bars.close.tolist() == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert bars.open[0] == 99.5 and bars.high[0] == 100.5 and bars.low[0] == 99.0
    for name in COLUMNS:
        array = getattr(bars, name)
        assert array.ndim == 1 and array.flags.c_contiguous and not array.flags.writeable
    with pytest.raises(ValueError):
        bars.close[0] = 1.0
    assert bars.interval_ms == MINUTE
    assert bars.gaps() == []


# (mutation, row named, words that must appear: the problem and the remedy)
CASES = {
    "non-numeric": (
        lambda df: set_value(df, 2, "close", "abc"), 2, ["'abc'", "not a number", "Fix the close"],
    ),
    "nan": (lambda df: set_value(df, 3, "open", np.nan), 3, ["open is nan", "NaN or infinite", "drop"]),
    "infinite": (lambda df: set_value(df, 1, "volume", np.inf), 1, ["volume is inf", "drop"]),
    "zero price": (
        lambda df: set_value(df, 2, "low", 0.0), 2, ["low is 0.0", "strictly positive", "Fix or drop"],
    ),
    "negative price": (lambda df: set_value(df, 4, "close", -1.0), 4, ["close is -1.0", "strictly positive"]),
    "negative volume": (
        lambda df: set_value(df, 3, "volume", -2.0), 3, ["volume is -2.0", "may not be negative", "Fix or drop"],
    ),
    "high below low": (
        lambda df: set_value(df, 1, "high", 98.0), 1, ["high (98.0) is below low (99.5)", "low <= open"],
    ),
    "high below open": (
        # row 2: open 101, close 102, high 102.5, low 100.5 -> open raised above high
        lambda df: set_value(df, 2, "open", 102.7), 2, ["high (102.5) is below open (102.7)", "fix or drop"],
    ),
    "high below close": (
        lambda df: set_value(df, 2, "close", 102.6), 2, ["high (102.5) is below close (102.6)"],
    ),
    "low above open": (
        lambda df: set_value(df, 2, "open", 100.4), 2, ["low (100.5) is above open (100.4)"],
    ),
    "low above close": (
        lambda df: set_value(df, 3, "close", 101.4), 3, ["low (101.5) is above close (101.4)"],
    ),
    "duplicate timestamp": (
        lambda df: set_value(df, 3, "timestamp", START + 2 * MINUTE), 3,
        ["duplicate timestamp", "same as row 2", "drop_duplicates"],
    ),
    "unsorted": (
        lambda df: set_value(set_value(df, 2, "timestamp", START + 3 * MINUTE), 3, "timestamp", START + 2 * MINUTE),
        3, ["not sorted", "earlier than row 2", "Sort the candles"],
    ),
    "fractional float timestamp": (
        lambda df: set_value(df.astype({"timestamp": float}), 1, "timestamp", START + 0.5), 1,
        ["not a whole number of milliseconds", "integer epoch milliseconds"],
    ),
    "negative timestamp": (
        lambda df: df.assign(timestamp=df["timestamp"] - START - 2 * MINUTE), 0, ["negative", "epoch milliseconds"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_problem_names_the_row_the_problem_and_the_remedy(name):
    mutate, row, words = CASES[name]
    df = mutate(tiny())
    with pytest.raises(DataValidationError) as caught:
        validate(df)
    message = str(caught.value)
    assert f"row {row}" in message, message
    assert caught.value.row == row
    for word in words:
        assert word in message, (word, message)


def test_message_names_the_timestamp_in_ms_and_iso():
    with pytest.raises(DataValidationError, match=r"row 2, timestamp 1704067320000 = 2024-01-01T00:02:00Z: low is 0.0"):
        validate(set_value(tiny(), 2, "low", 0.0))


def test_missing_columns_say_which_and_what_is_expected():
    with pytest.raises(DataValidationError) as caught:
        validate(tiny().drop(columns=["volume", "low"]))
    message = str(caught.value)
    assert "missing column(s) ['low', 'volume']" in message
    assert "Expected columns ['timestamp', 'open', 'high', 'low', 'close', 'volume']" in message


def test_missing_column_with_other_case_suggests_the_rename():
    with pytest.raises(DataValidationError, match=r"Rename 'Close' -> 'close'"):
        validate(tiny().rename(columns={"close": "Close"}))


def test_extra_columns_are_ignored():
    df = tiny().assign(symbol="BTC/USDT", trades=7)
    assert validate(df) == validate(tiny())


def test_seconds_are_detected_with_the_remedy():
    df = tiny().assign(timestamp=lambda d: d["timestamp"] // 1000)
    with pytest.raises(DataValidationError, match="looks like seconds.*multiply by 1000"):
        validate(df)


@pytest.mark.parametrize(("factor", "unit", "divisor"), [(1000, "microseconds", "1000"), (10**6, "nanoseconds", "1_000_000")])
def test_micro_and_nanoseconds_are_detected(factor, unit, divisor):
    df = tiny().assign(timestamp=lambda d: d["timestamp"] * factor)
    with pytest.raises(DataValidationError, match=f"looks like {unit}.*Divide the timestamp column by {divisor}"):
        validate(df)


def test_small_millisecond_offsets_are_accepted():
    df = tiny().assign(timestamp=MINUTE * np.arange(5))
    assert validate(df).timestamp.tolist() == [0, 60_000, 120_000, 180_000, 240_000]


def test_integral_float_timestamps_are_exact():
    bars = validate(tiny().astype({"timestamp": np.float64}))
    assert bars.timestamp.dtype == np.int64
    assert bars.timestamp[-1] == START + 4 * MINUTE


def test_boolean_column_is_not_numeric():
    with pytest.raises(DataValidationError, match="volume.*booleans"):
        validate(tiny().assign(volume=True))


def test_datetime_column_is_converted_to_milliseconds():
    df = tiny()
    naive = df.assign(timestamp=pd.to_datetime(df["timestamp"], unit="ms"))
    aware = df.assign(
        timestamp=pd.to_datetime(df["timestamp"], unit="ms", utc=True).dt.tz_convert("America/New_York")
    )
    seconds_resolution = df.assign(timestamp=pd.to_datetime(df["timestamp"], unit="ms").astype("datetime64[s]"))
    expected = START + MINUTE * np.arange(5)
    for frame in (naive, aware, seconds_resolution):
        assert validate(frame).timestamp.tolist() == expected.tolist()


def test_datetime_with_sub_millisecond_part_is_an_error():
    df = tiny()
    stamps = pd.to_datetime(df["timestamp"], unit="ms")
    stamps.iloc[3] += pd.Timedelta(microseconds=5)
    with pytest.raises(DataValidationError, match="row 3.*sub-millisecond.*Round"):
        validate(df.assign(timestamp=stamps))


def test_gaps_raise_and_list_them_with_the_remedy():
    df = tiny(8).drop(index=[2, 5, 6]).reset_index(drop=True)  # rows: 0 1 3 4 7
    with pytest.raises(DataValidationError) as caught:
        validate(df)
    message = str(caught.value)
    assert "2 gap(s), 3 missing bar(s)" in message
    assert "1 bar(s) missing between row 1" in message and "2 bar(s) missing between row 3" in message
    assert "pass fill_gaps=True to forward-fill them".lower() in message.lower()
    assert caught.value.row == 2


def test_fill_gaps_inserts_flat_bars_at_the_previous_close():
    original = tiny(8)
    df = original.drop(index=[2, 5, 6]).reset_index(drop=True)
    bars = validate(df, fill_gaps=True)
    assert bars.timestamp.tolist() == original["timestamp"].tolist()
    # kept rows are untouched
    for row in (0, 1, 3, 4, 7):
        for name in COLUMNS[1:]:
            assert getattr(bars, name)[row] == original.loc[row, name]
    # row 2 copies the close of row 1 (101); rows 5, 6 the close of row 4 (104)
    for row, previous_close in ((2, 101.0), (5, 104.0), (6, 104.0)):
        assert [bars.open[row], bars.high[row], bars.low[row], bars.close[row]] == [previous_close] * 4
        assert bars.volume[row] == 0.0


def test_explicit_interval_finds_gaps_the_mode_would_not():
    bars = validate(tiny(3), interval_ms=30_000, fill_gaps=True)
    assert bars.timestamp.tolist() == [START + 30_000 * k for k in range(5)]
    assert bars.close.tolist() == [100.0, 100.0, 101.0, 101.0, 102.0]
    with pytest.raises(DataValidationError, match="fill_gaps=True"):
        validate(tiny(3), interval_ms=30_000)


def test_steps_off_the_bar_grid_are_an_error():
    df = set_value(tiny(6), 4, "timestamp", START + 3 * MINUTE + 90_000)
    with pytest.raises(DataValidationError, match=r"row 4.*90000 ms, not a whole number of bars of 60000 ms.*Resample"):
        validate(df)


def test_bad_interval_argument():
    with pytest.raises(ValueError, match="positive"):
        validate(tiny(), interval_ms=0)
    with pytest.raises(TypeError, match="interval_ms"):
        validate(tiny(), interval_ms=60.0)


def test_empty_frame_and_non_frame():
    with pytest.raises(DataValidationError, match="no candles"):
        validate(tiny().iloc[:0])
    with pytest.raises(TypeError, match="from_rows"):
        validate([[START, 1, 1, 1, 1, 1]])


def test_from_rows_list_and_array():
    rows = [[START + MINUTE * k, 10.0, 11.0, 9.0, 10.5, 3] for k in range(4)]
    from_list = OHLCV.from_rows(rows)
    from_array = OHLCV.from_rows(np.array(rows, dtype=float))
    assert from_list == from_array
    assert from_list.timestamp.tolist() == [START, START + MINUTE, START + 2 * MINUTE, START + 3 * MINUTE]
    assert from_list.volume.tolist() == [3.0] * 4


def test_from_rows_names_a_short_row():
    rows = [[START, 10.0, 11.0, 9.0, 10.5, 3], [START + MINUTE, 10.0, 11.0, 9.0, 10.5]]
    with pytest.raises(DataValidationError, match="row 1: row has 5 values, expected 6"):
        OHLCV.from_rows(rows)
    with pytest.raises(DataValidationError, match=r"shape \(T, 6\)"):
        OHLCV.from_rows(np.zeros((3, 5)))


def test_from_rows_none_value_names_the_row():
    rows = [[START + MINUTE * k, 10.0, 11.0, 9.0, 10.5, 3] for k in range(4)]
    rows[2][4] = None
    with pytest.raises(DataValidationError, match="row 2.*close is nan"):
        OHLCV.from_rows(rows)


def test_direct_construction_validates():
    df = tiny()
    arrays = {name: df[name].to_numpy() for name in COLUMNS}
    assert OHLCV(**arrays) == validate(df)
    with pytest.raises(DataValidationError, match="different lengths"):
        OHLCV(**{**arrays, "volume": arrays["volume"][:4]})
    with pytest.raises(DataValidationError, match="integer array"):
        OHLCV(**{**arrays, "timestamp": arrays["timestamp"].astype(float)})
    with pytest.raises(DataValidationError, match="row 1.*high"):
        OHLCV(**{**arrays, "high": np.array([100.5, 99.0, 102.5, 103.5, 104.5])})
    integer_prices = OHLCV(**{**arrays, "volume": np.arange(5)})
    assert integer_prices.volume.dtype == np.float64


def test_direct_construction_does_not_lock_the_callers_arrays():
    arrays = {name: tiny()[name].to_numpy().copy() for name in COLUMNS}
    bars = OHLCV(**arrays)
    arrays["close"][0] = 100.25  # still writable for the caller
    assert not bars.close.flags.writeable


def test_gaps_are_allowed_in_the_frame_and_reported():
    df = tiny(8).drop(index=[2, 5, 6]).reset_index(drop=True)
    bars = OHLCV(**{name: df[name].to_numpy() for name in COLUMNS})
    assert bars.interval_ms == MINUTE
    assert bars.gaps() == [
        Gap(start_ms=START + MINUTE, end_ms=START + 3 * MINUTE, missing_bars=1),
        Gap(start_ms=START + 4 * MINUTE, end_ms=START + 7 * MINUTE, missing_bars=2),
    ]


def test_indexing_takes_slices_only():
    bars = validate(tiny())
    with pytest.raises(TypeError, match="only slices"):
        bars[0]
    with pytest.raises(ValueError, match="positive step"):
        bars[::-1]
    part = bars[1:3]
    assert isinstance(part, OHLCV) and part.close.tolist() == [101.0, 102.0]


def test_to_frame_round_trip_and_fingerprint():
    bars = validate(tiny())
    frame = bars.to_frame()
    assert list(frame.columns) == list(COLUMNS)
    assert frame["timestamp"].dtype == np.int64
    assert validate(frame) == bars
    assert validate(tiny()).fingerprint() == bars.fingerprint()
    assert validate(set_value(tiny(), 0, "volume", 11.5)).fingerprint() != bars.fingerprint()
    assert bars.to_rows()[1].tolist() == [START + MINUTE, 100.0, 101.5, 99.5, 101.0, 11.0]


@st.composite
def valid_bars(draw):
    n = draw(st.integers(1, 30))
    finite = st.floats(-0.05, 0.05, allow_nan=False)
    returns = np.array(draw(st.lists(finite, min_size=n, max_size=n)))
    close = 50.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[50.0], close[:-1]])
    wick = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    interval = draw(st.sampled_from([1_000, 60_000, 3_600_000]))
    return OHLCV(
        timestamp=START + interval * np.arange(n, dtype=np.int64),
        open=open_,
        high=np.maximum(open_, close) + wick,
        low=np.minimum(open_, close) * (1 - wick / 2),
        close=close,
        volume=np.array(draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n))),
    )


@settings(max_examples=60, deadline=None)
@given(bars=valid_bars(), start=st.integers(-35, 35), stop=st.integers(-35, 35), step=st.integers(1, 4))
def test_any_slice_of_a_valid_ohlcv_is_valid(bars, start, stop, step):
    part = bars[start:stop:step]
    expected = {name: getattr(bars, name)[start:stop:step] for name in COLUMNS}
    rebuilt = OHLCV(**expected)  # every invariant re-checked from scratch
    assert rebuilt == part
    assert len(part) == len(range(*slice(start, stop, step).indices(len(bars))))
    assert part.gaps() == []
    if len(part):
        assert validate(part.to_frame()) == part


def test_numbers_stored_as_text_are_not_coerced():
    df = tiny().astype({"close": str})
    with pytest.raises(DataValidationError, match=r"row 0.*close is the text '100.0', not a number.*pd.to_numeric"):
        validate(df)


def test_pickle_round_trip_stays_read_only():
    import pickle

    bars = validate(tiny())
    assert bars.interval_ms == MINUTE  # cached before pickling
    copy = pickle.loads(pickle.dumps(bars))
    assert copy == bars and copy.interval_ms == MINUTE
    assert not copy.close.flags.writeable


def test_timestamp_in_the_index_gets_a_hint():
    df = tiny().set_index("timestamp")
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['timestamp'\].*reset_index"):
        validate(df)


def test_interval_of_a_single_bar_is_zero():
    bars = validate(tiny())[:1]
    assert bars.interval_ms == 0 and bars.gaps() == []

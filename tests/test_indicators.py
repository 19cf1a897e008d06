"""Indicators against independent pandas formulas, and causality."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.families.rules import INDICATORS
from backtest.indicators import compute_indicator, indicator_table, sma_nb
from evolution.families.rules import random_indicator


@pytest.fixture(scope="module")
def bars():
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 600)))
    spread = np.abs(rng.normal(0, 0.004, 600)) * close
    return close + spread, close - spread, close


def test_sma_is_bit_identical_to_vectorbt(bars):
    vbt = pytest.importorskip("vectorbt")
    _, _, close = bars
    for w in (2, 7, 50, 199):
        ours = sma_nb(close, w)
        theirs = vbt.MA.run(close, window=w).ma.values
        np.testing.assert_array_equal(ours, theirs)


def test_table_sma_matches_direct_sma(bars):
    high, low, close = bars
    table = indicator_table([{"name": "sma", "window": 20}, {"name": "sma", "window": 3}], high, low, close)
    np.testing.assert_array_equal(table[0], sma_nb(close, 20))
    np.testing.assert_array_equal(table[1], sma_nb(close, 3))


def test_ema_matches_pandas(bars):
    _, _, close = bars
    ours = compute_indicator({"name": "ema", "window": 12}, *bars)
    theirs = pd.Series(close).ewm(span=12, adjust=False).mean().to_numpy().copy()
    theirs[:11] = np.nan
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, equal_nan=True)


def test_rsi_matches_wilder_reference(bars):
    _, _, close = bars
    w = 14
    delta = np.diff(close)
    gain, loss = np.maximum(delta, 0), np.maximum(-delta, 0)
    ag, al = gain[:w].mean(), loss[:w].mean()
    expected = [100 - 100 / (1 + ag / al)]
    for g, lo in zip(gain[w:], loss[w:]):
        ag = ag + (g - ag) / w
        al = al + (lo - al) / w
        expected.append(100 - 100 / (1 + ag / al))
    ours = compute_indicator({"name": "rsi", "window": w}, *bars)
    assert np.isnan(ours[:w]).all()
    np.testing.assert_allclose(ours[w:], expected, rtol=1e-10)
    assert ((ours[w:] >= 0) & (ours[w:] <= 100)).all()


def test_bollinger_percent_b_matches_pandas(bars):
    _, _, close = bars
    s = pd.Series(close)
    mid = s.rolling(20).mean()
    std = s.rolling(20).std(ddof=0)
    expected = ((s - (mid - 2 * std)) / (4 * std)).to_numpy()
    ours = compute_indicator({"name": "bbands_percent_b", "window": 20, "k": 2.0}, *bars)
    np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-9, equal_nan=True)


def test_donchian_position_matches_pandas(bars):
    high, low, close = bars
    hh = pd.Series(high).rolling(30).max().to_numpy()
    ll = pd.Series(low).rolling(30).min().to_numpy()
    expected = (close - ll) / (hh - ll)
    ours = compute_indicator({"name": "donchian_position", "window": 30}, *bars)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, equal_nan=True)
    assert np.nanmin(ours) >= 0 and np.nanmax(ours) <= 1


def test_roc_macd_atr_range(bars):
    high, low, close = bars
    roc = compute_indicator({"name": "roc", "window": 5}, *bars)
    np.testing.assert_allclose(roc, pd.Series(close).pct_change(5).to_numpy(), rtol=1e-12, equal_nan=True)
    macd = compute_indicator({"name": "macd", "fast": 12, "slow": 26, "signal": 9}, *bars)
    s = pd.Series(close)
    line = s.ewm(span=12, adjust=False).mean() - s.ewm(span=26, adjust=False).mean()
    signal = line.iloc[25:].ewm(span=9, adjust=False).mean()
    expected = ((line.iloc[25:] - signal) / s.iloc[25:]).to_numpy()
    np.testing.assert_allclose(macd[25 + 8:], expected[8:], rtol=1e-9, atol=1e-15)
    assert np.isnan(macd[: 25 + 8]).all()
    atr_range = compute_indicator({"name": "atr_range", "window": 10}, *bars)
    prev = np.concatenate([[np.nan], close[:-1]])
    tr = np.nanmax(np.stack([high - low, np.abs(high - prev), np.abs(low - prev)]), axis=0)
    atr = tr[1:11].mean()
    for t in range(11, 40):
        atr = atr + (tr[t] - atr) / 10
    assert atr_range[39] == pytest.approx((high[39] - low[39]) / atr, rel=1e-10)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(1, 300))
def test_every_indicator_is_causal(seed, cut):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    spread = np.abs(rng.normal(0, 0.003, 300)) * close
    high, low = close + spread, close - spread
    timestamp = 1_577_836_800_000 + np.cumsum(rng.integers(1, 5, 300)) * 900_000  # irregular quarter hours
    name = list(INDICATORS)[seed % len(INDICATORS)]
    ind = random_indicator(rng, name=name)
    full = compute_indicator(ind, high, low, close, timestamp)
    part = compute_indicator(ind, high[:cut], low[:cut], close[:cut], timestamp[:cut])
    np.testing.assert_array_equal(part, full[:cut])


# (epoch ms, UTC hour, day of week 0 Monday): worked out by hand
CLOCK = [
    (1_577_836_800_000, 0, 2),  # 2020-01-01 00:00:00 UTC, a Wednesday
    (1_577_836_800_000 + 14 * 3_600_000 + 59 * 60_000, 14, 2),  # 14:59 the same day: still hour 14
    (1_577_836_800_000 + 15 * 3_600_000, 15, 2),  # 15:00
    (1_578_268_800_000 - 1, 23, 6),  # 2020-01-05 23:59:59.999, a Sunday
    (1_578_268_800_000, 0, 0),  # 2020-01-06 00:00, Monday
    (0, 0, 3),  # 1970-01-01 was a Thursday
    (-1, 23, 2),  # one millisecond before: Wednesday 23:59:59.999
]


def test_clock_indicators_read_the_utc_open_time():
    ts = np.array([t for t, _, _ in CLOCK], dtype=np.int64)
    dummy = np.ones(ts.shape[0])
    hour = compute_indicator({"name": "hour"}, dummy, dummy, dummy, ts)
    weekday = compute_indicator({"name": "day_of_week"}, dummy, dummy, dummy, ts)
    np.testing.assert_array_equal(hour, [h for _, h, _ in CLOCK])
    np.testing.assert_array_equal(weekday, [d for _, _, d in CLOCK])
    stamps = pd.to_datetime(ts, unit="ms", utc=True)  # and pandas agrees
    np.testing.assert_array_equal(hour, stamps.hour)
    np.testing.assert_array_equal(weekday, stamps.day_of_week)
    # datetime64 timestamps are read as the same instants
    np.testing.assert_array_equal(
        compute_indicator({"name": "hour"}, dummy, dummy, dummy, ts.astype("datetime64[ms]")), hour)


def test_clock_indicators_in_the_table_and_without_timestamps(bars):
    high, low, close = bars
    ts = 1_704_067_200_000 + 3_600_000 * np.arange(close.shape[0], dtype=np.int64)  # hourly from midnight
    table = indicator_table([{"name": "sma", "window": 3}, {"name": "hour"}, {"name": "day_of_week"}],
                            high, low, close, ts)
    np.testing.assert_array_equal(table[1], np.arange(close.shape[0]) % 24)
    np.testing.assert_array_equal(table[2], (np.arange(close.shape[0]) // 24) % 7)  # 2024-01-01 was a Monday
    with pytest.raises(ValueError, match="need the bars' timestamps"):
        indicator_table([{"name": "hour"}], high, low, close)

"""Indicator kernels (numba) over 1-D float64 arrays, and the shared indicator table.

Every indicator is causal: the value at bar t uses bars up to and including t only.
Values are NaN until the indicator is defined (warm-up), as in vectorbt.

Clock indicators (``hour``, ``day_of_week``) read bar t's open timestamp (int64 epoch
milliseconds, UTC), known before the bar closes; they have no warm-up.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def sma_nb(x, window):
    """Simple moving average with a running sum, bit-identical to vectorbt's rolling_mean_1d_nb."""
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    csum = np.empty(n, dtype=np.float64)
    running = 0.0
    for i in range(n):
        running = running + x[i]
        csum[i] = running
        if i < window - 1:
            out[i] = np.nan
        elif i < window:
            out[i] = running / window
        else:
            out[i] = (running - csum[i - window]) / window
    return out


@njit(cache=True, nogil=True)
def ema_nb(x, window):
    """Exponential moving average, span=window, adjust=False (pandas ewm), NaN before window-1."""
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    alpha = 2.0 / (window + 1.0)
    value = 0.0
    for i in range(n):
        if i == 0:
            value = x[0]
        else:
            value = alpha * x[i] + (1.0 - alpha) * value
        out[i] = value if i >= window - 1 else np.nan
    return out


@njit(cache=True, nogil=True)
def _wilder(x, window, start):
    """Wilder smoothing of x[start:], seeded with the mean of the first `window` values."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    if n - start < window:
        return out
    acc = 0.0
    for i in range(start, start + window):
        acc += x[i]
    value = acc / window
    out[start + window - 1] = value
    inv = 1.0 / window  # a multiply, not a divide, on the loop-carried chain
    for i in range(start + window, n):
        value = value + (x[i] - value) * inv
        out[i] = value
    return out


@njit(cache=True, nogil=True)
def rsi_nb(close, window):
    """Wilder's RSI in 0..100."""
    n = close.shape[0]
    gain = np.zeros(n)
    loss = np.zeros(n)
    for i in range(1, n):
        d = close[i] - close[i - 1]
        gain[i] = max(d, 0.0)  # branch-free: the sign of a move is a coin flip
        loss[i] = max(-d, 0.0)
    ag = _wilder(gain, window, 1)
    al = _wilder(loss, window, 1)
    out = np.full(n, np.nan)
    for i in range(n):
        if np.isnan(ag[i]):
            continue
        if al[i] == 0.0:
            out[i] = 100.0 if ag[i] > 0.0 else 50.0
        else:
            out[i] = 100.0 - 100.0 / (1.0 + ag[i] / al[i])
    return out


@njit(cache=True, nogil=True)
def bbands_percent_b_nb(close, window, k):
    """Bollinger %B with a population standard deviation over `window` closes."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    if n == 0:
        return out
    ref = close[0]
    s = 0.0
    ss = 0.0
    for i in range(n):
        d = close[i] - ref
        s += d
        ss += d * d
        if i >= window:
            d0 = close[i - window] - ref
            s -= d0
            ss -= d0 * d0
        if i >= window - 1:
            mean = s / window
            var = ss / window - mean * mean
            if var < 0.0:
                var = 0.0
            std = np.sqrt(var)
            if std <= 1e-12 * abs(ref + mean):
                out[i] = 0.5
            else:
                lower = ref + mean - k * std
                out[i] = (close[i] - lower) / (2.0 * k * std)
    return out


@njit(cache=True, nogil=True)
def _rolling_max(x, window):
    """Rolling max over `window` bars ending at each bar (NaN before): van Herk / Gil-Werman,
    prefix and suffix maxima within blocks of `window`, O(1) per bar."""
    n = x.shape[0]
    prefix = np.empty(n)
    suffix = np.empty(n)
    for block in range(0, n, window):
        end = min(block + window, n)
        acc = x[block]
        for i in range(block, end):
            v = x[i]
            if v > acc:
                acc = v
            prefix[i] = acc
        acc = x[end - 1]
        for i in range(end - 1, block - 1, -1):
            v = x[i]
            if v > acc:
                acc = v
            suffix[i] = acc
    out = np.full(n, np.nan)
    for i in range(window - 1, n):
        a = suffix[i - window + 1]
        b = prefix[i]
        out[i] = a if a > b else b
    return out


@njit(cache=True, nogil=True)
def donchian_position_nb(high, low, close, window):
    """(close - lowest low) / (highest high - lowest low) over the last `window` bars, 0..1."""
    n = close.shape[0]
    hi = _rolling_max(high.copy(), window)  # a writable copy, as -low is: one specialization of _rolling_max
    lo = -_rolling_max(-low, window)
    out = np.full(n, np.nan)
    for i in range(window - 1, n):
        if hi[i] > lo[i]:
            out[i] = (close[i] - lo[i]) / (hi[i] - lo[i])
        else:
            out[i] = 0.5
    return out


@njit(cache=True, nogil=True)
def macd_nb(close, fast, slow, signal):
    """MACD histogram (ema_fast - ema_slow - signal line) divided by close."""
    n = close.shape[0]
    ef = ema_nb(close, fast)
    es = ema_nb(close, slow)
    line = np.full(n, np.nan)
    for i in range(n):
        line[i] = ef[i] - es[i]
    out = np.full(n, np.nan)
    start = slow - 1
    if n <= start:
        return out
    alpha = 2.0 / (signal + 1.0)
    value = line[start]
    for i in range(start, n):
        if i > start:
            value = alpha * line[i] + (1.0 - alpha) * value
        if i >= start + signal - 1:
            out[i] = (line[i] - value) / close[i]
    return out


@njit(cache=True, nogil=True)
def roc_nb(close, window):
    n = close.shape[0]
    out = np.full(n, np.nan)
    for i in range(window, n):
        out[i] = close[i] / close[i - window] - 1.0
    return out


@njit(cache=True, nogil=True)
def atr_range_nb(high, low, close, window):
    """(high - low) / ATR(window), ATR with Wilder smoothing of the true range."""
    n = close.shape[0]
    tr = np.zeros(n)
    for i in range(1, n):
        a = high[i] - low[i]
        b = abs(high[i] - close[i - 1])
        c = abs(low[i] - close[i - 1])
        tr[i] = max(a, max(b, c))
    atr = _wilder(tr, window, 1)
    out = np.full(n, np.nan)
    for i in range(n):
        if not np.isnan(atr[i]):
            out[i] = (high[i] - low[i]) / atr[i] if atr[i] > 0.0 else 1.0
    return out


HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: indicators computed from the bars' timestamps, not their prices
CLOCK_INDICATORS = ("hour", "day_of_week")


@njit(cache=True, nogil=True)
def hour_of_day_nb(timestamp):
    """UTC hour of day (0..23) of each bar's open timestamp (int64 epoch milliseconds)."""
    n = timestamp.shape[0]
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = (timestamp[i] % 86_400_000) // 3_600_000  # floor modulo: also right before 1970
    return out


@njit(cache=True, nogil=True)
def day_of_week_nb(timestamp):
    """UTC day of the week (0 Monday .. 6 Sunday) of each bar's open timestamp (epoch ms)."""
    n = timestamp.shape[0]
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = (timestamp[i] // 86_400_000 + 3) % 7  # 1970-01-01 was a Thursday
    return out


def _epoch_ms(timestamp) -> np.ndarray:
    """Bar timestamps as int64 epoch milliseconds (datetime64 converted; None is an error)."""
    if timestamp is None:
        raise ValueError("clock indicators (hour, day_of_week) need the bars' timestamps; pass timestamp=")
    ts = np.asarray(timestamp)
    if ts.dtype.kind == "M":
        ts = ts.astype("datetime64[ms]").astype(np.int64)
    return np.ascontiguousarray(ts, dtype=np.int64)


def compute_indicator(indicator: Mapping, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                      timestamp: np.ndarray | None = None) -> np.ndarray:
    """Compute one indicator (a normalized genome indicator dict) over the bars
    (``timestamp``, epoch ms of each bar's open, for the clock indicators)."""
    name = indicator["name"]
    if name == "hour":
        return hour_of_day_nb(_epoch_ms(timestamp))
    if name == "day_of_week":
        return day_of_week_nb(_epoch_ms(timestamp))
    if name == "close":
        return np.ascontiguousarray(close, dtype=np.float64)
    if name == "sma":
        return sma_nb(close, int(indicator["window"]))
    if name == "ema":
        return ema_nb(close, int(indicator["window"]))
    if name == "rsi":
        return rsi_nb(close, int(indicator["window"]))
    if name == "bbands_percent_b":
        return bbands_percent_b_nb(close, int(indicator["window"]), float(indicator["k"]))
    if name == "donchian_position":
        return donchian_position_nb(high, low, close, int(indicator["window"]))
    if name == "macd":
        return macd_nb(close, int(indicator["fast"]), int(indicator["slow"]), int(indicator["signal"]))
    if name == "roc":
        return roc_nb(close, int(indicator["window"]))
    if name == "atr_range":
        return atr_range_nb(high, low, close, int(indicator["window"]))
    raise ValueError(f"unknown indicator {name!r}")


def indicator_table(indicators, high, low, close, timestamp=None) -> np.ndarray:
    """(U, T) float64 matrix: one row per distinct indicator, computed once."""
    out = np.empty((len(indicators), close.shape[0]), dtype=np.float64)
    fill_indicator_table(indicators, high, low, close, out, timestamp)
    return out


def fill_indicator_table(indicators, high, low, close, out: np.ndarray, timestamp=None) -> None:
    """Fill out (U, T) with one row per indicator; every SMA comes from one shared
    running sum (bit-identical to sma_nb). ``timestamp``: the bars' open times (epoch ms),
    needed by the clock indicators only."""
    from backtest.fused import running_sum_nb, sma_from_running_sum_nb

    csum = None
    for u, ind in enumerate(indicators):
        if ind["name"] == "sma":
            if csum is None:
                csum = running_sum_nb(close)
            sma_from_running_sum_nb(csum, int(ind["window"]), out[u])
        else:
            out[u] = compute_indicator(ind, high, low, close, timestamp)

"""Performance metrics: shared names, and a plain-numpy reference computation.

The fused kernel (kernels.population_nb) computes the same metrics in one pass; the
numpy functions here are the readable definitions and the cross-check in tests.

Definitions (per-bar simple returns r_t = V_t / V_{t-1} - 1, V_{-1} = init_cash):
- total_return: V_T / init_cash - 1
- cagr: (V_T / init_cash) ** (1 / years) - 1, years = n_bars / periods_per_year
- sharpe: mean(r) / std(r, ddof=1) * sqrt(periods_per_year)
- sortino: mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year)
- max_drawdown: max_t (1 - V_t / max_{s<=t} V_s), a positive fraction
- calmar: cagr / max_drawdown
- win_rate: winning closed trades / closed trades
- profit_factor: gross profit / gross loss of closed trades
- n_trades: trades opened (as vectorbt counts its exit trades, the open one included)
- exposure: share of bars ending with an open position
- turnover: traded notional / average portfolio value
- skew, kurtosis: of r (raw kurtosis, normal = 3), for the deflated Sharpe ratio
"""
from __future__ import annotations

import numpy as np

from backtest import kernels

TOTAL_RETURN = "total_return"
CAGR = "cagr"
SHARPE = "sharpe"
SORTINO = "sortino"
MAX_DRAWDOWN = "max_drawdown"
CALMAR = "calmar"
WIN_RATE = "win_rate"
PROFIT_FACTOR = "profit_factor"
N_TRADES = "n_trades"
EXPOSURE = "exposure"
TURNOVER = "turnover"
FINAL_VALUE = "final_value"
N_BARS = "n_bars"
SKEW = "skew"
KURTOSIS = "kurtosis"

#: metric names in the column order of the fused kernel's output
METRIC_NAMES: tuple[str, ...] = (
    TOTAL_RETURN,
    CAGR,
    SHARPE,
    SORTINO,
    MAX_DRAWDOWN,
    CALMAR,
    WIN_RATE,
    PROFIT_FACTOR,
    N_TRADES,
    EXPOSURE,
    TURNOVER,
    FINAL_VALUE,
    N_BARS,
    SKEW,
    KURTOSIS,
)
METRIC_INDEX = {name: i for i, name in enumerate(METRIC_NAMES)}
assert len(METRIC_NAMES) == kernels.N_METRICS

MS_PER_YEAR = 365.25 * 24 * 3600 * 1000  # crypto markets trade around the clock


def periods_per_year(interval_ms: int) -> float:
    """Bars per year for a bar interval in milliseconds."""
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be positive, got {interval_ms}")
    return MS_PER_YEAR / float(interval_ms)


def returns_from_equity(equity: np.ndarray, init_cash: float) -> np.ndarray:
    """Per-bar simple returns of an equity curve (T,) or (T, N)."""
    equity = np.asarray(equity, dtype=np.float64)
    prev = np.concatenate([np.full((1,) + equity.shape[1:], float(init_cash)), equity[:-1]], axis=0)
    return equity / prev - 1.0


def sharpe_ratio(returns: np.ndarray, periods: float) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    std = r.std(axis=0, ddof=1)
    mean = r.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / std * np.sqrt(periods), 0.0)


def sortino_ratio(returns: np.ndarray, periods: float) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    down = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2, axis=0))
    mean = r.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(down > 0, mean / down * np.sqrt(periods), np.where(mean > 0, np.inf, 0.0))


def max_drawdown(equity: np.ndarray, init_cash: float) -> np.ndarray:
    eq = np.asarray(equity, dtype=np.float64)
    start = np.full((1,) + eq.shape[1:], float(init_cash))
    full = np.concatenate([start, eq], axis=0)
    peak = np.maximum.accumulate(full, axis=0)
    return np.max(1.0 - full / peak, axis=0)


def equity_metrics(equity: np.ndarray, init_cash: float, periods: float) -> dict[str, np.ndarray]:
    """Metrics that depend only on the equity curve (T,) or (T, N)."""
    eq = np.asarray(equity, dtype=np.float64)
    r = returns_from_equity(eq, init_cash)
    n = eq.shape[0]
    final = eq[-1]
    years = n / periods
    with np.errstate(divide="ignore", invalid="ignore"):
        cagr = np.where(final > 0, (final / init_cash) ** (1.0 / years) - 1.0, -1.0)
        mdd = max_drawdown(eq, init_cash)
        calmar = np.where(mdd > 0, cagr / mdd, np.where(cagr > 0, np.inf, 0.0))
    return {
        TOTAL_RETURN: final / init_cash - 1.0,
        CAGR: cagr,
        SHARPE: sharpe_ratio(r, periods),
        SORTINO: sortino_ratio(r, periods),
        MAX_DRAWDOWN: mdd,
        CALMAR: calmar,
        FINAL_VALUE: final,
        N_BARS: np.full(final.shape, n),
    }

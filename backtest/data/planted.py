"""Markets with a known edge (or none), for measuring what a search can find.

Not the demo's market (``backtest/data/synthetic.py``): other rules, another noise, any
bar interval, so search quality is checked on a generator the search was not tuned on.

The log return of bar t+1 is ``drift + sigma_{t+1} * e_{t+1}`` with ``drift =
strength * sigma_{t+1} * s_t``: ``s_t`` in {-1, 0, 1} is the planted rule's position,
decided at the close of bar t from closes up to t. ``strength`` is set so that the rule
earns an annualized Sharpe ratio of about ``sharpe`` (``sharpe / sqrt(bars per year *
exposure)`` per bar, exposure the share of bars the rule holds a position). Rule kinds
(:data:`RULES`, one entry each; a kind whose positions a genome of ``backtest/strategy.py``
reproduces gives that genome, others ``None``):

* ``trend``: ``sign(EMA_fast - EMA_slow)`` of the close (genome: EMA cross, direction both).
* ``mean_reversion``: ``-sign(close - SMA_window)`` (genome: close crossing its SMA).
* ``time_of_day``: long from ``start_hour`` for ``hours`` hours of each UTC day, else flat
  (no rule genome reads the clock: a search over rules cannot express it).

Noise (:data:`NOISES`): ``gbm`` (Gaussian, constant sigma) or ``garch_t`` (GARCH(1,1)
variance, alpha 0.08, beta 0.9, with Student-t innovations of 4 degrees of freedom scaled
to unit variance: fat tails and volatility clustering around the same mean sigma).
``stop_fraction`` ends the edge after that share of the bars (an edge that stops before
the holdout). ``sharpe=0`` is a market without an edge.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from backtest.data.frame import OHLCV
from backtest.metrics import periods_per_year

__all__ = ["NOISES", "RULES", "PlantedMarket", "PlantedSpec", "planted_market", "rule_sharpe"]

NOISES = ("gbm", "garch_t")
GARCH_ALPHA, GARCH_BETA, STUDENT_DF = 0.08, 0.9, 4.0
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class PlantedSpec:
    """What to plant: rule kind and its parameters, target Sharpe, noise, bars."""

    rule: str = "trend"
    sharpe: float = 3.0
    n_bars: int = 20_000
    interval_ms: int = HOUR_MS
    sigma: float = 0.004  # mean per-bar volatility of log returns
    noise: str = "gbm"
    stop_fraction: float | None = None
    params: tuple[tuple[str, Any], ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {sorted(RULES)}, got {self.rule!r}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {list(NOISES)}, got {self.noise!r}")
        if not (self.sharpe >= 0 and self.sigma > 0 and self.n_bars >= 100 and self.interval_ms > 0):
            raise ValueError("sharpe must be >= 0, sigma > 0, n_bars >= 100 and interval_ms > 0")
        if self.stop_fraction is not None and not 0 < self.stop_fraction < 1:
            raise ValueError(f"stop_fraction must lie in (0, 1) or be None, got {self.stop_fraction}")

    @property
    def settings(self) -> dict[str, Any]:
        return {**RULES[self.rule].defaults, **dict(self.params)}


@dataclass(frozen=True)
class PlantedMarket:
    market: OHLCV
    signal: np.ndarray  # (T,) int8: the rule's position decided at each bar's close
    genome: dict | None  # a rules genome with the same positions (after its first signal), if any
    spec: PlantedSpec


class _Trend:
    def __init__(self, fast: int, slow: int):
        self.a_fast, self.a_slow = 2.0 / (fast + 1), 2.0 / (slow + 1)
        self.fast = self.slow = None
        self.warm, self.count = slow, 0

    def update(self, close: float) -> int:
        self.count += 1
        if self.fast is None:
            self.fast = self.slow = close
        else:
            self.fast += self.a_fast * (close - self.fast)
            self.slow += self.a_slow * (close - self.slow)
        if self.count < self.warm:
            return 0
        return 1 if self.fast > self.slow else (-1 if self.fast < self.slow else 0)


class _MeanReversion:
    def __init__(self, window: int):
        self.window, self.buffer, self.total = window, [], 0.0

    def update(self, close: float) -> int:
        self.buffer.append(close)
        self.total += close
        if len(self.buffer) > self.window:
            self.total -= self.buffer.pop(0)
        if len(self.buffer) < self.window:
            return 0
        mean = self.total / self.window
        return -1 if close > mean else (1 if close < mean else 0)


def _ema_genome(fast: int, slow: int) -> dict:
    def cross(op: str) -> dict:
        return {"lhs": {"name": "ema", "window": fast}, "op": op, "rhs": {"name": "ema", "window": slow}}

    return {"entry": {"logic": "and", "conditions": [cross("crosses_above")]},
            "exit": {"logic": "and", "conditions": [cross("crosses_below")]},
            "direction": "both", "stop_loss": None, "take_profit": None}


def _reversion_genome(window: int) -> dict:
    def cross(op: str) -> dict:
        return {"lhs": {"name": "close"}, "op": op, "rhs": {"name": "sma", "window": window}}

    return {"entry": {"logic": "and", "conditions": [cross("crosses_below")]},
            "exit": {"logic": "and", "conditions": [cross("crosses_above")]},
            "direction": "both", "stop_loss": None, "take_profit": None}


@dataclass(frozen=True)
class RuleKind:
    """One planted rule: defaults, a stateful signal (None: clock-driven), its genome, its exposure."""

    defaults: dict[str, Any]
    tracker: Callable[..., Any] | None
    genome: Callable[..., dict | None]
    exposure: Callable[..., float]


RULES: dict[str, RuleKind] = {
    "trend": RuleKind({"fast": 24, "slow": 96}, _Trend, _ema_genome, lambda **_: 1.0),
    "mean_reversion": RuleKind({"window": 12}, _MeanReversion, _reversion_genome, lambda **_: 1.0),
    "time_of_day": RuleKind({"start_hour": 14, "hours": 4}, None, lambda **_: None,
                            lambda hours, **_: hours / 24.0),
}


def _clock_signal(timestamp: np.ndarray, interval_ms: int, start_hour: int, hours: int) -> np.ndarray:
    """1 at the close of bar t when bar t+1 opens inside the daily window, else 0."""
    next_open = timestamp + interval_ms
    hour = (next_open % DAY_MS) // HOUR_MS
    return (((hour - start_hour) % 24) < hours).astype(np.int8)


def planted_market(spec: PlantedSpec) -> PlantedMarket:
    """A reproducible market (same spec, same bytes) with the edge of ``spec`` planted."""
    settings = spec.settings
    kind = RULES[spec.rule]
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed))
    n = spec.n_bars
    ppy = periods_per_year(spec.interval_ms)
    strength = spec.sharpe / math.sqrt(ppy * kind.exposure(**settings))
    if spec.noise == "gbm":
        shocks = rng.standard_normal(n)
        sigma = np.full(n, spec.sigma)
    else:
        shocks = rng.standard_t(STUDENT_DF, n) / math.sqrt(STUDENT_DF / (STUDENT_DF - 2.0))
        variance = np.empty(n)
        omega = (1.0 - GARCH_ALPHA - GARCH_BETA)
        variance[0] = 1.0
        for t in range(1, n):
            variance[t] = omega + GARCH_ALPHA * variance[t - 1] * shocks[t - 1] ** 2 + GARCH_BETA * variance[t - 1]
        sigma = spec.sigma * np.sqrt(variance) / np.sqrt(variance).mean()
    strength *= math.sqrt(np.mean(sigma**2)) / sigma.mean()  # the rule's Sharpe is E[sigma] / sqrt(E[sigma^2]) of it
    active = np.ones(n, dtype=bool)
    if spec.stop_fraction is not None:
        active[int(n * spec.stop_fraction):] = False
    timestamp = 1_577_836_800_000 + np.arange(n, dtype=np.int64) * spec.interval_ms  # 2020-01-01 UTC
    close = np.empty(n)
    signal = np.zeros(n, dtype=np.int8)
    log_price = math.log(100.0)
    if kind.tracker is None:
        signal[:] = _clock_signal(timestamp, spec.interval_ms, **settings)
        drift = np.zeros(n)
        drift[1:] = strength * sigma[1:] * signal[:-1] * active[1:]
        close[:] = np.exp(log_price + np.cumsum(drift + sigma * shocks))
    else:
        tracker = kind.tracker(**settings)
        s = 0
        for t in range(n):
            log_price += (strength * sigma[t] * s if active[t] else 0.0) + sigma[t] * shocks[t]
            close[t] = math.exp(log_price)
            s = tracker.update(close[t])
            signal[t] = s
    wicks = np.abs(rng.standard_normal((2, n))) * 0.5 * sigma
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * np.exp(wicks[0])
    low = np.minimum(open_, close) * np.exp(-wicks[1])
    volume = 1000.0 * np.exp(0.5 * rng.standard_normal(n))
    market = OHLCV(timestamp=timestamp, open=open_, high=high, low=low, close=close, volume=volume)
    return PlantedMarket(market, signal, kind.genome(**settings), spec)


def rule_sharpe(planted: PlantedMarket, start: int, end: int) -> float:
    """Annualized Sharpe ratio of the planted rule over bars ``[start, end)``: each bar earns
    the simple return of the bar times the position decided at the previous close."""
    close = planted.market.close
    lo = max(start, 1)
    returns = planted.signal[lo - 1:end - 1] * (close[lo:end] / close[lo - 1:end - 1] - 1.0)
    sd = returns.std(ddof=1)
    return float(returns.mean() / sd * math.sqrt(periods_per_year(planted.spec.interval_ms))) if sd > 0 else 0.0

"""Markets with a known edge (or none), for measuring what a search can find.

Not the demo's market (``backtest/data/synthetic.py``): other rules, another noise, any
bar interval, so search quality is checked on a generator the search was not tuned on.

The log return of bar t+1 is ``drift + sigma_{t+1} * e_{t+1}`` with ``drift =
strength * sigma_{t+1} * s_t``: ``s_t`` in {-1, 0, 1} is the planted rule's position,
decided at the close of bar t from closes up to t. ``strength`` is set so that the rule
earns an annualized Sharpe ratio of about ``sharpe`` (``sharpe / sqrt(bars per year *
exposure)`` per bar, exposure the share of bars the rule holds a position). Rule kinds
(:data:`RULES`, one entry each, each with a genome of ``backtest/strategy.py`` that trades
it, or ``None`` where no genome can):

* ``trend``: ``sign(EMA_fast - EMA_slow)`` of the close (genome: EMA cross, direction both;
  the same positions from its first crossing on).
* ``mean_reversion``: ``-sign(close - SMA_window)`` (genome: close crossing its SMA; the same
  positions from its first crossing on).
* ``time_of_day``: long over the bars that open from ``start_hour`` for ``hours`` hours of each
  UTC day (1 <= hours <= 23), else flat. The position held over bar t+1 is decided at the
  close of bar t, so the genome reads the ``hour`` indicator of bar t (its open): with hourly
  bars, ``start_hour`` 14 and ``hours`` 4, long at the closes of the bars opening 13:00..16:00
  (entry ``hour > 12.5 AND hour < 16.5``, exit ``hour < 12.5 OR hour > 16.5``, direction
  long), exactly the rule's positions from the first bar. Bars of a whole number of hours
  shift the window by that many hours; shorter bars: ``None`` (the hour alone cannot say
  whether the next bar opens in the window).
* ``asmbtr``: a state edge (``backtest/data/synthetic_state.py``): the sign of ``pattern``
  (default parity) in the state of the last ``depth`` bar directions (up: the close rose),
  +1 after an even number of up bars among the last three, -1 after an odd number; an
  unchanged close keeps the position. Only a model that remembers all ``depth`` bars sees
  it, no indicator of the rules family does. Genome: an ``asmbtr`` genome
  (``backtest/families/asmbtr.py``) of that depth which learns the state table online (slow
  decay, threshold 0.5): it trades the rule once its counts have settled, not from the
  first bar, so it earns less than the rule itself.

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
    genome: dict | None  # a genome that trades the rule (see the module docstring), if any
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


class _StateParity:
    def __init__(self, depth: int, pattern: tuple[int, ...] | None = None):
        from backtest.data.synthetic_state import StateEdge

        self.signs = StateEdge(depth=depth, pattern=pattern).signs()  # validates depth and pattern
        self.depth, self.mask = depth, (1 << depth) - 1
        self.prev = None
        self.state = self.seen = self.position = 0

    def update(self, close: float) -> int:
        if self.prev is not None and close != self.prev:
            self.state = ((self.state << 1) | int(close > self.prev)) & self.mask
            self.seen += 1
            self.position = self.signs[self.state] if self.seen >= self.depth else 0
        self.prev = close
        return self.position


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


def _hour_genome(interval_ms: int, start_hour: int, hours: int) -> dict | None:
    """Long at the close of bar t when bar t+1 opens inside the window, from bar t's hour."""
    if interval_ms % HOUR_MS or not 1 <= hours <= 23:
        return None
    lo = (start_hour - interval_ms // HOUR_MS) % 24  # first hour of the bars whose close goes long
    a, b = lo - 0.5, lo + hours - 0.5

    def cond(op: str, value: float) -> dict:
        return {"lhs": {"name": "hour"}, "op": op, "rhs": value}

    if lo + hours <= 24:  # held over [lo, lo + hours)
        entry = ("and", [c for c, keep in ((cond(">", a), lo > 0), (cond("<", b), lo + hours < 24)) if keep])
        exit_ = ("or", [c for c, keep in ((cond("<", a), lo > 0), (cond(">", b), lo + hours < 24)) if keep])
    else:  # across midnight: [lo, 24) and [0, lo + hours - 24)
        entry = ("or", [cond(">", a), cond("<", b - 24)])
        exit_ = ("and", [cond("<", a), cond(">", b - 24)])
    return {"entry": {"logic": entry[0], "conditions": entry[1]},
            "exit": {"logic": exit_[0], "conditions": exit_[1]},
            "direction": "long", "stop_loss": None, "take_profit": None}


def _state_genome(depth: int, pattern: tuple[int, ...] | None = None) -> dict:
    return {"family": "asmbtr", "depth": depth, "decay": 0.999, "threshold": 0.5, "min_move": 0.0,
            "direction": "both", "neutral": "flat", "stop_loss": None, "take_profit": None}


@dataclass(frozen=True)
class RuleKind:
    """One planted rule: defaults, a stateful signal (None: clock-driven), its genome (from
    the bar interval in ms and the settings), its exposure."""

    defaults: dict[str, Any]
    tracker: Callable[..., Any] | None
    genome: Callable[..., dict | None]
    exposure: Callable[..., float]


RULES: dict[str, RuleKind] = {
    "trend": RuleKind({"fast": 24, "slow": 96}, _Trend, lambda _interval, **p: _ema_genome(**p), lambda **_: 1.0),
    "mean_reversion": RuleKind({"window": 12}, _MeanReversion, lambda _interval, **p: _reversion_genome(**p),
                               lambda **_: 1.0),
    "time_of_day": RuleKind({"start_hour": 14, "hours": 4}, None, _hour_genome, lambda hours, **_: hours / 24.0),
    "asmbtr": RuleKind({"depth": 3}, _StateParity, lambda _interval, **p: _state_genome(**p), lambda **_: 1.0),
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
    return PlantedMarket(market, signal, kind.genome(spec.interval_ms, **settings), spec)


def rule_sharpe(planted: PlantedMarket, start: int, end: int) -> float:
    """Annualized Sharpe ratio of the planted rule over bars ``[start, end)``: each bar earns
    the simple return of the bar times the position decided at the previous close."""
    close = planted.market.close
    lo = max(start, 1)
    returns = planted.signal[lo - 1:end - 1] * (close[lo:end] / close[lo - 1:end - 1] - 1.0)
    sd = returns.std(ddof=1)
    return float(returns.mean() / sd * math.sqrt(periods_per_year(planted.spec.interval_ms))) if sd > 0 else 0.0

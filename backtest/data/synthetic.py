"""Synthetic markets: regime-switching price paths, optionally with a planted edge.

:func:`synthetic_market` draws every random number up front from one
``numpy.random.Generator`` seeded by ``SeedSequence(seed)`` and runs the sequential
part (Markov regimes, mean reversion, running moving averages for the planted edge)
in one numba loop, so a million bars take a fraction of a second and the same seed
always gives the same bytes.

Regimes (codes in :data:`REGIME_NAMES`):

* ``random_walk`` (0): only with ``regimes=False``: constant sigma, zero drift, the
  "no edge" market.
* ``range`` (1): Ornstein-Uhlenbeck on the log price around the level at which the
  regime began.
* ``trend_up`` (2) / ``trend_down`` (3): a constant drift of ``TREND_DRIFT`` sigmas
  per bar, up or down.
* ``volatile`` (4): sigma times ``VOLATILE_SIGMA_MULTIPLIER``, no drift, more volume.

A :class:`PlantedEdge` adds a known, findable momentum rule on top: the log return
of bar t+1 gets an extra drift ``strength * sigma * s_t``, where ``s_t`` is the sign
of ``SMA_fast(close)[t] - SMA_slow(close)[t]`` over the closes generated so far and
``sigma`` is the per-bar volatility of the regime bar t+1 is drawn in. The genome
that trades this rule is :func:`planted_edge_genome`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from backtest.data.frame import OHLCV

__all__ = [
    "PlantedEdge",
    "REGIME_NAMES",
    "planted_edge_genome",
    "synthetic_market",
]

REGIME_NAMES = ("random_walk", "range", "trend_up", "trend_down", "volatile")
RANDOM_WALK, RANGE, TREND_UP, TREND_DOWN, VOLATILE = range(5)

BASE_SIGMA = 0.0015  # per-bar log-return volatility outside volatility bursts
VOLATILE_SIGMA_MULTIPLIER = 4.0
TREND_DRIFT = 0.02  # drift of a trend, in base sigmas per bar
RANGE_REVERSION = 0.0005  # OU pull per bar toward the range's level
MEAN_DURATION = (math.inf, 3000.0, 1500.0, 1500.0, 400.0)  # bars, per regime
VOLUME_MULTIPLIER = (1.0, 1.0, 1.3, 1.3, 3.0)
BASE_VOLUME = 1000.0
WICK_SCALE = 0.5  # high/low extend beyond the body by |N(0,1)| * WICK_SCALE * sigma

# Where a regime goes when it ends (rows: from, columns: to); the first row is the
# distribution of the first regime.
_TRANSITIONS = (
    (0.0, 0.4, 0.2, 0.2, 0.2),  # start
    (0.0, 0.0, 0.35, 0.35, 0.3),  # from range
    (0.0, 0.6, 0.0, 0.1, 0.3),  # from trend_up
    (0.0, 0.6, 0.1, 0.0, 0.3),  # from trend_down
    (0.0, 0.5, 0.25, 0.25, 0.0),  # from volatile
)
_EXACT_SUM_EVERY = 4096  # recompute running sums exactly this often (no float drift)


@dataclass(frozen=True)
class PlantedEdge:
    """A momentum edge planted into a synthetic market.

    The log return of bar t+1 gets the extra drift ``strength * sigma * s_t`` with
    ``s_t = sign(SMA_fast(close)[t] - SMA_slow(close)[t])`` (0 until both averages
    exist, i.e. for t < slow - 1). ``strength`` is the edge per bar in units of that
    bar's sigma, so the rule ``s_t * r_{t+1}`` has a per-bar Sharpe of about
    ``strength``, annualized ``strength * sqrt(bars per year)``: the default gives
    roughly 5.8 on one-minute bars (sqrt(525600) * 0.008, before the regimes' own
    effects); the demo (configs/demo.yaml) plants 0.05 on hourly bars, about 4.7, with
    ``BASE_SIGMA`` a 14% volatility a year.
    """

    fast: int = 10
    slow: int = 40
    strength: float = 0.008

    def __post_init__(self) -> None:
        for name in ("fast", "slow"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"PlantedEdge.{name} must be a positive int window, got {value!r}")
        if self.fast >= self.slow:
            raise ValueError(
                f"PlantedEdge needs fast < slow, got fast={self.fast}, slow={self.slow}"
            )
        if not (isinstance(self.strength, (int, float)) and math.isfinite(self.strength)):
            raise ValueError(f"PlantedEdge.strength must be a finite number, got {self.strength!r}")
        if self.strength < 0:
            raise ValueError(
                f"PlantedEdge.strength must be >= 0 (the rule's direction is fixed), got {self.strength}"
            )


def planted_edge_genome(edge: PlantedEdge) -> dict[str, Any]:
    """The plain-data rules genome (schema of ``backtest/families/rules.py``) that trades ``edge``.

    Fast SMA crossing above slow SMA enters long, crossing below goes short
    (direction ``both``), so after the first cross the position equals ``s_t``.
    """
    def cross(op: str) -> dict[str, Any]:
        return {
            "lhs": {"name": "sma", "window": int(edge.fast)},
            "op": op,
            "rhs": {"name": "sma", "window": int(edge.slow)},
        }

    return {
        "entry": {"logic": "and", "conditions": [cross("crosses_above")]},
        "exit": {"logic": "and", "conditions": [cross("crosses_below")]},
        "direction": "both",
        "stop_loss": None,
        "take_profit": None,
    }


@numba.njit(cache=True)
def _simulate(
    shocks: np.ndarray,
    switch_draws: np.ndarray,
    choice_draws: np.ndarray,
    use_regimes: bool,
    start_price: float,
    base_sigma: float,
    sigma_multiplier: np.ndarray,
    switch_probability: np.ndarray,
    transition_cdf: np.ndarray,
    trend_drift: float,
    range_reversion: float,
    fast: int,
    slow: int,
    strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Closes and regime codes, bar by bar (the only sequential part)."""
    n = shocks.shape[0]
    close = np.empty(n)
    regime = np.empty(n, dtype=np.int8)
    log_price = math.log(start_price)
    level = log_price
    current = 0
    if use_regimes:
        current = int(np.searchsorted(transition_cdf[0], choice_draws[0], side="right"))
    sum_fast = 0.0
    sum_slow = 0.0
    signal = 0.0  # s_t of the previous bar
    longest = max(fast, slow)
    for t in range(n):
        if use_regimes and t > 0 and switch_draws[t] < switch_probability[current]:
            current = int(np.searchsorted(transition_cdf[current], choice_draws[t], side="right"))
            level = log_price
        sigma = base_sigma * sigma_multiplier[current]
        drift = strength * sigma * signal
        if current == 1:
            drift -= range_reversion * (log_price - level)
        elif current == 2:
            drift += trend_drift * base_sigma
        elif current == 3:
            drift -= trend_drift * base_sigma
        log_price += drift + sigma * shocks[t]
        price = math.exp(log_price)
        close[t] = price
        regime[t] = current

        if strength != 0.0:
            if t % _EXACT_SUM_EVERY == 0:
                sum_fast = 0.0
                for k in range(max(0, t - fast + 1), t + 1):
                    sum_fast += close[k]
                sum_slow = 0.0
                for k in range(max(0, t - slow + 1), t + 1):
                    sum_slow += close[k]
            else:
                sum_fast += price
                if t >= fast:
                    sum_fast -= close[t - fast]
                sum_slow += price
                if t >= slow:
                    sum_slow -= close[t - slow]
            if t >= longest - 1:
                difference = sum_fast / fast - sum_slow / slow
                signal = 1.0 if difference > 0.0 else (-1.0 if difference < 0.0 else 0.0)
    return close, regime


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def synthetic_market(
    n_bars: int,
    *,
    seed: int,
    interval_ms: int = 60_000,
    start_ms: int = 1_704_067_200_000,
    start_price: float = 100.0,
    regimes: bool = True,
    planted_edge: PlantedEdge | None = None,
    return_regimes: bool = False,
) -> OHLCV | tuple[OHLCV, np.ndarray]:
    """A reproducible synthetic market of ``n_bars`` candles.

    ``regimes=True`` switches between range, trend up/down and volatility bursts by a
    Markov chain (mean durations of hundreds to thousands of bars); ``regimes=False``
    is a driftless random walk with constant sigma. ``planted_edge`` adds a known
    momentum edge (see :class:`PlantedEdge`). Open is the previous close (the first
    open is ``start_price``), high/low extend beyond the body by a random wick, volume
    is lognormal and larger in trends and bursts. With ``return_regimes=True`` the
    result is ``(ohlcv, regime_codes)``, an int8 array indexing :data:`REGIME_NAMES`.
    The same ``seed`` gives the same bytes.
    """
    n_bars = _check_positive_int("n_bars", n_bars)
    seed = _check_positive_int("seed", seed, minimum=0)
    interval_ms = _check_positive_int("interval_ms", interval_ms)
    start_ms = _check_positive_int("start_ms", start_ms, minimum=0)
    if not (isinstance(start_price, (int, float)) and math.isfinite(start_price) and start_price > 0):
        raise ValueError(f"start_price must be a positive finite number, got {start_price!r}")
    if planted_edge is not None and not isinstance(planted_edge, PlantedEdge):
        raise TypeError(f"planted_edge must be a PlantedEdge or None, got {type(planted_edge).__name__}")

    generator = np.random.default_rng(np.random.SeedSequence(seed))
    shocks = generator.standard_normal(n_bars)
    switch_draws = generator.random(n_bars)
    choice_draws = generator.random(n_bars)
    wick_draws = np.abs(generator.standard_normal((2, n_bars)))
    volume_draws = generator.standard_normal(n_bars)

    sigma_multiplier = np.array([1.0, 1.0, 1.0, 1.0, VOLATILE_SIGMA_MULTIPLIER])
    switch_probability = 1.0 / np.array(MEAN_DURATION)
    transition_cdf = np.cumsum(np.array(_TRANSITIONS), axis=1)
    transition_cdf /= transition_cdf[:, -1:]
    transition_cdf[:, -1] = 2.0  # a draw in [0, 1) never falls past the last regime
    edge = planted_edge if planted_edge is not None else PlantedEdge(strength=0.0)
    close, regime = _simulate(
        shocks, switch_draws, choice_draws, bool(regimes), float(start_price), BASE_SIGMA,
        sigma_multiplier, switch_probability, transition_cdf, TREND_DRIFT, RANGE_REVERSION,
        int(edge.fast), int(edge.slow), float(edge.strength),
    )

    open_ = np.empty(n_bars)
    open_[0] = start_price
    open_[1:] = close[:-1]
    sigma = BASE_SIGMA * sigma_multiplier[regime]
    high = np.maximum(open_, close) * np.exp(WICK_SCALE * sigma * wick_draws[0])
    low = np.minimum(open_, close) * np.exp(-WICK_SCALE * sigma * wick_draws[1])
    volume = BASE_VOLUME * np.array(VOLUME_MULTIPLIER)[regime] * np.exp(0.5 * volume_draws)
    timestamp = start_ms + np.arange(n_bars, dtype=np.int64) * interval_ms
    market = OHLCV(timestamp=timestamp, open=open_, high=high, low=low, close=close, volume=volume)
    if return_regimes:
        regime.flags.writeable = False
        return market, regime
    return market

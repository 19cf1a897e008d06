"""A second synthetic market: the next bar's direction depends on the last few directions.

Not the demo's generator (``synthetic.py``: regimes and a moving-average edge on
one-minute bars): hourly bars by default, no regimes, and an edge that no indicator of
the ``rules`` family sees. Bar t's direction (up or down) is drawn with

    P(up) = 0.5 + strength / 2 * pattern[state]

where ``state`` is the last ``depth`` directions as a binary number (oldest first, up = 1,
the most recent direction the lowest bit: the encoding of ``backtest/families/asmbtr.py``)
and ``pattern`` holds +1, -1 or 0 per state. The default pattern is parity: after an even
number of up bars among the last three the next bar tends up, after an odd number down.
Every single direction and every pair of directions is then a coin flip, so only a model
that remembers all three bars finds the edge. The size of a move is independent of its
direction: ``sigma * |N(0, 1)|`` (at least ``MIN_MOVE_SIGMAS * sigma``, so every bar has
a direction). ``edge_bars`` ends the edge early (a random walk after it), e.g. before a
holdout. The same seed always gives the same bytes.

``planted_state_positions(market, edge)`` gives the oracle's positions (the sign of the
pattern in each bar's state); ``planted_state_genome(edge)`` an asmbtr genome able to
learn the rule online.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backtest.data.frame import OHLCV

__all__ = ["StateEdge", "planted_state_genome", "planted_state_positions", "state_edge_market"]

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MIN_MOVE_SIGMAS = 0.05
WICK_SIGMAS = 0.3


def parity_pattern(depth: int) -> tuple[int, ...]:
    """+1 for states with an even number of up bars, -1 for odd."""
    return tuple(1 if bin(state).count("1") % 2 == 0 else -1 for state in range(1 << depth))


@dataclass(frozen=True)
class StateEdge:
    """The planted rule: the pattern over the 2**depth states and its strength (0: none, 1:
    the direction is certain)."""

    depth: int = 3
    strength: float = 0.3
    pattern: tuple[int, ...] | None = None  # None: parity_pattern(depth)

    def __post_init__(self) -> None:
        if not isinstance(self.depth, int) or not 1 <= self.depth <= 12:
            raise ValueError(f"StateEdge.depth: expected an integer in [1, 12], got {self.depth!r}")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise ValueError(f"StateEdge.strength: expected a number in [0, 1], got {self.strength!r}")
        pattern = self.signs()
        if len(pattern) != 1 << self.depth or any(p not in (-1, 0, 1) for p in pattern):
            raise ValueError(
                f"StateEdge.pattern: expected {1 << self.depth} values in (-1, 0, 1), one per state; got {self.pattern!r}"
            )

    def signs(self) -> tuple[int, ...]:
        return tuple(self.pattern) if self.pattern is not None else parity_pattern(self.depth)


def _directions(u: np.ndarray, edge: StateEdge, edge_bars: int) -> np.ndarray:
    """Directions (1 up, 0 down) of bars 1..n-1 drawn from uniforms u, state by state."""
    up_probability = [0.5 + edge.strength / 2.0 * s for s in edge.signs()]
    mask = (1 << edge.depth) - 1
    out = np.empty(u.shape[0], dtype=np.int64)
    state = 0
    seen = 0
    for i, draw in enumerate(u.tolist()):
        p = up_probability[state] if seen >= edge.depth and i + 1 < edge_bars else 0.5
        d = 1 if draw < p else 0
        out[i] = d
        state = ((state << 1) | d) & mask
        seen += 1
    return out


def state_edge_market(
    n_bars: int,
    *,
    seed: int = 0,
    edge: StateEdge | None = StateEdge(),
    sigma: float = 0.004,
    interval_ms: int = HOUR_MS,
    edge_bars: int | None = None,
) -> OHLCV:
    """``n_bars`` candles whose directions follow ``edge`` (None: a random walk) up to bar
    ``edge_bars`` (default: all)."""
    if not isinstance(n_bars, int) or n_bars < 2:
        raise ValueError(f"n_bars: expected an integer >= 2, got {n_bars!r}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive per-bar volatility, got {sigma!r}")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    u = rng.random(n_bars - 1)
    size = np.maximum(np.abs(rng.standard_normal(n_bars - 1)), MIN_MOVE_SIGMAS) * sigma
    wicks = np.abs(rng.standard_normal((2, n_bars))) * WICK_SIGMAS * sigma
    volume = rng.lognormal(7.0, 0.5, n_bars)
    planted = edge if edge is not None else StateEdge(depth=1, strength=0.0)
    direction = _directions(u, planted, n_bars if edge_bars is None else int(edge_bars))
    log_close = np.concatenate([[np.log(100.0)], np.log(100.0) + np.cumsum(np.where(direction == 1, size, -size))])
    close = np.exp(log_close)
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1.0 + wicks[0])
    low = np.minimum(open_, close) * (1.0 - wicks[1])
    timestamp = START_MS + interval_ms * np.arange(n_bars, dtype=np.int64)
    return OHLCV(timestamp=timestamp, open=open_, high=high, low=low, close=close, volume=volume)


def planted_state_positions(market: OHLCV, edge: StateEdge = StateEdge()) -> np.ndarray:
    """The oracle's target position at each bar's close: the pattern's sign in the state the
    last ``depth`` directions (up to and including this bar) form; 0 before there is one."""
    close = np.asarray(market.close)
    signs = edge.signs()
    mask = (1 << edge.depth) - 1
    out = np.zeros(close.shape[0], dtype=np.int64)
    state = 0
    seen = 0
    for t in range(1, close.shape[0]):
        if close[t] == close[t - 1]:
            out[t] = out[t - 1]
            continue
        state = ((state << 1) | int(close[t] > close[t - 1])) & mask
        seen += 1
        out[t] = signs[state] if seen >= edge.depth else 0
    return out


def planted_state_genome(edge: StateEdge = StateEdge()) -> dict:
    """An asmbtr genome (``backtest/families/asmbtr.py``) that can learn ``edge`` online."""
    return {"family": "asmbtr", "depth": edge.depth, "decay": 0.995, "threshold": 0.55, "min_move": 0.0,
            "direction": "both", "neutral": "flat", "stop_loss": None, "take_profit": None}

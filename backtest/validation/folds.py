"""Walk-forward folds plus a final holdout slice that a search never sees."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from backtest.validation._checks import MIN_WINDOW_BARS, _fraction, _integer

# --------------------------------------------------------------------------- folds


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: half-open bar index ranges ``[start, end)``."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


@dataclass(frozen=True)
class Split:
    """Walk-forward folds over the search region plus the final holdout ``[holdout_start, holdout_end)``."""

    folds: tuple[Fold, ...]
    holdout_start: int
    holdout_end: int

    def train_ranges(self) -> np.ndarray:
        """``(F, 2)`` int64 array of ``[train_start, train_end)`` per fold."""
        return np.array([[f.train_start, f.train_end] for f in self.folds], dtype=np.int64).reshape(-1, 2)

    def test_ranges(self) -> np.ndarray:
        """``(F, 2)`` int64 array of ``[test_start, test_end)`` per fold."""
        return np.array([[f.test_start, f.test_end] for f in self.folds], dtype=np.int64).reshape(-1, 2)

    def holdout_range(self) -> np.ndarray:
        """``(1, 2)`` int64 array ``[[holdout_start, holdout_end]]``, same layout as :meth:`test_ranges`."""
        return np.array([[self.holdout_start, self.holdout_end]], dtype=np.int64)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _layout(n_bars: int, n_folds: int, holdout_fraction: float, train_fraction: float, warmup: int):
    holdout_len = max(1, _round_half_up(n_bars * holdout_fraction))
    search = n_bars - holdout_len - warmup
    train_len = _round_half_up(max(search, 0) * train_fraction)
    test_total = search - train_len
    ok = train_len >= MIN_WINDOW_BARS and test_total >= MIN_WINDOW_BARS * n_folds
    return ok, holdout_len, search, train_len, test_total


def walk_forward_split(
    n_bars: int,
    *,
    n_folds: int,
    holdout_fraction: float = 0.2,
    scheme: Literal["rolling", "anchored"] = "rolling",
    train_fraction: float = 0.5,
    warmup: int = 0,
) -> Split:
    """Cut ``n_bars`` bars into walk-forward folds and a final holdout slice.

    The last ``holdout_fraction`` of the bars (rounded, at least one bar) is the holdout,
    reserved for the final gates. The search region is ``[warmup, holdout_start)``: its
    first ``train_fraction`` is the first train window, and the rest is cut into
    ``n_folds`` contiguous, ordered test windows of (nearly) equal length that cover it
    exactly. Every test window starts right where its train window ends.

    ``scheme="anchored"``: every train window starts at ``warmup`` and grows.
    ``scheme="rolling"``: every train window has the first window's length and slides.
    """
    n_bars = _integer("n_bars", n_bars, 1)
    n_folds = _integer("n_folds", n_folds, 1)
    holdout_fraction = _fraction("holdout_fraction", holdout_fraction)
    train_fraction = _fraction("train_fraction", train_fraction)
    warmup = _integer("warmup", warmup, 0)
    if scheme not in ("rolling", "anchored"):
        raise ValueError(f"scheme must be 'rolling' or 'anchored', got {scheme!r}")

    ok, holdout_len, search, train_len, test_total = _layout(
        n_bars, n_folds, holdout_fraction, train_fraction, warmup
    )
    if not ok:
        # Smallest n_bars that works with the other arguments unchanged (feasibility is
        # monotone in n_bars: every window length is non-decreasing in it).
        def works(bars: int) -> bool:
            return _layout(bars, n_folds, holdout_fraction, train_fraction, warmup)[0]

        low, candidate = n_bars, 2 * n_bars + 2 * warmup + 4 * n_folds + 8
        while not works(candidate):
            low, candidate = candidate, 2 * candidate
        while candidate - low > 1:
            middle = (low + candidate) // 2
            low, candidate = (low, middle) if works(middle) else (middle, candidate)
        raise ValueError(
            f"n_bars={n_bars} is too few for n_folds={n_folds}: after warmup={warmup} and a "
            f"holdout of {holdout_len} bars the search region has {max(search, 0)} bars, the "
            f"first train window gets {train_len} and the test windows share {max(test_total, 0)}, "
            f"but every window needs at least {MIN_WINDOW_BARS} bars. Pass n_bars >= {candidate} "
            "(with the other arguments unchanged), or fewer folds, a smaller warmup or a "
            "smaller holdout_fraction."
        )

    first_test = warmup + train_len
    edges = first_test + (np.arange(n_folds + 1, dtype=np.int64) * test_total) // n_folds
    folds = tuple(
        Fold(
            index=k,
            train_start=warmup if scheme == "anchored" else int(edges[k]) - train_len,
            train_end=int(edges[k]),
            test_start=int(edges[k]),
            test_end=int(edges[k + 1]),
        )
        for k in range(n_folds)
    )
    return Split(folds=folds, holdout_start=n_bars - holdout_len, holdout_end=n_bars)



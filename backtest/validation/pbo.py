"""Probability of backtest overfitting by combinatorially symmetric cross-validation."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from backtest.validation._checks import MIN_WINDOW_BARS, _finite_array, _integer

# --------------------------------------------------------------------------- PBO / CSCV


@dataclass(frozen=True)
class PBOResult:
    """Outcome of CSCV: one entry per combination of in-sample blocks.

    ``selected`` is the index of the in-sample best trial, ``in_sample`` and
    ``out_of_sample`` its metric on either half, ``relative_rank`` its out-of-sample rank
    divided by ``n_trials + 1`` and ``logits`` ``ln(w / (1 - w))`` of that rank.
    ``prob_oos_loss`` is the fraction of combinations whose selected trial has an
    out-of-sample metric below zero.
    """

    pbo: float
    logits: np.ndarray
    n_combinations: int
    n_blocks: int
    n_trials: int
    selected: np.ndarray
    in_sample: np.ndarray
    out_of_sample: np.ndarray
    relative_rank: np.ndarray
    prob_oos_loss: float


def _sharpe_from_sums(
    total: np.ndarray, squares: np.ndarray, count: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Per-period Sharpe (ddof=1) from sums of ``x = r - shift`` and of ``x**2``."""
    centred = total / count
    variance = np.maximum(squares - total * centred, 0.0) / (count - 1)
    variance[variance <= 64 * np.finfo(np.float64).eps * squares / count] = 0.0
    mean = centred + shift
    # a constant half (e.g. all zeros: a trial out of the market there) has centred == -shift
    # up to rounding; that rounding must not read as a mean / 0 = +-inf Sharpe ratio
    mean[(variance == 0) & (np.abs(mean) <= 64 * np.finfo(np.float64).eps * np.abs(shift))] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = mean / np.sqrt(variance)
    sharpe[(variance == 0) & (mean == 0)] = 0.0
    return sharpe


def probability_of_backtest_overfitting(
    returns_matrix,
    n_blocks: int = 16,
    metric: str | Callable[[np.ndarray], np.ndarray] = "sharpe",
) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation,
    Bailey, Borwein, Lopez de Prado & Zhu (2015), "The Probability of Backtest
    Overfitting", Journal of Computational Finance 20(4).

    ``returns_matrix`` is ``(T, N)``: per-period returns of N trials over the same T bars.
    The rows are cut into ``n_blocks`` (S, even) contiguous blocks; for each of the
    C(S, S/2) choices of S/2 blocks as in-sample (the rest out-of-sample), the trial with
    the best in-sample ``metric`` is selected, its out-of-sample rank among the N trials
    (1 = worst, ties averaged) gives ``w = rank / (N + 1)`` and ``logit = ln(w / (1 - w))``.
    PBO is the fraction of logits <= 0, i.e. the in-sample winner lands at or below the
    out-of-sample median. ``metric`` is ``"sharpe"`` (per-period, ddof=1) or a function
    mapping a ``(t, N)`` array to ``(N,)`` scores, higher is better.
    """
    matrix = _finite_array("returns_matrix", returns_matrix)
    if matrix.ndim != 2:
        raise ValueError(f"returns_matrix must be 2-D (T bars, N trials), got shape {matrix.shape}")
    t, n = matrix.shape
    if n < 2:
        raise ValueError(f"returns_matrix needs at least 2 trials (columns) to rank, got {n}")
    s = _integer("n_blocks", n_blocks, 2)
    if s % 2:
        raise ValueError(
            f"n_blocks must be even so in- and out-of-sample are symmetric, got {s}; pass {s + 1}"
        )
    if s > t:
        raise ValueError(f"n_blocks={s} exceeds the {t} rows of returns_matrix: pass n_blocks <= {t - t % 2}")
    use_sharpe = isinstance(metric, str) and metric == "sharpe"
    if not (use_sharpe or callable(metric)):
        raise ValueError(f"metric must be 'sharpe' or a callable (t, N) -> (N,), got {metric!r}")

    bounds = (np.arange(s + 1, dtype=np.int64) * t) // s
    sizes = np.diff(bounds)
    combos = np.array(list(combinations(range(s), s // 2)), dtype=np.intp)
    c = combos.shape[0]
    mask = np.zeros((c, s), dtype=bool)
    mask[np.arange(c)[:, None], combos] = True
    is_count = (mask * sizes).sum(axis=1)
    if min(is_count.min(), t - is_count.max()) < MIN_WINDOW_BARS:
        raise ValueError(
            f"with {t} rows and n_blocks={s} some half has fewer than {MIN_WINDOW_BARS} rows: "
            "pass more rows or fewer blocks"
        )

    selected = np.empty(c, dtype=np.int64)
    in_sample = np.empty(c)
    out_of_sample = np.empty(c)
    rank = np.empty(c)
    chunk = max(1, (1 << 21) // n)
    if use_sharpe:
        shift = matrix.mean(axis=0)
        x = matrix - shift
        block_sum = np.add.reduceat(x, bounds[:-1], axis=0)
        block_sq = np.add.reduceat(x * x, bounds[:-1], axis=0)
        all_sum, all_sq = block_sum.sum(axis=0), block_sq.sum(axis=0)
    for lo in range(0, c, chunk):
        hi = min(c, lo + chunk)
        if use_sharpe:
            m = mask[lo:hi].astype(np.float64)
            cnt = is_count[lo:hi, None].astype(np.float64)
            is_sum, is_sq = m @ block_sum, m @ block_sq
            is_metric = _sharpe_from_sums(is_sum, is_sq, cnt, shift)
            oos_metric = _sharpe_from_sums(all_sum - is_sum, all_sq - is_sq, t - cnt, shift)
        else:
            is_metric, oos_metric = np.empty((hi - lo, n)), np.empty((hi - lo, n))
            for i, row in enumerate(mask[lo:hi]):
                is_rows = np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in np.flatnonzero(row)])
                oos_rows = np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in np.flatnonzero(~row)])
                for target, rows in ((is_metric, is_rows), (oos_metric, oos_rows)):
                    value = np.asarray(metric(matrix[rows]), dtype=np.float64)
                    if value.shape != (n,) or np.any(np.isnan(value)):
                        raise ValueError(f"metric must return {n} non-NaN scores, got shape {value.shape}")
                    target[i] = value
        best = np.argmax(is_metric, axis=1)
        rows_idx = np.arange(hi - lo)
        chosen = oos_metric[rows_idx, best][:, None]
        below = (oos_metric < chosen).sum(axis=1)
        ties = (oos_metric == chosen).sum(axis=1)
        selected[lo:hi] = best
        in_sample[lo:hi] = is_metric[rows_idx, best]
        out_of_sample[lo:hi] = chosen[:, 0]
        rank[lo:hi] = below + (ties + 1) / 2.0

    relative = rank / (n + 1)
    logits = np.log(relative / (1.0 - relative))
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        n_combinations=c,
        n_blocks=s,
        n_trials=n,
        selected=selected,
        in_sample=in_sample,
        out_of_sample=out_of_sample,
        relative_rank=relative,
        prob_oos_loss=float(np.mean(out_of_sample < 0.0)),
    )


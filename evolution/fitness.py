"""From an EvaluationResult to walk-forward summaries, objective values and trial rows.

Walk-forward fitness has no per-fold fitting: a genome is scored on the folds' test
windows only (never the holdout). Summary over folds:

* ``sharpe``, ``sortino``, ``calmar``, ``cagr``, ``win_rate``, ``profit_factor``,
  ``exposure``, ``turnover``: mean over folds
* ``total_return``: compounded over folds
* ``max_drawdown``: worst fold
* ``n_trades``: sum over folds

A failed genome, a NaN objective, or fewer than ``min_trades`` walk-forward trades per fold
get the worst value of every objective (:data:`WORST`), so they are never selected.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from backtest.metrics import METRIC_INDEX, METRIC_NAMES
from evolution.config import MINIMIZED
from evolution.jsonable import finite_or_none

WORST = 1e9
MEAN_METRICS = ("sharpe", "sortino", "calmar", "cagr", "win_rate", "profit_factor", "exposure", "turnover")
SUMMARY_NAMES = ("sharpe", "total_return", "max_drawdown", "n_trades") + tuple(
    m for m in MEAN_METRICS if m != "sharpe"
)


def summarize(fold_metrics: np.ndarray) -> dict[str, float | None]:
    """Walk-forward summary of one genome's (F, M) fold metrics (None where undefined)."""
    out: dict[str, float | None] = {}
    with np.errstate(all="ignore"):
        for name in MEAN_METRICS:
            column = fold_metrics[:, METRIC_INDEX[name]]
            finite = column[np.isfinite(column)]
            out[name] = finite_or_none(finite.mean()) if finite.size else None
        tr = fold_metrics[:, METRIC_INDEX["total_return"]]
        out["total_return"] = finite_or_none(np.prod(1.0 + tr) - 1.0)
        out["max_drawdown"] = finite_or_none(np.max(fold_metrics[:, METRIC_INDEX["max_drawdown"]]))
        out["n_trades"] = finite_or_none(np.sum(fold_metrics[:, METRIC_INDEX["n_trades"]]))
    return {name: out[name] for name in SUMMARY_NAMES}


def summarize_many(metrics: np.ndarray) -> list[dict[str, float | None]]:
    """:func:`summarize` for a whole (N, F, M) evaluation at once (same values)."""
    n = metrics.shape[0]
    cols: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for name in MEAN_METRICS:
            column = metrics[:, :, METRIC_INDEX[name]]
            finite = np.isfinite(column)
            count = finite.sum(axis=1)
            total = np.where(finite, column, 0.0).sum(axis=1)
            cols[name] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        cols["total_return"] = np.prod(1.0 + metrics[:, :, METRIC_INDEX["total_return"]], axis=1) - 1.0
        cols["max_drawdown"] = np.max(metrics[:, :, METRIC_INDEX["max_drawdown"]], axis=1)
        cols["n_trades"] = np.sum(metrics[:, :, METRIC_INDEX["n_trades"]], axis=1)
    table = {name: cols[name].tolist() for name in SUMMARY_NAMES}
    return [{name: (v if math.isfinite(v) else None) for name, v in ((k, table[k][i]) for k in SUMMARY_NAMES)}
            for i in range(n)]


def fold_columns_many(metrics: np.ndarray) -> list[dict[str, list[float | None]]]:
    """:func:`fold_columns` for a whole (N, F, M) evaluation at once."""
    metrics = np.asarray(metrics, dtype=np.float64)
    keys = [f"fold_{name}" for name in METRIC_NAMES]
    values = metrics.transpose(0, 2, 1).tolist()  # N x M x F nested lists of floats
    clean = np.isfinite(metrics).all(axis=(1, 2)).tolist()
    out = []
    for per_metric, finite in zip(values, clean):
        if not finite:
            per_metric = [[v if math.isfinite(v) else None for v in folds] for folds in per_metric]
        out.append(dict(zip(keys, per_metric)))
    return out


def objectives(summary: dict, names: Sequence[str], n_folds: int, min_trades: int, failed: bool) -> list[float]:
    """Objective values (raw metric values, worst when undefined or too few trades)."""
    trades = summary.get("n_trades")
    bad = failed or trades is None or trades < min_trades * n_folds
    values = []
    for name in names:
        value = summary.get(name)
        if bad or value is None:
            value = WORST if name in MINIMIZED else -WORST
        values.append(float(value))
    return values


def weights(names: Sequence[str]) -> tuple[float, ...]:
    """DEAP weights: +1 maximized, -1 minimized."""
    return tuple(-1.0 if n in MINIMIZED else 1.0 for n in names)


def fold_columns(fold_metrics: np.ndarray | None, n_folds: int) -> dict[str, list[float] | None]:
    """One list column per metric, ``fold_<metric>``, one value per fold (None for NaN)."""
    if fold_metrics is None:
        return {f"fold_{name}": None for name in METRIC_NAMES}
    return {
        f"fold_{name}": [finite_or_none(v) for v in fold_metrics[:, METRIC_INDEX[name]]] for name in METRIC_NAMES
    }

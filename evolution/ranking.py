"""The order of the hall of fame: a score from each trial's walk-forward record.

The GA selects on mean walk-forward Sharpe (its fitness), but among the best trials of a
search the mean is partly luck: near-copies of one rule differ by which fold happened to
suit them. ``gates.rank_by`` chooses the score that orders the hall of fame; a score earns
the default only by predicting the holdout better, as measured by
``benchmarks/bench_discovery.py`` (rank correlation of the score with holdout Sharpe over
the GA's best trials, across planted-edge markets). Measured on 64 markets with the demo's
tournament search: fitness 0.061, sharpe_lower_bound 0.012, pooled_sharpe 0.055,
min_fold_sharpe 0.007 (none put a better first ahead more often than chance), so the default
stays ``fitness``.

* ``fitness``: the GA's objectives in config order (mean fold Sharpe first, by default).
* ``sharpe_lower_bound``: mean fold Sharpe minus its standard error across the folds,
  ``mean - sd / sqrt(F)``: a rule that earns in every fold beats one that earned the same
  mean from one lucky fold.
* ``pooled_sharpe``: annualized Sharpe of the out-of-sample buckets of all folds together.
* ``min_fold_sharpe``: the worst fold's Sharpe.

A trial the GA gave the worst fitness (failed, too few trades) scores ``-inf``. Ties go
to the smaller strategy id, so the order is reproducible.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from evolution.config import EvolutionConfig
from evolution.fitness import WORST, weights


def _fold_sharpes(frame: pd.DataFrame) -> np.ndarray:
    rows = [np.asarray(v, dtype=np.float64) if v is not None else np.array([np.nan]) for v in frame["fold_sharpe"]]
    width = max((r.size for r in rows), default=1)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, :r.size] = r
    return out


def _failed(frame: pd.DataFrame, config: EvolutionConfig) -> np.ndarray:
    w = weights(config.selection.objectives)
    return np.array([any(wi * v <= -WORST / 2 for wi, v in zip(w, fit)) for fit in frame["fitness"]], dtype=bool)


def rank_scores(frame: pd.DataFrame, name: str, buckets_per_year: float = 1.0) -> np.ndarray:
    """One score per row (higher is better) for the rankings other than ``fitness``."""
    with np.errstate(all="ignore"):
        if name == "pooled_sharpe":
            out = np.full(len(frame), np.nan)
            for i, r in enumerate(frame["oos_returns"]):
                if r is not None and len(r) > 1:
                    r = np.asarray(r, dtype=np.float64)
                    sd = r.std(ddof=1)
                    out[i] = r.mean() / sd * np.sqrt(buckets_per_year) if sd > 0 else np.nan
            return out
        folds = _fold_sharpes(frame)
        count = np.isfinite(folds).sum(axis=1)
        if name == "min_fold_sharpe":
            return np.where(count > 0, np.nanmin(np.where(np.isfinite(folds), folds, np.inf), axis=1), np.nan)
        if name == "sharpe_lower_bound":
            mean = np.nanmean(folds, axis=1)
            sd = np.where(count > 1, np.nanstd(folds, axis=1, ddof=1), 0.0)
            return mean - sd / np.sqrt(np.maximum(count, 1))
    raise ValueError(f"unknown ranking {name!r}")


def rank_trials(frame: pd.DataFrame, config: EvolutionConfig, buckets_per_year: float = 1.0) -> pd.DataFrame:
    """Distinct evaluated trials (first evaluation of each strategy id), best first by
    ``config.gates.rank_by``, with the score in a ``rank_score`` column (for ``fitness``:
    the first objective's value)."""
    ev = frame[frame["evaluated"]].drop_duplicates("strategy_id", keep="first").reset_index(drop=True)
    w = weights(config.selection.objectives)
    name = config.gates.rank_by
    if name == "fitness":
        score = np.array([fit[0] for fit in ev["fitness"]], dtype=np.float64)
        keys = [tuple(-wi * v for wi, v in zip(w, fit)) + (sid,) for fit, sid in zip(ev["fitness"], ev["strategy_id"])]
    else:
        score = rank_scores(ev, name, buckets_per_year)
        score[_failed(ev, config) | ~np.isfinite(score)] = -np.inf
        keys = [(-s, sid) for s, sid in zip(score, ev["strategy_id"])]
    order = sorted(range(len(ev)), key=keys.__getitem__)
    out = ev.iloc[order].reset_index(drop=True)
    out["rank_score"] = score[order]
    return out

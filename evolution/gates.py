"""Honest gates, after the search: can a hall-of-fame member be promoted?

Selection happens twice, and each is deflated for the trials that competed in it:

* ``dsr >= gates.min_dsr``: the deflated Sharpe ratio (Bailey & Lopez de Prado 2014) of
  the member's walk-forward bucket returns, the sample the search selected on, against
  the expected maximum of the run's **effective number of trials**: the number of
  independent zero-skill trials whose best Sharpe ratio is expected to be as high as the
  best of the trials actually run, given how their returns correlate
  (``backtest.validation.effective_number_of_trials``; near-copies of one rule count
  about once). ``result.json`` reports ``n_trials`` and ``n_effective_trials``. The
  variance of the trials' Sharpe ratios (``gates.sharpe_variance``): ``null`` (default)
  is the sampling variance of a zero Sharpe ratio over the buckets, 1 / buckets, the
  variance under the very null the DSR tests; ``clusters`` the variance across the
  clusters' Sharpe ratios (Lopez de Prado 2020, s. 8.8); ``initial`` over the random
  initial population and ``all`` over every trial. Measured variances are floored at
  the null's; they grow with genuine edges among the trials, so they punish a market
  that has one (``benchmarks/bench_discovery.py`` measures what each costs).
* ``holdout_dsr >= gates.min_holdout_dsr``: the DSR of the member's holdout bucket
  returns, on bars the search never saw, against the effective number of the hall of
  fame's holdout series: every member is tested there, so the multiplicity is theirs
  (at most ``hall_of_fame``), with the null variance 1 / holdout buckets. An edge that
  stopped before the holdout fails here.
* ``pbo <= gates.max_pbo``: probability of backtest overfitting (CSCV) over the
  walk-forward series of one candidate per cluster: trials in ranking order form
  clusters of returns correlated at ``gates.cluster_correlation`` or more
  (``backtest.validation.correlation_clusters``), and the best trial of every cluster
  (at most ``gates.pbo_candidates``: the best cluster and a seeded sample of the others)
  joins the matrix (:func:`pbo_columns`). Near-copies of one rule would make PBO a coin
  flip among copies; distinct behaviours make it a judgement of the search. PBO stays
  high when many clusters hold the same genuine edge (ranking among equals is a coin
  flip), so the default threshold is 0.5: a selection worse than a coin flip.
* Holdout risk and evidence, scaled to the market: ``max_drawdown_vs_market`` (holdout
  drawdown at most this multiple of buy-and-hold's over the same bars),
  ``min_trades_per_year`` (years from the bar interval), and the absolute forms
  ``max_drawdown``, ``min_trades`` and ``min_calmar``. A threshold set to null is not
  applied and does not appear among a member's gates.

Constant returns (a strategy that never trades) have DSR 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from backtest import Evaluator
from backtest.engine import market_arrays
from backtest.metrics import METRIC_INDEX, MS_PER_YEAR, max_drawdown
from backtest.validation import (
    cluster_sharpe_variance,
    correlation_clusters,
    dsr_from_returns,
    effective_number_of_trials,
    probability_of_backtest_overfitting,
)
from evolution.config import EvolutionConfig
from evolution.jsonable import finite_or_none as _clean
from evolution.market import MarketSpec

HOLDOUT_NAMES = ("sharpe", "total_return", "max_drawdown", "n_trades", "sortino", "win_rate",
                 "profit_factor", "exposure", "cagr", "calmar", "turnover")


@dataclass(frozen=True)
class Judgement:
    """What the gates found: one verdict per candidate (in order) and the run's figures."""

    members: list[dict]
    n_effective_trials: int
    n_clusters: int
    holdout_effective_trials: int
    pbo: float | None
    sharpe_variance: float
    market_max_drawdown: float
    holdout_years: float

    def summary(self) -> dict:
        return {"n_effective_trials": self.n_effective_trials, "n_clusters": self.n_clusters,
                "holdout_effective_trials": self.holdout_effective_trials, "pbo": self.pbo,
                "dsr_sharpe_variance": self.sharpe_variance, "market_max_drawdown": self.market_max_drawdown,
                "holdout_years": self.holdout_years}


def per_period_sharpe(returns: np.ndarray) -> float | None:
    if returns.size < 2:
        return None
    sd = returns.std(ddof=1)
    if not np.isfinite(sd) or sd <= 0:
        return None
    return float(returns.mean() / sd)


def walk_forward_matrix(ranked: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(T, n)`` walk-forward bucket returns of the trials that have them, and their row positions."""
    rows = [i for i, r in enumerate(ranked["oos_returns"]) if r is not None and len(r) > 0]
    if not rows:
        return np.empty((0, 0)), np.empty(0, dtype=np.intp)
    matrix = np.column_stack([np.asarray(ranked["oos_returns"].iloc[i], dtype=np.float64) for i in rows])
    return matrix, np.asarray(rows, dtype=np.intp)


def trial_sharpe_variance(ranked: pd.DataFrame, which: str, matrix: np.ndarray, labels: np.ndarray) -> float:
    """Variance of per-bucket Sharpe ratios for the walk-forward DSR (see module doc)."""
    null = 1.0 / max(matrix.shape[0], 1)
    if which == "null" or matrix.shape[1] < 2:
        return null
    if which == "clusters":
        return max(cluster_sharpe_variance(matrix, labels), null) if labels.max(initial=-1) >= 1 else null
    frame = ranked[ranked["generation"] == 0] if which == "initial" else ranked
    series = [np.asarray(r) for r in frame["oos_returns"] if r is not None]
    sharpes = [s for s in (per_period_sharpe(r) for r in series) if s is not None]
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    return max(variance, null)


def pbo_columns(labels: np.ndarray, limit: int, seed: int = 0) -> list[int]:
    """Columns of the PBO candidates: the best member of each cluster (clusters in the order
    of their best member). With more than ``limit`` clusters, the first cluster and a seeded
    random sample of the others: the candidate set must not be chosen by the very returns CSCV
    splits (the best ``limit`` clusters, or ones spread over the ranking, make the in-sample
    winner look better out of sample than it is), and the top clusters alone are all
    variants of whatever edge a market holds, among which ranking is a coin flip."""
    leaders, seen = [], set()
    for i, label in enumerate(labels.tolist()):
        if label >= 0 and label not in seen:
            seen.add(label)
            leaders.append(i)
    if len(leaders) <= limit:
        return leaders
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(15,)))
    rest = np.sort(rng.choice(np.arange(1, len(leaders)), size=limit - 1, replace=False))
    return [leaders[0]] + [leaders[i] for i in rest]


def run_pbo(matrix: np.ndarray, columns: list[int], blocks: int) -> float:
    if len(columns) < 2:
        return 1.0  # nothing to compare: no evidence against overfitting
    try:
        return float(probability_of_backtest_overfitting(matrix[:, columns], n_blocks=blocks).pbo)
    except ValueError:
        return 1.0


def buy_and_hold_drawdown(close: np.ndarray, start: int, end: int) -> float:
    """Maximum drawdown of holding the market long over bars ``[start, end)``."""
    window = np.asarray(close[start:end], dtype=np.float64)
    return float(max_drawdown(window / window[0], 1.0)) if window.size else 0.0


def _dsr(returns: np.ndarray | None, n_trials: int, variance: float) -> float:
    if returns is None:
        return 0.0
    try:
        return float(dsr_from_returns(returns, n_trials=n_trials, sharpe_variance=max(variance, 1.0 / returns.size)))
    except ValueError:  # constant returns (never trades) or too few buckets
        return 0.0


def _effective(matrix: np.ndarray, seed: int) -> int:
    if matrix.ndim != 2 or matrix.shape[1] == 0 or matrix.shape[0] < 3:
        return max(1, matrix.shape[1] if matrix.ndim == 2 else 1)
    return max(1, int(round(effective_number_of_trials(matrix, seed=seed).n_effective)))


def _verdict(g, holdout: dict, dsr: float, holdout_dsr: float, pbo: float, market_mdd: float, years: float) -> dict:
    trades = holdout["n_trades"] or 0
    mdd = holdout["max_drawdown"]
    checks = {
        "dsr": dsr >= g.min_dsr,
        "holdout_dsr": None if g.min_holdout_dsr is None else holdout_dsr >= g.min_holdout_dsr,
        "pbo": None if g.max_pbo is None else pbo <= g.max_pbo,
        "min_trades": None if g.min_trades is None else trades >= g.min_trades,
        "min_trades_per_year": None if g.min_trades_per_year is None else trades >= g.min_trades_per_year * years,
        "max_drawdown": None if g.max_drawdown is None else mdd is not None and mdd <= g.max_drawdown,
        "max_drawdown_vs_market": None if g.max_drawdown_vs_market is None
        else mdd is not None and mdd <= g.max_drawdown_vs_market * market_mdd,
        "min_calmar": None if g.min_calmar is None
        else holdout["calmar"] is not None and holdout["calmar"] >= g.min_calmar,
    }
    return {name: ok for name, ok in checks.items() if ok is not None}


def judge(candidates: pd.DataFrame, ranked: pd.DataFrame, spec: MarketSpec, config: EvolutionConfig,
          evaluator: Evaluator | None = None) -> Judgement:
    """Holdout metrics, DSRs, PBO and gate verdicts for each candidate (in order).

    ``ranked`` is every distinct trial, best first (evolution/ranking.py); ``candidates``
    its hall of fame."""
    g = config.gates
    evaluator = evaluator or Evaluator(memory_bytes=config.evaluator_memory_mb * 2**20)
    genomes = list(candidates["genome"])
    result = evaluator.evaluate(
        genomes, spec.market, spec.split.holdout_range(), fees=config.costs.fees,
        slippage=config.costs.slippage, init_cash=config.costs.init_cash,
        bucket_bars=config.walk_forward.bucket_bars,
    )
    matrix, _ = walk_forward_matrix(ranked)
    n_eff = _effective(matrix, config.seed)  # every trial competed, even those selection rejected
    # clusters and PBO over the trials the search could select (not failed, enough trades): a
    # trial that trades in a handful of buckets would win many CSCV halves by its few lucky ones
    eligible = ranked[np.isfinite(ranked["rank_score"].to_numpy(dtype=np.float64))] \
        if "rank_score" in ranked.columns else ranked
    selectable, _ = walk_forward_matrix(eligible)
    labels = correlation_clusters(selectable, g.cluster_correlation) if selectable.size else np.empty(0, dtype=np.int64)
    variance = trial_sharpe_variance(eligible, g.sharpe_variance, selectable, labels) if selectable.size \
        else 1.0 / max(matrix.shape[0], 1)
    pbo = run_pbo(selectable, pbo_columns(labels, g.pbo_candidates, config.seed), g.pbo_blocks) if selectable.size else 1.0

    ok = [i for i in range(len(genomes)) if i not in result.errors and result.buckets is not None]
    holdout_returns = {i: result.buckets[i] - 1.0 for i in ok}
    ho_matrix = np.column_stack([holdout_returns[i] for i in ok]) if ok else np.empty((0, 0))
    ho_eff = _effective(ho_matrix, config.seed) if ok else 1
    start, end = spec.split.holdout_start, spec.split.holdout_end
    market_mdd = buy_and_hold_drawdown(spec.market.close, start, end)
    years = (end - start) * market_arrays(spec.market).interval_ms / MS_PER_YEAR

    members = []
    for i in range(len(genomes)):
        holdout = {name: _clean(result.metrics[i, 0, METRIC_INDEX[name]]) for name in HOLDOUT_NAMES}
        wf = candidates["oos_returns"].iloc[i] if "oos_returns" in candidates.columns else None
        wf = np.asarray(wf, dtype=np.float64) if wf is not None and len(wf) else None
        dsr = _dsr(wf, n_eff, variance)
        holdout_dsr = _dsr(holdout_returns.get(i), ho_eff, 0.0)
        verdict = _verdict(g, holdout, dsr, holdout_dsr, pbo, market_mdd, years)
        members.append({"holdout": holdout, "dsr": dsr, "holdout_dsr": holdout_dsr, "pbo": pbo,
                        "gates": verdict, "promoted": all(verdict.values())})
    n_clusters = int(labels.max(initial=-1)) + 1
    return Judgement(members, n_eff, n_clusters, ho_eff, pbo, variance, market_mdd, years)

"""Honest gates, after the search, on the holdout the search never saw.

A hall-of-fame member is promoted when all of these hold:

* ``dsr >= gates.min_dsr``: deflated Sharpe ratio of its holdout bucket returns, with
  N = the number of distinct trials of the whole run, against the expected maximum Sharpe
  ratio of N zero-skill trials. Their Sharpe variance (``gates.sharpe_variance``):
  ``null`` (default) is the sampling variance of a zero Sharpe ratio over the holdout's
  buckets, 1 / buckets, the variance under the very null the DSR tests (as if all N
  trials had been tried on the holdout); ``initial`` is measured over the random initial
  population's walk-forward series (independent draws; offspring cluster around their
  parents) and ``all`` over every trial, both floored at 1 / buckets. Measured variances
  grow with genuine edges among the trials, so they punish a market that has one.
  Constant holdout returns (never trades): DSR 0.
* ``pbo <= gates.max_pbo``: probability of backtest overfitting (CSCV) of the run over the
  walk-forward return series of the top candidates: the best distinct trials, in fitness
  order, skipping any whose returns correlate at ``gates.pbo_max_correlation`` or more
  with one already taken, up to ``gates.pbo_candidates``. Near-twins of one rule would make
  PBO a coin flip among copies; distinct behaviours make it a judgement of the search.
* holdout ``n_trades >= gates.min_trades`` and holdout ``max_drawdown <= gates.max_drawdown``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from backtest import Evaluator
from backtest.metrics import METRIC_INDEX
from backtest.validation import dsr_from_returns, probability_of_backtest_overfitting
from evolution.config import EvolutionConfig
from evolution.jsonable import finite_or_none as _clean
from evolution.market import MarketSpec

HOLDOUT_NAMES = ("sharpe", "total_return", "max_drawdown", "n_trades", "sortino", "win_rate",
                 "profit_factor", "exposure", "cagr", "calmar", "turnover")


def per_period_sharpe(returns: np.ndarray) -> float | None:
    if returns.size < 2:
        return None
    sd = returns.std(ddof=1)
    if not np.isfinite(sd) or sd <= 0:
        return None
    return float(returns.mean() / sd)


def trial_sharpe_variance(ranked: pd.DataFrame, which: str = "initial") -> float:
    """Variance of per-bucket Sharpe ratios over the trials (see module doc)."""
    frame = ranked[ranked["generation"] == 0] if which == "initial" else ranked
    series = [np.asarray(r) for r in frame["oos_returns"] if r is not None]
    sharpes = [s for s in (per_period_sharpe(r) for r in series) if s is not None]
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    null = 1.0 / max(len(series[0]) if series else 1, 1)
    return max(variance, null)


def pbo_columns(ranked: pd.DataFrame, limit: int, max_correlation: float) -> list[int]:
    """Row positions (fitness order) of the PBO candidates: the best trials of distinct behaviour."""
    chosen: list[int] = []
    standardized: list[np.ndarray] = []
    for i, r in enumerate(ranked["oos_returns"]):
        if r is None:
            continue
        x = np.asarray(r, dtype=np.float64)
        sd = x.std()
        if not np.isfinite(sd) or sd <= 0:
            continue
        z = (x - x.mean()) / (sd * np.sqrt(x.size))
        if standardized and np.max(np.abs(np.array(standardized) @ z)) >= max_correlation:
            continue
        chosen.append(i)
        standardized.append(z)
        if len(chosen) == limit:
            break
    return chosen


def run_pbo(ranked: pd.DataFrame, config: EvolutionConfig) -> float:
    cols = pbo_columns(ranked, config.gates.pbo_candidates, config.gates.pbo_max_correlation)
    if len(cols) < 2:
        return 1.0  # nothing to compare: no evidence against overfitting
    matrix = np.column_stack([np.asarray(ranked["oos_returns"].iloc[i], dtype=np.float64) for i in cols])
    try:
        return float(probability_of_backtest_overfitting(matrix, n_blocks=config.gates.pbo_blocks).pbo)
    except ValueError:
        return 1.0


def judge(candidates: pd.DataFrame, ranked: pd.DataFrame, spec: MarketSpec, config: EvolutionConfig,
          evaluator: Evaluator | None = None) -> list[dict]:
    """Holdout metrics, DSR, PBO and gate verdicts for each candidate (in order)."""
    evaluator = evaluator or Evaluator(memory_bytes=config.evaluator_memory_mb * 2**20)
    genomes = list(candidates["genome"])
    result = evaluator.evaluate(
        genomes, spec.market, spec.split.holdout_range(), fees=config.costs.fees,
        slippage=config.costs.slippage, init_cash=config.costs.init_cash,
        bucket_bars=config.walk_forward.bucket_bars,
    )
    n_trials = len(ranked)
    which = config.gates.sharpe_variance
    measured = trial_sharpe_variance(ranked, which) if which != "null" else 0.0
    pbo = run_pbo(ranked, config)
    g = config.gates
    out = []
    for i in range(len(genomes)):
        holdout = {name: _clean(result.metrics[i, 0, METRIC_INDEX[name]]) for name in HOLDOUT_NAMES}
        dsr = 0.0
        if i not in result.errors and result.buckets is not None:
            returns = result.buckets[i] - 1.0
            try:
                variance = max(measured, 1.0 / returns.size)
                dsr = float(dsr_from_returns(returns, n_trials=n_trials, sharpe_variance=variance))
            except ValueError:  # constant returns (never trades) or too few buckets
                dsr = 0.0
        verdict = {
            "dsr": dsr >= g.min_dsr,
            "pbo": pbo <= g.max_pbo,
            "min_trades": (holdout["n_trades"] or 0) >= g.min_trades,
            "max_drawdown": holdout["max_drawdown"] is not None and holdout["max_drawdown"] <= g.max_drawdown,
        }
        out.append({"holdout": holdout, "dsr": dsr, "pbo": pbo, "gates": verdict, "promoted": all(verdict.values())})
    return out

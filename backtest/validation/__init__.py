"""The honesty layer: walk-forward folds, PSR, DSR, PBO (CSCV), minimum backtest length.

A search that tries many strategies will always find one that looks good in-sample.
These tools say how much of that is luck:

* :func:`walk_forward_split` cuts the bars into walk-forward folds and a final holdout
  slice the search never sees.
* :func:`probabilistic_sharpe_ratio` (Bailey & Lopez de Prado 2012) is the probability
  that the true Sharpe ratio exceeds a benchmark, given sample length and the skewness
  and kurtosis of the returns.
* :func:`deflated_sharpe_ratio` (Bailey & Lopez de Prado 2014) is the PSR whose benchmark
  is the Sharpe ratio the best of ``n_trials`` worthless strategies is expected to reach.
* :func:`probability_of_backtest_overfitting` (Bailey, Borwein, Lopez de Prado & Zhu 2015)
  estimates by combinatorially symmetric cross-validation how often the in-sample winner
  ends below the out-of-sample median.
* :func:`effective_number_of_trials` is the number of independent trials whose expected
  maximum Sharpe ratio equals that of the correlated trials a search really ran (the N of
  the DSR); :func:`correlation_clusters` groups trials whose returns move together
  (one PBO candidate per cluster) and :func:`cluster_sharpe_variance` is the variance of
  the clusters' Sharpe ratios.
* :func:`minimum_backtest_length` (Bailey, Borwein, Lopez de Prado & Zhu 2014) is the
  number of years of data below which ``n_trials`` trials can be expected to produce an
  annualized Sharpe ratio of ``target_sharpe_annualized`` by luck alone.

Units: every Sharpe ratio here is **per period** (per bar, not annualized) unless its
name ends in ``_annualized``. Kurtosis is **raw** kurtosis (3 for a normal distribution),
not excess kurtosis. Pure numpy/scipy: nothing here imports Ray, MLflow or our packages.
"""

from __future__ import annotations

from backtest.validation._checks import EULER_MASCHERONI
from backtest.validation.effective import (
    EffectiveTrials,
    cluster_returns,
    cluster_sharpe_variance,
    correlation_clusters,
    effective_number_of_trials,
    expected_max_normal,
)
from backtest.validation.folds import Fold, Split, walk_forward_split
from backtest.validation.pbo import PBOResult, probability_of_backtest_overfitting
from backtest.validation.sharpe import (
    deflated_sharpe_ratio,
    dsr_from_returns,
    expected_max_sharpe,
    minimum_backtest_length,
    probabilistic_sharpe_ratio,
    psr_from_returns,
)

__all__ = [
    "EULER_MASCHERONI",
    "EffectiveTrials",
    "cluster_returns",
    "cluster_sharpe_variance",
    "correlation_clusters",
    "effective_number_of_trials",
    "expected_max_normal",
    "Fold",
    "PBOResult",
    "Split",
    "deflated_sharpe_ratio",
    "dsr_from_returns",
    "expected_max_sharpe",
    "minimum_backtest_length",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "psr_from_returns",
    "walk_forward_split",
]

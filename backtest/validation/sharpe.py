"""Probabilistic and deflated Sharpe ratio, minimum backtest length."""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from backtest.validation._checks import EULER_MASCHERONI, _finite_array, _integer, _moments, _real, _returns_1d

# --------------------------------------------------------------------------- PSR / DSR


def probabilistic_sharpe_ratio(sharpe, n_obs, skew, kurtosis, sharpe_benchmark=0.0):
    """Probabilistic Sharpe ratio, Bailey & Lopez de Prado (2012), "The Sharpe Ratio
    Efficient Frontier", Journal of Risk 15(2)::

        PSR = Phi((SR - SR*) * sqrt(n_obs - 1) / sqrt(1 - skew*SR + (kurtosis - 1)/4 * SR**2))

    ``sharpe`` and ``sharpe_benchmark`` are **per-period** (not annualized) Sharpe ratios
    measured on ``n_obs`` returns; ``skew`` is the skewness and ``kurtosis`` the **raw**
    kurtosis (normal = 3) of those returns. Arguments broadcast against each other; the
    result is a probability in [0, 1] (a float for scalar input, else an array).
    """
    sr = _finite_array("sharpe", sharpe)
    n = _finite_array("n_obs", n_obs)
    if np.any(n != np.round(n)) or np.any(n < 2):
        raise ValueError("n_obs must be a whole number of observations >= 2")
    g3 = _finite_array("skew", skew)
    g4 = _finite_array("kurtosis", kurtosis)
    sr0 = _finite_array("sharpe_benchmark", sharpe_benchmark)
    try:
        sr, n, g3, g4, sr0 = np.broadcast_arrays(sr, n, g3, g4, sr0)
    except ValueError:
        raise ValueError(
            "sharpe, n_obs, skew, kurtosis and sharpe_benchmark have shapes that do not "
            "broadcast together: pass scalars or arrays of one shape"
        ) from None
    pearson = 1.0 + g3 * g3
    if np.any(g4 < pearson - 1e-9 * pearson):
        raise ValueError(
            "kurtosis must be raw kurtosis (normal = 3), which is always >= 1 + skew**2; "
            "if you passed excess kurtosis, add 3"
        )
    variance = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    if np.any(variance <= 0.0):
        raise ValueError(
            "skew, kurtosis and sharpe give a non-positive Sharpe-ratio variance "
            "(1 - skew*SR + (kurtosis-1)/4*SR**2 <= 0): check that sharpe is per period, "
            "not annualized"
        )
    z = (sr - sr0) * np.sqrt(n - 1.0) / np.sqrt(variance)
    out = norm.cdf(z)
    return float(out) if np.ndim(out) == 0 else out


def psr_from_returns(returns, sharpe_benchmark: float = 0.0) -> float:
    """PSR (Bailey & Lopez de Prado 2012) of a 1-D array of per-period returns.

    The per-period Sharpe ratio is mean / sample standard deviation (ddof=1); skewness
    and raw kurtosis are the sample (population-moment) estimates. ``sharpe_benchmark``
    is per period. Constant returns are rejected: their Sharpe ratio is undefined.
    """
    r = _returns_1d(returns)
    sr, g3, g4 = _moments(r)
    return probabilistic_sharpe_ratio(sr, r.size, g3, g4, _real("sharpe_benchmark", sharpe_benchmark))


def expected_max_sharpe(n_trials: int, sharpe_variance: float = 1.0) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` independent trials whose true Sharpe
    ratio is zero, Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio", JPM 40(5)::

        sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)))

    with gamma the Euler-Mascheroni constant. ``sharpe_variance`` V is the variance of the
    trials' Sharpe ratios, in the units of the result (per-period variance gives a
    per-period Sharpe ratio; annualized gives annualized). One trial has no selection
    bias: ``n_trials=1`` gives 0.
    """
    n = _integer("n_trials", n_trials, 1)
    v = _real("sharpe_variance", sharpe_variance)
    if v < 0:
        raise ValueError(f"sharpe_variance must be >= 0, got {v}")
    if n == 1:
        return 0.0
    g = EULER_MASCHERONI
    expected = (1 - g) * norm.ppf(1 - 1 / n) + g * norm.ppf(1 - 1 / (n * math.e))
    return float(math.sqrt(v) * expected)


def deflated_sharpe_ratio(sharpe, n_obs, skew, kurtosis, n_trials: int, sharpe_variance: float):
    """Deflated Sharpe ratio, Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio:
    Correcting for Selection Bias, Backtest Overfitting and Non-Normality", JPM 40(5).

    The PSR of the selected strategy against ``SR* = expected_max_sharpe(n_trials,
    sharpe_variance)``. All Sharpe ratios are **per period**; ``sharpe_variance`` is the
    variance of the per-period Sharpe ratios across the trials; ``kurtosis`` is raw.
    With ``n_trials=1`` the DSR equals the PSR against zero.
    """
    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    return probabilistic_sharpe_ratio(sharpe, n_obs, skew, kurtosis, sr0)


def dsr_from_returns(returns, trial_sharpes=None, *, n_trials=None, sharpe_variance=None) -> float:
    """DSR (Bailey & Lopez de Prado 2014) of the selected strategy's per-period returns.

    Either pass ``trial_sharpes``, the per-period Sharpe ratios of every trial tried
    (the selected one included): ``n_trials`` defaults to their count and the variance is
    their sample variance (ddof=1). ``n_trials`` may still be given to state the
    effective number of independent trials. Or pass ``n_trials`` and ``sharpe_variance``
    (per-period variance; not needed when ``n_trials=1``).
    """
    r = _returns_1d(returns)
    if trial_sharpes is not None:
        if sharpe_variance is not None:
            raise ValueError("pass either trial_sharpes or sharpe_variance, not both")
        ts = _finite_array("trial_sharpes", trial_sharpes)
        if ts.ndim != 1 or ts.size < 1:
            raise ValueError(f"trial_sharpes must be a non-empty 1-D array, got shape {ts.shape}")
        n = ts.size if n_trials is None else _integer("n_trials", n_trials, 1)
        if n > 1 and ts.size < 2:
            raise ValueError("trial_sharpes needs at least 2 values to estimate their variance")
        variance = float(np.var(ts, ddof=1)) if ts.size > 1 else 0.0
    else:
        if n_trials is None:
            raise ValueError("pass trial_sharpes, or n_trials (and sharpe_variance when n_trials > 1)")
        n = _integer("n_trials", n_trials, 1)
        if sharpe_variance is None and n > 1:
            raise ValueError("sharpe_variance is required when n_trials > 1 (or pass trial_sharpes)")
        variance = 0.0 if sharpe_variance is None else sharpe_variance
    sr, g3, g4 = _moments(r)
    return deflated_sharpe_ratio(sr, r.size, g3, g4, n, variance)


def minimum_backtest_length(n_trials: int, target_sharpe_annualized: float = 1.0) -> float:
    """Minimum backtest length in **years**, Bailey, Borwein, Lopez de Prado & Zhu (2014),
    "Pseudo-Mathematics and Financial Charlatanism", Notices of the AMS 61(5)::

        MinBTL = (((1 - gamma) Z^-1[1 - 1/N] + gamma Z^-1[1 - 1/(N e)]) / target)**2

    Below this many years of data, the best of ``n_trials`` independent strategies with
    zero true Sharpe ratio is expected to show an **annualized** in-sample Sharpe ratio
    of ``target_sharpe_annualized``. ``n_trials=1`` gives 0 (no selection bias).
    """
    target = _real("target_sharpe_annualized", target_sharpe_annualized)
    if target <= 0:
        raise ValueError(f"target_sharpe_annualized must be > 0 (e.g. 1.0), got {target}")
    return (expected_max_sharpe(n_trials, 1.0) / target) ** 2



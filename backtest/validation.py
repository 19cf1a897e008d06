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
* :func:`minimum_backtest_length` (Bailey, Borwein, Lopez de Prado & Zhu 2014) is the
  number of years of data below which ``n_trials`` trials can be expected to produce an
  annualized Sharpe ratio of ``target_sharpe_annualized`` by luck alone.

Units: every Sharpe ratio here is **per period** (per bar, not annualized) unless its
name ends in ``_annualized``. Kurtosis is **raw** kurtosis (3 for a normal distribution),
not excess kurtosis. Pure numpy/scipy: nothing here imports Ray, MLflow or our packages.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Literal

import numpy as np
from scipy.stats import norm

__all__ = [
    "EULER_MASCHERONI",
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

EULER_MASCHERONI = 0.5772156649015329
MIN_WINDOW_BARS = 2  # a Sharpe ratio needs at least two observations

# --------------------------------------------------------------------------- checks


def _integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got the bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {number}")
    return number


def _real(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a finite number, got the bool {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}")
    return number


def _fraction(name: str, value: object) -> float:
    number = _real(name, value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1 (e.g. 0.2), got {number}")
    return number


def _finite_array(name: str, value: object) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}") from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite: drop or fill NaN/inf values first")
    return array


def _returns_1d(returns: object) -> np.ndarray:
    r = _finite_array("returns", returns)
    if r.ndim != 1:
        raise ValueError(f"returns must be a 1-D array of per-period returns, got shape {r.shape}")
    if r.size < 2:
        raise ValueError(f"returns needs at least 2 observations, got {r.size}")
    if np.ptp(r) == 0.0:
        raise ValueError(
            f"returns are constant (every value is {r[0]!r}): the Sharpe ratio is undefined; "
            "a strategy that never trades gives no evidence to judge"
        )
    return r


def _moments(r: np.ndarray) -> tuple[float, float, float]:
    """Per-period Sharpe (mean / sample std, ddof=1), skewness and raw kurtosis (population)."""
    mean = r.mean()
    d = r - mean
    m2 = np.mean(d * d)
    sharpe = mean / math.sqrt(np.sum(d * d) / (r.size - 1))
    skew = np.mean(d**3) / m2**1.5
    kurtosis = np.mean(d**4) / m2**2
    return float(sharpe), float(skew), float(kurtosis)


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

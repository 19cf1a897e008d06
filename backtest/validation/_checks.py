"""Argument checks and return moments shared by the validation modules."""
from __future__ import annotations

import math
import operator

import numpy as np

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



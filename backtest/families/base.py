"""What every genome family shares: the error type, gene checks and the family interface.

A family is one kind of strategy (``rules``, ``asmbtr``, ...). Its module in this package
subclasses :class:`GenomeFamily`; ``backtest/families/__init__.py`` registers one instance
of each. The backtest reaches a family only through this interface, so the population
path (``engine.Evaluator``), ``positions()`` and ``signals()`` work for every registered
family without naming it. Genetic operators are search code: they live in
``evolution/families/``, keyed by the same family names.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from backtest.kernels import N_METRICS

#: the top-level key naming a genome's family; absent means DEFAULT_FAMILY
FAMILY_KEY = "family"
DEFAULT_FAMILY = "rules"

#: which side a genome trades (every family uses the same three words)
GENOME_DIRECTIONS = ("long", "short", "both")
DIRECTION_CODES = {"long": 0, "short": 1, "both": 2}  # = vectorbt Direction enum values (kernels.LONG, ...)
#: the simulate() direction that reproduces a genome direction with entry/exit signals
SIMULATE_DIRECTION_OF = {"long": "longonly", "short": "shortonly", "both": "both"}

STOP_LOSS_BOUNDS = (0.005, 0.5)
TAKE_PROFIT_BOUNDS = (0.005, 1.0)


class GenomeError(ValueError):
    """A genome that does not follow the schema. The message names the path and the fix."""


def did_you_mean(word: Any, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_keys(obj: Any, allowed, required, path: str) -> None:
    if type(obj) is not dict and not isinstance(obj, Mapping):  # type() first: ABC checks are slow
        raise GenomeError(f"{path}: expected an object (dict), got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            raise GenomeError(
                f"{path}: unknown key {key!r}; allowed keys are {sorted(allowed)}.{did_you_mean(key, allowed)}"
            )
    for key in required:
        if key not in obj:
            raise GenomeError(f"{path}: missing key {key!r}")


def number(value: Any, path: str) -> float:
    if type(value) is float:
        if not math.isfinite(value):
            raise GenomeError(f"{path}: expected a finite number, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GenomeError(f"{path}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise GenomeError(f"{path}: expected a finite number, got {value!r}")
    return value


def integer(value: Any, path: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
        isinstance(value, (float, np.floating)) and float(value).is_integer()
    ):
        raise GenomeError(f"{path}: expected an integer, got {value!r}")
    return int(value)


def bounded(value: Any, low: float, high: float, path: str, *, kind: type = float):
    """A number (or integer) inside [low, high], else a GenomeError that says the range."""
    value = integer(value, path) if kind is int else number(value, path)
    if not (low <= value <= high):
        raise GenomeError(f"{path}: {value!r} is out of bounds; pass a value in [{low}, {high}]")
    return value


def choice(value: Any, options: Sequence[str], path: str) -> str:
    if value not in options:
        raise GenomeError(f"{path}: expected one of {list(options)}, got {value!r}.{did_you_mean(value, options)}")
    return value


def optional_fraction(value: Any, bounds: tuple[float, float], path: str) -> float | None:
    if value is None:
        return None
    value = number(value, path)
    if not (bounds[0] <= value <= bounds[1]):
        raise GenomeError(f"{path}: {value!r} is out of bounds; pass null or a fraction in [{bounds[0]}, {bounds[1]}]")
    return value


def stop_arrays(genomes: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
    """(stop_loss, take_profit) float64 (N,) of normalized genomes, NaN = none."""
    sl = np.array([np.nan if g["stop_loss"] is None else g["stop_loss"] for g in genomes], dtype=np.float64)
    tp = np.array([np.nan if g["take_profit"] is None else g["take_profit"] for g in genomes], dtype=np.float64)
    return sl, tp


class GenomeFamily:
    """The interface of one genome family (subclass it; register an instance in ``__init__.py``).

    ``workspace`` (an ``engine.Evaluator``) lends buffers shared across calls:
    ``workspace.indicator_table(indicators, market)`` and ``workspace.market_summary(market)``.
    ``market`` is an ``engine.MarketArrays``.
    """

    name: str = ""
    description: str = ""

    def normalize(self, genome: Mapping) -> dict:
        """Validate a genome of this family (its ``family`` key already checked) and return its
        normalized form: the canonical encoding its ``strategy_id`` hashes. The default family
        leaves the ``family`` key out, every other family writes it."""
        raise NotImplementedError

    def warmup_bars(self, genome: Mapping) -> int:
        """Bars a normalized genome needs before it can hold a position."""
        raise NotImplementedError

    def resources(self, genome: Mapping) -> set[str]:
        """Keys of the (T,) float64 rows the genome needs in the workspace's shared table (the
        chunking budget counts them); none by default."""
        return set()

    def run(self, genomes: Sequence[Mapping], workspace, market, folds: np.ndarray, fees: float, slippage: float,
            init_cash: float, periods_per_year: float, bucket_bars: int, bucket_origin: int, n_buckets: int,
            positions_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score a chunk of normalized genomes: (metrics (N, F, M), buckets (N, B) growth factors).

        With ``positions_out`` (int8 (T,)) and no folds, the first genome is simulated over
        every bar and its target positions are written there."""
        raise NotImplementedError

    @staticmethod
    def outputs(n: int, folds: np.ndarray, bucket_bars: int, n_buckets: int, positions_out: np.ndarray | None):
        """What a run fills: metrics (N, F, M) NaN, buckets (N, B) ones (empty without
        buckets), the positions array (empty without one)."""
        metrics = np.full((n, folds.shape[0], N_METRICS), np.nan)
        buckets = np.ones((n, n_buckets)) if bucket_bars > 0 else np.ones((0, 0))
        positions = positions_out if positions_out is not None else np.empty(0, dtype=np.int8)
        return metrics, buckets, positions

    def signals(self, genome: Mapping, workspace, market) -> tuple[np.ndarray, np.ndarray]:
        """Entry and exit signals (bool (T,) each) that ``simulate()`` turns into the genome's
        positions with direction ``SIMULATE_DIRECTION_OF[genome["direction"]]`` and its stops."""
        raise NotImplementedError

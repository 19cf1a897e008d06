"""What every family's genetic operators share: retries to a valid genome, gene perturbation.

Uniform operator families, as in DEAP's ``tools``: a crossover takes two genomes of one
family and returns two, a mutation takes one and returns one. Every operator takes an
explicit ``numpy.random.Generator`` (no global ``random``), never mutates its inputs, and
returns normalized genomes: results pass through ``normalize_genome``; a result that breaks
the schema is redrawn a few times (:data:`ATTEMPTS`) and otherwise replaced by an unchanged
copy of the parent.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from backtest.strategy import GenomeError, normalize_genome
from evolution.operators import CROSSOVERS, MUTATIONS

ATTEMPTS = 8

Genome = dict


@dataclass(frozen=True)
class FamilyOperators:
    """A family's genetic operators, under the search's operator names (evolution/operators.py).

    ``init(rng, max_conditions)`` draws a random normalized genome; ``crossovers`` and
    ``mutations`` map every name of ``operators.CROSSOVERS`` / ``operators.MUTATIONS`` to the
    family's implementation: ``crossover(a, b, rng, **params) -> (x, y)``,
    ``mutation(genome, rng, **params) -> child`` (``sigma`` and ``indpb`` for mutate_gaussian).
    """

    family: str
    init: Callable[..., Genome]
    crossovers: dict[str, Callable[..., tuple[Genome, Genome]]]
    mutations: dict[str, Callable[..., Genome]]

    @classmethod
    def named(cls, family: str, init: Callable[..., Genome], crossovers: tuple, mutations: tuple) -> FamilyOperators:
        """Operators given in the order of ``operators.CROSSOVERS`` and ``operators.MUTATIONS``."""
        if len(crossovers) != len(CROSSOVERS) or len(mutations) != len(MUTATIONS):
            raise TypeError(f"{family}: give one function per name of {CROSSOVERS} and of {MUTATIONS}")
        return cls(family, init, dict(zip(CROSSOVERS, crossovers)), dict(zip(MUTATIONS, mutations)))


def valid(candidate: Any) -> dict | None:
    try:
        return normalize_genome(candidate)
    except GenomeError:
        return None


def retry(fn: Callable[[], Any], fallback: Mapping) -> dict:
    for _ in range(ATTEMPTS):
        out = valid(fn())
        if out is not None:
            return out
    return normalize_genome(fallback)


def retry_pair(fn: Callable[[], tuple[Any, Any]], a: Mapping, b: Mapping) -> tuple[Genome, Genome]:
    for _ in range(ATTEMPTS):
        x, y = fn()
        vx, vy = valid(x), valid(y)
        if vx is not None and vy is not None:
            return vx, vy
    return normalize_genome(a), normalize_genome(b)


def perturb(value: float, low: float, high: float, is_int: bool, sigma: float, rng, log_scale: bool | None = None
            ) -> float | int:
    """Gaussian noise of ``sigma`` times the gene's range, clipped to [low, high]. Integer
    genes with low >= 1 (windows, depths: scales) move in log space; an integer gene that
    did not move steps by one."""
    if log_scale is None:
        log_scale = is_int and low >= 1
    if log_scale:  # scales: 2 -> 3 and 200 -> 300 alike
        new = float(np.exp(np.log(float(value)) + rng.normal(0.0, sigma * np.log(high / low))))
    else:
        new = float(value) + float(rng.normal(0.0, sigma * (high - low)))
    new = min(max(new, low), high)
    if is_int:
        new_int = int(round(new))
        if new_int == int(value):
            new_int = int(value) + (1 if rng.random() < 0.5 else -1)
        return int(min(max(new_int, low), high))
    return round(new, 6)


def other(options: tuple, current: Any, rng) -> Any:
    """A uniformly drawn option other than ``current``."""
    rest = [o for o in options if o != current]
    return rest[int(rng.integers(len(rest)))]

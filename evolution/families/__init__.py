"""Genetic operators of every genome family, keyed by the family names of ``backtest/families/``.

One module per family (``rules.py``, ``asmbtr.py``), each exporting a ``FamilyOperators``
with every operator name of ``evolution/operators.py``. The search calls the functions
below, which dispatch on the genome's family. Uniform operator families, as in DEAP's
``tools``: a crossover takes two genomes and returns two, a mutation takes one and returns
one; both take an explicit ``numpy.random.Generator`` and return normalized genomes.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from backtest.families import DEFAULT_FAMILY, FAMILY_NAMES, family_name, get_family
from evolution.families import asmbtr, rules
from evolution.families.base import FamilyOperators

FAMILY_OPERATORS: dict[str, FamilyOperators] = {ops.family: ops for ops in (rules.OPERATORS, asmbtr.OPERATORS)}

if set(FAMILY_OPERATORS) != set(FAMILY_NAMES):  # a family registered in backtest/ without operators, or the reverse
    raise ImportError(
        f"genetic operators are registered for {sorted(FAMILY_OPERATORS)} but backtest/families/ registers "
        f"{sorted(FAMILY_NAMES)}: add the missing family to evolution/families/__init__.py"
    )


def operators_for(family: str) -> FamilyOperators:
    """The operators of a registered family (GenomeError with "did you mean" for another name)."""
    get_family(family, "family")
    return FAMILY_OPERATORS[family]


def init_genome(rng: np.random.Generator, max_conditions: int = 3, family: str = DEFAULT_FAMILY) -> dict:
    """A random normalized genome of ``family`` (``max_conditions``: per block, for rules)."""
    return operators_for(family).init(rng, max_conditions)


def crossover(name: str, a: Mapping, b: Mapping, rng: np.random.Generator, **params) -> tuple[dict, dict]:
    """Two children of two parents of the same family by the crossover called ``name``."""
    if family_name(a) != family_name(b):
        raise ValueError(
            f"{name}: parents of families {family_name(a)!r} and {family_name(b)!r}; crossover mates one family only"
        )
    return FAMILY_OPERATORS[family_name(a)].crossovers[name](a, b, rng, **params)


def mutate(name: str, genome: Mapping, rng: np.random.Generator, **params) -> dict:
    """One child of ``genome`` by the mutation called ``name`` (its family's implementation)."""
    return FAMILY_OPERATORS[family_name(genome)].mutations[name](genome, rng, **params)


__all__ = ["FAMILY_OPERATORS", "FamilyOperators", "crossover", "init_genome", "mutate", "operators_for"]

"""The search's genetic operators: their names (defined here once) and dispatch by family.

Every name below is what the trial log's ``operator`` column, the lineage tags and the
config's ``operators.crossover_weights`` / ``operators.mutation_weights`` say. Each genome
family implements every crossover and mutation name in ``evolution/families/<family>.py``
(uniform operator families, as in DEAP's ``tools``: a crossover takes two genomes and
returns two, a mutation takes one and returns one, both take an explicit
``numpy.random.Generator`` and return normalized genomes). A crossover mates two genomes
of one family only: :func:`crossover` refuses parents of different families.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from backtest.families import DEFAULT_FAMILY, family_name
from evolution.families import operators_for, operators_of

INIT = "init"  # a random genome of generation 0
REPRODUCTION = "reproduction"  # an unchanged copy of a parent
MIGRATION = "migration"  # an individual received from the previous island on the ring
CROSSOVERS = ("crossover_uniform", "crossover_swap")
MUTATIONS = ("mutate_gaussian", "mutate_categorical", "mutate_add_condition", "mutate_drop_condition")
OPERATOR_NAMES = (INIT, *CROSSOVERS, *MUTATIONS, REPRODUCTION, MIGRATION)


def init_genome(rng: np.random.Generator, max_conditions: int = 3, family: str = DEFAULT_FAMILY) -> dict:
    """A random normalized genome of ``family`` (``max_conditions``: per block, for rules)."""
    return operators_for(family).init(rng, max_conditions)


def crossover(name: str, a: Mapping, b: Mapping, rng: np.random.Generator, **params) -> tuple[dict, dict]:
    """Two children of two parents of the same family by the crossover called ``name``."""
    if family_name(a) != family_name(b):
        raise ValueError(
            f"{name}: parents of families {family_name(a)!r} and {family_name(b)!r}; crossover mates one family only"
        )
    return operators_of(a).crossovers[name](a, b, rng, **params)


def mutate(name: str, genome: Mapping, rng: np.random.Generator, **params) -> dict:
    """One child of ``genome`` by the mutation called ``name`` (its family's implementation)."""
    return operators_of(genome).mutations[name](genome, rng, **params)

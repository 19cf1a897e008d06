"""Genetic operators of every genome family, keyed by the family names of ``backtest/families/``.

One module per family (``rules.py``, ``asmbtr.py``), each exporting a ``FamilyOperators``
with every operator name of ``evolution/operators.py``; the search dispatches on the
genome's family through :func:`operators_for`.
"""
from __future__ import annotations

from backtest.families import FAMILY_NAMES, family_name, get_family
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


def operators_of(genome) -> FamilyOperators:
    return FAMILY_OPERATORS[family_name(genome)]


__all__ = ["FAMILY_OPERATORS", "FamilyOperators", "operators_for", "operators_of"]

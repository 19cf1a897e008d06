"""Genome families, registered in one place.

A genome names its family with ``"family": NAME``; without the key it is a ``rules``
genome, so every genome written before families existed keeps its meaning and its
``strategy_id``. Each family is one module here (see ``base.GenomeFamily`` for what it
provides: schema and validation, canonical encoding, kernels, warm-up); its genetic
operators are registered under the same name in ``evolution/families/``.

To add a family: write ``backtest/families/<name>.py`` with a ``GenomeFamily`` subclass,
add its instance to :data:`FAMILIES` below, and register its operators in
``evolution/families/__init__.py``.
"""
from __future__ import annotations

from collections.abc import Mapping

from backtest.families import asmbtr, rules
from backtest.families.base import DEFAULT_FAMILY, FAMILY_KEY, GenomeError, GenomeFamily, did_you_mean

FAMILIES: dict[str, GenomeFamily] = {family.name: family for family in (rules.FAMILY, asmbtr.FAMILY)}
FAMILY_NAMES = tuple(FAMILIES)


def get_family(name: str, path: str = "genome.family") -> GenomeFamily:
    """The registered family called ``name``; a GenomeError that lists them (and a close
    match) otherwise."""
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise GenomeError(
            f"{path}: unknown family {name!r}; choose one of {list(FAMILY_NAMES)}.{did_you_mean(name, FAMILY_NAMES)}"
        )
    return family


def family_name(genome: Mapping) -> str:
    """The family a genome (normalized or not) says it belongs to."""
    return genome.get(FAMILY_KEY, DEFAULT_FAMILY)


def family_of(genome: Mapping) -> GenomeFamily:
    return get_family(family_name(genome))


__all__ = ["DEFAULT_FAMILY", "FAMILIES", "FAMILY_KEY", "FAMILY_NAMES", "GenomeFamily", "family_name", "family_of",
           "get_family"]

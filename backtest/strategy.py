"""The genome contract: plain JSON-able data, validated by its family, identified by a hash.

A genome is a dict. Its ``family`` key names the kind of strategy (default ``rules``; the
registered families and their schemas are in ``backtest/families/``)::

    {"entry": {...}, "exit": {...}, "direction": "long", ...}            # rules (see families/rules.py)
    {"family": "asmbtr", "depth": 3, "decay": 0.98, "threshold": 0.6, ...}  # see families/asmbtr.py

:func:`normalize_genome` validates a genome with its family's schema (errors name the path
and the fix) and returns the normalized form. ``strategy_id`` is a hash of the canonical
JSON of that form (sorted keys; the family orders what does not matter, e.g. conditions),
so the same strategy found twice has the same id. The default family is left out of the
canonical text, so a rules genome has the id it had before families existed.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from backtest.families import family_of, get_family
from backtest.families.base import DEFAULT_FAMILY, FAMILY_KEY, GenomeError, check_keys

__all__ = [
    "GenomeError",
    "canonical_json",
    "canonical_text_and_id",
    "copy_genome",
    "normalize_genome",
    "normalized_strategy_id",
    "strategy_id",
    "warmup_bars",
]


def normalize_genome(genome: Any) -> dict:
    """Validate a genome (a dict or its JSON text) with its family's schema and return its
    normalized form (a new dict). Raises GenomeError naming the path and the fix."""
    if isinstance(genome, str):
        try:
            genome = json.loads(genome)
        except json.JSONDecodeError as exc:
            raise GenomeError(f"genome: not valid JSON ({exc})") from None
    if type(genome) is not dict and not isinstance(genome, Mapping):
        check_keys(genome, (), (), "genome")  # raises: not an object
    return get_family(genome.get(FAMILY_KEY, DEFAULT_FAMILY)).normalize(genome)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_json(genome: Any, *, normalized: bool = False) -> str:
    """Canonical JSON text of a genome (normalized, sorted keys).

    ``normalized=True`` skips validation for a genome that normalize_genome returned."""
    return _canonical(genome if normalized else normalize_genome(genome))


def strategy_id(genome: Any) -> str:
    """Content hash of the canonical genome: the strategy's identity."""
    return hashlib.sha256(canonical_json(genome).encode()).hexdigest()[:16]


def normalized_strategy_id(normalized: Mapping) -> str:
    """strategy_id of a genome already returned by normalize_genome (skips re-validation)."""
    return canonical_text_and_id(normalized)[1]


def canonical_text_and_id(normalized: Mapping) -> tuple[str, str]:
    """(canonical JSON, strategy_id) of a genome already returned by normalize_genome: one encoding for both."""
    text = _canonical(normalized)
    return text, hashlib.sha256(text.encode()).hexdigest()[:16]


def warmup_bars(genome: Mapping) -> int:
    """Bars a normalized genome needs before it can hold a position (its family says how many)."""
    return family_of(genome).warmup_bars(genome)


def copy_genome(genome: Mapping) -> dict:
    return copy.deepcopy(dict(genome))

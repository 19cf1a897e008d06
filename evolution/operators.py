"""Genetic operators on plain-data genomes (the dicts of ``backtest/strategy.py``).

Uniform families, as in DEAP's ``tools``: a crossover takes two genomes and returns two,
a mutation takes one and returns one. Every operator takes an explicit
``numpy.random.Generator`` (no global ``random``), never mutates its inputs, and returns
normalized genomes: results pass through ``normalize_genome``; a result that breaks the
schema (e.g. ``sma(20) > sma(20)`` or a MACD with fast >= slow) is redrawn a few times
and otherwise replaced by an unchanged copy of the parent.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from backtest.strategy import (
    DIRECTIONS,
    INDICATORS,
    LOGICS,
    MAX_CONDITIONS,
    OPERATORS,
    STOP_LOSS_BOUNDS,
    TAKE_PROFIT_BOUNDS,
    GenomeError,
    normalize_genome,
    random_condition,
    random_genome,
    random_indicator,
)

ATTEMPTS = 8
BLOCKS = ("entry", "exit")
MIN_CONDITIONS = {"entry": 1, "exit": 0}

Genome = dict


def _copy(obj: Any) -> Any:
    """A deep copy of plain genome data (dicts, lists, numbers, strings, None), several times
    cheaper than copy.deepcopy; a normalized genome's known shape is copied without recursion."""
    try:
        return {**obj, "entry": _copy_block(obj["entry"]), "exit": _copy_block(obj["exit"])}
    except (KeyError, TypeError, AttributeError):
        return _copy_any(obj)


def _copy_block(block: dict) -> dict:
    return {**block, "conditions": [{"lhs": dict(c["lhs"]), "op": c["op"],
                                     "rhs": dict(c["rhs"]) if type(c["rhs"]) is dict else _copy_any(c["rhs"])}
                                    if len(c) == 3 else _copy_any(c) for c in block["conditions"]]}


def _copy_any(obj: Any) -> Any:
    kind = type(obj)
    if kind is dict:
        return {key: _copy_any(value) for key, value in obj.items()}
    if kind is list or kind is tuple:
        return [_copy_any(value) for value in obj]
    return obj


def _valid(candidate: Any) -> dict | None:
    try:
        return normalize_genome(candidate)
    except GenomeError:
        return None


def _retry(fn: Callable[[], Any], fallback: Mapping) -> dict:
    for _ in range(ATTEMPTS):
        out = _valid(fn())
        if out is not None:
            return out
    return normalize_genome(fallback)


# ---------------------------------------------------------------- initialization


def init_genome(rng: np.random.Generator, max_conditions: int = MAX_CONDITIONS) -> Genome:
    """A random genome with every gene inside its bounds."""
    return random_genome(rng, max_conditions=max_conditions)


# ---------------------------------------------------------------- numeric genes


def _numeric_slots(genome: Mapping) -> list[tuple[tuple, float, float, bool]]:
    """(path, low, high, is_int) of every numeric gene present in a genome."""
    slots = []
    for block in BLOCKS:
        for c, cond in enumerate(genome[block]["conditions"]):
            for side in ("lhs", "rhs"):
                value = cond[side]
                if isinstance(value, Mapping):
                    for gene in INDICATORS[value["name"]].genes:
                        slots.append(((block, "conditions", c, side, gene.name), gene.low, gene.high, gene.kind is int))
                else:
                    low, high = INDICATORS[cond["lhs"]["name"]].threshold
                    slots.append(((block, "conditions", c, side), low, high, False))
    if genome["stop_loss"] is not None:
        slots.append((("stop_loss",), *STOP_LOSS_BOUNDS, False))
    if genome["take_profit"] is not None:
        slots.append((("take_profit",), *TAKE_PROFIT_BOUNDS, False))
    return slots


def _get(obj: Any, path: tuple) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def _set(obj: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


def _perturb(value: float, low: float, high: float, is_int: bool, sigma: float, rng) -> float | int:
    if is_int and low >= 1:  # windows are scales: perturb them in log space (2 -> 3 and 200 -> 300 alike)
        new = float(np.exp(np.log(float(value)) + rng.normal(0.0, sigma * np.log(high / low))))
    else:
        new = float(value) + float(rng.normal(0.0, sigma * (high - low)))
    new = min(max(new, low), high)
    if is_int:
        new_int = int(round(new))
        if new_int == int(value):  # an integer gene that did not move: step one
            new_int = int(value) + (1 if rng.random() < 0.5 else -1)
        return int(min(max(new_int, low), high))
    return round(new, 6)


def mutate_gaussian(genome: Mapping, rng: np.random.Generator, sigma: float = 0.1, indpb: float = 0.3) -> Genome:
    """Gaussian noise on numeric genes, clipped to bounds: sigma is a fraction of the gene's
    range, of its log range for integer window genes (windows are scales)."""

    def attempt() -> dict:
        child = _copy(dict(genome))
        slots = _numeric_slots(child)
        if not slots:
            return child
        chosen = [s for s in slots if rng.random() < indpb]
        if not chosen:
            chosen = [slots[int(rng.integers(len(slots)))]]
        for path, low, high, is_int in chosen:
            _set(child, path, _perturb(_get(child, path), low, high, is_int, sigma, rng))
        return child

    return _retry(attempt, genome)


# ---------------------------------------------------------------- categorical genes


def _redraw_rhs(cond: dict, rng) -> None:
    spec = INDICATORS[cond["lhs"]["name"]]
    if spec.scale == "price":
        cond["rhs"] = random_indicator(rng, scale="price")
    elif isinstance(cond["rhs"], Mapping):
        cond["rhs"] = random_indicator(rng, name=cond["lhs"]["name"])
    else:
        low, high = spec.threshold
        cond["rhs"] = round(float(rng.uniform(low, high)), 4)


def mutate_categorical(genome: Mapping, rng: np.random.Generator) -> Genome:
    """Redraw one categorical gene: an operator, a block's logic, an indicator, the
    direction, or switch a stop-loss/take-profit on or off."""

    def attempt() -> dict:
        child = _copy(dict(genome))
        conds = [(b, c) for b in BLOCKS for c in range(len(child[b]["conditions"]))]
        kinds = ["direction", "stop_loss", "take_profit", "logic"] + (["op", "indicator"] if conds else [])
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "direction":
            child["direction"] = _other(DIRECTIONS, child["direction"], rng)
        elif kind == "stop_loss":
            child["stop_loss"] = None if child["stop_loss"] is not None else round(float(rng.uniform(*STOP_LOSS_BOUNDS)), 4)
        elif kind == "take_profit":
            child["take_profit"] = (
                None if child["take_profit"] is not None else round(float(rng.uniform(*TAKE_PROFIT_BOUNDS)), 4)
            )
        elif kind == "logic":
            block = BLOCKS[int(rng.integers(2))]
            child[block]["logic"] = _other(LOGICS, child[block]["logic"], rng)
        else:
            block, c = conds[int(rng.integers(len(conds)))]
            cond = child[block]["conditions"][c]
            if kind == "op":
                cond["op"] = _other(OPERATORS, cond["op"], rng)
            else:  # a new indicator of the same scale on one side, keeping the condition valid
                side = "lhs" if not isinstance(cond["rhs"], Mapping) or rng.random() < 0.5 else "rhs"
                scale = INDICATORS[cond["lhs"]["name"]].scale
                if side == "lhs":
                    cond["lhs"] = random_indicator(rng, scale=scale)
                    if scale == "oscillator":  # thresholds and partners depend on the oscillator
                        _redraw_rhs(cond, rng)
                else:
                    cond["rhs"] = (
                        random_indicator(rng, scale="price") if scale == "price"
                        else random_indicator(rng, name=cond["lhs"]["name"])
                    )
        return child

    return _retry(attempt, genome)


def _other(options: tuple, current: Any, rng) -> Any:
    rest = [o for o in options if o != current]
    return rest[int(rng.integers(len(rest)))]


# ---------------------------------------------------------------- structure


def mutate_add_condition(genome: Mapping, rng: np.random.Generator) -> Genome:
    """Add a random condition to a block that has room (else a gaussian mutation)."""
    open_blocks = [b for b in BLOCKS if len(genome[b]["conditions"]) < MAX_CONDITIONS]
    if not open_blocks:
        return mutate_gaussian(genome, rng)

    def attempt() -> dict:
        child = _copy(dict(genome))
        block = open_blocks[int(rng.integers(len(open_blocks)))]
        child[block]["conditions"].append(random_condition(rng))
        return child

    return _retry(attempt, genome)


def mutate_drop_condition(genome: Mapping, rng: np.random.Generator) -> Genome:
    """Drop one condition from a block that keeps its minimum (else a gaussian mutation)."""
    droppable = [b for b in BLOCKS if len(genome[b]["conditions"]) > MIN_CONDITIONS[b]]
    if not droppable:
        return mutate_gaussian(genome, rng)
    child = _copy(dict(genome))
    block = droppable[int(rng.integers(len(droppable)))]
    conds = child[block]["conditions"]
    del conds[int(rng.integers(len(conds)))]
    return _retry(lambda: child, genome)


# ---------------------------------------------------------------- crossover


def _same_shape(a: Mapping, b: Mapping) -> bool:
    """Two conditions whose genes line up one to one (same indicators, same rhs kind)."""
    if a["lhs"]["name"] != b["lhs"]["name"]:
        return False
    ra, rb = a["rhs"], b["rhs"]
    if isinstance(ra, Mapping) != isinstance(rb, Mapping):
        return False
    return not isinstance(ra, Mapping) or ra["name"] == rb["name"]


def crossover_uniform(a: Mapping, b: Mapping, rng: np.random.Generator, indpb: float = 0.5) -> tuple[Genome, Genome]:
    """Uniform crossover over genes: each top-level gene, each block's logic and each
    aligned condition's genes are swapped with probability ``indpb``; aligned conditions
    of different shape are swapped whole."""

    def attempt() -> tuple[dict, dict]:
        x, y = _copy(dict(a)), _copy(dict(b))
        for key in ("direction", "stop_loss", "take_profit"):
            if rng.random() < indpb:
                x[key], y[key] = y[key], x[key]
        for block in BLOCKS:
            if rng.random() < indpb:
                x[block]["logic"], y[block]["logic"] = y[block]["logic"], x[block]["logic"]
            cx, cy = x[block]["conditions"], y[block]["conditions"]
            for i in range(min(len(cx), len(cy))):
                if _same_shape(cx[i], cy[i]):
                    if rng.random() < indpb:
                        cx[i]["op"], cy[i]["op"] = cy[i]["op"], cx[i]["op"]
                    for side in ("lhs", "rhs"):
                        if isinstance(cx[i][side], Mapping):
                            for gene in INDICATORS[cx[i][side]["name"]].genes:
                                if rng.random() < indpb:
                                    cx[i][side][gene.name], cy[i][side][gene.name] = (
                                        cy[i][side][gene.name], cx[i][side][gene.name])
                        elif rng.random() < indpb:
                            cx[i][side], cy[i][side] = cy[i][side], cx[i][side]
                elif rng.random() < indpb:
                    cx[i], cy[i] = cy[i], cx[i]
        return x, y

    return _retry_pair(attempt, a, b)


def crossover_swap(a: Mapping, b: Mapping, rng: np.random.Generator) -> tuple[Genome, Genome]:
    """Swap one whole condition between the parents (same block), or whole exit blocks
    when one of them has no exit conditions."""

    def attempt() -> tuple[dict, dict]:
        x, y = _copy(dict(a)), _copy(dict(b))
        block = BLOCKS[int(rng.integers(2))]
        cx, cy = x[block]["conditions"], y[block]["conditions"]
        if not cx or not cy:
            x[block], y[block] = y[block], x[block]
            return x, y
        i, j = int(rng.integers(len(cx))), int(rng.integers(len(cy)))
        cx[i], cy[j] = cy[j], cx[i]
        return x, y

    return _retry_pair(attempt, a, b)


def _retry_pair(fn, a: Mapping, b: Mapping) -> tuple[Genome, Genome]:
    for _ in range(ATTEMPTS):
        x, y = fn()
        vx, vy = _valid(x), _valid(y)
        if vx is not None and vy is not None:
            return vx, vy
    return normalize_genome(a), normalize_genome(b)


CROSSOVER_FUNCTIONS = {"crossover_uniform": crossover_uniform, "crossover_swap": crossover_swap}
MUTATION_FUNCTIONS = {
    "mutate_gaussian": mutate_gaussian,
    "mutate_categorical": mutate_categorical,
    "mutate_add_condition": mutate_add_condition,
    "mutate_drop_condition": mutate_drop_condition,
}

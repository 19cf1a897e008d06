"""Genetic operators of the ``rules`` family (genomes of ``backtest/families/rules.py``).

Random genomes, gaussian and categorical mutations, adding and dropping conditions,
uniform and swap crossovers; shared conventions in ``evolution/families/base.py``. A
schema-breaking result (e.g. ``sma(20) > sma(20)`` or a MACD with fast >= slow) is redrawn.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from backtest.families.base import GENOME_DIRECTIONS, STOP_LOSS_BOUNDS, TAKE_PROFIT_BOUNDS
from backtest.families.rules import COMPARISONS, INDICATORS, LOGICS, MAX_CONDITIONS, NAME, normalize
from evolution.families.base import FamilyOperators, Genome, other, perturb, retry, retry_pair

BLOCKS = ("entry", "exit")
MIN_CONDITIONS = {"entry": 1, "exit": 0}


# ---------------------------------------------------------------- random genomes


def random_indicator(rng: np.random.Generator, name: str | None = None, scale: str | None = None) -> dict:
    """A random indicator within gene bounds."""
    if name is None:
        pool = [n for n, s in INDICATORS.items() if scale is None or s.scale == scale]
        name = pool[int(rng.integers(len(pool)))]
    spec = INDICATORS[name]
    out: dict[str, Any] = {"name": name}
    for gene in spec.genes:
        if gene.kind is int:
            out[gene.name] = int(rng.integers(int(gene.low), int(gene.high) + 1))
        else:
            out[gene.name] = round(float(rng.uniform(gene.low, gene.high)), 4)
    if name == "macd" and out["fast"] >= out["slow"]:
        out["fast"], out["slow"] = min(out["fast"], out["slow"] - 1), max(out["slow"], out["fast"] + 1)
        out["fast"] = max(2, min(out["fast"], out["slow"] - 1))
    return out


def random_condition(rng: np.random.Generator) -> dict:
    lhs = random_indicator(rng)
    spec = INDICATORS[lhs["name"]]
    op = COMPARISONS[int(rng.integers(len(COMPARISONS)))]
    if spec.scale == "price":
        rhs: Any = random_indicator(rng, scale="price")
        while rhs == lhs:
            rhs = random_indicator(rng, scale="price")
    elif spec.genes and rng.random() < 0.2:  # a gene-less oscillator (hour) has no other of its name
        rhs = random_indicator(rng, name=lhs["name"])
        while rhs == lhs:
            rhs = random_indicator(rng, name=lhs["name"])
    else:
        low, high = spec.threshold
        rhs = round(float(rng.uniform(low, high)), 4)
    return {"lhs": lhs, "op": op, "rhs": rhs}


def init_genome(rng: np.random.Generator, max_conditions: int = MAX_CONDITIONS) -> dict:
    """A random valid genome with every gene inside its bounds (normalized)."""
    max_conditions = min(max_conditions, MAX_CONDITIONS)
    genome = {
        "entry": {
            "logic": LOGICS[int(rng.integers(2))],
            "conditions": [random_condition(rng) for _ in range(int(rng.integers(1, max_conditions + 1)))],
        },
        "exit": {
            "logic": LOGICS[int(rng.integers(2))],
            "conditions": [random_condition(rng) for _ in range(int(rng.integers(1, max_conditions + 1)))],
        },
        "direction": GENOME_DIRECTIONS[int(rng.integers(3))],
        "stop_loss": None if rng.random() < 0.5 else round(float(rng.uniform(*STOP_LOSS_BOUNDS)), 4),
        "take_profit": None if rng.random() < 0.5 else round(float(rng.uniform(*TAKE_PROFIT_BOUNDS)), 4),
    }
    return normalize(genome)


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
            _set(child, path, perturb(_get(child, path), low, high, is_int, sigma, rng))
        return child

    return retry(attempt, genome)


# ---------------------------------------------------------------- categorical genes


def _redraw_rhs(cond: dict, rng) -> None:
    spec = INDICATORS[cond["lhs"]["name"]]
    if spec.scale == "price":
        cond["rhs"] = random_indicator(rng, scale="price")
    elif isinstance(cond["rhs"], Mapping) and spec.genes:
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
            child["direction"] = other(GENOME_DIRECTIONS, child["direction"], rng)
        elif kind == "stop_loss":
            child["stop_loss"] = None if child["stop_loss"] is not None else round(float(rng.uniform(*STOP_LOSS_BOUNDS)), 4)
        elif kind == "take_profit":
            child["take_profit"] = (
                None if child["take_profit"] is not None else round(float(rng.uniform(*TAKE_PROFIT_BOUNDS)), 4)
            )
        elif kind == "logic":
            block = BLOCKS[int(rng.integers(2))]
            child[block]["logic"] = other(LOGICS, child[block]["logic"], rng)
        else:
            block, c = conds[int(rng.integers(len(conds)))]
            cond = child[block]["conditions"][c]
            if kind == "op":
                cond["op"] = other(COMPARISONS, cond["op"], rng)
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

    return retry(attempt, genome)


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

    return retry(attempt, genome)


def mutate_drop_condition(genome: Mapping, rng: np.random.Generator) -> Genome:
    """Drop one condition from a block that keeps its minimum (else a gaussian mutation)."""
    droppable = [b for b in BLOCKS if len(genome[b]["conditions"]) > MIN_CONDITIONS[b]]
    if not droppable:
        return mutate_gaussian(genome, rng)
    child = _copy(dict(genome))
    block = droppable[int(rng.integers(len(droppable)))]
    conds = child[block]["conditions"]
    del conds[int(rng.integers(len(conds)))]
    return retry(lambda: child, genome)


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

    return retry_pair(attempt, a, b)


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

    return retry_pair(attempt, a, b)


OPERATORS = FamilyOperators.named(NAME, init_genome, (crossover_uniform, crossover_swap),
                                  (mutate_gaussian, mutate_categorical, mutate_add_condition, mutate_drop_condition))

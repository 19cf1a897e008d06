"""The strategy genome: plain JSON-able data with typed, bounded genes.

A genome is a dict::

    {
      "entry": {"logic": "and" | "or", "conditions": [condition, ...]},   # 1..MAX_CONDITIONS
      "exit":  {"logic": "and" | "or", "conditions": [condition, ...]},   # 0..MAX_CONDITIONS
      "direction": "long" | "short" | "both",
      "stop_loss": null | float,      # fraction of the entry close, e.g. 0.02
      "take_profit": null | float,
    }

    condition = {"lhs": indicator, "op": ">" | "<" | "crosses_above" | "crosses_below",
                 "rhs": indicator | number}
    indicator = {"name": "sma", "window": 20}   # see INDICATORS for every name and its genes

Price-scale indicators (close, sma, ema) are compared with another price-scale indicator.
Oscillators (rsi, bbands_percent_b, donchian_position, macd, roc, atr_range) are compared
with a threshold inside their range, or with another oscillator of the same name.

Direction "long": an entry signal opens a long position, an exit signal closes it.
"short": the same for a short position. "both": an entry signal goes long and an exit
signal goes short (reversing any open position), as vectorbt's ``direction="both"``.

``strategy_id`` is a hash of the canonical JSON (sorted keys, conditions sorted), so the
same strategy found twice has the same id.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_CONDITIONS = 3
LOGICS = ("and", "or")
OPERATORS = (">", "<", "crosses_above", "crosses_below")
DIRECTIONS = ("long", "short", "both")
STOP_LOSS_BOUNDS = (0.005, 0.5)
TAKE_PROFIT_BOUNDS = (0.005, 1.0)

# operator codes used by the kernels
OP_CODES = {op: i for i, op in enumerate(OPERATORS)}
LOGIC_CODES = {"and": 0, "or": 1}
DIRECTION_CODES = {"long": 0, "short": 1, "both": 2}  # = vectorbt Direction enum values


@dataclass(frozen=True)
class Gene:
    """An integer or float gene with inclusive bounds."""

    name: str
    kind: type
    low: float
    high: float


@dataclass(frozen=True)
class IndicatorSpec:
    """What an indicator is: its genes, its scale and (for oscillators) threshold bounds."""

    name: str
    genes: tuple[Gene, ...]
    scale: str  # "price" or "oscillator"
    threshold: tuple[float, float] | None = None
    description: str = ""


_WINDOW = Gene("window", int, 2, 400)

INDICATORS: dict[str, IndicatorSpec] = {
    spec.name: spec
    for spec in (
        IndicatorSpec("close", (), "price", None, "the close price"),
        IndicatorSpec("sma", (_WINDOW,), "price", None, "simple moving average of close"),
        IndicatorSpec("ema", (_WINDOW,), "price", None, "exponential moving average of close (span=window)"),
        IndicatorSpec("rsi", (Gene("window", int, 2, 100),), "oscillator", (0.0, 100.0), "Wilder RSI, 0..100"),
        IndicatorSpec(
            "bbands_percent_b",
            (Gene("window", int, 5, 200), Gene("k", float, 0.5, 4.0)),
            "oscillator",
            (-0.5, 1.5),
            "Bollinger %B: (close - lower) / (upper - lower)",
        ),
        IndicatorSpec(
            "donchian_position", (Gene("window", int, 5, 400),), "oscillator", (0.0, 1.0),
            "position of close inside the Donchian channel of the previous `window` bars' highs and lows",
        ),
        IndicatorSpec(
            "macd",
            (Gene("fast", int, 2, 50), Gene("slow", int, 5, 200), Gene("signal", int, 2, 50)),
            "oscillator",
            (-0.02, 0.02),
            "MACD histogram (macd line - signal line) as a fraction of close",
        ),
        IndicatorSpec("roc", (Gene("window", int, 1, 200),), "oscillator", (-0.2, 0.2), "rate of change close/close[t-w]-1"),
        IndicatorSpec(
            "atr_range", (Gene("window", int, 2, 200),), "oscillator", (0.0, 4.0),
            "ATR-normalized range: (high - low) / ATR(window)",
        ),
    )
}
_INDICATOR_KEYS = {n: frozenset({"name", *(g.name for g in s.genes)}) for n, s in INDICATORS.items()}
PRICE_INDICATORS = tuple(n for n, s in INDICATORS.items() if s.scale == "price")
OSCILLATORS = tuple(n for n, s in INDICATORS.items() if s.scale == "oscillator")


class GenomeError(ValueError):
    """A genome that does not follow the schema. The message names the path and the fix."""


def _did_you_mean(word: str, options) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_keys(obj: Mapping, allowed: set[str], required: set[str], path: str) -> None:
    if type(obj) is not dict and not isinstance(obj, Mapping):  # type() first: ABC checks are slow
        raise GenomeError(f"{path}: expected an object (dict), got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            raise GenomeError(
                f"{path}: unknown key {key!r}; allowed keys are {sorted(allowed)}.{_did_you_mean(key, allowed)}"
            )
    for key in required:
        if key not in obj:
            raise GenomeError(f"{path}: missing key {key!r}")


def _number(value: Any, path: str) -> float:
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


def _normalize_indicator(obj: Any, path: str) -> dict:
    if (type(obj) is not dict and not isinstance(obj, Mapping)) or "name" not in obj:
        raise GenomeError(f"{path}: expected an indicator like {{'name': 'sma', 'window': 20}}, got {obj!r}")
    name = obj["name"]
    if name not in INDICATORS:
        raise GenomeError(
            f"{path}.name: unknown indicator {name!r}; choose one of {sorted(INDICATORS)}.{_did_you_mean(name, INDICATORS)}"
        )
    spec = INDICATORS[name]
    keys = _INDICATOR_KEYS[name]
    _check_keys(obj, keys, keys, path)
    out: dict[str, Any] = {"name": name}
    for gene in spec.genes:
        raw = obj[gene.name]
        if gene.kind is int and type(raw) is int:
            value: Any = raw
        elif gene.kind is int:
            if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)) and not (
                isinstance(raw, (float, np.floating)) and float(raw).is_integer()
            ):
                raise GenomeError(f"{path}.{gene.name}: expected an integer, got {raw!r}")
            value = int(raw)
        else:
            value = _number(raw, f"{path}.{gene.name}")
        if not (gene.low <= value <= gene.high):
            raise GenomeError(
                f"{path}.{gene.name}: {value!r} is out of bounds; pass a value in [{gene.low}, {gene.high}]"
            )
        out[gene.name] = value
    if name == "macd" and out["fast"] >= out["slow"]:
        raise GenomeError(f"{path}: macd needs fast < slow, got fast={out['fast']} slow={out['slow']}")
    return out


def _normalize_condition(obj: Any, path: str) -> dict:
    _check_keys(obj, {"lhs", "op", "rhs"}, {"lhs", "op", "rhs"}, path)
    lhs = _normalize_indicator(obj["lhs"], f"{path}.lhs")
    op = obj["op"]
    if op not in OPERATORS:
        raise GenomeError(f"{path}.op: unknown operator {op!r}; choose one of {list(OPERATORS)}.{_did_you_mean(op, OPERATORS)}")
    spec = INDICATORS[lhs["name"]]
    raw_rhs = obj["rhs"]
    if type(raw_rhs) is dict or isinstance(raw_rhs, Mapping):
        rhs: Any = _normalize_indicator(raw_rhs, f"{path}.rhs")
        rhs_spec = INDICATORS[rhs["name"]]
        if spec.scale == "price" and rhs_spec.scale != "price":
            raise GenomeError(
                f"{path}.rhs: a price-scale indicator ({lhs['name']}) can only be compared with another "
                f"price-scale indicator ({', '.join(PRICE_INDICATORS)}), not {rhs['name']}"
            )
        if spec.scale == "oscillator" and rhs["name"] != lhs["name"]:
            raise GenomeError(
                f"{path}.rhs: oscillator {lhs['name']} can be compared with a threshold or another "
                f"{lhs['name']}, not {rhs['name']}"
            )
        if rhs == lhs:
            raise GenomeError(f"{path}: lhs and rhs are the same indicator; the condition could never change")
    else:
        if spec.scale == "price":
            raise GenomeError(
                f"{path}.rhs: a price-scale indicator ({lhs['name']}) must be compared with another "
                f"price-scale indicator such as {{'name': 'sma', 'window': 50}}, not a number"
            )
        rhs = _number(raw_rhs, f"{path}.rhs")
        low, high = spec.threshold
        if not (low <= rhs <= high):
            raise GenomeError(f"{path}.rhs: threshold {rhs!r} for {lhs['name']} must be in [{low}, {high}]")
    return {"lhs": lhs, "op": op, "rhs": rhs}


def _normalize_block(obj: Any, path: str, min_conditions: int) -> dict:
    _check_keys(obj, {"logic", "conditions"}, {"conditions"}, path)
    logic = obj.get("logic", "and")
    if logic not in LOGICS:
        raise GenomeError(f"{path}.logic: expected 'and' or 'or', got {logic!r}")
    conditions = obj["conditions"]
    if not isinstance(conditions, (list, tuple)):
        raise GenomeError(f"{path}.conditions: expected a list of conditions, got {type(conditions).__name__}")
    if not (min_conditions <= len(conditions) <= MAX_CONDITIONS):
        raise GenomeError(
            f"{path}.conditions: expected {min_conditions}..{MAX_CONDITIONS} conditions, got {len(conditions)}"
        )
    normalized = [_normalize_condition(c, f"{path}.conditions[{i}]") for i, c in enumerate(conditions)]
    if len(normalized) > 1:
        normalized.sort(key=_canonical)  # AND/OR are commutative: order does not change the strategy
    return {"logic": logic, "conditions": normalized}


def _optional_fraction(value: Any, bounds: tuple[float, float], path: str) -> float | None:
    if value is None:
        return None
    value = _number(value, path)
    if not (bounds[0] <= value <= bounds[1]):
        raise GenomeError(f"{path}: {value!r} is out of bounds; pass null or a fraction in [{bounds[0]}, {bounds[1]}]")
    return value


def normalize_genome(genome: Any) -> dict:
    """Validate a genome and return its normalized form (a new dict). Raises GenomeError."""
    if isinstance(genome, str):
        try:
            genome = json.loads(genome)
        except json.JSONDecodeError as exc:
            raise GenomeError(f"genome: not valid JSON ({exc})") from None
    _check_keys(genome, {"entry", "exit", "direction", "stop_loss", "take_profit"}, {"entry", "direction"}, "genome")
    direction = genome["direction"]
    if direction not in DIRECTIONS:
        raise GenomeError(f"genome.direction: expected one of {list(DIRECTIONS)}, got {direction!r}")
    return {
        "entry": _normalize_block(genome["entry"], "genome.entry", 1),
        "exit": _normalize_block(genome.get("exit", {"logic": "and", "conditions": []}), "genome.exit", 0),
        "direction": direction,
        "stop_loss": _optional_fraction(genome.get("stop_loss"), STOP_LOSS_BOUNDS, "genome.stop_loss"),
        "take_profit": _optional_fraction(genome.get("take_profit"), TAKE_PROFIT_BOUNDS, "genome.take_profit"),
    }


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_json(genome: Any, *, normalized: bool = False) -> str:
    """Canonical JSON text of a genome (normalized, sorted keys, sorted conditions).

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


def indicator_key(indicator: Mapping) -> str:
    """A stable key for an indicator with its parameters, e.g. 'sma(window=20)'."""
    spec = INDICATORS[indicator["name"]]
    params = ",".join(f"{g.name}={indicator[g.name]!r}" for g in spec.genes)
    return f"{indicator['name']}({params})"


def indicators_used(genome: Mapping) -> list[dict]:
    """Every distinct indicator a normalized genome uses."""
    seen: dict[str, dict] = {}
    for block in ("entry", "exit"):
        for cond in genome[block]["conditions"]:
            for side in (cond["lhs"], cond["rhs"]):
                if isinstance(side, Mapping):
                    seen.setdefault(indicator_key(side), dict(side))
    return list(seen.values())


def warmup_bars(genome: Mapping) -> int:
    """Bars needed before every indicator of the genome is defined."""
    need = 0
    for ind in indicators_used(genome):
        name = ind["name"]
        if name == "macd":
            need = max(need, ind["slow"] + ind["signal"])
        elif name == "close":
            continue
        else:
            need = max(need, ind["window"] + 1)
    return need


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
    op = OPERATORS[int(rng.integers(len(OPERATORS)))]
    if spec.scale == "price":
        rhs: Any = random_indicator(rng, scale="price")
        while rhs == lhs:
            rhs = random_indicator(rng, scale="price")
    elif rng.random() < 0.2:
        rhs = random_indicator(rng, name=lhs["name"])
        while rhs == lhs:
            rhs = random_indicator(rng, name=lhs["name"])
    else:
        low, high = spec.threshold
        rhs = round(float(rng.uniform(low, high)), 4)
    return {"lhs": lhs, "op": op, "rhs": rhs}


def random_genome(rng: np.random.Generator, max_conditions: int = MAX_CONDITIONS) -> dict:
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
        "direction": DIRECTIONS[int(rng.integers(3))],
        "stop_loss": None if rng.random() < 0.5 else round(float(rng.uniform(*STOP_LOSS_BOUNDS)), 4),
        "take_profit": None if rng.random() < 0.5 else round(float(rng.uniform(*TAKE_PROFIT_BOUNDS)), 4),
    }
    return normalize_genome(genome)


def sma_crossover_genome(fast: int, slow: int, direction: str = "long") -> dict:
    """The classic moving-average crossover as a genome."""
    f = {"name": "sma", "window": int(fast)}
    s = {"name": "sma", "window": int(slow)}
    return normalize_genome(
        {
            "entry": {"logic": "and", "conditions": [{"lhs": f, "op": "crosses_above", "rhs": s}]},
            "exit": {"logic": "and", "conditions": [{"lhs": f, "op": "crosses_below", "rhs": s}]},
            "direction": direction,
            "stop_loss": None,
            "take_profit": None,
        }
    )


def copy_genome(genome: Mapping) -> dict:
    return copy.deepcopy(dict(genome))


# ---------------------------------------------------------------- kernel encoding


@dataclass(frozen=True)
class EncodedPopulation:
    """A population as flat arrays for the fused kernel.

    ``indicators`` lists the distinct indicators (each computed once); condition arrays have
    shape (N, 2, MAX_CONDITIONS) where axis 1 is entry (0) / exit (1).
    """

    indicators: tuple[dict, ...]
    lhs: np.ndarray  # int64 index into indicators
    op: np.ndarray  # int64 operator code
    rhs: np.ndarray  # int64 index into indicators, -1 for a threshold
    threshold: np.ndarray  # float64
    n_conditions: np.ndarray  # int64 (N, 2)
    logic: np.ndarray  # int64 (N, 2)
    direction: np.ndarray  # int64 (N,)
    stop_loss: np.ndarray  # float64 (N,), NaN = none
    take_profit: np.ndarray  # float64 (N,), NaN = none


def encode_population(genomes: list[Mapping]) -> EncodedPopulation:
    """Encode normalized genomes; identical indicators are shared across the population."""
    n = len(genomes)
    k = MAX_CONDITIONS
    index: dict[str, int] = {}
    table: list[dict] = []

    def ind_index(ind: Mapping) -> int:
        key = indicator_key(ind)
        if key not in index:
            index[key] = len(table)
            table.append(dict(ind))
        return index[key]

    lhs = np.full((n, 2, k), -1, dtype=np.int64)
    op = np.zeros((n, 2, k), dtype=np.int64)
    rhs = np.full((n, 2, k), -1, dtype=np.int64)
    thr = np.zeros((n, 2, k), dtype=np.float64)
    ncond = np.zeros((n, 2), dtype=np.int64)
    logic = np.zeros((n, 2), dtype=np.int64)
    direction = np.zeros(n, dtype=np.int64)
    sl = np.full(n, np.nan)
    tp = np.full(n, np.nan)
    for g, genome in enumerate(genomes):
        for b, block in enumerate(("entry", "exit")):
            conds = genome[block]["conditions"]
            ncond[g, b] = len(conds)
            logic[g, b] = LOGIC_CODES[genome[block]["logic"]]
            for c, cond in enumerate(conds):
                lhs[g, b, c] = ind_index(cond["lhs"])
                op[g, b, c] = OP_CODES[cond["op"]]
                if isinstance(cond["rhs"], Mapping):
                    rhs[g, b, c] = ind_index(cond["rhs"])
                else:
                    thr[g, b, c] = float(cond["rhs"])
        direction[g] = DIRECTION_CODES[genome["direction"]]
        if genome["stop_loss"] is not None:
            sl[g] = genome["stop_loss"]
        if genome["take_profit"] is not None:
            tp[g] = genome["take_profit"]
    return EncodedPopulation(tuple(table), lhs, op, rhs, thr, ncond, logic, direction, sl, tp)

"""The ``rules`` family (the default): entry and exit conditions on technical indicators.

A rules genome is a dict (``"family": "rules"`` may be given; it is the default and is left
out of the normalized form, so every rules genome keeps the ``strategy_id`` it always had)::

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
Oscillators (rsi, bbands_percent_b, donchian_position, macd, roc, atr_range, hour,
day_of_week) are compared with a threshold inside their range, or with another oscillator
of the same name and other genes. The clock indicators ``hour`` (0..23) and ``day_of_week``
(0 Monday .. 6 Sunday) read the UTC open time of the bar whose close decides (no genes, no
warm-up): ``hour > 12.5 AND hour < 16.5`` holds at the closes of the bars opening 13:00 to
16:00, so with hourly bars a long position then is held over the bars opening 14:00 to 17:00.

Direction "long": an entry signal opens a long position, an exit signal closes it.
"short": the same for a short position. "both": an entry signal goes long and an exit
signal goes short (reversing any open position), as vectorbt's ``direction="both"``.

Conditions are sorted in the normalized form (AND/OR commute), so the same strategy found
twice has the same id. Kernels: indicators in ``backtest/indicators.py``, signals and the
population simulation in ``backtest/fused.py`` (fold walk in ``backtest/events.py``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from backtest import fused
from backtest.families.base import (
    DIRECTION_CODES,
    FAMILY_KEY,
    GENOME_DIRECTIONS,
    STOP_LOSS_BOUNDS,
    TAKE_PROFIT_BOUNDS,
    GenomeError,
    GenomeFamily,
    check_keys,
    choice,
    did_you_mean,
    number,
    optional_fraction,
    stop_arrays,
)

NAME = "rules"
MAX_CONDITIONS = 3
LOGICS = ("and", "or")
COMPARISONS = (">", "<", "crosses_above", "crosses_below")

# codes used by the kernels
COMPARISON_CODES = {op: i for i, op in enumerate(COMPARISONS)}  # = fused.OP_GT, OP_LT, OP_CROSS_ABOVE, OP_CROSS_BELOW
LOGIC_CODES = {"and": 0, "or": 1}
GENOME_KEYS = frozenset({FAMILY_KEY, "entry", "exit", "direction", "stop_loss", "take_profit"})


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
        IndicatorSpec("hour", (), "oscillator", (0.0, 23.0), "UTC hour of day of the bar's open, 0..23"),
        IndicatorSpec(
            "day_of_week", (), "oscillator", (0.0, 6.0), "UTC day of the week of the bar's open, 0 Monday .. 6 Sunday",
        ),
    )
}
_INDICATOR_KEYS = {n: frozenset({"name", *(g.name for g in s.genes)}) for n, s in INDICATORS.items()}
PRICE_INDICATORS = tuple(n for n, s in INDICATORS.items() if s.scale == "price")
OSCILLATORS = tuple(n for n, s in INDICATORS.items() if s.scale == "oscillator")


def _normalize_indicator(obj: Any, path: str) -> dict:
    if (type(obj) is not dict and not isinstance(obj, Mapping)) or "name" not in obj:
        raise GenomeError(f"{path}: expected an indicator like {{'name': 'sma', 'window': 20}}, got {obj!r}")
    name = obj["name"]
    if name not in INDICATORS:
        raise GenomeError(
            f"{path}.name: unknown indicator {name!r}; choose one of {sorted(INDICATORS)}.{did_you_mean(name, INDICATORS)}"
        )
    spec = INDICATORS[name]
    keys = _INDICATOR_KEYS[name]
    check_keys(obj, keys, keys, path)
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
            value = number(raw, f"{path}.{gene.name}")
        if not (gene.low <= value <= gene.high):
            raise GenomeError(
                f"{path}.{gene.name}: {value!r} is out of bounds; pass a value in [{gene.low}, {gene.high}]"
            )
        out[gene.name] = value
    if name == "macd" and out["fast"] >= out["slow"]:
        raise GenomeError(f"{path}: macd needs fast < slow, got fast={out['fast']} slow={out['slow']}")
    return out


def _normalize_condition(obj: Any, path: str) -> dict:
    check_keys(obj, {"lhs", "op", "rhs"}, {"lhs", "op", "rhs"}, path)
    lhs = _normalize_indicator(obj["lhs"], f"{path}.lhs")
    op = obj["op"]
    if op not in COMPARISONS:
        raise GenomeError(f"{path}.op: unknown operator {op!r}; choose one of {list(COMPARISONS)}.{did_you_mean(op, COMPARISONS)}")
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
        rhs = number(raw_rhs, f"{path}.rhs")
        low, high = spec.threshold
        if not (low <= rhs <= high):
            raise GenomeError(f"{path}.rhs: threshold {rhs!r} for {lhs['name']} must be in [{low}, {high}]")
    return {"lhs": lhs, "op": op, "rhs": rhs}


def _normalize_block(obj: Any, path: str, min_conditions: int) -> dict:
    check_keys(obj, {"logic", "conditions"}, {"conditions"}, path)
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
        normalized.sort(key=_sort_key)  # AND/OR are commutative: order does not change the strategy
    return {"logic": logic, "conditions": normalized}


def _sort_key(condition: Mapping) -> str:
    return json.dumps(condition, sort_keys=True, separators=(",", ":"), allow_nan=False)


def normalize(genome: Mapping) -> dict:
    """Validate a rules genome and return its normalized form (a new dict). Raises GenomeError."""
    check_keys(genome, GENOME_KEYS, {"entry", "direction"}, "genome")
    return {
        "entry": _normalize_block(genome["entry"], "genome.entry", 1),
        "exit": _normalize_block(genome.get("exit", {"logic": "and", "conditions": []}), "genome.exit", 0),
        "direction": choice(genome["direction"], GENOME_DIRECTIONS, "genome.direction"),
        "stop_loss": optional_fraction(genome.get("stop_loss"), STOP_LOSS_BOUNDS, "genome.stop_loss"),
        "take_profit": optional_fraction(genome.get("take_profit"), TAKE_PROFIT_BOUNDS, "genome.take_profit"),
    }


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
        elif name == "close" or not INDICATORS[name].genes:  # close and the clock: defined from bar 0
            continue
        else:
            need = max(need, ind["window"] + 1)
    return need


def sma_crossover_genome(fast: int, slow: int, direction: str = "long") -> dict:
    """The classic moving-average crossover as a genome."""
    f = {"name": "sma", "window": int(fast)}
    s = {"name": "sma", "window": int(slow)}
    return normalize(
        {
            "entry": {"logic": "and", "conditions": [{"lhs": f, "op": "crosses_above", "rhs": s}]},
            "exit": {"logic": "and", "conditions": [{"lhs": f, "op": "crosses_below", "rhs": s}]},
            "direction": direction,
            "stop_loss": None,
            "take_profit": None,
        }
    )


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
    for g, genome in enumerate(genomes):
        for b, block in enumerate(("entry", "exit")):
            conds = genome[block]["conditions"]
            ncond[g, b] = len(conds)
            logic[g, b] = LOGIC_CODES[genome[block]["logic"]]
            for c, cond in enumerate(conds):
                lhs[g, b, c] = ind_index(cond["lhs"])
                op[g, b, c] = COMPARISON_CODES[cond["op"]]
                if isinstance(cond["rhs"], Mapping):
                    rhs[g, b, c] = ind_index(cond["rhs"])
                else:
                    thr[g, b, c] = float(cond["rhs"])
        direction[g] = DIRECTION_CODES[genome["direction"]]
    sl, tp = stop_arrays(genomes)
    return EncodedPopulation(tuple(table), lhs, op, rhs, thr, ncond, logic, direction, sl, tp)


class RulesFamily(GenomeFamily):
    name = NAME
    description = "entry/exit conditions on technical indicators (the default family)"

    normalize = staticmethod(normalize)
    warmup_bars = staticmethod(warmup_bars)

    def resources(self, genome: Mapping) -> set[str]:
        """The table rows the genome needs (SMAs and close are computed in the kernel, no row)."""
        return {indicator_key(ind) for ind in indicators_used(genome) if ind["name"] not in ("sma", "close")}

    def run(self, genomes: Sequence[Mapping], workspace, market, folds, fees, slippage, init_cash, periods_per_year,
            bucket_bars, bucket_origin, n_buckets, positions_out=None):
        enc = encode_population(genomes)
        source, row, window, table = _operands(enc, workspace, market)
        prefix, blocks = workspace.market_summary(market)
        metrics, buckets, pos = self.outputs(len(genomes), folds, bucket_bars, n_buckets, positions_out)
        fused.population_nb(
            market.close, prefix, blocks, table, source, row, window, enc.lhs, enc.op, enc.rhs, enc.threshold,
            enc.n_conditions, enc.logic, enc.direction, enc.stop_loss, enc.take_profit,
            np.ascontiguousarray(folds[:, 0]), np.ascontiguousarray(folds[:, 1]), fees, slippage, init_cash,
            periods_per_year, metrics, bucket_bars, bucket_origin, buckets, pos,
        )
        return metrics, buckets

    def signals(self, genome: Mapping, workspace, market) -> tuple[np.ndarray, np.ndarray]:
        enc = encode_population([genome])
        n = market.close.shape[0]
        source, row, window, table = _operands(enc, workspace, market)
        prefix, _ = workspace.market_summary(market)
        state = fused.new_cross_states(1, MAX_CONDITIONS)
        scratch_a, scratch_b = np.empty(n), np.empty(n)
        entries = np.empty(n, dtype=np.bool_)
        exits = np.empty(n, dtype=np.bool_)
        for block, out in ((0, entries), (1, exits)):
            fused.block_signals_nb(table, market.close, prefix[5], source, row, window, enc.lhs[0, block],
                                   enc.op[0, block], enc.rhs[0, block], enc.threshold[0, block],
                                   enc.n_conditions[0, block], enc.logic[0, block] == 0, 0, n, out, state[0, block],
                                   scratch_a, scratch_b)
        return entries, exits


def _operands(enc: EncodedPopulation, workspace, market):
    """How the kernel reaches each indicator (fused.SRC_*): SMAs and close are computed per
    time block in the kernel, the others are rows of the workspace's shared table.
    Returns (source, row, window, table)."""
    u = len(enc.indicators)
    source = np.full(u, fused.SRC_TABLE, dtype=np.int64)
    row = np.zeros(u, dtype=np.int64)
    window = np.zeros(u, dtype=np.int64)
    materialized = []
    for i, ind in enumerate(enc.indicators):
        if ind["name"] == "sma":
            source[i] = fused.SRC_SMA
            window[i] = int(ind["window"])
        elif ind["name"] == "close":
            source[i] = fused.SRC_CLOSE
        else:
            row[i] = len(materialized)
            materialized.append(ind)
    table = workspace.indicator_table(materialized, market)
    return source, row, window, table


FAMILY = RulesFamily()

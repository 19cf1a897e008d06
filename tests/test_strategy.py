"""The genome: schema errors, bounds, canonical identity, batched encoding."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.strategy import (
    INDICATORS,
    MAX_CONDITIONS,
    STOP_LOSS_BOUNDS,
    TAKE_PROFIT_BOUNDS,
    GenomeError,
    encode_population,
    normalize_genome,
    random_genome,
    sma_crossover_genome,
    strategy_id,
)


def _genes_in_bounds(genome):
    for block in ("entry", "exit"):
        assert genome[block]["logic"] in ("and", "or")
        assert len(genome[block]["conditions"]) <= MAX_CONDITIONS
        for cond in genome[block]["conditions"]:
            sides = [cond["lhs"]] + ([cond["rhs"]] if isinstance(cond["rhs"], dict) else [])
            for ind in sides:
                spec = INDICATORS[ind["name"]]
                for gene in spec.genes:
                    assert gene.low <= ind[gene.name] <= gene.high, (ind, gene)
                    assert isinstance(ind[gene.name], gene.kind)
            if not isinstance(cond["rhs"], dict):
                low, high = INDICATORS[cond["lhs"]["name"]].threshold
                assert low <= cond["rhs"] <= high
    if genome["stop_loss"] is not None:
        assert STOP_LOSS_BOUNDS[0] <= genome["stop_loss"] <= STOP_LOSS_BOUNDS[1]
    if genome["take_profit"] is not None:
        assert TAKE_PROFIT_BOUNDS[0] <= genome["take_profit"] <= TAKE_PROFIT_BOUNDS[1]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**63 - 1))
def test_random_genomes_stay_in_bounds_and_are_valid(seed):
    genome = random_genome(np.random.default_rng(seed))
    _genes_in_bounds(genome)
    assert normalize_genome(genome) == genome  # normalizing is idempotent


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**63 - 1))
def test_strategy_id_is_stable_through_json_and_condition_order(seed):
    genome = random_genome(np.random.default_rng(seed))
    sid = strategy_id(genome)
    assert strategy_id(json.loads(json.dumps(genome))) == sid
    shuffled = json.loads(json.dumps(genome))
    shuffled["entry"]["conditions"].reverse()
    shuffled["exit"]["conditions"].reverse()
    assert strategy_id(shuffled) == sid
    assert len(sid) == 16 and int(sid, 16) >= 0


def test_strategy_id_differs_for_different_genomes():
    a = sma_crossover_genome(10, 30)
    b = sma_crossover_genome(10, 31)
    c = sma_crossover_genome(10, 30, direction="both")
    assert len({strategy_id(a), strategy_id(b), strategy_id(c)}) == 3


def test_strategy_id_is_pinned():
    # a content hash must not drift between releases: lineage points at these ids
    assert strategy_id(sma_crossover_genome(10, 30)) == strategy_id(
        '{"direction": "long", "entry": {"conditions": [{"lhs": {"name": "sma", "window": 10}, '
        '"op": "crosses_above", "rhs": {"name": "sma", "window": 30}}], "logic": "and"}, '
        '"exit": {"conditions": [{"lhs": {"name": "sma", "window": 10}, "op": "crosses_below", '
        '"rhs": {"name": "sma", "window": 30}}], "logic": "and"}}'
    )


def _base():
    return {
        "entry": {"logic": "and", "conditions": [{"lhs": {"name": "rsi", "window": 14}, "op": "<", "rhs": 30}]},
        "exit": {"logic": "or", "conditions": [{"lhs": {"name": "rsi", "window": 14}, "op": ">", "rhs": 70}]},
        "direction": "long",
        "stop_loss": None,
        "take_profit": None,
    }


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda g: g.update(directon="long"), "Did you mean 'direction'"),
        (lambda g: g.update(direction="sideways"), "genome.direction"),
        (lambda g: g["entry"]["conditions"][0]["lhs"].update(name="rsx"), "Did you mean 'rsi'"),
        (lambda g: g["entry"]["conditions"][0]["lhs"].update(window=1000), r"window: 1000 is out of bounds"),
        (lambda g: g["entry"]["conditions"][0]["lhs"].update(window=2.5), "expected an integer"),
        (lambda g: g["entry"]["conditions"][0].update(rhs=130.0), r"threshold 130.0 for rsi must be in \[0.0, 100.0\]"),
        (lambda g: g["entry"]["conditions"][0].update(op="above"), "unknown operator"),
        (lambda g: g["entry"].update(conditions=[]), "expected 1..3 conditions"),
        (lambda g: g.update(stop_loss=0.9), "stop_loss"),
        (lambda g: g["entry"]["conditions"][0].update(lhs={"name": "sma", "window": 10}), "price-scale"),
        (lambda g: g["entry"]["conditions"][0].update(rhs={"name": "sma", "window": 10}), "oscillator rsi"),
        (lambda g: g["entry"]["conditions"][0].update(rhs={"name": "rsi", "window": 14}), "same indicator"),
    ],
)
def test_bad_genomes_name_the_path_and_the_fix(mutate, message):
    genome = _base()
    mutate(genome)
    with pytest.raises(GenomeError, match=message):
        normalize_genome(genome)


def test_macd_needs_fast_below_slow():
    genome = _base()
    genome["entry"]["conditions"][0] = {"lhs": {"name": "macd", "fast": 30, "slow": 20, "signal": 9}, "op": ">", "rhs": 0.0}
    with pytest.raises(GenomeError, match="fast < slow"):
        normalize_genome(genome)


def test_encoding_shares_indicators_across_the_population():
    genomes = [sma_crossover_genome(10, 30), sma_crossover_genome(10, 40), sma_crossover_genome(20, 40)]
    enc = encode_population(genomes)
    assert len(enc.indicators) == 4  # sma 10, 20, 30, 40 each once
    names = [(i["name"], i["window"]) for i in enc.indicators]
    assert sorted(names) == [("sma", 10), ("sma", 20), ("sma", 30), ("sma", 40)]
    assert enc.lhs.shape == (3, 2, MAX_CONDITIONS)
    assert (enc.n_conditions == 1).all()

"""Operators on plain-data genomes: valid outputs within bounds, pure, reproducible."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.families.rules import INDICATORS, MAX_CONDITIONS, sma_crossover_genome
from backtest.strategy import normalize_genome, strategy_id
from evolution.families.rules import (
    OPERATORS,
    _numeric_slots,
    crossover_swap,
    crossover_uniform,
    init_genome,
    mutate_add_condition,
    mutate_drop_condition,
    mutate_gaussian,
)

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def assert_in_bounds(genome: dict) -> None:
    assert normalize_genome(genome) == genome  # normalized, hence schema-valid
    for path, low, high, is_int in _numeric_slots(genome):
        value = genome
        for part in path:
            value = value[part]
        assert low <= value <= high
        if is_int:
            assert isinstance(value, int)
    json.dumps(genome)  # plain data


@settings(max_examples=60, deadline=None)
@given(seed=seeds)
def test_every_mutation_gives_a_valid_genome_and_leaves_the_parent_alone(seed):
    rng = np.random.default_rng(seed)
    parent = init_genome(rng)
    frozen = copy.deepcopy(parent)
    for name, mutate in OPERATORS.mutations.items():
        child = mutate(parent, rng)
        assert_in_bounds(child)
        assert parent == frozen, name


@settings(max_examples=60, deadline=None)
@given(seed=seeds)
def test_every_crossover_gives_two_valid_genomes(seed):
    rng = np.random.default_rng(seed)
    a, b = init_genome(rng), init_genome(rng)
    fa, fb = copy.deepcopy(a), copy.deepcopy(b)
    for name, cross in OPERATORS.crossovers.items():
        x, y = cross(a, b, rng)
        assert_in_bounds(x)
        assert_in_bounds(y)
        assert (a, b) == (fa, fb), name


@settings(max_examples=30, deadline=None)
@given(seed=seeds)
def test_operators_are_reproducible_from_the_generator(seed):
    def run(s):
        rng = np.random.default_rng(s)
        g = init_genome(rng)
        h = init_genome(rng)
        return [mutate(g, rng) for mutate in OPERATORS.mutations.values()] + [c(g, h, rng) for c in OPERATORS.crossovers.values()]

    assert run(seed) == run(seed)


def test_gaussian_mutation_moves_windows_and_clips_to_bounds():
    rng = np.random.default_rng(0)
    parent = sma_crossover_genome(10, 40, "both")
    children = [mutate_gaussian(parent, rng, sigma=0.5, indpb=1.0) for _ in range(200)]
    windows = {c["entry"]["conditions"][0]["lhs"]["window"] for c in children}
    assert len(windows) > 10
    spec = INDICATORS["sma"].genes[0]
    for child in children:
        assert_in_bounds(child)
        for cond in child["entry"]["conditions"]:
            assert spec.low <= cond["lhs"]["window"] <= spec.high


def test_add_and_drop_change_the_number_of_conditions():
    rng = np.random.default_rng(1)
    parent = sma_crossover_genome(10, 40, "long")
    count = lambda g: len(g["entry"]["conditions"]) + len(g["exit"]["conditions"])  # noqa: E731
    grown = mutate_add_condition(parent, rng)
    assert count(grown) == count(parent) + 1
    shrunk = mutate_drop_condition(parent, rng)
    assert count(shrunk) == count(parent) - 1
    assert len(shrunk["entry"]["conditions"]) >= 1


def test_add_condition_on_a_full_genome_still_returns_a_valid_genome():
    rng = np.random.default_rng(2)
    genome = init_genome(rng)
    for _ in range(20):
        genome = mutate_add_condition(genome, rng)
    assert len(genome["entry"]["conditions"]) <= MAX_CONDITIONS
    assert_in_bounds(mutate_add_condition(genome, rng))


def test_swap_crossover_exchanges_whole_conditions():
    rng = np.random.default_rng(3)
    a = sma_crossover_genome(10, 40, "long")
    b = sma_crossover_genome(20, 100, "short")
    x, y = crossover_swap(a, b, rng)
    conditions = lambda g: [json.dumps(c, sort_keys=True) for blk in ("entry", "exit") for c in g[blk]["conditions"]]  # noqa: E731
    assert sorted(conditions(x) + conditions(y)) == sorted(conditions(a) + conditions(b))
    assert {x["direction"], y["direction"]} == {"long", "short"}


def test_uniform_crossover_mixes_genes_of_aligned_conditions():
    rng = np.random.default_rng(4)
    a = sma_crossover_genome(10, 40, "long")
    b = sma_crossover_genome(20, 100, "long")
    ids = {strategy_id(x) for _ in range(30) for x in crossover_uniform(a, b, rng)}
    assert len(ids) > 2  # offspring other than the parents
    for _ in range(20):
        for child in crossover_uniform(a, b, rng):
            for cond in child["entry"]["conditions"]:
                assert cond["lhs"]["window"] in (10, 20, 40, 100) and cond["rhs"]["window"] in (10, 20, 40, 100)


@pytest.mark.parametrize("max_conditions", [1, 2, 3])
def test_init_respects_max_conditions(max_conditions):
    rng = np.random.default_rng(max_conditions)
    for _ in range(50):
        genome = init_genome(rng, max_conditions)
        assert 1 <= len(genome["entry"]["conditions"]) <= max_conditions
        assert_in_bounds(genome)

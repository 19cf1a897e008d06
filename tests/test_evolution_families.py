"""Genome families in the search: config, operators per family, mixed islands, the asmbtr edge found."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from evolution_helpers import small_config
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import positions
from backtest.data import save_csv
from backtest.data.synthetic_state import (
    StateEdge,
    planted_state_genome,
    planted_state_positions,
    state_edge_market,
)
from backtest.families import FAMILY_NAMES, family_name
from backtest.families.asmbtr import DECAY_BOUNDS, DEPTH_BOUNDS, MIN_MOVE_BOUNDS, THRESHOLD_BOUNDS
from backtest.families.rules import sma_crossover_genome
from backtest.strategy import normalize_genome, strategy_id
from evolution.config import ConfigError
from evolution.families import FAMILY_OPERATORS, crossover, init_genome, mutate, operators_for
from evolution.island import Island
from evolution.market import resolve
from evolution.operators import CROSSOVERS, MUTATIONS, OPERATOR_NAMES

seeds = st.integers(min_value=0, max_value=2**32 - 1)


# ---------------------------------------------------------------- registry and config


def test_every_family_has_every_operator():
    assert set(FAMILY_OPERATORS) == set(FAMILY_NAMES)
    for name, ops in FAMILY_OPERATORS.items():
        assert set(ops.crossovers) == set(CROSSOVERS), name
        assert set(ops.mutations) == set(MUTATIONS), name
    assert len(set(OPERATOR_NAMES)) == len(OPERATOR_NAMES)


def test_families_config_is_validated():
    assert small_config().families == {"rules": 1.0}
    assert small_config(families={"rules": 0.8, "asmbtr": 0.2}).families == {"rules": 0.8, "asmbtr": 0.2}
    for families, message in (({"asmbtx": 1.0}, "did you mean 'asmbtr'"), ({"rules": -1.0}, ">= 0"),
                              ({"rules": 0.0}, "positive share"), ({}, "positive share")):
        with pytest.raises(ConfigError, match=message):
            small_config(families=families)


def test_the_default_families_leave_the_config_id_alone():
    default = small_config()
    assert "families" not in default.search_dict()
    assert small_config(families={"rules": 1.0}).config_id == default.config_id
    mixed = small_config(families={"rules": 0.5, "asmbtr": 0.5})
    assert mixed.search_dict()["families"] == {"rules": 0.5, "asmbtr": 0.5}
    assert mixed.config_id != default.config_id


# ---------------------------------------------------------------- asmbtr operators


def _asmbtr_in_bounds(genome: dict) -> None:
    assert normalize_genome(genome) == genome and family_name(genome) == "asmbtr"
    assert DEPTH_BOUNDS[0] <= genome["depth"] <= DEPTH_BOUNDS[1] and isinstance(genome["depth"], int)
    assert DECAY_BOUNDS[0] <= genome["decay"] <= DECAY_BOUNDS[1]
    assert THRESHOLD_BOUNDS[0] <= genome["threshold"] <= THRESHOLD_BOUNDS[1]
    assert MIN_MOVE_BOUNDS[0] <= genome["min_move"] <= MIN_MOVE_BOUNDS[1]
    json.dumps(genome)


@settings(max_examples=60, deadline=None)
@given(seed=seeds)
def test_asmbtr_operators_give_valid_genomes_and_leave_parents_alone(seed):
    rng = np.random.default_rng(seed)
    a, b = init_genome(rng, family="asmbtr"), init_genome(rng, family="asmbtr")
    frozen = copy.deepcopy((a, b))
    for name in MUTATIONS:
        _asmbtr_in_bounds(mutate(name, a, rng))
    for name in CROSSOVERS:
        for child in crossover(name, a, b, rng):
            _asmbtr_in_bounds(child)
    assert (a, b) == frozen


@settings(max_examples=30, deadline=None)
@given(seed=seeds)
def test_asmbtr_operators_are_reproducible(seed):
    def run(s):
        rng = np.random.default_rng(s)
        a, b = init_genome(rng, family="asmbtr"), init_genome(rng, family="asmbtr")
        return [mutate(n, a, rng) for n in MUTATIONS] + [crossover(n, a, b, rng) for n in CROSSOVERS]

    assert run(seed) == run(seed)


def test_structural_mutations_move_the_depth_and_swap_moves_the_table():
    rng = np.random.default_rng(0)
    g = normalize_genome(planted_state_genome())
    assert mutate("mutate_add_condition", g, rng)["depth"] == g["depth"] + 1
    assert mutate("mutate_drop_condition", g, rng)["depth"] == g["depth"] - 1
    other = {**g, "depth": 7, "decay": 0.9, "min_move": 0.001, "threshold": 0.8, "direction": "long"}
    x, y = crossover("crossover_swap", g, normalize_genome(other), rng)
    assert (x["depth"], x["decay"], x["min_move"], x["threshold"], x["direction"]) == (7, 0.9, 0.001, 0.55, "both")
    assert (y["depth"], y["threshold"]) == (3, 0.8)


def test_crossover_never_mixes_families():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="mates one family only"):
        crossover("crossover_uniform", sma_crossover_genome(10, 40), init_genome(rng, family="asmbtr"), rng)
    with pytest.raises(Exception, match="did you mean|Did you mean"):
        operators_for("asmbtx")


# ---------------------------------------------------------------- mixed islands


@pytest.fixture(scope="module")
def mixed_island_rows():
    config = small_config(families={"rules": 0.5, "asmbtr": 0.5}, population=16, **{"operators.crossover_probability": 0.8,
                                                                                     "operators.mutation_probability": 0.2})
    spec = resolve(config)
    island = Island(0, config, spec.market, spec.split.test_ranges())
    rows = [row for g in range(4) for row in island.step(g)]
    return config, spec, rows


def test_mixed_islands_hold_both_families_and_crossover_stays_within_one(mixed_island_rows):
    _, _, rows = mixed_island_rows
    family = {row["strategy_id"]: family_name(json.loads(row["genome"])) for row in rows}
    initial = [family[row["strategy_id"]] for row in rows if row["generation"] == 0]
    assert set(initial) == {"rules", "asmbtr"}
    crossed = [row for row in rows if row["operator"] in CROSSOVERS]
    assert crossed, "the island made no crossover"
    for row in crossed:
        assert len(row["parents"]) == 2
        assert family[row["parents"][0]] == family[row["parents"][1]] == family[row["strategy_id"]], row
    for row in rows:
        if row["operator"] in MUTATIONS:
            assert family[row["parents"][0]] == family[row["strategy_id"]]


def test_mixed_islands_are_deterministic(mixed_island_rows):
    config, spec, rows = mixed_island_rows
    island = Island(0, config, spec.market, spec.split.test_ranges())
    again = [row for g in range(4) for row in island.step(g)]
    assert [json.dumps(r, sort_keys=True, default=str) for r in again] == \
        [json.dumps(r, sort_keys=True, default=str) for r in rows]


def test_rules_only_islands_draw_no_family():
    """A rules-only run makes the genomes it made before families existed: no draw for the family."""
    config = small_config()
    spec = resolve(config)
    island = Island(0, config, spec.market, spec.split.test_ranges())
    rows = island.step(0)
    from evolution.families.rules import init_genome as rules_init
    from evolution.island import REDRAWS, generation_rng

    rng = generation_rng(config.seed, 0, 0)
    expected, seen = [], set()
    for _ in range(config.population * REDRAWS):
        if len(expected) == config.population:
            break
        sid = strategy_id(rules_init(rng, config.operators.max_conditions))
        if sid not in seen:
            seen.add(sid)
            expected.append(sid)
    assert [row["strategy_id"] for row in rows] == expected


def test_a_mixed_family_run_is_reproducible_and_resumes_to_the_same_bytes(tmp_path):
    import pandas as pd

    from evolution.pools import LocalPool
    from evolution.runner import execute, plan, plan_resume

    config = small_config(families={"rules": 0.6, "asmbtr": 0.4})

    def run(out, on_generation=None):
        planned = plan(config, out_dir=out)
        return execute(planned, LocalPool(config, planned.spec.market, planned.spec.split.test_ranges()),
                       on_generation=on_generation)

    class Interrupt(Exception):
        pass

    def stop(generation, pool):
        if generation == 2:
            raise Interrupt

    run(tmp_path / "a")
    run(tmp_path / "b")
    with pytest.raises(Interrupt):
        run(tmp_path / "c", stop)
    resumed = plan_resume(tmp_path / "c")
    execute(resumed, LocalPool(resumed.config, resumed.spec.market, resumed.spec.split.test_ranges()))
    reference = (tmp_path / "a" / "result.json").read_bytes()
    assert (tmp_path / "b" / "result.json").read_bytes() == reference
    assert (tmp_path / "c" / "result.json").read_bytes() == reference
    trials = pd.read_parquet(tmp_path / "a" / "trials")
    assert {family_name(json.loads(g)) for g in trials["genome"]} == {"rules", "asmbtr"}
    # the trial log's genome text is the canonical form its id hashes, for every family
    assert all(strategy_id(g) == sid for g, sid in zip(trials["genome"], trials["strategy_id"]))
    result = json.loads(reference)
    for member in result["hall_of_fame"]:
        assert strategy_id(member["genome"]) == member["strategy_id"]


# ---------------------------------------------------------------- the planted state edge is found


EDGE = StateEdge(depth=3, strength=0.3)


def _search(tmp_path, edge):
    from evolution.pools import LocalPool
    from evolution.runner import execute, plan

    market = state_edge_market(6000, seed=21, edge=edge)
    data = tmp_path / "state.csv"
    save_csv(market, data)
    config = small_config(families={"asmbtr": 1.0}, population=16, generations=5, seed=4)
    run = plan(config, data_path=data, out_dir=tmp_path / "run")
    result = execute(run, LocalPool(config, run.spec.market, run.spec.split.test_ranges()))
    best = result["hall_of_fame"][0]
    start = run.spec.split.holdout_start
    held = positions(best["genome"], market.to_frame())[start:]
    oracle = planted_state_positions(market, EDGE)[start:]
    both = (held != 0) & (oracle != 0)
    agreement = float((held[both] == oracle[both]).mean()) if both.any() else 0.0
    return best, agreement


def test_an_asmbtr_search_finds_a_planted_state_edge(tmp_path):
    best, agreement = _search(tmp_path, EDGE)
    genome = best["genome"]
    assert genome["family"] == "asmbtr"
    assert genome["depth"] >= EDGE.depth  # a shorter memory cannot see a three-bar parity
    assert best["metrics"]["holdout"]["sharpe"] > 3.0
    assert agreement > 0.8  # on the holdout it trades the planted rule


def test_the_same_search_on_a_random_walk_finds_nothing_of_the_kind(tmp_path):
    """The control: the generator without its edge. What the test above asserts fails here."""
    best, agreement = _search(tmp_path, None)
    assert best["metrics"]["holdout"]["sharpe"] < 3.0
    assert agreement < 0.8


def test_random_immigrants_are_new_random_genomes_of_the_configured_families():
    """operators.immigrant_probability: that share of the offspring are fresh random genomes
    (operator 'immigrant', no parents), drawn from config.families' shares as generation 0 is."""
    config = small_config(families={"rules": 0.5, "asmbtr": 0.5}, population=24, **{
        "operators.crossover_probability": 0.3, "operators.mutation_probability": 0.3,
        "operators.immigrant_probability": 0.4})
    spec = resolve(config)
    island = Island(0, config, spec.market, spec.split.test_ranges())
    rows = [row for g in range(4) for row in island.step(g)]
    immigrants = [row for row in rows if row["operator"] == "immigrant"]
    later = [row for row in rows if row["generation"] > 0]
    assert all(row["generation"] > 0 and row["parents"] == [] for row in immigrants)
    assert 0.2 < len(immigrants) / len(later) < 0.6  # about 0.4 of the evaluated offspring
    assert {family_name(json.loads(row["genome"])) for row in immigrants} == {"rules", "asmbtr"}
    assert not any(row["operator"] == "immigrant" for row in rows if row["generation"] == 0)
    with pytest.raises(ConfigError, match="immigrant_probability must be <= 1"):
        small_config(**{"operators.crossover_probability": 0.5, "operators.mutation_probability": 0.4,
                        "operators.immigrant_probability": 0.2})

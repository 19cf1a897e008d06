"""The in-process island: generations, dedupe, failures as values, selection, migration, state."""
from __future__ import annotations

import json

import numpy as np
import pytest
from evolution_helpers import small_config

from evolution.fitness import WORST
from evolution.island import Island, generation_rng
from evolution.market import resolve
from evolution.pools import LocalPool


@pytest.fixture(scope="module")
def setup():
    config = small_config()
    spec = resolve(config)
    return config, spec


def make_island(setup, index=0, **overrides):
    config, spec = setup
    if overrides:
        config = config.with_overrides(**overrides)
    return Island(index, config, spec.market, spec.split.test_ranges())


def test_generation_zero_is_a_random_population(setup):
    island = make_island(setup)
    rows = island.step(0)
    assert len(rows) == island.config.population
    assert {r["operator"] for r in rows} == {"init"}
    assert all(r["parents"] == [] for r in rows)
    assert len({r["strategy_id"] for r in rows}) == len(rows)
    assert len(island.population) == island.config.population
    row = rows[0]
    assert len(row["fold_sharpe"]) == 3 and len(row["oos_returns"]) > 10
    json.loads(row["genome"])


def test_a_strategy_is_never_evaluated_twice_on_an_island(setup):
    island = make_island(setup)
    ids = []
    for g in range(6):
        ids += [r["strategy_id"] for r in island.step(g)]
    assert len(ids) == len(set(ids))
    offspring_ops = {r["operator"] for r in island.step(6)}
    assert offspring_ops <= {"crossover_uniform", "crossover_swap", "mutate_gaussian", "mutate_categorical",
                             "mutate_add_condition", "mutate_drop_condition"}


def test_offspring_name_their_parents(setup):
    island = make_island(setup)
    known = {r["strategy_id"] for r in island.step(0)}
    rows = island.step(1)
    for r in rows:
        assert 1 <= len(r["parents"]) <= 2
        assert set(r["parents"]) <= known
        assert (len(r["parents"]) == 2) == r["operator"].startswith("crossover")


def test_a_failing_evaluation_gets_the_worst_fitness_and_the_generation_goes_on(setup):
    island = make_island(setup)
    real = island.evaluator.evaluate

    def flaky(population, *args, **kwargs):
        result = real(population, *args, **kwargs)
        result.errors[0] = "RuntimeError: boom"
        result.metrics[0] = np.nan
        return result

    island.evaluator.evaluate = flaky
    rows = island.step(0)
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and "boom" in failed[0]["error"]
    assert failed[0]["fitness"] == [-WORST, WORST]
    assert failed[0]["oos_returns"] is None
    assert len(rows) == island.config.population
    island.step(1)  # the next generation runs too
    assert failed[0]["strategy_id"] not in [ind["strategy_id"] for ind in island.population[:3]]


def _plain(rows):
    """Rows with their array columns as lists, for equality."""
    import numpy as np

    return [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()} for row in rows]


def test_same_seed_same_generation_same_bytes(setup):
    a, b = make_island(setup), make_island(setup)
    for g in range(4):
        assert _plain(a.step(g)) == _plain(b.step(g))
    assert a.state() == b.state()


def test_islands_draw_independent_streams(setup):
    a, b = make_island(setup, 0), make_island(setup, 1)
    assert [r["strategy_id"] for r in a.step(0)] != [r["strategy_id"] for r in b.step(0)]
    assert generation_rng(1, 0, 5).random() != generation_rng(1, 1, 5).random()
    assert generation_rng(1, 0, 5).random() != generation_rng(1, 0, 6).random()


def test_restore_then_replay_is_identical(setup):
    island = make_island(setup)
    island.step(0)
    island.step(1)
    saved = json.loads(json.dumps(island.state()))  # checkpoints are JSON
    expected = [_plain(island.step(2)), _plain(island.step(3))]
    fresh = make_island(setup)
    assert fresh.restore(saved) == 1
    assert [_plain(fresh.step(2)), _plain(fresh.step(3))] == expected


def test_state_deltas_rebuild_the_full_state_across_steps_migration_and_restore(setup):
    from evolution.island import apply_state_delta

    config, spec = setup
    pool = LocalPool(config, spec.market, spec.split.test_ranges())
    states = [None, None]
    for g in range(4):
        pool.call("step", [(g,)] * 2)
        if g == 1:  # newcomers enter `seen` through immigration, too
            outgoing = pool.call("emigrants", [(2, g)] * 2)
            pool.call("immigrate", [(outgoing[1], g), (outgoing[0], g)])
        deltas = pool.call("state_delta", [(g,)] * 2)
        assert all(len(d["seen_added"]) < len(island.seen) for d, island in zip(deltas, pool.islands)) or g == 0
        previous = states
        states = [apply_state_delta(before, d) for before, d in zip(states, deltas)]
        if g:  # the driver's cache grows in place: no pass over everything seen per generation
            assert all(now["seen"] is before["seen"] for now, before in zip(states, previous))
        full = pool.call("state", [(g,)] * 2)
        for rebuilt, truth in zip(states, full):
            assert rebuilt == truth
            assert list(rebuilt["seen"]) == list(truth["seen"])  # same order as well
        if g == 2:  # after a restore, deltas start from the restored state
            pool.restore(json.loads(json.dumps(states)))
            assert pool.call("state_delta", [(g,)] * 2)[0]["seen_added"] == {}


def test_a_call_for_the_wrong_generation_is_refused(setup):
    from evolution.island import IslandStateError

    island = make_island(setup)
    with pytest.raises(IslandStateError):
        island.step(3)
    island.step(0)
    with pytest.raises(IslandStateError):
        island.emigrants(2, 5)


def test_nsga2_population_keeps_the_pareto_front(setup):
    island = make_island(setup)
    island.step(0)
    island.step(1)
    pop = island.population
    values = np.array([[f[0], -f[1]] for f in (ind["fitness"] for ind in pop)])  # larger is better
    best_sharpe = max(range(len(pop)), key=lambda i: values[i, 0])
    assert best_sharpe < len(pop)
    # the first member belongs to the non-dominated front
    first = values[0]
    assert not any(np.all(v >= first) and np.any(v > first) for v in values)


def test_tournament_selection_with_one_objective_keeps_the_best(setup):
    island = make_island(setup, **{"selection": {"objectives": ["sharpe"], "tournament_size": 3, "min_trades": 1}})
    rows = island.step(0) + island.step(1)
    best = max(r["fitness"][0] for r in rows)
    assert island.population[0]["fitness"][0] == best
    assert [ind["fitness"][0] for ind in island.population] == sorted(
        (ind["fitness"][0] for ind in island.population), reverse=True)


def test_ring_migration_moves_the_best_and_logs_it(setup):
    config, spec = setup
    pool = LocalPool(config, spec.market, spec.split.test_ranges())
    pool.call("step", [(0,)] * 2)
    outgoing = pool.call("emigrants", [(2, 0)] * 2)
    assert [m["strategy_id"] for m in outgoing[0]] == [i["strategy_id"] for i in pool.islands[0].population[:2]]
    rows = pool.call("immigrate", [(outgoing[1], 0), (outgoing[0], 0)])
    assert {r["operator"] for r in rows[1]} == {"migration"}
    assert all(r["migrated_from"] == 0 and r["evaluated"] is False for r in rows[1])
    held = {i["strategy_id"] for i in pool.islands[1].population}
    assert {m["strategy_id"] for m in outgoing[0]} <= held
    assert len(pool.islands[1].population) == config.population


def test_vectorized_summaries_equal_the_per_genome_ones():
    import numpy as np

    from evolution import fitness as fit

    rng = np.random.default_rng(0)
    metrics = rng.normal(size=(7, 3, 15))
    metrics[2, 1, :] = np.nan  # a fold with undefined metrics
    metrics[4] = np.inf
    many = fit.summarize_many(metrics)
    cols = fit.fold_columns_many(metrics)
    for i in range(7):
        assert many[i] == fit.summarize(metrics[i])
        assert cols[i] == fit.fold_columns(metrics[i], 3)

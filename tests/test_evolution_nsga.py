"""The numpy NSGA-II against DEAP's reference implementation."""
from __future__ import annotations

import numpy as np
import pytest
from deap import base, tools

from evolution import nsga

WEIGHTS = (1.0, -1.0)


class _Ind:
    def __init__(self, fitness_cls, values, index):
        self.fitness = fitness_cls(values)
        self.index = index


@pytest.fixture(scope="module")
def fitness_cls():
    return type("TestFitness", (base.Fitness,), {"weights": WEIGHTS})


def _population(seed, n, ties):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, 2))
    if ties:
        values = np.round(values, 1)  # many equal and duplicated fitnesses
    return values


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ties", [False, True])
def test_fronts_and_crowding_equal_deap(fitness_cls, seed, ties):
    values = _population(seed, 60, ties)
    inds = [_Ind(fitness_cls, tuple(v), i) for i, v in enumerate(values)]
    deap_fronts = tools.sortNondominated(inds, len(inds))
    ours = nsga.non_dominated_fronts(values, np.array(WEIGHTS))
    assert [sorted(w.index for w in f) for f in deap_fronts] == [sorted(f.tolist()) for f in ours]
    for front_deap, front_ours in zip(deap_fronts, ours):
        tools.emo.assignCrowdingDist(front_deap)
        if ties:
            continue  # with equal values DEAP's distances depend on its list order, not on ours
        deap_dist = {w.index: w.fitness.crowding_dist for w in front_deap}
        ours_dist = nsga.crowding_distance(values[front_ours])
        np.testing.assert_allclose([deap_dist[i] for i in front_ours], ours_dist)


@pytest.mark.parametrize("seed", range(8))
def test_selection_matches_deap_up_to_crowding_ties(fitness_cls, seed):
    values = _population(seed, 80, ties=False)
    inds = [_Ind(fitness_cls, tuple(v), i) for i, v in enumerate(values)]
    deap = {w.index for w in tools.selNSGA2(inds, 30)}
    ours = set(nsga.select_nsga2(values, np.array(WEIGHTS), 30).tolist())
    assert len(ours) == 30
    fronts = nsga.non_dominated_fronts(values, np.array(WEIGHTS))
    taken = 0
    for front in fronts:
        if taken == 30:
            break
        members = set(front.tolist())
        if taken + len(front) <= 30:  # whole fronts: identical to DEAP
            assert members <= ours and members <= deap
            taken += len(front)
            continue
        # the cut front: both keep the most crowded; they may differ only among equal distances
        dist = dict(zip(front.tolist(), nsga.crowding_distance(values[front])))
        ours_cut, deap_cut = ours & members, deap & members
        assert len(ours_cut) == len(deap_cut) == 30 - taken
        assert sorted(dist[i] for i in ours_cut) == sorted(dist[i] for i in deap_cut)
        assert min(dist[i] for i in ours_cut) >= max(dist[i] for i in members - ours_cut)
        break


def test_selection_is_deterministic_and_sized():
    values = _population(3, 50, ties=True)
    a = nsga.select_nsga2(values, np.array(WEIGHTS), 20)
    b = nsga.select_nsga2(values.copy(), np.array(WEIGHTS), 20)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 20

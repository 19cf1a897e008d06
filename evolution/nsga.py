"""NSGA-II selection in numpy: non-dominated fronts and crowding distance.

The same selection as DEAP's ``tools.selNSGA2`` (fronts by Pareto dominance on weighted
objectives, the last front cut by crowding distance), vectorized: DEAP's pure-Python
``sortNondominated`` took more time per generation than the backtests it ranks. Ties are
broken by position in the input, so selection is deterministic. ``tests/test_evolution_nsga.py``
checks the fronts and crowding distances against DEAP's.
"""
from __future__ import annotations

import numpy as np
from numba import njit

import backtest.jit_cache  # noqa: F401  (the kernel below is cached by content, see backtest/jit_cache.py)


@njit(cache=True, nogil=True)
def front_ranks_nb(w: np.ndarray) -> np.ndarray:
    """Front index of every row of the weighted objectives ``w`` (N, M), 0 = Pareto front.

    Deb's fast non-dominated sort: i dominates j when i is >= j in every objective and >
    in one (NaN compares false, so it neither dominates nor is dominated).
    """
    n, m = w.shape
    dominated_by = np.zeros(n, np.int64)
    dominates = np.zeros((n, n), np.bool_)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            ge = True
            gt = False
            for k in range(m):
                a = w[i, k]
                b = w[j, k]
                if not a >= b:
                    ge = False
                    break
                if a > b:
                    gt = True
            if ge and gt:
                dominates[i, j] = True
                dominated_by[j] += 1
    rank = np.full(n, -1, np.int64)
    current = np.empty(n, np.int64)
    size = 0
    for i in range(n):
        if dominated_by[i] == 0:
            rank[i] = 0
            current[size] = i
            size += 1
    following = np.empty(n, np.int64)
    r = 0
    while size > 0:
        r += 1
        next_size = 0
        for a in range(size):
            i = current[a]
            for j in range(n):
                if dominates[i, j]:
                    dominated_by[j] -= 1
                    if dominated_by[j] == 0:
                        rank[j] = r
                        following[next_size] = j
                        next_size += 1
        current, following = following, current
        size = next_size
    return rank


def non_dominated_fronts(values: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
    """Indices of each Pareto front (ascending within a front), best first. values: (N, M)
    raw objective values; weights: (M,) positive to maximize, negative to minimize (as
    DEAP's Fitness.weights)."""
    w = np.asarray(values, dtype=np.float64) * np.asarray(weights, dtype=np.float64)
    if w.shape[0] == 0:
        return []
    rank = front_ranks_nb(np.ascontiguousarray(w.reshape(w.shape[0], -1)))
    order = np.argsort(rank, kind="stable")
    bounds = np.flatnonzero(np.diff(rank[order])) + 1
    return np.split(order, bounds)


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """DEAP's assignCrowdingDist for one front: values (n, M) raw objective values."""
    values = np.asarray(values, dtype=np.float64)
    n, m = values.shape
    distance = np.zeros(n)
    if n == 0:
        return distance
    order = np.arange(n)
    for i in range(m):
        order = order[np.argsort(values[order, i], kind="stable")]  # DEAP re-sorts one list in place
        distance[order[0]] = np.inf
        distance[order[-1]] = np.inf
        lo, hi = values[order[0], i], values[order[-1], i]
        if hi == lo:
            continue
        norm = m * (hi - lo)
        distance[order[1:-1]] += (values[order[2:], i] - values[order[:-2], i]) / norm
    return distance


def rank_and_crowding(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Front rank (0 = Pareto front) and crowding distance of every individual."""
    n = len(values)
    rank = np.zeros(n, dtype=np.int64)
    crowd = np.zeros(n)
    for r, front in enumerate(non_dominated_fronts(values, weights)):
        rank[front] = r
        crowd[front] = crowding_distance(np.asarray(values)[front])
    return rank, crowd


def select_nsga2(values: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k survivors: whole fronts in order, the last one by crowding distance
    (largest first, ties by input position)."""
    values = np.asarray(values, dtype=np.float64)
    chosen: list[int] = []
    for front in non_dominated_fronts(values, weights):
        if len(chosen) + len(front) <= k:
            chosen.extend(front.tolist())
            if len(chosen) == k:
                break
            continue
        crowd = crowding_distance(values[front])
        order = np.argsort(-crowd, kind="stable")
        chosen.extend(front[order[: k - len(chosen)]].tolist())
        break
    return np.asarray(chosen, dtype=np.int64)

"""NSGA-II selection in numpy: non-dominated fronts and crowding distance.

The same selection as DEAP's ``tools.selNSGA2`` (fronts by Pareto dominance on weighted
objectives, the last front cut by crowding distance), vectorized: DEAP's pure-Python
``sortNondominated`` took more time per generation than the backtests it ranks. Ties are
broken by position in the input, so selection is deterministic. ``tests/test_evolution_nsga.py``
checks the fronts and crowding distances against DEAP's.
"""
from __future__ import annotations

import numpy as np


def non_dominated_fronts(values: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
    """Indices of each Pareto front, best first. values: (N, M) raw objective values;
    weights: (M,) positive to maximize, negative to minimize (as DEAP's Fitness.weights)."""
    w = np.asarray(values, dtype=np.float64) * np.asarray(weights, dtype=np.float64)
    n = w.shape[0]
    if n == 0:
        return []
    ge = (w[:, None, :] >= w[None, :, :]).all(axis=2)
    gt = (w[:, None, :] > w[None, :, :]).any(axis=2)
    dominates = ge & gt  # dominates[i, j]: i dominates j
    dominated_by = dominates.sum(axis=0)
    fronts = []
    remaining = np.ones(n, dtype=bool)
    while remaining.any():
        front = np.flatnonzero(remaining & (dominated_by == 0))
        fronts.append(front)
        remaining[front] = False
        dominated_by -= dominates[front].sum(axis=0)
    return fronts


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

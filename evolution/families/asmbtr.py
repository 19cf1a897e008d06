"""Genetic operators of the ``asmbtr`` family (genomes of ``backtest/families/asmbtr.py``).

The search's operator names keep their meaning where the family has one: a gaussian
mutation moves the numeric genes, a categorical one redraws direction or neutral or
switches a stop on or off; the structural pair grows or shrinks the state (``depth`` one
bar more or less, as adding or dropping a condition grows or shrinks a rules genome).
``crossover_uniform`` swaps each gene with probability ``indpb``; ``crossover_swap`` swaps
the table genes (depth, decay, min_move) as one block, keeping each parent's trading
genes (threshold, direction, neutral, stops).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from backtest.families.asmbtr import (
    DECAY_BOUNDS,
    DEPTH_BOUNDS,
    MIN_MOVE_BOUNDS,
    NAME,
    NEUTRALS,
    THRESHOLD_BOUNDS,
    normalize,
)
from backtest.families.base import FAMILY_KEY, GENOME_DIRECTIONS, STOP_LOSS_BOUNDS, TAKE_PROFIT_BOUNDS
from evolution.families.base import FamilyOperators, Genome, other, perturb, retry, retry_pair

NUMERIC = {  # gene: (low, high, is_int)
    "depth": (*DEPTH_BOUNDS, True),
    "decay": (*DECAY_BOUNDS, False),
    "threshold": (*THRESHOLD_BOUNDS, False),
    "min_move": (*MIN_MOVE_BOUNDS, False),
    "stop_loss": (*STOP_LOSS_BOUNDS, False),
    "take_profit": (*TAKE_PROFIT_BOUNDS, False),
}
TABLE_GENES = ("depth", "decay", "min_move")
MIN_MOVE_SMALLEST = 1e-4  # random non-zero minimum moves are log-uniform from here to the bound


def _fraction(rng, bounds: tuple[float, float]) -> float:
    return round(float(rng.uniform(*bounds)), 4)


def _random_decay(rng: np.random.Generator) -> float:
    """A decay whose memory ``1 / (1 - decay)`` (updates of a state) is log-uniform between the
    bounds' (5 .. 1000): uniform decays would give memories under 200 updates 97% of the time,
    too short for any edge weaker than a few percent of direction probability."""
    low, high = (np.log(1.0 / (1.0 - d)) for d in DECAY_BOUNDS)
    decay = round(float(1.0 - np.exp(-rng.uniform(low, high))), 4)
    return min(max(decay, DECAY_BOUNDS[0]), DECAY_BOUNDS[1])


EXCESS_BOUNDS = (0.0005, THRESHOLD_BOUNDS[1] - 0.5)  # threshold - 0.5: the excess probability a state must show


def _random_threshold(rng: np.random.Generator) -> float:
    """A threshold whose excess probability ``threshold - 0.5`` is log-uniform (0.05% .. 45%):
    an edge is a scale, a state that goes up 51% of the time and one that does 70% are both
    edges; a uniform draw would put 89% of the thresholds above 0.55, where a table that
    has learned a weak edge never trades (its probabilities settle within a few percent of 0.5)."""
    low, high = np.log(EXCESS_BOUNDS[0]), np.log(EXCESS_BOUNDS[1])
    return min(max(round(0.5 + float(np.exp(rng.uniform(low, high))), 4), THRESHOLD_BOUNDS[0]), THRESHOLD_BOUNDS[1])


def _perturb_threshold(threshold: float, sigma: float, rng: np.random.Generator) -> float:
    """Gaussian noise on the excess probability ``threshold - 0.5`` in log space (as it is drawn)."""
    excess = max(float(threshold) - 0.5, EXCESS_BOUNDS[0])
    excess = perturb(excess, *EXCESS_BOUNDS, False, sigma, rng, log_scale=True)
    return min(max(round(0.5 + excess, 4), THRESHOLD_BOUNDS[0]), THRESHOLD_BOUNDS[1])


_DEPTHS = np.arange(DEPTH_BOUNDS[0], DEPTH_BOUNDS[1] + 1)
_DEPTH_CDF = np.cumsum(2.0 ** (-_DEPTHS / 2.0)) / np.sum(2.0 ** (-_DEPTHS / 2.0))


def _random_depth(rng: np.random.Generator) -> int:
    """A depth drawn with weight 2^(-depth/2): each of the 2^depth states learns from about
    bars / 2^depth updates, so the noise of its estimate grows as 2^(depth/2); a uniform draw
    would spend most random genomes on tables too large to learn from the data (depth 8 and
    up: 256+ states), which the search then has to walk down one step at a time."""
    return int(_DEPTHS[int(_DEPTH_CDF.searchsorted(rng.random(), side="right"))])


def init_genome(rng: np.random.Generator, max_conditions: int = 0) -> Genome:
    """A random asmbtr genome inside the gene bounds (``max_conditions`` is the rules family's
    and means nothing here). Half of them count every move (min_move 0); decays are drawn
    log-uniform in memory (:func:`_random_decay`)."""
    min_move = 0.0
    if rng.random() >= 0.5:
        min_move = round(float(np.exp(rng.uniform(np.log(MIN_MOVE_SMALLEST), np.log(MIN_MOVE_BOUNDS[1])))), 6)
    return normalize({
        FAMILY_KEY: NAME,
        "depth": _random_depth(rng),
        "decay": _random_decay(rng),
        "threshold": _random_threshold(rng),
        "min_move": min_move,
        "direction": GENOME_DIRECTIONS[int(rng.integers(len(GENOME_DIRECTIONS)))],
        "neutral": NEUTRALS[int(rng.integers(len(NEUTRALS)))],
        "stop_loss": None if rng.random() < 0.5 else _fraction(rng, STOP_LOSS_BOUNDS),
        "take_profit": None if rng.random() < 0.5 else _fraction(rng, TAKE_PROFIT_BOUNDS),
    })


def _perturb_decay(decay: float, sigma: float, rng: np.random.Generator) -> float:
    """Gaussian noise on the decay's memory ``1 / (1 - decay)`` in log space (as it is drawn,
    :func:`_random_decay`): 10 -> 17 and 500 -> 850 updates alike. In decay space a step of
    sigma times the range would move a memory of 10 by two updates and one of 500 past the bound."""
    low, high = (1.0 / (1.0 - d) for d in DECAY_BOUNDS)
    memory = perturb(1.0 / (1.0 - float(decay)), low, high, False, sigma, rng, log_scale=True)
    return min(max(round(1.0 - 1.0 / memory, 4), DECAY_BOUNDS[0]), DECAY_BOUNDS[1])


def mutate_gaussian(genome: Mapping, rng: np.random.Generator, sigma: float = 0.1, indpb: float = 0.3) -> Genome:
    """Gaussian noise on the numeric genes present, sigma a fraction of each gene's range (the
    decay's in log memory, the threshold's in log excess probability: as they are drawn)."""

    def attempt() -> dict:
        child = dict(genome)
        genes = [name for name in NUMERIC if child.get(name) is not None]
        chosen = [name for name in genes if rng.random() < indpb] or [genes[int(rng.integers(len(genes)))]]
        for name in chosen:
            low, high, is_int = NUMERIC[name]
            if name == "decay":
                child[name] = _perturb_decay(child[name], sigma, rng)
            elif name == "threshold":
                child[name] = _perturb_threshold(child[name], sigma, rng)
            else:
                child[name] = perturb(child[name], low, high, is_int, sigma, rng, log_scale=False)
        return child

    return retry(attempt, genome)


def mutate_categorical(genome: Mapping, rng: np.random.Generator) -> Genome:
    """Redraw the direction or the neutral rule, or switch a stop-loss/take-profit on or off."""

    def attempt() -> dict:
        child = dict(genome)
        kind = ("direction", "neutral", "stop_loss", "take_profit")[int(rng.integers(4))]
        if kind == "direction":
            child["direction"] = other(GENOME_DIRECTIONS, child["direction"], rng)
        elif kind == "neutral":
            child["neutral"] = other(NEUTRALS, child["neutral"], rng)
        else:
            bounds = STOP_LOSS_BOUNDS if kind == "stop_loss" else TAKE_PROFIT_BOUNDS
            child[kind] = None if child[kind] is not None else _fraction(rng, bounds)
        return child

    return retry(attempt, genome)


def _deepen(step: int):
    def mutate(genome: Mapping, rng: np.random.Generator) -> Genome:
        depth = int(genome["depth"]) + step
        if not DEPTH_BOUNDS[0] <= depth <= DEPTH_BOUNDS[1]:
            return mutate_gaussian(genome, rng)
        return normalize({**genome, "depth": depth})

    mutate.__name__ = "mutate_deeper" if step > 0 else "mutate_shallower"
    mutate.__doc__ = f"depth {step:+d} (the state remembers one bar {'more' if step > 0 else 'less'}); at the bound a gaussian mutation"
    return mutate


mutate_deeper = _deepen(+1)
mutate_shallower = _deepen(-1)


def crossover_uniform(a: Mapping, b: Mapping, rng: np.random.Generator, indpb: float = 0.5) -> tuple[Genome, Genome]:
    """Each gene is swapped between the parents with probability ``indpb``."""

    def attempt() -> tuple[dict, dict]:
        x, y = dict(a), dict(b)
        for key in sorted(x):
            if key != FAMILY_KEY and rng.random() < indpb:
                x[key], y[key] = y[key], x[key]
        return x, y

    return retry_pair(attempt, a, b)


def crossover_swap(a: Mapping, b: Mapping, rng: np.random.Generator) -> tuple[Genome, Genome]:
    """The table genes (depth, decay, min_move) change parents as one block."""
    x = {**a, **{key: b[key] for key in TABLE_GENES}}
    y = {**b, **{key: a[key] for key in TABLE_GENES}}
    return retry_pair(lambda: (x, y), a, b)


OPERATORS = FamilyOperators.named(NAME, init_genome, (crossover_uniform, crossover_swap),
                                  (mutate_gaussian, mutate_categorical, mutate_deeper, mutate_shallower))

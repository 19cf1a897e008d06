"""One island: a population evolving by NSGA-II (or tournament) selection and our plain-data operators.

:class:`Island` is the in-process implementation; ``RayIsland`` in ``evolution/pools.py`` is
the same class behind ``ray.remote``. Both have the same interface:

* ``step(generation) -> list[row]``: make and score one generation (generation 0 is the
  random initial population), select survivors, return the trial rows of every genome
  evaluated (genomes already seen on this island are not evaluated again).
* ``emigrants(k) -> list[individual]`` and ``immigrate(individuals, generation) -> list[row]``
  for ring migration (rows with operator ``migration``).
* ``state() -> dict`` and ``restore(state)``: plain, JSON-able state for checkpoints.

All randomness of generation g on island i comes from
``SeedSequence(seed, spawn_key=(i, g))``, i.e. the root sequence spawned per island and
per generation, so replaying a generation from a checkpoint gives the same bytes.
An individual is plain data: ``{"strategy_id", "genome", "fitness", "walk_forward"}``.

An island may hold several genome families (``config.families``: their shares in the random
initial population). Offspring keep their family: a crossover whose second parent is of
another family mates the first with the next selected parent of its own family, or, when
there is none, copies it unchanged (operator ``reproduction``).
"""
from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from backtest import Evaluator
from backtest.families import family_name
from backtest.strategy import canonical_json, canonical_text_and_id, normalized_strategy_id
from evolution import fitness as fit
from evolution import nsga
from evolution.config import EvolutionConfig
from evolution.families import crossover, init_genome, mutate
from evolution.operators import IMMIGRANT, INIT, MIGRATION, REPRODUCTION
from evolution.telemetry import record_island

REDRAWS = 4  # attempts to make an offspring this island has not seen yet


class IslandStateError(RuntimeError):
    """A call that does not match the island's generation (e.g. an actor restarted empty)."""


def generation_rng(seed: int, island: int, generation: int) -> np.random.Generator:
    """The generator of one island's generation: the root SeedSequence spawned per island and generation."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(island, generation)))


class Island:
    def __init__(self, index: int, config: EvolutionConfig, market: Any, folds: np.ndarray,
                 evaluator: Evaluator | None = None):
        self.index = int(index)
        self.config = config
        self.market = market
        self.folds = np.asarray(folds, dtype=np.int64)
        # islands stepped one after another in one process share one (its buffers are reused per call)
        self.evaluator = evaluator or Evaluator(memory_bytes=config.evaluator_memory_mb * 2**20)
        self.objectives = tuple(config.selection.objectives)
        self._weights = np.asarray(fit.weights(self.objectives), dtype=np.float64)
        self._families = _cdf({name: share for name, share in config.families.items() if share > 0})
        self.restore(None)

    # ------------------------------------------------------------------ state

    def restore(self, state: dict | None) -> int:
        """Reset to a checkpointed state (None: before generation 0). Returns the generation."""
        self._seen_added: dict[str, dict] = {}  # since the last state_delta
        self._cached = 0  # offspring of the last generation scored from the seen cache (for metrics)
        if state is None:
            self.generation, self.population, self.seen = -1, [], {}
        else:
            if int(state["island"]) != self.index:
                raise ValueError(f"state of island {state['island']} given to island {self.index}")
            self.generation = int(state["generation"])
            self.population = [dict(ind) for ind in state["population"]]
            self.seen = {k: dict(v) for k, v in state["seen"].items()}
        return self.generation

    def ping(self) -> int:
        return self.index

    # ------------------------------------------------------------------ evolution

    def _expect(self, generation: int) -> None:
        if generation != self.generation:
            raise IslandStateError(
                f"island {self.index} is at generation {self.generation}, the caller expected {generation}"
            )

    def state(self, generation: int | None = None) -> dict:
        if generation is not None:
            self._expect(generation)
        return {
            "island": self.index,
            "generation": self.generation,
            "population": self.population,
            "seen": self.seen,
        }

    def state_delta(self, generation: int | None = None) -> dict:
        """The state as :meth:`state` gives it, but with only the ``seen_added`` entries since the
        last call (or restore) instead of all of ``seen``: the driver keeps the rest
        (:func:`apply_state_delta`), so what crosses the object store each generation stays small."""
        if generation is not None:
            self._expect(generation)
        added, self._seen_added = self._seen_added, {}
        return {"island": self.index, "generation": self.generation, "population": self.population,
                "seen_added": added, "cached": self._cached}

    def step_and_state(self, generation: int) -> tuple[list[dict], dict]:
        """:meth:`step` and then :meth:`state_delta` in one call (one round trip to an actor)."""
        rows = self.step(generation)
        return rows, self.state_delta(generation)

    def _remember(self, strategy_id: str, known: dict) -> None:
        self.seen[strategy_id] = known
        self._seen_added[strategy_id] = known

    def step(self, generation: int) -> list[dict]:
        self._expect(generation - 1)
        rng = generation_rng(self.config.seed, self.index, generation)
        if generation == 0:
            candidates = self._initial(rng)
        else:
            candidates = self._offspring(rng)
        rows = self._score(candidates, generation)
        pool = self._dedupe(self.population + [c for c in candidates if "fitness" in c])
        self.population = self._survivors(pool, self.config.population)
        self.generation = generation
        # The island's long-lived state (seen strategies, population) only grows; move it out
        # of the cyclic collector's sight so its full collections stop rescanning it every
        # generation (measured: ~10% of a generation). Reference counting still frees it.
        gc.freeze()
        return rows

    def _random_genome(self, rng) -> dict:
        """A random genome, its family drawn by ``config.families``' shares."""
        families, cdf = self._families
        # one family draws nothing from rng: a rules-only run makes the genomes it always made
        family = families[int(cdf.searchsorted(rng.random(), side="right"))] if len(families) > 1 else families[0]
        return init_genome(rng, self.config.operators.max_conditions, family)

    def _initial(self, rng) -> list[dict]:
        out, ids = [], set()
        for _ in range(self.config.population * REDRAWS):
            if len(out) == self.config.population:
                break
            genome = self._random_genome(rng)
            sid = normalized_strategy_id(genome)
            if sid in ids:
                continue
            ids.add(sid)
            out.append({"strategy_id": sid, "genome": genome, "operator": INIT, "parents": []})
        return out

    def _offspring(self, rng) -> list[dict]:
        ops = self.config.operators
        parents = self._select_parents(rng, 2 * self.config.population * REDRAWS)
        cursor = 0
        cx_names, cx_cdf = _cdf(ops.crossover_weights)
        mut_names, mut_cdf = _cdf(ops.mutation_weights)
        out: list[dict] = []
        made: set[str] = set()
        for _ in range(self.config.population):
            child = None
            for _attempt in range(REDRAWS):
                a, b = parents[cursor], parents[cursor + 1]
                cursor += 2
                u = rng.random()
                if u < ops.crossover_probability:
                    name = cx_names[int(cx_cdf.searchsorted(rng.random(), side="right"))]
                    b = _mate(a, b, parents, cursor)
                    if b is None:  # no partner of a's family: a passes through
                        name, genome, lineage = REPRODUCTION, a["genome"], [a["strategy_id"]]
                    else:
                        genome, _ = crossover(name, a["genome"], b["genome"], rng)
                        lineage = [a["strategy_id"], b["strategy_id"]]
                elif u < ops.crossover_probability + ops.mutation_probability:
                    name = mut_names[int(mut_cdf.searchsorted(rng.random(), side="right"))]
                    if name == "mutate_gaussian":
                        genome = mutate(name, a["genome"], rng, sigma=ops.gaussian_sigma, indpb=ops.gene_probability)
                    else:
                        genome = mutate(name, a["genome"], rng)
                    lineage = [a["strategy_id"]]
                elif u < ops.crossover_probability + ops.mutation_probability + ops.immigrant_probability:
                    name, genome, lineage = IMMIGRANT, self._random_genome(rng), []
                else:
                    name, genome, lineage = REPRODUCTION, a["genome"], [a["strategy_id"]]
                text, sid = canonical_text_and_id(genome)  # the text is the trial log's genome column
                child = {"strategy_id": sid, "genome": genome, "operator": name, "parents": lineage,
                         "canonical": text}
                if sid not in self.seen and sid not in made:
                    break
            made.add(child["strategy_id"])
            out.append(child)
        return out

    def _score(self, candidates: list[dict], generation: int) -> list[dict]:
        """Evaluate the candidates this island has not seen; attach fitness to all of them."""
        wf_cfg = self.config.walk_forward
        fresh = [c for c in candidates if c["strategy_id"] not in self.seen]
        unique: dict[str, dict] = {}
        for c in fresh:
            unique.setdefault(c["strategy_id"], c)
        todo = list(unique.values())
        rows: list[dict] = []
        started = time.perf_counter()
        if todo:
            result = self.evaluator.evaluate(
                [c["genome"] for c in todo], self.market, self.folds,
                fees=self.config.costs.fees, slippage=self.config.costs.slippage,
                init_cash=self.config.costs.init_cash, bucket_bars=wf_cfg.bucket_bars,
                normalized=True,  # operators return normalized genomes
                strategy_ids=[c["strategy_id"] for c in todo],
            )
            n_folds = self.folds.shape[0]
            summaries = fit.summarize_many(result.metrics)
            fold_cols = fit.fold_columns_many(result.metrics)
            for i, c in enumerate(todo):
                error = result.errors.get(i)
                summary = summaries[i] if error is None else {n: None for n in fit.SUMMARY_NAMES}
                values = fit.objectives(
                    summary, self.objectives, n_folds, self.config.selection.min_trades, error is not None
                )
                self._remember(c["strategy_id"], {"fitness": values, "walk_forward": summary})
                buckets = None
                if error is None and result.buckets is not None:
                    b = result.buckets[i] - 1.0
                    buckets = b if np.isfinite(b).all() else None  # ndarray: cheap to pickle and to write
                rows.append(
                    _row(c, self.index, generation, values, summary, error, True)
                    | (fold_cols[i] if error is None else fit.fold_columns(None, n_folds))
                    | {"oos_returns": buckets}
                )
        self._cached = len(candidates) - len(todo)
        record_island(self.index, len(todo), self._cached, time.perf_counter() - started)
        for c in candidates:
            known = self.seen.get(c["strategy_id"])
            if known is not None:
                c["fitness"] = list(known["fitness"])
                c["walk_forward"] = dict(known["walk_forward"])
        return rows

    # ------------------------------------------------------------------ selection

    @staticmethod
    def _values(pool: Sequence[dict]) -> np.ndarray:
        return np.array([ind["fitness"] for ind in pool], dtype=np.float64).reshape(len(pool), -1)

    def _survivors(self, pool: list[dict], k: int) -> list[dict]:
        """NSGA-II (several objectives) or elitist truncation (one objective); best first."""
        if len(self.objectives) > 1:
            chosen = nsga.select_nsga2(self._values(pool), self._weights, k)
            return [_individual(pool[i]) for i in chosen]
        sign = fit.weights(self.objectives)[0]
        order = sorted(range(len(pool)), key=lambda i: (-sign * pool[i]["fitness"][0], pool[i]["strategy_id"]))
        return [_individual(pool[i]) for i in order[:k]]

    def _select_parents(self, rng, k: int) -> list[dict]:
        """Tournaments drawn from ``rng``: NSGA-II's (front rank, crowding distance) binary
        tournament with several objectives, a ``tournament_size`` tournament otherwise."""
        pop = self.population
        n = len(pop)
        if len(self.objectives) > 1:
            rank, crowd = nsga.rank_and_crowding(self._values(pop), self._weights)
            picks = rng.integers(n, size=(k, 2))
            i, j = picks[:, 0], picks[:, 1]
            first = (rank[i] < rank[j]) | ((rank[i] == rank[j]) & (crowd[i] >= crowd[j]))
            return [pop[w] for w in np.where(first, i, j).tolist()]
        size = min(self.config.selection.tournament_size, n)
        sign = fit.weights(self.objectives)[0]
        scores = np.array([sign * ind["fitness"][0] for ind in pop])
        picks = rng.integers(n, size=(k, size))
        return [pop[int(row[np.argmax(scores[row])])] for row in picks]

    @staticmethod
    def _dedupe(pool: list[dict]) -> list[dict]:
        seen, out = set(), []
        for ind in pool:
            if ind["strategy_id"] not in seen:
                seen.add(ind["strategy_id"])
                out.append(ind)
        return out

    # ------------------------------------------------------------------ migration

    def emigrants(self, k: int, generation: int) -> list[dict]:
        """The best k individuals (population order is best first)."""
        self._expect(generation)
        return [_individual(ind) | {"from_island": self.index} for ind in self.population[:k]]

    def immigrate(self, individuals: list[dict], generation: int) -> list[dict]:
        """Replace the worst members by newcomers this island does not hold yet."""
        self._expect(generation)
        present = {ind["strategy_id"] for ind in self.population}
        newcomers = [ind for ind in individuals if ind["strategy_id"] not in present]
        if not newcomers:
            return []
        keep = self.population[: len(self.population) - len(newcomers)]
        rows = []
        for ind in newcomers:
            if ind["strategy_id"] not in self.seen:
                self._remember(ind["strategy_id"], {"fitness": list(ind["fitness"]),
                                                    "walk_forward": dict(ind["walk_forward"])})
            rows.append(
                _row({**ind, "operator": MIGRATION, "parents": [ind["strategy_id"]]}, self.index, generation,
                     ind["fitness"], ind["walk_forward"], None, False)
                | {"migrated_from": int(ind["from_island"])}
                | fit.fold_columns(None, self.folds.shape[0]) | {"oos_returns": None}
            )
        self.population = self._survivors(keep + [_individual(i) for i in newcomers], len(self.population))
        return rows


def apply_state_delta(before: dict | None, delta: dict) -> dict:
    """The island's full state from the one before its generation and its ``state_delta``.

    ``before``'s seen cache is extended in place and shared with the result: whoever applies
    the delta keeps no older state (the driver restores islands from the newest one). Copying a
    cache that only grows would cost the driver a pass over everything an island has seen, per
    island and generation: 128,000 entries after 1,000 generations of 128."""
    seen = before["seen"] if before is not None else {}
    seen.update(delta["seen_added"])
    return {"island": delta["island"], "generation": delta["generation"], "population": delta["population"],
            "seen": seen}


def _mate(a: dict, b: dict, parents: list[dict], cursor: int) -> dict | None:
    """a's crossover partner: b when it is of a's family, else the first selected parent from
    ``cursor`` on that is (None: there is none). Draws nothing: the stream stays the same."""
    family = family_name(a["genome"])
    if family_name(b["genome"]) == family:
        return b
    return next((p for p in parents[cursor:] if family_name(p["genome"]) == family), None)


def _individual(ind: dict) -> dict:
    return {
        "strategy_id": ind["strategy_id"],
        "genome": ind["genome"],
        "fitness": list(ind["fitness"]),
        "walk_forward": dict(ind["walk_forward"]),
    }


def _weights(mapping: dict[str, float]) -> tuple[list[str], np.ndarray]:
    names = sorted(mapping)
    w = np.array([mapping[n] for n in names], dtype=np.float64)
    return names, w / w.sum()


def _cdf(mapping: dict[str, float]) -> tuple[list[str], np.ndarray]:
    """Names and the cumulative distribution of their weights: ``cdf.searchsorted(rng.random(),
    side="right")`` draws exactly as ``rng.choice(len(names), p=weights)`` does (same draw, same
    stream), without choice's per-call validation."""
    names, w = _weights(mapping)
    cdf = w.cumsum()
    cdf /= cdf[-1]
    return names, cdf


def _row(c: dict, island: int, generation: int, values, summary, error, evaluated: bool) -> dict:
    return {
        "strategy_id": c["strategy_id"],
        "island": island,
        "generation": generation,
        "parents": list(c["parents"]),
        "operator": c["operator"],
        "genome": c.get("canonical") or canonical_json(c["genome"], normalized=True),
        "error": error,
        "evaluated": evaluated,
        "migrated_from": None,
        "fitness": [float(v) for v in values],
        **{f"wf_{k}": v for k, v in summary.items()},
    }

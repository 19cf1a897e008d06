"""A small, real run directory for lineage tests, benchmarks and the notebook.

:func:`build_fixture_run` evolves a few tiny island populations with plain mutation and
crossover on a synthetic planted-edge market, scores every genome with
``backtest.evaluate`` on walk-forward folds, and writes what ``evolve run`` writes:
``result.json`` (hall of fame with walk-forward and holdout metrics, DSR, PBO, lineage)
and the trial log as Parquet (``trials.parquet`` or ``trials/part-*.parquet``). Every
number is computed, none is made up; only the search itself is deliberately simple. It
stands in for the evolution engine wherever lineage logging needs a run to log.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest import evaluate, normalize_genome, strategy_id
from backtest.data import PlantedEdge, planted_edge_genome, synthetic_market
from backtest.families.rules import INDICATORS
from backtest.strategy import GenomeError
from backtest.validation import dsr_from_returns, probability_of_backtest_overfitting, walk_forward_split
from evolution.families.rules import init_genome as random_genome

WF_METRICS = ("sharpe", "total_return", "max_drawdown", "n_trades")


def _mutate(genome: dict, rng: np.random.Generator) -> dict:
    child = copy.deepcopy(genome)
    indicators = [side for block in ("entry", "exit") for cond in child[block]["conditions"]
                  for side in (cond["lhs"], cond["rhs"]) if isinstance(side, dict) and "window" in side]
    if indicators:
        target = indicators[int(rng.integers(len(indicators)))]
        gene = INDICATORS[target["name"]].genes[0]
        target["window"] = int(np.clip(target["window"] + int(rng.integers(-5, 6)) or 1, gene.low, gene.high))
    else:
        child["direction"] = ("long", "short", "both")[int(rng.integers(3))]
    return child


def _crossover(a: dict, b: dict) -> dict:
    child = copy.deepcopy(a)
    child["exit"] = copy.deepcopy(b["exit"])
    return child


def _wf_summary(metrics: np.ndarray, names: dict[str, int]) -> dict[str, float]:
    """Walk-forward summary over folds: mean Sharpe, compounded return, worst drawdown, trades."""
    sharpe = metrics[:, names["sharpe"]]
    total = metrics[:, names["total_return"]]
    return {
        "sharpe": float(np.nanmean(sharpe)) if np.isfinite(sharpe).any() else float("nan"),
        "total_return": float(np.prod(1.0 + np.nan_to_num(total)) - 1.0),
        "max_drawdown": float(np.nanmax(metrics[:, names["max_drawdown"]])),
        "n_trades": int(np.nansum(metrics[:, names["n_trades"]])),
    }


def build_fixture_run(
    run_dir: str | Path,
    *,
    seed: int = 7,
    n_bars: int = 6000,
    islands: int = 2,
    population: int = 10,
    generations: int = 4,
    n_folds: int = 3,
    hall_of_fame: int = 5,
    promoted: int = 2,
    bucket_bars: int = 100,
    trials_layout: str = "file",
    on_generation: Callable[[int, list[dict]], None] | None = None,
) -> dict:
    """Write ``result.json`` and the trial log of a small real search to ``run_dir``; return the result.

    ``on_generation(generation, per_island_stats)`` is called after each generation with one
    dict per island (island, best_fitness, median_fitness, diversity, evaluations), as the
    evolution engine calls the lineage logger. ``trials_layout``: ``"file"`` writes
    ``trials.parquet``, ``"parts"`` one ``trials/part-GGGG.parquet`` per generation.
    """
    from backtest.metrics import METRIC_INDEX

    if trials_layout not in ("file", "parts"):
        raise ValueError(f"trials_layout must be 'file' or 'parts', got {trials_layout!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    edge = PlantedEdge()
    market = synthetic_market(n_bars, seed=seed, planted_edge=edge)
    split = walk_forward_split(n_bars, n_folds=n_folds, holdout_fraction=0.2)
    folds = split.test_ranges()
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    config = {"seed": seed, "n_bars": n_bars, "islands": islands, "population": population,
              "generations": generations, "n_folds": n_folds, "bucket_bars": bucket_bars,
              "market": {"kind": "synthetic", "planted_edge": {"fast": edge.fast, "slow": edge.slow,
                                                               "strength": edge.strength}}}
    config_id = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]

    rows: list[dict] = []
    scores: dict[str, float] = {}
    genomes: dict[str, dict] = {}
    wf: dict[str, dict] = {}
    buckets: dict[str, np.ndarray] = {}
    origin: dict[str, dict] = {}
    pops: list[list[tuple[dict, list[str], str]]] = []
    for island in range(islands):
        members = [(random_genome(rng, max_conditions=2), [], "init") for _ in range(population)]
        if island == 0:
            members[0] = (normalize_genome(planted_edge_genome(edge)), [], "init")
        pops.append(members)

    written_parts = 0
    for generation in range(generations):
        stats = []
        generation_rows = []
        for island in range(islands):
            fresh = []
            for genome, parents, operator in pops[island]:
                try:
                    genome = normalize_genome(genome)
                except GenomeError:
                    continue
                sid = strategy_id(genome)
                if sid in scores or any(sid == strategy_id(g) for g, _, _ in fresh):
                    continue
                fresh.append((genome, parents, operator))
            if fresh:
                result = evaluate([g for g, _, _ in fresh], market, folds, bucket_bars=bucket_bars)
                for k, (genome, parents, operator) in enumerate(fresh):
                    sid = result.strategy_ids[k]
                    error = result.errors.get(k)
                    summary = _wf_summary(result.metrics[k], METRIC_INDEX)
                    fitness = summary["sharpe"] if error is None and np.isfinite(summary["sharpe"]) else -np.inf
                    series = result.buckets[k] - 1.0
                    scores[sid], genomes[sid], wf[sid], buckets[sid] = fitness, genome, summary, series
                    origin[sid] = {"generation": generation, "island": island, "operator": operator,
                                   "parents": list(parents)}
                    generation_rows.append({
                        "strategy_id": sid, "island": island, "generation": generation,
                        "parents": list(parents), "operator": operator,
                        "genome": json.dumps(genome, sort_keys=True), "error": error,
                        "fitness": float(fitness),
                        **{f"walk_forward_{name}": float(value) for name, value in summary.items()},
                        "fold_sharpe": [float(v) for v in result.metric("sharpe")[k]],
                        "fold_total_return": [float(v) for v in result.metric("total_return")[k]],
                        "bucket_returns": [float(v) for v in series],
                    })
            members = []
            for g, _, _ in pops[island]:
                try:
                    members.append(strategy_id(normalize_genome(g)))
                except GenomeError:
                    continue
            values = np.array([scores.get(s, -np.inf) for s in members])
            finite = values[np.isfinite(values)]
            stats.append({
                "island": island,
                "best_fitness": float(finite.max()) if finite.size else float("nan"),
                "median_fitness": float(np.median(finite)) if finite.size else float("nan"),
                "diversity": len(set(members)) / max(len(members), 1),
                "evaluations": len(fresh),
            })
            # next generation: keep the best half, fill with mutants and crossovers of it
            ranked = [m for _, m in sorted(zip(-np.nan_to_num(values, nan=-np.inf, neginf=-1e9), members))]
            elite = list(dict.fromkeys(ranked))[: max(2, population // 2)]
            children: list[tuple[dict, list[str], str]] = [(genomes[s], [s], "elite") for s in elite[:1]]
            while len(children) < population:
                a = elite[int(rng.integers(len(elite)))]
                if rng.random() < 0.5:
                    b = elite[int(rng.integers(len(elite)))]
                    children.append((_crossover(genomes[a], genomes[b]), sorted({a, b}), "crossover"))
                else:
                    children.append((_mutate(genomes[a], rng), [a], "mutation"))
            pops[island] = children
        rows.extend(generation_rows)
        if trials_layout == "parts" and generation_rows:
            parts = run_dir / "trials"
            parts.mkdir(exist_ok=True)
            pd.DataFrame(generation_rows).to_parquet(parts / f"part-{generation:04d}.parquet", index=False)
            written_parts += 1
        if on_generation is not None:
            on_generation(generation, stats)
    if trials_layout == "file":
        pd.DataFrame(rows).to_parquet(run_dir / "trials.parquet", index=False)

    ranked = sorted((s for s in scores if np.isfinite(scores[s])), key=lambda s: (-scores[s], s))
    top = ranked[:hall_of_fame]
    holdout = evaluate([genomes[s] for s in top], market, split.holdout_range())
    def per_period_sharpe(series: np.ndarray) -> float:
        std = float(np.std(series, ddof=1)) if series.size > 1 else 0.0
        return float(np.mean(series) / std) if std > 0 else 0.0

    trial_sharpes = np.array([per_period_sharpe(buckets[s]) for s in ranked])
    matrix = np.column_stack([buckets[s] for s in top]) if len(top) >= 2 else None
    pbo = float("nan")
    if matrix is not None and matrix.shape[0] >= 16:
        try:
            pbo = probability_of_backtest_overfitting(matrix, n_blocks=4).pbo
        except ValueError:
            pass
    entries = []
    for k, sid in enumerate(top):
        try:
            dsr = float(dsr_from_returns(buckets[sid], trial_sharpes))
        except ValueError:
            dsr = float("nan")
        entries.append({
            "strategy_id": sid,
            "genome": genomes[sid],
            "metrics": {"walk_forward": wf[sid], "holdout": _wf_summary(holdout.metrics[k], METRIC_INDEX)},
            "dsr": dsr,
            "pbo": pbo,
            **origin[sid],
        })
    result = {
        "run_id": f"fixture-{config_id}-{seed}",
        "seed": seed,
        "n_trials": len(scores),
        "config": config,
        "config_id": config_id,
        "hall_of_fame": entries,
        "promoted": [e["strategy_id"] for e in entries[:promoted]],
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, allow_nan=True), encoding="utf-8")
    return result


def fixture_market(result: dict):
    """The synthetic market a fixture run searched on (rebuilt from its config)."""
    config = result["config"]
    edge = PlantedEdge(**config["market"]["planted_edge"])
    return synthetic_market(config["n_bars"], seed=config["seed"], planted_edge=edge)


def run_summary(result: dict) -> dict[str, Any]:
    return {"run_id": result["run_id"], "n_trials": result["n_trials"], "promoted": result["promoted"]}


def record_fixture_run(run_dir: str | Path, **kwargs) -> tuple[dict, list[tuple[int, list[dict]]]]:
    """:func:`build_fixture_run`, also returning each generation's per-island statistics."""
    seen: list[tuple[int, list[dict]]] = []
    result = build_fixture_run(run_dir, on_generation=lambda g, stats: seen.append((g, stats)), **kwargs)
    return result, seen


def replay_fixture_run(logger, source_dir: str | Path, run_dir: str | Path,
                       generations: list[tuple[int, list[dict]]], *,
                       after_generation: Callable[[int], None] | None = None, at_ms: int | None = None,
                       with_market: bool = False, stage: bool = True):
    """Drive a lineage logger through a recorded run as the evolution engine would, in ``run_dir``.

    The run directory's files appear as they would in a live run: the trial log and
    ``result.json`` only before ``finish``. With ``stage`` the hall of fame is handed to
    ``stage_hall_of_fame`` before ``result.json`` appears, as ``evolve run`` does between
    the search and the judging. ``at_ms`` pins every timestamp (for comparisons).
    """
    import shutil

    source_dir, run_dir = Path(source_dir), Path(run_dir)
    result = json.loads((source_dir / "result.json").read_text(encoding="utf-8"))
    logger.start(run_dir, result["config"], run_id=result["run_id"], seed=result["seed"],
                 config_id=result["config_id"], at_ms=at_ms)
    for generation, stats in generations:
        logger.log_generation(generation, stats, at_ms=at_ms)
        if after_generation is not None:
            after_generation(generation)
    for name in ("trials.parquet", "trials"):
        path = source_dir / name
        if path.is_dir():
            shutil.copytree(path, run_dir / name, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, run_dir / name)
    if stage and result.get("hall_of_fame"):  # what the engine knows before judging
        logger.stage_hall_of_fame([{k: v for k, v in m.items() if k not in ("dsr", "pbo", "gates", "promoted")}
                                   | {"metrics": {"walk_forward": m["metrics"]["walk_forward"]}}
                                   for m in result["hall_of_fame"]], at_ms=at_ms)
    shutil.copy2(source_dir / "result.json", run_dir / "result.json")
    return logger.finish(run_dir, at_ms=at_ms, market=fixture_market(result) if with_market else None)

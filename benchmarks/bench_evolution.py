"""Evolution benchmarks (issue 3).

(a) scaling: evaluations per second of one 2-island search (total population 256 per
    generation) on 2 island actors against the same search on 1 actor that hosts both islands
    (runtime.ray.actors: 1), target >= 1.85x on this 2-core machine: the same genomes, and the
    two result.json are byte-identical (checked). Beside it, 1 island of 256 against 2 islands
    of 128 (each on its own actor): two different searches (other genomes, another cost per
    evaluation, printed), with their ceiling: the same islands as plain processes without Ray
    or a driver, alternating likewise (what the machine gives two processes of that work; the
    engine's share of it says how much the driver, Ray and the trial log take). Measured in
    steady state (from generation 3: before it the actors load kernels and first-touch memory);
    the figure from generation 1 on is printed beside it. The runs alternate three times
    (1-2, 2-1, 1-2); each figure is the median of the three pairs' speed-ups (each is printed,
    with the load average before it: a busy machine shows there). For the 2-actor runs it prints
    where a generation's time went: the driver waiting for the islands, the driver's CPU on
    its main thread (receiving results) and on its writer thread (trial log, checkpoint),
    and how busy the island actors were.
(b) overhead: share of each generation's wall time spent outside the backtest kernels
    (indicator table + fused population kernel), population 256 x 100,000 bars, target <= 10%.
(c) GA vs random search with the same evaluation budget on planted-edge markets: holdout
    Sharpe of the best walk-forward strategy (the GA should be higher).

Run: python benchmarks/bench_evolution.py [--quick] [--only scaling] [--islands N]   (results also in benchmarks/results/)
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def base_config(**overrides):
    from evolution.config import load_config

    updates = {"runtime.progress": False, "runtime.backend": "local"}
    updates.update(overrides)
    return load_config(ROOT / "configs" / "demo.yaml").with_overrides(**updates)


WARMUP = 3


def scaling_config(islands: int, total_population: int, generations: int, n_bars: int, actors: int | None = None):
    return base_config(**{
        "islands": islands, "population": total_population // islands, "generations": generations,
        "migration": {"interval": 1000, "size": 0},
        "market": {"synthetic": {"n_bars": n_bars, "seed": 1, "regimes": True}},
        "runtime.backend": "ray", "runtime.ray": {"island_num_cpus": 1, "actors": actors},
    })


def _steady(gens: list[dict]) -> dict:
    """Evaluations per second from WARMUP on, and from generation 1 on (generation 0 loads the
    kernels; until about generation 3 the actors also first-touch the memory their indicator
    tables grow into, which this VM makes expensive)."""
    steady = [g for g in gens if g["generation"] >= WARMUP]
    after_load = gens[1:]
    return {"evaluations_per_second": sum(g["evaluations"] for g in steady) / sum(g["seconds"] for g in steady),
            "evaluations_per_second_from_generation_1": sum(g["evaluations"] for g in after_load)
            / sum(g["seconds"] for g in after_load)}


def _island_processes() -> list:
    """This driver's island actor processes (Ray started here: its workers descend from us)."""
    import psutil

    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayIsland" in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.Error:
            pass
    return out


def _machine_cpu() -> float:
    """CPU seconds all the machine's cores have been busy (every state but idle and iowait)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _cpu(proc) -> float:
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except Exception:
        return float("nan")


def _ray_run(islands: int, total_population: int, generations: int, n_bars: int, actors: int | None = None) -> dict:
    """One search on island actors (``actors``: how many host the islands; None, one each); its
    steady-state speed and where the driver's and the actors' time went (per generation, from WARMUP on)."""
    import statistics

    import psutil

    from evolution.pools import RayPool
    from evolution.runner import execute, plan

    config = scaling_config(islands, total_population, generations, n_bars, actors)
    marks: dict[int, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = plan(config, out_dir=tmp)
        pool = RayPool(config, run.spec.market, run.spec.split.test_ranges())
        pool.call("ping", [()] * islands)  # actors up, numba loaded
        procs = _island_processes()

        def mark(g, _pool):  # on_generation(g) follows the collection of g + 1
            marks[g] = (time.perf_counter(), [_cpu(p) for p in procs], _machine_cpu(), _cpu(psutil.Process()))

        try:
            execute(run, pool, on_generation=mark)
        finally:
            pool.close()
        timing = json.loads((Path(tmp) / "timing.json").read_text())
        result = hashlib.sha256((Path(tmp) / "result.json").read_bytes()).hexdigest()  # the same search: the same bytes
    gens = timing["generations"]
    steady = [g for g in gens if g["generation"] >= WARMUP]
    (t0, cpu0, all0, drv0), (t1, cpu1, all1, drv1) = marks[WARMUP - 1], marks[generations - 1]
    cores = (t1 - t0) * (os.cpu_count() or 1)
    actors_cpu, driver_cpu = sum(cpu1) - sum(cpu0), drv1 - drv0
    # the machine's CPU time over the steady generations: island actors, this driver (main thread,
    # writer thread, Ray's threads in it), everything else (raylet, GCS, Ray's agents, the system)
    cpu_split = {"actors": actors_cpu / cores, "driver": driver_cpu / cores,
                 "others": (all1 - all0 - actors_cpu - driver_cpu) / cores, "idle": 1.0 - (all1 - all0) / cores}
    med = {key: statistics.median(g[key] for g in steady) for key in
           ("seconds", "waiting_seconds", "driver_cpu_seconds", "writing_cpu_seconds", "write_wait_seconds")}
    return {**_steady(gens), "generation_seconds": [round(g["seconds"], 3) for g in gens], "median": med,
            "result_sha256": result,
            "cpu_split": cpu_split,
            "actor_busy": [(b - a) / (t1 - t0) for a, b in zip(cpu0, cpu1)] if len(procs) == config.island_actors
            else None}


def _plain_islands(index: int, islands: int, total_population: int, generations: int, n_bars: int, barrier, out) -> None:
    """Island ``index`` of the ``islands``-island search stepping in a plain process (no Ray, no
    driver): the machine's own ceiling."""
    from evolution.island import Island
    from evolution.market import resolve

    config = scaling_config(islands, total_population, generations, n_bars)
    spec = resolve(config)
    island = Island(index, config, spec.market, spec.split.test_ranges())
    barrier.wait()
    gens = []
    for g in range(generations):
        t0 = time.perf_counter()
        evaluated = len(island.step(g))
        gens.append({"generation": g, "start": t0, "end": time.perf_counter(), "evaluations": evaluated})
    out.put(gens)


def _plain_run(islands: int, total_population: int, generations: int, n_bars: int,
               indices: list[int] | None = None) -> float:
    """Steady-state evaluations per second of plain processes stepping at once, one per island
    of the ``islands``-island search (or per entry of ``indices``: that island, e.g. [0, 0] for
    two copies of the same work): all their evaluations from WARMUP on over the span from the
    first such start to the last end."""
    import multiprocessing as mp

    indices = list(range(islands)) if indices is None else indices
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(len(indices)), ctx.Queue()
    procs = [ctx.Process(target=_plain_islands, args=(i, islands, total_population, generations, n_bars, barrier, out))
             for i in indices]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    steady = [g for gens in results for g in gens if g["generation"] >= WARMUP]
    span = max(g["end"] for g in steady) - min(g["start"] for g in steady)
    return sum(g["evaluations"] for g in steady) / span


def bench_scaling(generations: int, total_population: int, n_bars: int, repeat: int = 3, ceiling: bool = True,
                  islands: int = 2) -> dict:
    """The ``islands``-island search on 1 actor and on 2, and the 1-island search, alternating (1
    actor, 2 actors, 1 island; then the other way round; ...), ``repeat`` times: each speed-up is
    the median of the pairs' ratios, so a slow spell of this VM hits one pair, not the figure. With
    ``ceiling``, each pair also runs the 1- and 2-island searches as plain processes without Ray
    or a driver (what the machine itself gives two processes of that work), alternating likewise
    (with 2 islands only, as is the 1-island comparison)."""
    n_islands = islands
    import statistics

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="bench")
    pairs = []
    try:
        for i in range(repeat):
            pair = {"load_average": os.getloadavg()[0]}
            order = ("one_actor", "two_actors", "one_island") if i % 2 == 0 else ("one_island", "two_actors", "one_actor")
            if n_islands != 2:
                order = tuple(name for name in order if name != "one_island")
            for name in order:  # a drift of the machine hits both sides
                islands, actors = {"one_actor": (n_islands, 1), "two_actors": (n_islands, 2 if n_islands > 2 else None),
                                   "one_island": (1, None)}[name]
                pair[name] = _ray_run(islands, total_population, generations, n_bars, actors)
            two, one = pair["two_actors"], pair["one_actor"]
            # the same search (same seed and islands: the same genomes, the same result.json)
            pair["speedup"] = two["evaluations_per_second"] / one["evaluations_per_second"]
            pair["speedup_from_generation_1"] = (two["evaluations_per_second_from_generation_1"]
                                                 / one["evaluations_per_second_from_generation_1"])
            pair["same_result"] = one["result_sha256"] == two["result_sha256"]
            if n_islands != 2:
                pairs.append(pair)
                continue
            # 1 island against 2: another search (its genomes are other genomes, with another cost per evaluation)
            pair["islands_speedup"] = two["evaluations_per_second"] / pair["one_island"]["evaluations_per_second"]
            if ceiling:
                plain = {n: _plain_run(n, total_population, generations, n_bars) for n in (1, 2)[:: 1 if i % 2 else -1]}
                pair["ceiling"] = plain[2] / plain[1]
                pair["plain_evaluations_per_second"] = plain
                # the machine's own limit for the same work: two copies of island 0's work at once against one
                copies = {n: _plain_run(2, total_population, generations, n_bars, [0] * n) for n in (1, 2)[:: 1 if i % 2 else -1]}
                pair["copies_ceiling"] = copies[2] / copies[1]
            pairs.append(pair)
    finally:
        ray.shutdown()
    out = {"pairs": pairs, "islands": n_islands}
    for name in ("one_actor", "two_actors", "one_island")[: 3 if n_islands == 2 else 2]:
        out[name] = {key: statistics.median(p[name][key] for p in pairs)
                     for key in ("evaluations_per_second", "evaluations_per_second_from_generation_1")}
    for key in ("speedup", "speedup_from_generation_1"):
        out[key] = statistics.median(p[key] for p in pairs)
    if n_islands != 2:
        return out
    out["islands_speedup"] = statistics.median(p["islands_speedup"] for p in pairs)
    # what one evaluation of each search costs on one core (seconds per evaluation: the 1-island
    # search against the 2-island search on its one actor): how much of the 1-vs-2-island figure is the searches' own work
    out["cost_ratio"] = statistics.median(p["one_island"]["evaluations_per_second"] / p["one_actor"]["evaluations_per_second"]
                                          for p in pairs)
    if ceiling:
        out["ceiling"] = statistics.median(p["ceiling"] for p in pairs)
        out["copies_ceiling"] = statistics.median(p["copies_ceiling"] for p in pairs)
    return out


def bench_overhead(population: int, n_bars: int, generations: int) -> dict:
    import backtest.engine as engine
    import backtest.fused as fused
    from evolution.island import Island
    from evolution.market import resolve

    config = base_config(**{
        "islands": 1, "population": population, "generations": generations,
        "market": {"synthetic": {"n_bars": n_bars, "seed": 2, "regimes": True}},
        "evaluator_memory_mb": 1024,
    })
    spec = resolve(config)
    island = Island(0, config, spec.market, spec.split.test_ranges())
    kernel_time = [0.0]
    real_kernel, real_table = fused.population_nb, engine.fill_indicator_table

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                kernel_time[0] += time.perf_counter() - t0
        return wrapper

    fused.population_nb = timed(real_kernel)
    engine.fill_indicator_table = timed(real_table)
    rows = []
    try:
        island.step(0)  # warm-up (numba cache load)
        for g in range(1, generations + 1):
            kernel_time[0] = 0.0
            t0 = time.perf_counter()
            evaluated = len(island.step(g))
            wall = time.perf_counter() - t0
            rows.append({"generation": g, "seconds": wall, "kernel_seconds": kernel_time[0], "evaluated": evaluated})
    finally:
        fused.population_nb, engine.fill_indicator_table = real_kernel, real_table
    wall = sum(r["seconds"] for r in rows)
    kernel = sum(r["kernel_seconds"] for r in rows)
    return {"population": population, "n_bars": n_bars, "generations": rows,
            "outside_kernel_share": 1.0 - kernel / wall}


def bench_ga_vs_random(seeds: list[int], n_bars: int, population: int, generations: int) -> dict:
    from backtest import Evaluator
    from evolution.families import init_genome
    from evolution.fitness import objectives, summarize
    from evolution.pools import LocalPool
    from evolution.runner import execute, plan

    out = []
    for seed in seeds:
        config = base_config(**{
            "seed": seed, "population": population, "generations": generations,
            "market": {"synthetic": {"n_bars": n_bars, "seed": 100 + seed, "regimes": False,
                                     "planted_edge": {"fast": 10, "slow": 40, "strength": 0.1}}},
        })
        with tempfile.TemporaryDirectory() as tmp:
            run = plan(config, out_dir=tmp)
            result = execute(run, LocalPool(config, run.spec.market, run.spec.split.test_ranges()))
        budget = result["n_evaluations"]
        ga_holdout = result["hall_of_fame"][0]["metrics"]["holdout"]["sharpe"]
        # random search: the same number of evaluations, the same walk-forward ranking
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(999,)))
        genomes = [init_genome(rng, config.operators.max_conditions) for _ in range(budget)]
        evaluator = Evaluator()
        folds = run.spec.split.test_ranges()
        res = evaluator.evaluate(genomes, run.spec.market, folds, fees=config.costs.fees)
        scores = []
        for i in range(len(genomes)):
            summary = summarize(res.metrics[i])
            scores.append(objectives(summary, ["sharpe"], folds.shape[0], config.selection.min_trades,
                                     i in res.errors)[0])
        best = int(np.argmax(scores))
        rs_holdout = float(evaluator.evaluate([genomes[best]], run.spec.market, run.spec.split.holdout_range(),
                                              fees=config.costs.fees).metric("sharpe")[0, 0])
        out.append({"seed": seed, "evaluations": budget, "ga_holdout_sharpe": ga_holdout,
                    "random_holdout_sharpe": rs_holdout})
    return {"runs": out, "ga_wins": sum(r["ga_holdout_sharpe"] > r["random_holdout_sharpe"] for r in out)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--only", choices=["scaling"], help="run (a) alone")
    parser.add_argument("--islands", type=int, default=2,
                        help="islands of the search (a) runs on 1 and on 2 actors (default 2; more: they share the actors)")
    args = parser.parse_args()
    q = args.quick
    results = {}
    results["scaling"] = s = bench_scaling(generations=6 if q else 12, total_population=128 if q else 256,
                                           n_bars=50_000 if q else 100_000, repeat=1 if q else 3,
                                           islands=args.islands)
    print_scaling(s)
    if args.only == "scaling":
        return _save(results)
    results["overhead"] = o = bench_overhead(population=64 if q else 256, n_bars=20_000 if q else 100_000,
                                             generations=2 if q else 3)
    print(f"(b) overhead: {o['outside_kernel_share']:.1%} of generation wall time outside the backtest kernels "
          f"(population {o['population']} x {o['n_bars']:,} bars; target <= 10%)")
    results["ga_vs_random"] = g = bench_ga_vs_random(seeds=[0, 1] if q else [0, 1, 2],
                                                     n_bars=50_000 if q else 100_000, population=64,
                                                     generations=15 if q else 30)
    for r in g["runs"]:
        print(f"(c) seed {r['seed']}: {r['evaluations']} evaluations; holdout Sharpe GA {r['ga_holdout_sharpe']:.1f} "
              f"vs random search {r['random_holdout_sharpe']:.1f}")
    print(f"(c) GA ahead on {g['ga_wins']} of {len(g['runs'])} planted-edge markets")
    return _save(results)


def _save(results: dict) -> int:
    folder = ROOT / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_evolution.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


def print_scaling(s: dict) -> None:
    pairs = s["pairs"]
    one, two = s["one_actor"], s["two_actors"]
    n = s["islands"]
    print(f"(a) scaling, steady state (generations {WARMUP}+), median of {len(pairs)} alternating pairs: the same "
          f"{n}-island search on 1 island actor {one['evaluations_per_second']:.0f} evals/s, on 2 island actors "
          f"{two['evaluations_per_second']:.0f} evals/s, speed-up {s['speedup']:.2f}x (target >= 1.85x); "
          f"result.json identical in {sum(p['same_result'] for p in pairs)} of {len(pairs)} pairs")
    print(f"    from generation 1 (warm-up included): 1 actor {one['evaluations_per_second_from_generation_1']:.0f} "
          f"evals/s, 2 actors {two['evaluations_per_second_from_generation_1']:.0f} evals/s, speed-up "
          f"{s['speedup_from_generation_1']:.2f}x")
    print("    speed-up of each pair: " + ", ".join(f"{p['speedup']:.2f}x" for p in pairs)
          + "; load average before each pair: " + ", ".join(f"{p['load_average']:.1f}" for p in pairs))
    if "copies_ceiling" in s:
        print(f"    the machine's own limit for the same work: 2 copies of island 0's work as plain processes at once "
              f"(no Ray, no driver) run {s['copies_ceiling']:.2f}x as many evaluations per second as 1 alone "
              "(median; each pair: " + ", ".join(f"{p['copies_ceiling']:.2f}x" for p in pairs)
              + f"); the engine's same-search speed-up is {s['speedup'] / s['copies_ceiling']:.0%} of it")
    if n != 2:
        for p in pairs:
            busy = p["two_actors"]["actor_busy"]
            print(f"    2 actors ({n // 2} islands each), median per generation {p['two_actors']['median']['seconds'] * 1e3:.0f} "
                  "ms; actors busy " + ("/".join(f"{b:.0%}" for b in busy) if busy else "n/a") + " of the wall time")
        return
    print(f"    another search: 1 island of 256 {s['one_island']['evaluations_per_second']:.0f} evals/s against 2 "
          f"islands of 128 on 2 actors, speed-up {s['islands_speedup']:.2f}x; each pair: "
          + ", ".join(f"{p['islands_speedup']:.2f}x" for p in pairs))
    if "ceiling" in s:
        print(f"    its ceiling (the same 1 and 2 islands as plain processes, no Ray, no driver), median {s['ceiling']:.2f}x; "
              "each pair: " + ", ".join(f"{p['ceiling']:.2f}x" for p in pairs)
              + f"; the engine gets {s['islands_speedup'] / s['ceiling']:.0%} of it")
    print(f"    why 1 island against 2 is not the same work: per evaluation, the 2-island search (on its 1 actor) takes "
          f"{s['cost_ratio']:.2f}x the time of the 1-island search (other genomes: the two searches go different ways)")
    for p in pairs:
        print(f"    seconds per generation: 1 actor {p['one_actor']['generation_seconds']}; 2 actors "
              f"{p['two_actors']['generation_seconds']}")
    for p in pairs:
        m, busy = p["two_actors"]["median"], p["two_actors"]["actor_busy"]
        print(f"    2 actors, median per generation: {m['seconds'] * 1e3:.0f} ms wall, driver waiting for the islands "
              f"{m['waiting_seconds'] * 1e3:.0f} ms, driver main-thread CPU {m['driver_cpu_seconds'] * 1e3:.1f} ms, "
              f"trial-log + checkpoint writer CPU {m['writing_cpu_seconds'] * 1e3:.1f} ms (driver waited "
              f"{m['write_wait_seconds'] * 1e3:.1f} ms for it); actors busy "
              + ("/".join(f"{b:.0%}" for b in busy) if busy else "n/a") + " of the wall time")
    for name in ("one_actor", "two_actors"):
        split = [p[name]["cpu_split"] for p in pairs]
        print(f"    the 2 cores' time, {'1 actor ' if name == 'one_actor' else '2 actors'} (each pair): " + "; ".join(
            f"actors {c['actors']:.0%}, driver {c['driver']:.0%}, Ray's other processes and the system {c['others']:.0%}, "
            f"idle {c['idle']:.0%}" for c in split))


if __name__ == "__main__":
    sys.exit(main())

"""Scaling benchmark (issue 20): what the driver, the object store and the trial log cost per
island and per generation, measured at 2, 8, 32 and 64 island actors on one machine, and the
figures docs/scaling.md extrapolates to a 1,000-core cluster from.

Every island count runs the same search shape on a local Ray with ``num_cpus`` CPUs shared by
all actors (``runtime.ray.island_num_cpus = num_cpus / islands``): a small population per
island on a small market, ring migration every 3 generations, the default lookahead. The
driver is the product's own (``evolution.runner.execute`` with a ``RayPool``); per generation,
from generation ``--warmup`` on (before it the actors load their kernels), it prints:

* driver CPU: the main thread (submitting, receiving and deserializing the islands' results,
  bookkeeping) and the writer thread (trial-log part and checkpoint), each per generation and
  per island per generation (from ``timing.json``);
* generation wall time and the share of it the driver's main thread spent waiting for islands;
* object-store traffic: bytes the islands return to the driver per generation (trial rows and
  state deltas, pickled as Ray ships them) and per island, and what a migration moves between
  islands (emigrants; they go island to island, never through the driver);
* trial-log bytes on disk per trial, and per million trials;
* MLflow lineage load: metric points per generation (five per island) and the trial-log part
  that lineage uploads as an artifact every generation (the same bytes as on disk).

Run: python benchmarks/bench_scaling.py [--islands 2 8 32 64] [--population 8] [--n-bars 20000]
     [--generations 8] [--num-cpus 2]   (results also in benchmarks/results/bench_scaling.json)
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIGRATION_INTERVAL = 3
MIGRATION_SIZE = 2
LINEAGE_STATS_PER_ISLAND = 5  # evolution.lineage.data.island_stats_from_rows: best, median, diversity, evaluations, evals/s


def make_config(islands: int, population: int, n_bars: int, generations: int, num_cpus: int):
    from evolution.config import load_config

    return load_config(ROOT / "configs" / "demo.yaml").with_overrides(**{
        "islands": islands, "population": population, "generations": generations,
        "migration": {"interval": MIGRATION_INTERVAL, "size": MIGRATION_SIZE},
        "market": {"synthetic": {"n_bars": n_bars, "seed": 1, "regimes": True}},
        "runtime.progress": False, "runtime.backend": "ray",
        "runtime.ray": {"island_num_cpus": num_cpus / islands, "max_restarts": 0},
    })


def measured_pool_class():
    from evolution.pools import RayPool

    class MeasuredPool(RayPool):
        """The product's RayPool, counting the bytes of what the driver receives (pickled as Ray
        ships them) and the CPU that counting costs (taken out of the driver's figure)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.received: list[int] = []  # bytes per collect (one per generation, or three with migration)
            self.counting_cpu = 0.0

        def collect(self, handles):
            results = super().collect(handles)
            c0 = time.thread_time()
            self.received.append(len(pickle.dumps(results, protocol=5)))
            self.counting_cpu += time.thread_time() - c0
            return results

    return MeasuredPool


def run_islands(islands: int, population: int, n_bars: int, generations: int, num_cpus: int, warmup: int) -> dict:
    from evolution.runner import execute, plan

    config = make_config(islands, population, n_bars, generations, num_cpus)
    with tempfile.TemporaryDirectory() as tmp:
        run = plan(config, out_dir=tmp)
        t0 = time.perf_counter()
        pool = measured_pool_class()(config, run.spec.market, run.spec.split.test_ranges())
        try:
            pool.call("ping", [()] * islands)  # every actor up and its market attached
            startup = time.perf_counter() - t0
            execute(run, pool)
            states = pool.call("state", [()] * islands)
        finally:
            pool.close()
        timing = json.loads((Path(tmp) / "timing.json").read_text())
        parts = sorted((Path(tmp) / "trials").glob("generation-*.parquet"))
        trial_log_bytes = sum(p.stat().st_size for p in parts)
        trial_log_rows = sum(pq_rows(p) for p in parts)
        checkpoint_bytes = sum(p.stat().st_size for p in (Path(tmp) / "checkpoints").glob("*.json"))
    emigrants = statistics.median(len(pickle.dumps(s["population"][:MIGRATION_SIZE], protocol=5)) for s in states)
    every = timing["generations"]
    gens = [g for g in every if g["generation"] >= warmup]
    n = len(gens)
    return {
        "islands": islands,
        "island_num_cpus": num_cpus / islands,
        "population": population,
        "n_bars": n_bars,
        "startup_seconds": startup,
        "generation_seconds": statistics.median(g["seconds"] for g in gens),
        "waiting_share": sum(g["waiting_seconds"] for g in gens) / sum(g["seconds"] for g in gens),
        # the byte counting ran on the main thread: its CPU is taken out (spread evenly over generations)
        "driver_main_cpu": (sum(g["driver_cpu_seconds"] for g in gens) - pool.counting_cpu * n / len(every)) / n,
        "driver_writer_cpu": sum(g["writing_cpu_seconds"] for g in gens) / n,
        "write_wait": sum(g["write_wait_seconds"] for g in gens) / n,
        "evaluations_per_generation": sum(g["evaluations"] for g in gens) / n,
        "received_bytes_per_generation": sum(pool.received) / len(every),
        "emigrant_bytes_per_island": emigrants,
        "trial_log_bytes": trial_log_bytes,
        "trial_log_rows": trial_log_rows,
        "checkpoint_bytes_on_disk": checkpoint_bytes,
        "lineage_metric_points_per_generation": LINEAGE_STATS_PER_ISLAND * islands + 2,
    }


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--islands", type=int, nargs="+", default=[2, 8, 32, 64])
    parser.add_argument("--population", type=int, default=8, help="individuals per island")
    parser.add_argument("--n-bars", type=int, default=20_000)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="generations left out of the per-generation figures")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray, shared by all island actors")
    parser.add_argument("--probe-population", type=int, default=128,
                        help="the production-size probe: 2 islands of this population, one CPU each (0: no probe)")
    parser.add_argument("--probe-bars", type=int, default=100_000)
    parser.add_argument("--cores", type=int, nargs="+", default=[64, 1000],
                        help="cluster sizes (one island per core) to extrapolate to")
    parser.add_argument("--head-network-gbit", type=float, default=12.5, help="head node NIC (m6i.xlarge: up to 12.5)")
    parser.add_argument("--disk-mb-s", type=float, default=125.0, help="head node disk (EBS gp3 baseline: 125 MB/s)")
    args = parser.parse_args()

    import ray

    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
             namespace="bench-scaling")
    results = []
    try:
        for islands in args.islands:
            results.append(run_islands(islands, args.population, args.n_bars, args.generations, args.num_cpus,
                                       args.warmup))
            r = results[-1]
            print(f"  ran {islands} islands: actors up in {r['startup_seconds']:.1f} s", file=sys.stderr, flush=True)
        probe = None
        if args.probe_population:
            probe = run_islands(2, args.probe_population, args.probe_bars, args.generations, 2, max(args.warmup, 3))
            print("  ran the production-size probe", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    print_table(results, args)
    if probe is not None:
        print_extrapolation(results, probe, args)
    folder = ROOT / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_scaling.json").write_text(json.dumps({"args": vars(args), "runs": results, "probe": probe}, indent=2))
    return 0


def print_extrapolation(results: list[dict], probe: dict, args) -> None:
    """A linear model from the measurements: the driver's main thread costs a fixed part per island
    (the most-islands run's figure per island, its few rows included) plus a part per trial row (the
    probe's figure per row, its fixed part included: both err high); the writer thread, the bytes to
    the driver and the trial log cost per trial row (the probe's). An island's generation takes
    the probe's time (one island per core). A resource saturates when it needs more than that."""
    widest = max(results, key=lambda r: r["islands"])
    rows_per_generation = probe["trial_log_rows"] / args.generations
    per_island = widest["driver_main_cpu"] / widest["islands"]
    main_per_row = probe["driver_main_cpu"] / rows_per_generation
    writer_per_row = probe["driver_writer_cpu"] / rows_per_generation
    wire_per_row = probe["received_bytes_per_generation"] / rows_per_generation
    disk_per_row = probe["trial_log_bytes"] / probe["trial_log_rows"]
    pop, t = args.probe_population, probe["generation_seconds"]
    nic, disk = args.head_network_gbit * 1e9 / 8, args.disk_mb_s * 1e6
    print(f"probe: 2 islands x {pop} on {args.probe_bars:,} bars, one CPU each: {t:.2f} s per generation; per trial row: "
          f"driver main thread {main_per_row * 1e6:.0f} us, writer thread {writer_per_row * 1e6:.0f} us, "
          f"{wire_per_row / 1e3:.1f} kB islands->driver, {disk_per_row / 1e3:.1f} kB of trial log "
          f"({disk_per_row / 1e3:.1f} GB per million trials); driver main thread per island {per_island * 1e3:.2f} ms "
          f"({widest['islands']} islands)")
    needs = {
        "driver main thread": lambda n: n * (per_island + pop * main_per_row),
        "driver writer thread": lambda n: n * pop * writer_per_row,
        f"head network ({args.head_network_gbit:g} Gbit/s)": lambda n: n * pop * wire_per_row / nic,
        f"trial-log disk ({args.disk_mb_s:g} MB/s)": lambda n: n * pop * disk_per_row / disk,
    }
    print(f"| need per generation (s) at {pop} per island, {args.probe_bars:,} bars; an island takes {t:.2f} s | "
          + " | ".join(f"{c} cores" for c in args.cores) + " | saturates at islands |")
    print("|---|" + "---:|" * (len(args.cores) + 1))
    for name, need in needs.items():
        print(f"| {name} | " + " | ".join(f"{need(c):.2f} ({need(c) / t:.1f}x)" for c in args.cores)
              + f" | {t / need(1):,.0f} |")
    for c in args.cores:
        print(f"at {c} cores: {c * pop / t:,.0f} trials/s, {c * pop * disk_per_row / t / 1e9:.2f} GB/s of trial log "
              f"({c * pop * disk_per_row / t * 3600 / 1e12:.1f} TB an hour), {5 * c + 2:,} MLflow metric points per generation")


def print_table(results: list[dict], args) -> None:
    print(f"bench_scaling: {args.population} individuals per island, {args.n_bars:,} bars, {args.generations} "
          f"generations (figures from generation {args.warmup} on), {MIGRATION_SIZE} emigrants every "
          f"{MIGRATION_INTERVAL} generations, {args.num_cpus} CPUs shared by the actors")
    print("| islands | CPU per actor | s per generation | driver waiting | driver main thread ms/gen | per island | "
          "writer thread ms/gen | per island | per trial row µs | islands->driver kB/gen | per island | emigrants B/island | "
          "trial log B/trial | MLflow points/gen |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        n = r["islands"]
        print(f"| {n} | {r['island_num_cpus']:.3g} | {r['generation_seconds']:.2f} | {r['waiting_share']:.0%} | "
              f"{r['driver_main_cpu'] * 1e3:.1f} | {r['driver_main_cpu'] * 1e3 / n:.2f} | "
              f"{r['driver_writer_cpu'] * 1e3:.1f} | {r['driver_writer_cpu'] * 1e3 / n:.2f} | "
              f"{r['driver_writer_cpu'] * 1e6 / (r['trial_log_rows'] / args.generations):.0f} | "
              f"{r['received_bytes_per_generation'] / 1e3:,.0f} | {r['received_bytes_per_generation'] / 1e3 / n:.1f} | "
              f"{r['emigrant_bytes_per_island']:,.0f} | {r['trial_log_bytes'] / r['trial_log_rows']:,.0f} | "
              f"{r['lineage_metric_points_per_generation']} |")
    rows = sum(r["trial_log_rows"] for r in results)
    size = sum(r["trial_log_bytes"] for r in results)
    received = sum(r["received_bytes_per_generation"] for r in results)
    rows_per_gen = sum(r["trial_log_rows"] / args.generations for r in results)
    print(f"trial log: {size / rows:,.0f} bytes per trial row on disk on {args.n_bars:,} bars "
          f"= {size / rows / 1e3:.3g} GB per million trials; "
          f"islands->driver {received / rows_per_gen:,.0f} bytes per trial row")


if __name__ == "__main__":
    sys.exit(main())

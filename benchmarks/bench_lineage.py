"""Search wall time with and without MLflow lineage logging (target: logging adds <= 5%).

    python benchmarks/bench_lineage.py [--config configs/demo.yaml] [--generations N] [--repeat R]
                                       [--tracking-uri URI]

Runs the evolution engine in-process (LocalPool, the same generations as `evolve run`)
twice per repeat, without and with a LineageLogger (one log_batch per generation from the
driver, then artifacts, nested hall-of-fame runs and model versions at finish). Without
``--tracking-uri`` a real `mlflow server` (SQLite backend) is started in a temporary
directory. Prints one line per measurement and the overhead of the median times.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def run_search(config, out_dir: Path, tracking_uri: str | None) -> tuple[float, float, dict]:
    """(total wall seconds, seconds spent in logger calls on the driver, result)."""
    from evolution.lineage import LineageLogger
    from evolution.lineage_data import island_stats
    from evolution.pools import LocalPool
    from evolution.runner import execute, plan

    started = time.perf_counter()
    run = plan(config, out_dir=out_dir)
    pool = LocalPool(config, run.spec.market, run.spec.split.test_ranges())
    logger = None
    in_logger = 0.0
    if tracking_uri is not None:
        logger = LineageLogger(tracking_uri, experiment="bench-lineage", registered_model="bench-lineage")
        t = time.perf_counter()
        logger.start(run.run_dir, config.search_dict(), run_id=f"{run.run_id}-{time.time_ns()}", seed=config.seed,
                     config_id=config.config_id)
        in_logger += time.perf_counter() - t
    last = [time.perf_counter()]

    def on_generation(generation: int, _pool) -> None:
        nonlocal in_logger
        now = time.perf_counter()
        t = time.perf_counter()
        logger.log_generation(generation, island_stats(run.run_dir, generation, now - last[0]))
        in_logger += time.perf_counter() - t
        last[0] = time.perf_counter()

    try:
        result = execute(run, pool, on_generation=on_generation if logger else None)
    finally:
        pool.close()
    if logger is not None:
        t = time.perf_counter()
        report = logger.finish(run.run_dir, market=run.spec.market)
        in_logger += time.perf_counter() - t
        assert not report.spooled, "the tracking server failed during the benchmark"
        print("  sending time per operation:", {k: round(v, 2) for k, v in sorted(report.send_seconds.items())},
              f"finish {time.perf_counter() - t:.2f} s, {len(report.nested_runs)} nested runs, "
              f"{len(report.model_versions)} model versions")
    return time.perf_counter() - started, in_logger, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--generations", type=int, help="override the config's generations")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tracking-uri")
    args = parser.parse_args()

    from evolution.config import load_config

    config = load_config(args.config)
    overrides = {"runtime.progress": False, "runtime.backend": "local"}
    if args.generations:
        overrides["generations"] = args.generations
    config = config.with_overrides(**overrides)

    with tempfile.TemporaryDirectory(prefix="bench-lineage-") as tmp:
        tmp = Path(tmp)
        server = None
        uri = args.tracking_uri
        if uri is None:
            from mlflow_server import MlflowServer

            server = MlflowServer.sqlite(tmp / "store").start()
            uri = server.url
        try:
            run_search(config, tmp / "warmup", None)  # numba caches, imports
            plain, logged, in_logger = [], [], []
            for r in range(args.repeat):
                seconds, _, result = run_search(config, tmp / f"plain-{r}", None)
                plain.append(seconds)
                print(f"search without logging: {seconds:8.2f} s  ({result['n_trials']} trials, "
                      f"{config.generations} generations, {config.islands} islands x {config.population})")
                seconds, spent, _ = run_search(config, tmp / f"logged-{r}", uri)
                logged.append(seconds)
                in_logger.append(spent)
                print(f"search with MLflow logging: {seconds:8.2f} s  (driver time in logger calls {spent:.2f} s)")
        finally:
            if server is not None:
                server.close()
    a, b = statistics.median(plain), statistics.median(logged)
    print(f"lineage logging overhead: {100 * (b - a) / a:+.1f}% of wall time "
          f"(median {a:.2f} s -> {b:.2f} s; logger calls {statistics.median(in_logger):.2f} s = "
          f"{100 * statistics.median(in_logger) / a:.1f}%); target <= 5%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

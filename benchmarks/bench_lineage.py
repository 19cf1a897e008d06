"""Search wall time with and without MLflow lineage logging (target: logging adds <= 5% while searching).

    python benchmarks/bench_lineage.py [--sizes demo,production,long] [--backend local|ray]
                                       [--config configs/demo.yaml] [--generations N] [--repeat R]
                                       [--tracking-uri URI]

Runs the evolution engine in this process (the same generations as `evolve run`; islands
in-process with ``--backend local``, as Ray actors on a local 2-CPU Ray with ``--backend ray``)
without and with lineage, alternately, wired as `evolve run` wires it
(``evolution.lineage.run.RunLineage``): one log_batch and the trial-log part per generation
from the driver; the hall of fame's nested runs and models queued once it is known, while the
driver judges it; the judged metrics, model versions and run artifacts at finish. The lineage
is sent by the sender process (``evolution/lineage/sender.py``, nice 10, ``MlflowClient``),
started afresh in every logged run as `evolve run` starts it; the pyfunc model template is in
the cache (a fresh cache here, filled by the warm-up run). Without ``--tracking-uri`` a real
`mlflow server` (SQLite backend, artifacts proxied by the server, gunicorn with one worker and
4 threads, no job runner: what ``mlflow/server.sh`` starts) runs in a temporary directory;
one logged warm-up run goes first, as a long-running tracking server has served requests before.

Three sizes, each with 10 hall-of-fame strategies and up to 10 model versions at the end:
``demo`` is configs/demo.yaml as it is (2 islands x 48, 50,000 bars, 20 generations);
``production`` is the same search at the size of the evolution benchmark (2 islands x 128,
100,000 bars, 20 generations); ``long`` runs that for 60 generations. The fixed cost at the
end (nested runs, model versions, artifacts) does not grow with the search, so its share
shrinks as the search grows. Prints one line per measurement, the overhead of each pair (this
2-core machine's timings wander by 10-20% between identical runs, hence the pairs, which go
without-with and with-without in turn), the overhead of the median times, and beside them the
figures the README gave before lineage moved to ``evolution/lineage/`` on MLflow's own client.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


# The README's figures before this change (hand-written REST client in the sender for an http
# server, MLflow imported only to build the model template): the end-of-run cost, and the goal
# while searching (the README gave no measured figure for it).
README_BEFORE = {"end_of_run_s": "about 1 s for 10 strategies against a local mlflow server",
                 "while_searching": "no figure in the README (target <= 5%)"}


def run_search(config, out_dir: Path, tracking_uri: str | None) -> tuple[float, float, dict, float]:
    """(total wall seconds, seconds spent in lineage calls on the driver, result, seconds until the search ended)."""
    from evolution.lineage.run import RunLineage
    from evolution.lineage.tracking import TrackingSettings
    from evolution.pools import LocalPool, RayPool
    from evolution.runner import execute, plan

    started = time.perf_counter()
    run = plan(config, out_dir=out_dir)
    pool_class = RayPool if config.runtime.backend == "ray" else LocalPool
    pool = pool_class(config, run.spec.market, run.spec.split.test_ranges())
    settings = None
    if tracking_uri is not None:  # a fresh MLflow run each time: the run key is the run id plus a nonce
        run.run_id = f"{run.run_id}-{time.time_ns()}"
        settings = TrackingSettings(True, tracking_uri, "bench-lineage", "bench-lineage")
    in_lineage = 0.0
    t = time.perf_counter()
    lineage = RunLineage(run, settings)
    in_lineage += time.perf_counter() - t
    per_generation = [0.0]

    def timed(call):
        def wrapper(*args):
            nonlocal in_lineage
            t = time.perf_counter()
            call(*args)
            spent = time.perf_counter() - t
            in_lineage += spent
            per_generation[0] += spent
        return wrapper

    try:
        result = execute(run, pool, on_generation=timed(lineage.on_generation) if settings else None,
                         on_hall_of_fame=timed(lineage.on_hall_of_fame) if settings else None)
    finally:
        pool.close()
    search_seconds = time.perf_counter() - started
    if settings is not None:
        t = time.perf_counter()
        report = lineage.logger.finish(run.run_dir, market=run.spec.market)
        in_lineage += time.perf_counter() - t
        assert report.error is None, f"the tracking server failed during the benchmark: {report.error}"
        print(f"  during the search {search_seconds:.2f} s (driver time in per-generation lineage calls "
              f"{per_generation[0]:.3f} s); at the end {time.perf_counter() - t:.2f} s for "
              f"{len(report.nested_runs)} nested runs, {len(report.model_versions)} model versions and the artifacts")
    return time.perf_counter() - started, in_lineage, result, search_seconds


SIZES = {
    "demo": {},
    "production": {"population": 128, "market.synthetic.n_bars": 100_000},
    "long": {"population": 128, "market.synthetic.n_bars": 100_000, "generations": 60},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--sizes", default="demo,production,long", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--generations", type=int, help="override the config's generations")
    parser.add_argument("--repeat", type=int, help="pairs per size, alternately without and with logging first "
                                                   "(default: 6 for demo, 4 for production, 2 for long)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="islands in this process, or Ray actors on a local Ray (2 CPUs)")
    parser.add_argument("--tracking-uri")
    args = parser.parse_args()

    from evolution.config import load_config

    base = load_config(args.config)
    sizes = [name.strip() for name in args.sizes.split(",") if name.strip()]
    unknown = [name for name in sizes if name not in SIZES]
    if unknown:
        parser.error(f"unknown size {unknown[0]!r}: choose from {', '.join(SIZES)}")
    from backtest.jit_cache import pin_jit_cache_dir

    pin_jit_cache_dir()  # compiled kernels stay where they are when the template cache moves below
    if args.backend == "ray":
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="bench-lineage", log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="bench-lineage-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("EVOLVE_CACHE_DIR", str(tmp / "cache"))  # the warm-up run builds the model template
        server = None
        uri = args.tracking_uri
        if uri is None:
            from mlflow_server import MlflowServer

            server = MlflowServer.sqlite(tmp / "store").start()
            uri = server.url
        try:
            warmed_bars = None
            for name in sizes:
                overrides = {"runtime.progress": False, "runtime.backend": args.backend, **SIZES[name]}
                if args.generations:
                    overrides["generations"] = args.generations
                config = base.with_overrides(**overrides)
                repeat = args.repeat or {"demo": 6, "production": 4, "long": 2}[name]
                print(f"[{name}] {args.backend} backend, {config.islands} islands x {config.population}, "
                      f"{config.market.synthetic.n_bars:,} bars, {config.generations} generations, "
                      f"hall of fame {config.hall_of_fame}")
                n_bars = config.market.synthetic.n_bars
                measure(config, tmp / name, uri, repeat, warm_server=name == sizes[0],
                        warm_up=n_bars != warmed_bars)  # a market of the same size is warm already
                warmed_bars = n_bars
        finally:
            if server is not None:
                server.close()
    return 0


def measure(config, tmp: Path, uri: str, repeat: int, warm_server: bool, warm_up: bool = True) -> None:
    if warm_up or warm_server:
        run_search(config, tmp / "warmup", uri if warm_server else None)  # numba caches, imports, the server
    plain, logged, searching = [], [], []
    for r in range(repeat):
        for logging_on in ((False, True) if r % 2 == 0 else (True, False)):  # ABBA: no side always goes first
            if not logging_on:
                seconds, _, result, _ = run_search(config, tmp / f"plain-{r}", None)
                plain.append(seconds)
                print(f"search without logging: {seconds:8.2f} s  ({result['n_trials']} trials, "
                      f"{len(result.get('promoted', []))} promoted)")
            else:
                seconds, spent, _, search = run_search(config, tmp / f"logged-{r}", uri)
                logged.append(seconds)
                searching.append(search)
                print(f"search with MLflow logging: {seconds:8.2f} s  (driver time in logger calls {spent:.2f} s)")
    if repeat > 1:
        print("pairs, until result.json: " + ", ".join(f"{100 * (c - a) / a:+.1f}%" for a, c in zip(plain, searching))
              + "; end-of-run included: " + ", ".join(f"{100 * (b - a) / a:+.1f}%" for a, b in zip(plain, logged)))
    a, b, c = statistics.median(plain), statistics.median(logged), statistics.median(searching)
    print(f"lineage logging overhead while searching: {100 * (c - a) / a:+.1f}% "
          f"(median {a:.2f} s -> {c:.2f} s until result.json is written); target <= 5%")
    print(f"lineage logging overhead, end-of-run registration included: {100 * (b - a) / a:+.1f}% of wall time "
          f"(median {a:.2f} s -> {b:.2f} s; fixed cost at the end {b - c:.2f} s)")
    print(f"side by side with the README before the change: while searching {100 * (c - a) / a:+.1f}% now, "
          f"{README_BEFORE['while_searching']} before; end of run {b - c:.2f} s now, "
          f"{README_BEFORE['end_of_run_s']} before")


if __name__ == "__main__":
    sys.exit(main())

"""The cost of metrics on the search: evaluations per second without and with the Prometheus
exporter, side by side in one run (target: the exporter costs under 1%).

    python benchmarks/bench_metrics.py [--config configs/demo.yaml] [--generations N] [--pairs P]
                                       [--scrape-interval S]

Runs the evolution engine in this process as `evolve run --local` does (islands in the
driver's process, so every hook runs in the measured process: the generation loop's and the
islands'), once without an exporter (the default: the no-op recorder) and once with
``evolve run --metrics-port`` wired as the command line wires it (``evolution.telemetry.start_exporter``
on a free port) while a scraper thread reads ``/metrics`` every ``--scrape-interval`` seconds
(Prometheus' work on the driver: rendering the exposition). Pairs alternate which side goes
first (this 2-core machine's timings wander by 10-20% between identical runs, hence pairs).
Evaluations per second are the search's own figure (timing.json: evaluations over the
generations' wall time), so the end of the run (gates, result) is not in it.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def search(config, out: Path) -> tuple[float, float]:
    """Evaluations per second of one search (timing.json's figure) and per CPU second of this
    process (every thread: the search, the exporter's server, the scraper), which the other
    work on a shared machine disturbs less than wall time."""
    import json

    from evolution.pools import LocalPool
    from evolution.runner import execute, plan

    run = plan(config, out_dir=out)
    pool = LocalPool(config, run.spec.market, run.spec.split.test_ranges())
    cpu = time.process_time()
    try:
        execute(run, pool)
    finally:
        pool.close()
    cpu = time.process_time() - cpu
    timing = json.loads((out / "timing.json").read_text())
    return timing["evaluations_per_second"], timing["evaluations"] / cpu


class Scraper:
    """Reads /metrics every ``interval`` seconds, as Prometheus would."""

    def __init__(self, port: int, interval: float):
        self.url, self.interval = f"http://127.0.0.1:{port}/metrics", interval
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            with urllib.request.urlopen(self.url, timeout=5) as response:
                response.read()
            self.scrapes += 1

    def stop(self):
        self._stop.set()
        self._thread.join()


def hook_costs(recorder, run_dir: Path, interval: float) -> None:
    """CPU cost of the hooks themselves, timed on a real generation of the warm-up run: what the
    driver records per generation, what each island records, and rendering one scrape; and the
    share of a generation they come to (a figure the machine's load disturbs far less)."""
    import json

    from prometheus_client.openmetrics.exposition import generate_latest

    from backtest.telemetry import install
    from evolution.telemetry import record_generation, record_island
    from evolution.trials import read_trials

    frame = read_trials(run_dir)
    timing = json.loads((run_dir / "timing.json").read_text())
    g = max(t["generation"] for t in timing["generations"])
    rows = frame[frame["generation"] == g].to_dict("records")
    seconds = statistics.median(t["seconds"] for t in timing["generations"])
    install(recorder)
    try:
        n = 300
        t = time.process_time()
        for _ in range(n):
            record_generation(rows, seconds, 3)
            for island in range(2):
                record_island(island, len(rows) // 2, 1, seconds)
        hooks = (time.process_time() - t) / n
        t = time.process_time()
        for _ in range(50):
            generate_latest(recorder.registry)
        scrape = (time.process_time() - t) / 50
    finally:
        install(None)
    share = (hooks + scrape * seconds / interval) / seconds
    print(f"hooks: {1e6 * hooks:.0f} us of CPU per generation ({len(rows)} rows), one scrape {1e6 * scrape:.0f} us; "
          f"a generation takes {seconds:.3f} s: metrics cost {100 * share:.3f}% of it (target under 1%)")


def main() -> None:
    from backtest.telemetry import install
    from evolution.config import load_config
    from evolution.telemetry import start_exporter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--generations", type=int, help="override the config's generations")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    args = parser.parse_args()

    overrides = {"runtime.backend": "local", "runtime.progress": False}
    if args.generations:
        overrides["generations"] = args.generations
    config = load_config(args.config).with_overrides(**overrides)
    print(f"{config.islands} islands x {config.population}, {config.generations} generations, "
          f"scrape every {args.scrape_interval} s, {args.pairs} pairs")
    recorder, port = start_exporter(0)  # the server stays up; `install` switches recording on and off
    install(None)
    results: dict[str, list[float]] = {"without": [], "with": []}
    per_cpu: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        search(config, Path(tmp) / "warm-up")  # kernels loaded, caches warm
        hook_costs(recorder, Path(tmp) / "warm-up", args.scrape_interval)
        for pair in range(args.pairs):
            order = ("without", "with") if pair % 2 == 0 else ("with", "without")
            speeds = {}
            for side in order:
                scraper = None
                if side == "with":
                    install(recorder)
                    scraper = Scraper(port, args.scrape_interval)
                try:
                    speeds[side], cpu_speed = search(config, Path(tmp) / f"{pair}-{side}")
                finally:
                    install(None)
                    if scraper is not None:
                        scraper.stop()
                results[side].append(speeds[side])
                per_cpu[side].append(cpu_speed)
                extra = f", {scraper.scrapes} scrapes" if scraper else ""
                print(f"pair {pair + 1} {side:>7} exporter: {speeds[side]:8.1f} evaluations/s, "
                      f"{cpu_speed:8.1f} per CPU second{extra}", flush=True)
            cost = 1.0 - speeds["with"] / speeds["without"]
            print(f"pair {pair + 1}: the exporter costs {100 * cost:+.2f}% of evaluations per second", flush=True)
    for name, table in (("evaluations/s", results), ("per CPU second", per_cpu)):
        a, b = statistics.median(table["without"]), statistics.median(table["with"])
        print(f"median {name}: {a:.1f} without, {b:.1f} with the exporter: {100 * (1 - b / a):+.2f}% "
              "(target under 1%)")


if __name__ == "__main__":
    main()

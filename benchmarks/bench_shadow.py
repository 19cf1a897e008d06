"""Shadow traders on replay (issue 16): bars per second one shadow sustains, and 16 shadows.

The warm-up bars of a synthetic planted-edge market are published first and the traders
started (start-up is reported on its own); then the replayed bars are published as fast as
possible and the clock runs until every trader has traded the last one (signals computed
with backtest.positions over the window, paper book, state committed per batch, signals
published, entries acked).

Backends side by side in the same run:
  ray    Ray actors shadow-<id> reading Redis streams, state in Redis (REDIS_URL or
         127.0.0.1:6379, under a key prefix of its own, deleted at the end)
  local  threads of this process on the in-process bus, state files in a temporary directory

Run: python benchmarks/bench_shadow.py [--bars 3000] [--warmup 2000] [--shadows 1 16] [--backends ray local]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def genomes(n: int) -> list[dict]:
    from backtest.data import PlantedEdge, planted_edge_genome
    from backtest.families.rules import sma_crossover_genome

    found = [planted_edge_genome(PlantedEdge())]
    fast = 5
    while len(found) < n:
        found.append(sma_crossover_genome(fast, 3 * fast, ("long", "short", "both")[fast % 3]))
        fast += 1
    return found


def run_once(backend: str, n_shadows: int, market, warmup: int, redis_url: str | None) -> dict:
    from serving.bus import BusConfig, open_bus, replay_stream
    from serving.feed import replay
    from serving.shadow import LocalShadow, start_ray_shadow, wait_until
    from serving.state import FileStateStore
    from serving.trader import ShadowConfig, ShadowSpec

    prefix = f"evolve-bench:{uuid.uuid4().hex[:8]}:"
    state_dir = tempfile.mkdtemp(prefix="bench-shadow-")
    bus_config = BusConfig(redis_url=redis_url if backend == "ray" else None, prefix=prefix)
    config = ShadowConfig(state_dir=state_dir)
    bus = open_bus(bus_config)
    stream = replay_stream("bench")
    replay(bus, stream, market[:warmup], warmup=market[:warmup])
    specs = [ShadowSpec(g, stream, fees=0.0005, slippage=0.0002) for g in genomes(n_shadows)]
    last = int(market.timestamp[-1])
    try:
        begin = time.perf_counter()
        if backend == "ray":
            shadows = [start_ray_shadow(s, config, bus_config) for s in specs]
        else:
            shadows = [LocalShadow(s, config, bus, FileStateStore(state_dir)) for s in specs]
        wait_until(shadows, int(market.timestamp[warmup - 1]), timeout_s=3600, poll_s=0.1)  # started, warmed up
        startup = time.perf_counter() - begin
        start = time.perf_counter()
        replay(bus, stream, market[warmup:])  # as fast as possible, while the traders trade
        statuses = wait_until(shadows, last, timeout_s=3600, poll_s=0.1)
        elapsed = time.perf_counter() - start
        for s in shadows:
            s.stop()
    finally:
        bus.delete(stream, "signals")
        if redis_url and backend == "ray":
            import redis

            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
        bus.close()
        shutil.rmtree(state_dir, ignore_errors=True)
    traded = len(market) - warmup
    assert all(s["bars"] == traded for s in statuses), statuses
    return {"backend": backend, "shadows": n_shadows, "bars": traded, "seconds": round(elapsed, 2),
            "startup_s": round(startup, 2),
            "bars_per_s_per_shadow": round(traded / elapsed, 1),
            "bars_per_s_total": round(n_shadows * traded / elapsed, 1),
            "fallbacks": int(sum(s["fallbacks"] for s in statuses))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=3000, help="replayed (traded) bars")
    parser.add_argument("--warmup", type=int, default=2000, help="warm-up bars before them")
    parser.add_argument("--shadows", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--backends", nargs="+", default=["ray", "local"], choices=["ray", "local"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from backtest.data import PlantedEdge, synthetic_market

    market = synthetic_market(args.warmup + args.bars, seed=5, planted_edge=PlantedEdge())
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    rows = []
    if "ray" in args.backends:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 namespace=f"bench-shadow-{uuid.uuid4().hex[:6]}")
    try:
        for backend in args.backends:
            for n in args.shadows:
                rows.append(run_once(backend, n, market, args.warmup, redis_url))
                print(json.dumps(rows[-1]) if args.json else
                      f"{backend:5s} shadows={n:3d}  {rows[-1]['bars']} bars in {rows[-1]['seconds']:7.2f} s  "
                      f"{rows[-1]['bars_per_s_per_shadow']:8.1f} bars/s per shadow  "
                      f"{rows[-1]['bars_per_s_total']:8.1f} bars/s in all  (start-up and warm-up {rows[-1]['startup_s']} s)",
                      flush=True)
    finally:
        if "ray" in args.backends:
            import ray

            ray.shutdown()
    return 0 if rows and np.all([r["bars"] > 0 for r in rows]) else 1


if __name__ == "__main__":
    sys.exit(main())

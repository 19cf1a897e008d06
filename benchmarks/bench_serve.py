"""POST /v1/predict over HTTP against a trivial Serve deployment (the floor), side by side.

    .venv/bin/python benchmarks/bench_serve.py [--requests 2000] [--concurrency 1,16] [--candles 500] [--rounds 2]

One local Ray (2 CPUs), one Serve HTTP proxy on a free port of 127.0.0.1, two apps with the
same replica options (2 replicas, 0.25 CPU each, 32 ongoing requests):

* ``/``      the strategy endpoint (serving/app.py) answering for a registered champion
             (a SQLite registry in a temporary directory, the embedded default);
* ``/floor`` a deployment that reads the same body and returns a constant.

Both get the same body (``--candles`` candles) from the same client threads (one keep-alive
connection each), in alternating rounds; p50, p99 and requests per second are printed side by
side with the ratios and the issue's targets (p50 within 1.5x, p99 within 2x of the floor,
no errors). A profile of where a request's time goes inside a replica comes first (median
microseconds per call on this process: parsing and validation, ``backtest.positions`` on the
candles, and the MLflow pyfunc ``predict`` the endpoint avoids by unwrapping the model).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' helper that registers a strategy like `evolve run`

REPLICAS = {"num_replicas": 2, "autoscaling_config": None, "ray_actor_options": {"num_cpus": 0.25},
            "max_ongoing_requests": 32}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per side, concurrency and round")
    parser.add_argument("--concurrency", default="1,16", help="client threads, comma-separated (default 1,16)")
    parser.add_argument("--candles", type=int, default=500, help="candles per request (default 500)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per concurrency (default 2)")
    return parser.parse_args()


def genome() -> dict:
    """A rule genome with three indicators (SMA cross filtered by RSI), warm-up 61 bars."""
    sma = lambda w: {"name": "sma", "window": w}  # noqa: E731
    rsi = {"name": "rsi", "window": 14}
    return {"entry": {"logic": "and", "conditions": [{"lhs": sma(10), "op": "crosses_above", "rhs": sma(60)},
                                                     {"lhs": rsi, "op": "<", "rhs": 70.0}]},
            "exit": {"logic": "or", "conditions": [{"lhs": sma(10), "op": "crosses_below", "rhs": sma(60)}]},
            "direction": "both", "stop_loss": 0.05, "take_profit": None}


def profile(rows: np.ndarray, body: bytes, model_dir: str) -> None:
    import pandas as pd

    import mlflow
    from backtest.data import COLUMNS
    from serving.registry_view import strategy_from_pyfunc
    from serving.schemas import parse_predict_body

    model = mlflow.pyfunc.load_model(model_dir)
    strategy = strategy_from_pyfunc("1", None, model)
    frame = pd.DataFrame(rows, columns=list(COLUMNS)).astype({"timestamp": "int64"})

    def median_us(fn, n: int = 300) -> float:
        fn()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e6 * statistics.median(times)

    parse = median_us(lambda: parse_predict_body(body))
    json_stdlib = median_us(lambda: json.loads(body))
    signal = median_us(lambda: strategy.signal(rows))
    pyfunc = median_us(lambda: model.predict(frame))
    print(f"profile, median per call in this process ({len(rows)} candles, {len(body)} byte body):")
    print(f"  parse + validate (orjson, numpy, OHLCV checks) {parse:8.0f} us   (json.loads alone: {json_stdlib:.0f} us)")
    print(f"  backtest.positions on the array (unwrapped)    {signal:8.0f} us")
    print(f"  MLflow pyfunc predict on a DataFrame           {pyfunc:8.0f} us   (what unwrapping saves: "
          f"{pyfunc - signal:.0f} us)")


def load(port: int, path: str, body: bytes, threads: int, n: int) -> dict:
    """n requests from ``threads`` keep-alive connections; latencies in ms."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(n))
    headers = {"content-type": "application/json"}

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append((time.perf_counter() - start) * 1000)
            if not ok:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - started
    lat = np.sort(np.asarray(latencies))
    return {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "rps": len(lat) / wall,
            "errors": errors[0], "n": len(lat)}


def main() -> int:
    args = parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from fastapi import Request
    from fastapi.responses import Response
    from mlflow_server import free_port
    from ray import serve
    from serve_fixtures import register_strategy

    import mlflow
    from backtest import positions
    from backtest.data import synthetic_market
    from serving.app import application
    from serving.app_config import ServeAppConfig
    from serving.registry import ModelRegistry

    @serve.deployment(name="Floor")
    class Floor:
        """The floor: reads the body, answers a constant."""

        async def __call__(self, request: Request) -> Response:
            await request.body()
            return Response(b'{"signal":0,"action":"HOLD"}', media_type="application/json")

    base = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    uri = f"sqlite:///{base / 'mlflow.db'}"
    version = register_strategy(uri, "strategy-evolution", genome(), artifact_location=str(base / "artifacts"))
    ModelRegistry("strategy-evolution", uri).promote(version)
    rows = synthetic_market(args.candles, seed=42).to_rows()
    body = json.dumps({"candles": rows.tolist()}).encode()
    model_dir = mlflow.artifacts.download_artifacts(
        artifact_uri=ModelRegistry("strategy-evolution", uri).client.get_model_version_download_uri(
            "strategy-evolution", version), dst_path=str(base / "model"), tracking_uri=uri)
    profile(rows, body, model_dir)

    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(ServeAppConfig(tracking_uri=uri), **REPLICAS), name="evolve", route_prefix="/")
        serve.run(Floor.options(**REPLICAS).bind(), name="floor", route_prefix="/floor")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/predict", body=body, headers={"content-type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        assert answer["signal"] == int(positions(genome(), rows)[-1]), answer
        print(f"\nserve on 127.0.0.1:{port}: 2 replicas x 0.25 CPU per app, {args.candles} candles per request "
              f"({len(body)} bytes), {args.requests} requests per side and round, {args.rounds} rounds")
        print(f"{'concurrency':>11} {'side':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}")
        verdicts = []
        for threads in (int(c) for c in args.concurrency.split(",")):
            runs = {"floor": [], "predict": []}
            for _ in range(2):  # warm-up, both sides
                load(port, "/floor", body, threads, 200)
                load(port, "/v1/predict", body, threads, 200)
            for r in range(args.rounds):
                order = (("floor", "/floor"), ("predict", "/v1/predict"))
                for side, path in (order if r % 2 == 0 else order[::-1]):
                    runs[side].append(load(port, path, body, threads, args.requests))
            summary = {}
            for side, results in runs.items():
                summary[side] = {k: statistics.median(r[k] for r in results) for k in ("p50", "p99", "rps")}
                summary[side]["errors"] = sum(r["errors"] for r in results)
                s = summary[side]
                print(f"{threads:>11} {side:>8} {s['p50']:8.2f} {s['p99']:8.2f} {s['rps']:8.0f} {s['errors']:7d}")
            p50_ratio = summary["predict"]["p50"] / summary["floor"]["p50"]
            p99_ratio = summary["predict"]["p99"] / summary["floor"]["p99"]
            ok = p50_ratio <= 1.5 and p99_ratio <= 2.0 and summary["predict"]["errors"] == 0
            verdicts.append(ok)
            print(f"{threads:>11} {'ratio':>8} {p50_ratio:7.2f}x {p99_ratio:7.2f}x "
                  f"{summary['predict']['rps'] / summary['floor']['rps']:7.2f}x   targets p50 <= 1.5x, p99 <= 2x, "
                  f"0 errors: {'met' if ok else 'NOT met'}")
    finally:
        serve.shutdown()
        ray.shutdown()
    print("all targets met" if all(verdicts) else "some targets not met (see above; timings on a busy machine vary)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

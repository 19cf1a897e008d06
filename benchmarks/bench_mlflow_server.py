"""Server and client CPU per request of a local `mlflow server`: gunicorn (what mlflow/server.sh
starts) against MLflow's default uvicorn front.

    python benchmarks/bench_mlflow_server.py [--requests N]

Each front gets a fresh server (SQLite backend, proxied artifacts, one worker, no GenAI job
runner) and the same requests, the kind a run's lineage sends: N/3 single-metric log_batch
calls, N/3 small artifact uploads and N/3 run updates, through ``MlflowClient`` (what the
lineage sender, evolution/lineage/sender.py, sends with). Prints the server's CPU (all of its
processes) and the client's CPU per request, side by side.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def tree_cpu(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [process] + process.children(recursive=True))


CASES = ("uvicorn", "gunicorn")


def measure(front: str, n: int, tmp: Path) -> tuple[float, float, float]:
    from mlflow.entities import Metric
    from mlflow_server import MlflowServer

    from mlflow import MlflowClient

    if front == "uvicorn":
        os.environ["MLFLOW_GUNICORN_OPTS"] = ""  # empty: mlflow server falls back to uvicorn
    else:
        os.environ.pop("MLFLOW_GUNICORN_OPTS", None)
    with MlflowServer.sqlite(tmp / front) as server:
        client = MlflowClient(server.url)
        run = client.create_run(client.create_experiment("bench")).info.run_id
        small = tmp / "small.json"
        small.write_text("{}" * 200)
        client.log_artifact(run, str(small), "warm-up")
        time.sleep(2)  # let the server settle after start-up
        server_before, client_before, wall_before = tree_cpu(server._process.pid), time.process_time(), time.perf_counter()
        third = n // 3
        for i in range(third):
            client.log_batch(run, metrics=[Metric("m", float(i), 0, i)])
        for i in range(third):
            client.log_artifact(run, str(small), f"d{i}")
        for i in range(third):
            client.set_terminated(run, "FINISHED", 1_000 + i)
        count = 3 * third
        wall = time.perf_counter() - wall_before
        return ((tree_cpu(server._process.pid) - server_before) * 1000 / count,
                (time.process_time() - client_before) * 1000 / count, wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-server-") as tmp:
        results = {front: measure(front, args.requests, Path(tmp)) for front in CASES}
    for front, (server_ms, client_ms, wall) in results.items():
        print(f"{front:8s} (one worker{', 4 threads' if front == 'gunicorn' else ''}), MlflowClient: server CPU "
              f"{server_ms:5.2f} ms per request, client CPU {client_ms:4.2f} ms per request, "
              f"{args.requests // 3 * 3} requests in {wall:.2f} s")
    ratio = results["uvicorn"][0] / results["gunicorn"][0]
    print(f"server CPU per request: gunicorn {results['gunicorn'][0]:.2f} ms, uvicorn {results['uvicorn'][0]:.2f} ms "
          f"({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Server and client CPU per request of a local `mlflow server`: gunicorn (what mlflow/server.sh
starts) against MLflow's default uvicorn front, and evolve's REST client against MLflow's.

    python benchmarks/bench_mlflow_server.py [--requests N]

Each front gets a fresh server (SQLite backend, proxied artifacts, one worker, no GenAI job
runner) and the same requests, the kind a run's lineage sends: N/3 single-metric log_batch
calls, N/3 small artifact uploads and N/3 run updates. Three cases: uvicorn and gunicorn with
``MlflowClient``, and gunicorn with ``evolution.lineage_rest.RestClient`` (what the lineage
sender uses for an HTTP server). Prints the server's CPU (all of its processes) and the
client's CPU per request, side by side.
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


CASES = {"uvicorn": ("uvicorn", "mlflow"), "gunicorn": ("gunicorn", "mlflow"), "gunicorn+rest": ("gunicorn", "rest")}


def measure(case: str, n: int, tmp: Path) -> tuple[float, float, float]:
    from mlflow_server import MlflowServer

    front, client_kind = CASES[case]
    if client_kind == "rest":
        from evolution.lineage_rest import RestClient as Client
    else:
        from mlflow import MlflowClient as Client
    if front == "uvicorn":
        os.environ["MLFLOW_GUNICORN_OPTS"] = ""  # empty: mlflow server falls back to uvicorn
    else:
        os.environ.pop("MLFLOW_GUNICORN_OPTS", None)
    with MlflowServer.sqlite(tmp / case) as server:
        client = Client(server.url)
        created = client.create_run(client.create_experiment("bench"))
        run = created.info.run_id
        if client_kind == "rest":
            Metric = client.entities.Metric  # noqa: N806
            repo = client.artifact_repository(created.info.artifact_uri)

            def log_artifact(local: str, path: str) -> None:
                repo.log_artifact(local, path)
        else:
            from mlflow.entities import Metric

            def log_artifact(local: str, path: str) -> None:
                client.log_artifact(run, local, path)
        small = tmp / "small.json"
        small.write_text("{}" * 200)
        log_artifact(str(small), "warm-up")
        time.sleep(2)  # let the server settle after start-up
        server_before, client_before, wall_before = tree_cpu(server._process.pid), time.process_time(), time.perf_counter()
        third = n // 3
        for i in range(third):
            client.log_batch(run, metrics=[Metric("m", float(i), 0, i)])
        for i in range(third):
            log_artifact(str(small), f"d{i}")
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
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-server-") as tmp:
        results = {case: measure(case, args.requests, Path(tmp)) for case in CASES}
    for case, (server_ms, client_ms, wall) in results.items():
        front, client_kind = CASES[case]
        print(f"{front:8s} (one worker{', 4 threads' if front == 'gunicorn' else ''}), "
              f"{'RestClient' if client_kind == 'rest' else 'MlflowClient'}: server CPU {server_ms:5.2f} ms per "
              f"request, client CPU {client_ms:4.2f} ms per request, {args.requests // 3 * 3} requests in {wall:.2f} s")
    ratio = results["uvicorn"][0] / results["gunicorn"][0]
    print(f"server CPU per request: gunicorn {results['gunicorn'][0]:.2f} ms, uvicorn {results['uvicorn'][0]:.2f} ms "
          f"({ratio:.2f}x)")
    print(f"client CPU per request: RestClient {results['gunicorn+rest'][1]:.2f} ms, MlflowClient "
          f"{results['gunicorn'][1]:.2f} ms ({results['gunicorn'][1] / results['gunicorn+rest'][1]:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

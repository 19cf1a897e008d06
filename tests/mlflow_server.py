"""A real ``mlflow server`` subprocess for tests.

    with MlflowServer.sqlite(tmp_path) as server:       # SQLite backend in tmp
        client = MlflowClient(server.url)
        server.stop(); server.start()                     # same port, same store

    with MlflowServer.postgres(tmp_path) as server:     # 127.0.0.1:5432 db `test`, own schema
        ...

``postgres_available()`` says whether PostgreSQL answers on 127.0.0.1:5432 with database
``test`` (trust auth) and psycopg2 is importable. Every PostgreSQL server gets a fresh schema
(``mlflow_test_<random>``) that is dropped again on ``close()``.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

# As mlflow/server.sh starts it: gunicorn serving MLflow's Flask app (threads for the parallel
# uploads), no GenAI job runner.
GUNICORN_OPTS = "--threads 4 --timeout 120"
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DATABASE = "test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_user() -> str:
    return os.environ.get("PGUSER") or os.environ.get("USER") or "postgres"


def postgres_available() -> bool:
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return False
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1.0):
            pass
    except OSError:
        return False
    import psycopg2

    try:
        psycopg2.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DATABASE, user=_pg_user(), connect_timeout=2).close()
    except Exception:
        return False
    return True


def _pg_execute(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DATABASE, user=_pg_user(), connect_timeout=5)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


class MlflowServer:
    """One ``mlflow server`` process on a free port of 127.0.0.1, restartable on the same store."""

    def __init__(self, backend_store_uri: str, artifacts_dir: Path, *, port: int | None = None,
                 log_path: Path | None = None, on_close=None):
        self.backend_store_uri = backend_store_uri
        self.artifacts_dir = Path(artifacts_dir)
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else self.artifacts_dir.parent / f"mlflow-server-{self.port}.log"
        self._process: subprocess.Popen | None = None
        self._on_close = on_close

    # ------------------------------------------------------------------ constructors

    @classmethod
    def sqlite(cls, directory: Path, **kwargs) -> MlflowServer:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{directory / 'mlflow.db'}", directory / "artifacts", **kwargs)

    @classmethod
    def postgres(cls, directory: Path, **kwargs) -> MlflowServer:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        schema = f"mlflow_test_{uuid.uuid4().hex[:12]}"
        _pg_execute(f'CREATE SCHEMA "{schema}"')
        uri = (f"postgresql+psycopg2://{_pg_user()}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"
               f"?options=-csearch_path%3D{schema}")

        def drop() -> None:
            _pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

        return cls(uri, directory / "artifacts", on_close=drop, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 120.0) -> MlflowServer:
        if self.running:
            return self
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(Path(sys.executable).parent / "mlflow"), "server",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", os.environ.get("MLFLOW_WORKERS", "1"),
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.artifacts_dir),
        ]
        gunicorn_opts = os.environ.get("MLFLOW_GUNICORN_OPTS", GUNICORN_OPTS)
        if gunicorn_opts:  # empty: MLflow's default uvicorn front
            command += ["--gunicorn-opts", gunicorn_opts]
        if not Path(command[0]).exists():
            command[:1] = [sys.executable, "-m", "mlflow"]
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        log = open(self.log_path, "ab")
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self._process.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.url} within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        """Kill the server (its whole process group, as a crash or a lost host would) and wait
        until the port is closed. Killed, not shut down: gunicorn's graceful stop took 4-5 s of
        each test, and every write the server acknowledged is already committed in its store."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                return
            time.sleep(0.1)

    def close(self) -> None:
        self.stop()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    def __enter__(self) -> MlflowServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- store contents


VOLATILE_TAGS = {"mlflow.user", "mlflow.source.name", "mlflow.source.type", "mlflow.log-model.history",
                 "mlflow.parentRunId"}


def list_artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            out.extend(list_artifacts(client, run_id, item.path))
        else:
            out.append(item.path)
    return sorted(out)


def dump_store(tracking_uri: str, experiment: str, model_name: str) -> dict:
    """What an experiment and a registered model hold, without ids that differ between stores.

    Runs are keyed by their ``lineage.key`` tag; parents by their key; model versions by
    version number with the key of their run; timestamps kept as logged.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    key_of = {run.info.run_id: run.data.tags.get("lineage.key") for run in runs}
    out_runs = {}
    for run in runs:
        key = key_of[run.info.run_id]
        metrics = {}
        for name in run.data.metrics:
            history = client.get_metric_history(run.info.run_id, name)
            metrics[name] = sorted((m.step, m.value, m.timestamp) for m in history)
        out_runs[key] = {
            "name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            "parent": key_of.get(run.data.tags.get("mlflow.parentRunId")),
            "params": dict(run.data.params),
            "tags": {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS},
            "metrics": metrics,
            "artifacts": list_artifacts(client, run.info.run_id),
        }
    versions = {}
    aliases = {}
    registered_tags = {}
    try:
        registered = client.get_registered_model(model_name)
    except Exception:
        registered = None
    if registered is not None:
        registered_tags = dict(registered.tags)
        aliases = dict(registered.aliases) if isinstance(registered.aliases, dict) else {
            a.alias: a.version for a in registered.aliases}
        for mv in client.search_model_versions(f"name = '{model_name}'"):
            versions[mv.version] = {"run": key_of.get(mv.run_id), "tags": dict(mv.tags), "status": mv.status,
                                    "aliases": sorted(mv.aliases or [])}
    return {"runs": out_runs, "versions": versions, "aliases": aliases, "registered_tags": registered_tags}

"""A real ``mlflow server`` subprocess for tests.

    with MlflowServer.sqlite(tmp_path) as server:       # SQLite backend in tmp
        client = MlflowClient(server.url)
        server.stop(); server.start()                     # same port, same store

    with MlflowServer.postgres(tmp_path) as server:     # 127.0.0.1:5432, a database of its own
        ...

``postgres_available()`` says whether PostgreSQL answers on 127.0.0.1:5432 with database
``test`` (trust auth) and psycopg2 is importable. Every PostgreSQL server gets a database of
its own (``mlflow_test_<random>``, created from ``test``) that is dropped again on ``close()``.
"""
from __future__ import annotations

import os
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
        """A server on a database of its own (``mlflow_test_<random>``), dropped again on ``close()``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        database = f"mlflow_test_{uuid.uuid4().hex[:12]}"
        _pg_execute(f'CREATE DATABASE "{database}"')
        uri = f"postgresql+psycopg2://{_pg_user()}@{PG_HOST}:{PG_PORT}/{database}"

        def drop() -> None:
            _pg_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

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

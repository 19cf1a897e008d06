"""A small client of the MLflow tracking server's REST API, for sending lineage without MLflow.

``from mlflow import MlflowClient`` costs 1.7-2 s of CPU in every process that sends lineage,
and its HTTP client about 3 ms of CPU per request; on a machine whose cores the search fills,
all of that comes out of the search. :class:`RestClient` speaks the dozen endpoints the lineage
operations need (:mod:`evolution.lineage_ops`) with the standard library, keeps one connection
per thread, and uploads artifacts through the server's artifact proxy (``mlflow-artifacts:``
URIs). It answers the calls :class:`~evolution.lineage_ops.OpApplier` makes with the same
names and arguments as ``MlflowClient``, and returns plain objects with the attributes used.

It is used for ``http(s)://`` tracking URIs unless ``EVOLVE_MLFLOW_CLIENT=mlflow`` (MLflow's own
client: for authentication plugins, client certificates and the like), which is also chosen
when one of MLflow's TLS or auth settings, or an HTTP proxy for the server, is set. It reads
``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` for HTTPS as MLflow's client does, and MLflow's
settings for the rest: ``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT``.
"""
from __future__ import annotations

import base64
import http.client
import json
import math
import mimetypes
import os
import posixpath
import select
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace
from typing import Any

CLIENT_ENV = "EVOLVE_MLFLOW_CLIENT"
_ARTIFACTS_ROOT = "/api/2.0/mlflow-artifacts/artifacts"
_RETRY_STATUS = {429, 500, 502, 503, 504}
STREAM_ABOVE = 16 << 20  # artifact uploads larger than this are streamed from disk, not read into memory
# settings MLflow's own client honours that this one does not: with any of them, use MLflow's
_UNSUPPORTED_ENV = ("MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                    "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4")

# what log_batch takes, by the attribute names of mlflow.entities' Metric, Param and RunTag
Metric = namedtuple("Metric", "key value timestamp step")
Param = namedtuple("Param", "key value")
RunTag = namedtuple("RunTag", "key value")


class RestError(Exception):
    """The server answered with an error (``status``, MLflow's ``error_code``)."""

    def __init__(self, method: str, path: str, status: int, error_code: str, message: str):
        super().__init__(f"{method} {path}: HTTP {status} {error_code}: {message}")
        self.status, self.error_code = status, error_code


def use_rest_client(tracking_uri: str) -> bool:
    """True where lineage goes to an HTTP server through :class:`RestClient`."""
    choice = os.environ.get(CLIENT_ENV, "auto").strip().lower()
    if choice not in ("auto", "rest", "mlflow"):
        raise ValueError(f"{CLIENT_ENV}={choice!r}: use 'auto' (the default), 'rest' or 'mlflow'")
    if choice == "mlflow" or not tracking_uri.startswith(("http://", "https://")):
        return False
    if choice == "rest":
        return True
    return not any(os.environ.get(name) for name in _UNSUPPORTED_ENV) and not _behind_proxy(tracking_uri)


def _behind_proxy(tracking_uri: str) -> bool:
    """Whether ``HTTP(S)_PROXY`` applies to this server (``NO_PROXY`` aside): MLflow's client
    (requests) goes through proxies, this one does not."""
    parsed = urllib.parse.urlsplit(tracking_uri)
    if parsed.scheme not in urllib.request.getproxies():
        return False
    return not urllib.request.proxy_bypass(parsed.hostname or "")


def tracking_client(tracking_uri: str):
    """The client that lineage operations use for ``tracking_uri``: ours for HTTP, else MLflow's."""
    if use_rest_client(tracking_uri):
        return RestClient(tracking_uri)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def _json_number(value: float) -> float | str:
    """Protobuf's JSON for doubles that JSON lacks."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _tags(tags: dict | None) -> list[dict]:
    return [{"key": str(k), "value": str(v)} for k, v in (tags or {}).items()]


def _run(data: dict) -> SimpleNamespace:
    info = data.get("info", {})
    tags = {t["key"]: t.get("value", "") for t in data.get("data", {}).get("tags", [])}
    return SimpleNamespace(info=SimpleNamespace(run_id=info["run_id"], artifact_uri=info.get("artifact_uri")),
                           data=SimpleNamespace(tags=tags))


def _logged_model(data: dict) -> SimpleNamespace:
    info = data.get("info", {})
    status = str(info.get("status", ""))
    return SimpleNamespace(model_id=info["model_id"], artifact_location=info.get("artifact_uri"),
                           status=status[len("LOGGED_MODEL_"):] if status.startswith("LOGGED_MODEL_") else status)


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection the server has closed (gunicorn closes them after 2 s):
    its socket reads as ready (end of file). Reconnect before sending, not after a failure."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class RestClient:
    """The MLflow REST calls lineage needs; thread-safe (one keep-alive connection per thread)."""

    entities = SimpleNamespace(Metric=Metric, Param=Param, RunTag=RunTag)

    def __init__(self, tracking_uri: str):
        parsed = urllib.parse.urlsplit(tracking_uri)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{tracking_uri!r} is not an http(s):// tracking server address")
        self.tracking_uri = tracking_uri
        self._scheme, self._netloc = parsed.scheme, parsed.netloc.rpartition("@")[2]
        self._base = parsed.path.rstrip("/")
        self._local = threading.local()
        self._headers = {"User-Agent": "evolve-lineage", "Accept": "application/json"}
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if parsed.username and not user:
            user, password = urllib.parse.unquote(parsed.username), urllib.parse.unquote(parsed.password or "")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user:
            basic = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"

    # ------------------------------------------------------------------ transport

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))
        conn = getattr(self._local, "conn", None)
        if conn is not None and (fresh or conn.timeout != timeout or _dropped(conn)):
            conn.close()
            conn = None
        if conn is None:
            if self._scheme == "https":
                # the CA bundle MLflow's client (requests) would use, where one is set
                cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
                conn = http.client.HTTPSConnection(self._netloc, timeout=timeout,
                                                   context=ssl.create_default_context(cafile=cafile))
            else:
                conn = http.client.HTTPConnection(self._netloc, timeout=timeout)
            conn.connect()
            # a streamed body goes out in several writes after the headers: no Nagle delay between them
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: bytes | Path | None = None, *, query: dict | None = None,
                content_type: str = "application/json") -> dict:
        """One call, retried on a refused or dropped connection and on 429/5xx as MLflow's client is.

        ``body`` is bytes, or a file (a ``Path``) streamed from disk (opened again for a retry).
        """
        url = self._base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = content_type
        if isinstance(body, Path):
            headers["Content-Length"] = str(body.stat().st_size)
        retries = max(0, int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")))
        backoff = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"))
        attempt = 0
        while True:
            status, payload, error = 0, b"", None
            try:
                conn = self._connection(fresh=attempt > 0)
                if isinstance(body, Path):
                    with open(body, "rb") as stream:
                        conn.request(method, url, body=stream, headers=headers)
                else:
                    conn.request(method, url, body=body, headers=headers)
                response = conn.getresponse()
                status, payload = response.status, response.read()
                if response.will_close:
                    conn.close()
                    self._local.conn = None
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, closed
                error = exc
                conn = getattr(self._local, "conn", None)
                if conn is not None:
                    conn.close()
                    self._local.conn = None
            if error is None and status not in _RETRY_STATUS:
                break
            if attempt >= retries:
                if error is not None:
                    raise ConnectionError(f"{method} {self._scheme}://{self._netloc}{url}: {error}") from error
                break
            time.sleep(backoff * (2 ** attempt))
            attempt += 1
        if status >= 400:
            try:
                detail = json.loads(payload)
            except ValueError:
                detail = {"message": payload.decode("utf-8", "replace")[:500]}
            raise RestError(method, path, status, str(detail.get("error_code", "")), str(detail.get("message", "")))
        return json.loads(payload) if payload else {}

    def _call(self, method: str, endpoint: str, body: dict | None = None) -> dict:
        path = "/api/2.0/mlflow/" + endpoint
        if method == "GET":
            return self.request(method, path, query=body)
        return self.request(method, path, json.dumps(body or {}, allow_nan=False).encode("utf-8"))

    # ------------------------------------------------------------------ experiments and runs

    def get_experiment_by_name(self, name: str) -> SimpleNamespace | None:
        try:
            data = self._call("GET", "experiments/get-by-name", {"experiment_name": name})
        except RestError as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return SimpleNamespace(experiment_id=data["experiment"]["experiment_id"])

    def create_experiment(self, name: str) -> str:
        return self._call("POST", "experiments/create", {"name": name})["experiment_id"]

    def search_runs(self, experiment_ids: list[str], filter_string: str = "", max_results: int = 1000) -> list:
        runs: list[SimpleNamespace] = []
        token = None
        while len(runs) < max_results:
            body = {"experiment_ids": list(experiment_ids), "filter": filter_string,
                    "max_results": min(max_results - len(runs), 1000), "run_view_type": "ACTIVE_ONLY"}
            if token:
                body["page_token"] = token
            data = self._call("POST", "runs/search", body)
            runs.extend(_run(run) for run in data.get("runs", []))
            token = data.get("next_page_token")
            if not token:
                break
        return runs

    def create_run(self, experiment_id: str, start_time: int | None = None, tags: dict | None = None,
                   run_name: str | None = None) -> SimpleNamespace:
        tags = tags or {}
        body = {"experiment_id": str(experiment_id), "user_id": tags.get("mlflow.user", "unknown"),
                "start_time": int(start_time if start_time is not None else time.time() * 1000),
                "tags": _tags(tags)}
        if run_name is not None:
            body["run_name"] = run_name
        return _run(self._call("POST", "runs/create", body)["run"])

    def get_run(self, run_id: str) -> SimpleNamespace:
        return _run(self._call("GET", "runs/get", {"run_id": run_id})["run"])

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        body = {"run_id": run_id,
                "metrics": [{"key": m.key, "value": _json_number(m.value), "timestamp": int(m.timestamp),
                             "step": int(m.step)} for m in metrics],
                "params": [{"key": p.key, "value": str(p.value)} for p in params],
                "tags": [{"key": t.key, "value": str(t.value)} for t in tags]}
        self._call("POST", "runs/log-batch", body)

    def set_terminated(self, run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
        self._call("POST", "runs/update", {"run_id": run_id, "status": status,
                                           "end_time": int(end_time if end_time is not None else time.time() * 1000)})

    # ------------------------------------------------------------------ logged models

    def create_logged_model(self, experiment_id: str, name: str | None = None, source_run_id: str | None = None,
                            tags: dict | None = None, model_type: str | None = None) -> SimpleNamespace:
        body: dict[str, Any] = {"experiment_id": str(experiment_id), "tags": _tags(tags)}
        for key, value in (("name", name), ("source_run_id", source_run_id), ("model_type", model_type)):
            if value is not None:
                body[key] = value
        return _logged_model(self._call("POST", "logged-models", body)["model"])

    def finalize_logged_model(self, model_id: str, status: str = "READY") -> None:
        status = str(getattr(status, "value", status))
        self._call("PATCH", f"logged-models/{urllib.parse.quote(model_id, safe='')}",
                   {"model_id": model_id, "status": f"LOGGED_MODEL_{status}"})

    def search_logged_models(self, experiment_ids: list[str], filter_string: str | None = None,
                             max_results: int = 100) -> list:
        body = {"experiment_ids": list(experiment_ids), "max_results": max_results}
        if filter_string:
            body["filter"] = filter_string
        return [_logged_model(m) for m in self._call("POST", "logged-models/search", body).get("models", [])]

    # ------------------------------------------------------------------ registry

    def get_registered_model(self, name: str) -> dict:
        return self._call("GET", "registered-models/get", {"name": name})["registered_model"]

    def create_registered_model(self, name: str, tags: dict | None = None) -> dict:
        return self._call("POST", "registered-models/create", {"name": name, "tags": _tags(tags)})

    def search_model_versions(self, filter_string: str) -> list:
        versions: list[SimpleNamespace] = []
        token = None
        while True:
            data = self._call("GET", "model-versions/search",
                              {"filter": filter_string, "max_results": 10000, "page_token": token})
            versions.extend(SimpleNamespace(run_id=mv.get("run_id"), version=str(mv["version"]))
                            for mv in data.get("model_versions", []))
            token = data.get("next_page_token")
            if not token:
                return versions

    def create_model_version(self, name: str, source: str, run_id: str | None = None, tags: dict | None = None,
                             model_id: str | None = None, **_ignored) -> SimpleNamespace:
        body = {"name": name, "source": source, "tags": _tags(tags)}
        if run_id:
            body["run_id"] = run_id
        if model_id:
            body["model_id"] = model_id
        data = self._call("POST", "model-versions/create", body)["model_version"]
        return SimpleNamespace(version=str(data["version"]))

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._call("POST", "registered-models/set-tag", {"name": name, "key": key, "value": str(value)})

    # ------------------------------------------------------------------ artifacts

    def artifact_repository(self, artifact_uri: str) -> ArtifactUploader | None:
        """Uploads for an ``mlflow-artifacts:`` location (the server's proxy), else ``None``."""
        parsed = urllib.parse.urlsplit(artifact_uri)
        if parsed.scheme != "mlflow-artifacts":
            return None
        if parsed.netloc and parsed.netloc != self._netloc:
            return None  # artifacts served elsewhere: MLflow's repository knows how to reach them
        return ArtifactUploader(self, posixpath.join(_ARTIFACTS_ROOT, parsed.path.lstrip("/")))

    def put_file(self, path: str, local_file: str | Path) -> None:
        """Upload one file: in one write when small, streamed from disk when larger."""
        local_file = Path(local_file)
        mime = mimetypes.guess_type(local_file.name)[0] or "application/octet-stream"
        size = local_file.stat().st_size
        self.request("PUT", path, local_file.read_bytes() if size <= STREAM_ABOVE else local_file, content_type=mime)


class ArtifactUploader:
    """``log_artifact`` / ``log_artifacts`` of MLflow's artifact repositories, over the proxy."""

    def __init__(self, client: RestClient, root: str):
        self.client, self.root = client, root.rstrip("/")

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *[urllib.parse.quote(p) for p in parts if p])

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        self.client.put_file(self._path(artifact_path or "", os.path.basename(local_file)), local_file)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        local_dir = os.path.abspath(local_dir)
        for root, _dirs, files in os.walk(local_dir):
            relative = os.path.relpath(root, local_dir)
            directory = posixpath.join(artifact_path or "", "" if relative == "." else Path(relative).as_posix())
            for name in sorted(files):
                self.log_artifact(os.path.join(root, name), directory or None)

"""Lineage through evolve's own REST client (evolution/lineage_rest.py) and the model template cache.

The REST client must leave a real `mlflow server` exactly as MLflow's client does, and a
sender that finds its model template in the cache must not import MLflow at all.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from mlflow_server import MlflowServer, dump_store

from evolution.lineage import LineageLogger, default_model_code
from evolution.lineage_fixture import record_fixture_run, replay_fixture_run
from evolution.lineage_ops import OpApplier, SyncState, template_cache_dir
from evolution.lineage_rest import RestClient, RestError, use_rest_client

EXPERIMENT = "lineage-rest-test"
MODEL = "strategy-rest-test"
AT = 1_767_225_600_000  # the same timestamps in both stores


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    source = tmp_path_factory.mktemp("rest-source")
    result, generations = record_fixture_run(source, seed=13, n_bars=4000, population=8, generations=3,
                                             hall_of_fame=3, promoted=2, trials_layout="parts")
    return source, result, generations


def _dump_models(tracking_uri: str) -> dict:
    """Every logged model of the experiment by strategy id: its fields and every file's content
    (MLmodel parsed, without the two values that are new for each model)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = {r.info.run_id: r.data.tags["lineage.key"] for r in client.search_runs([experiment], max_results=1000)}
    out = {}
    for model in client.search_logged_models([experiment], max_results=100):
        files = {}
        root = mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, tracking_uri=tracking_uri)
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
        meta = yaml.safe_load(files.pop("MLmodel"))
        assert meta.pop("model_id") == model.model_id
        assert len(meta.pop("model_uuid")) == 32
        out[model.tags["strategy_id"]] = {
            "name": model.name, "status": str(model.status), "model_type": model.model_type,
            "source_run": runs[model.source_run_id], "tags": dict(model.tags), "mlmodel": meta, "files": files}
    return out


def _log(recorded, base, monkeypatch, client: str) -> tuple:
    source, _result, generations = recorded
    monkeypatch.setenv("EVOLVE_MLFLOW_CLIENT", client)
    with MlflowServer.sqlite(base / "store") as server:
        logger = LineageLogger(server.url, experiment=EXPERIMENT, registered_model=MODEL)
        report = replay_fixture_run(logger, source, base / "run", generations, at_ms=AT)
        assert not report.spooled and report.lineage_complete
        return report, dump_store(server.url, EXPERIMENT, MODEL), _dump_models(server.url)


@pytest.mark.slow
def test_the_rest_client_leaves_the_store_as_mlflows_client_does(recorded, tmp_path, monkeypatch):
    rest_report, rest_store, rest_models = _log(recorded, tmp_path / "rest", monkeypatch, "rest")
    mlflow_report, mlflow_store, mlflow_models = _log(recorded, tmp_path / "mlflow", monkeypatch, "mlflow")
    assert rest_report.sender["client"] == "RestClient" and rest_report.sender["process"] is True
    assert mlflow_report.sender["client"] == "MlflowClient"
    assert rest_store == mlflow_store
    assert set(rest_models) == {e["strategy_id"] for e in recorded[1]["hall_of_fame"]}
    assert rest_models == mlflow_models
    assert sorted(rest_report.model_versions) == sorted(mlflow_report.model_versions)


@pytest.mark.slow
def test_with_its_model_template_cached_the_sender_never_imports_mlflow(recorded, tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EVOLVE_MLFLOW_CLIENT", raising=False)
    first, first_store, _ = _log(recorded, tmp_path / "first", monkeypatch, "auto")
    assert first.sender == {"process": True, "client": "RestClient", "imported_mlflow": True}  # built it
    entries = [p for p in (tmp_path / "cache" / "model-templates").iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    second, second_store, second_models = _log(recorded, tmp_path / "second", monkeypatch, "auto")
    assert second.sender == {"process": True, "client": "RestClient", "imported_mlflow": False}
    assert second_store == first_store
    metas = {json.dumps(m["mlmodel"], sort_keys=True) for m in second_models.values()}
    assert len(metas) == 1  # the same template under every genome
    genomes = {m["files"]["artifacts/genome.json"] for m in second_models.values()}
    assert genomes == {json.dumps(e["genome"], sort_keys=True) for e in recorded[1]["hall_of_fame"]}


def test_a_broken_cache_entry_is_rebuilt_and_the_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    state = SyncState("http://127.0.0.1:1", EXPERIMENT)
    applier = OpApplier(None, state, tmp_path, default_model_code())
    applier.prepare(["numpy"])
    template = applier._model_template
    assert template.parent.parent == template_cache_dir()
    (template / "MLmodel").unlink()  # a half-deleted entry
    again = OpApplier(None, state, tmp_path, default_model_code())
    again.prepare(["numpy"])
    assert again._model_template == template and (template / "MLmodel").is_file()
    other = OpApplier(None, state, tmp_path, default_model_code())
    other.prepare(["numpy", "pandas"])  # other requirements: another entry
    assert other._model_template != template
    assert "pandas" in (other._model_template / "requirements.txt").read_text()

    monkeypatch.setenv("EVOLVE_CACHE_DIR", "off")
    assert template_cache_dir() is None
    uncached = OpApplier(None, state, tmp_path, default_model_code())
    uncached.prepare(["numpy"])
    path = uncached._model_template
    assert path.is_dir() and not path.is_relative_to(tmp_path / "cache")
    uncached.close()  # a temporary template goes with its applier
    assert not path.exists()


def test_the_client_choice_is_checked(monkeypatch, tmp_path):
    monkeypatch.delenv("EVOLVE_MLFLOW_CLIENT", raising=False)
    assert use_rest_client("http://127.0.0.1:5000")
    assert not use_rest_client("sqlite:///mlflow.db")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")  # requests goes through it, RestClient cannot
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert use_rest_client("http://127.0.0.1:5000") and not use_rest_client("http://mlflow.example:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")  # MLflow's client knows what to do with that
    assert not use_rest_client("https://mlflow.example")
    monkeypatch.setenv("EVOLVE_MLFLOW_CLIENT", "rest")
    assert use_rest_client("https://mlflow.example")
    monkeypatch.setenv("EVOLVE_MLFLOW_CLIENT", "requests")
    with pytest.raises(ValueError, match="'auto' .*'rest' or 'mlflow'"):
        use_rest_client("http://127.0.0.1:5000")
    with pytest.raises(ValueError, match="not an http"):
        RestClient("sqlite:///mlflow.db")
    with pytest.raises(ValueError, match="EVOLVE_MLFLOW_CLIENT='requests'"):  # before any search starts
        LineageLogger("http://127.0.0.1:5000").start(tmp_path / "run", {"population": 8})


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first ``fail`` requests, then the experiment; records what it got.
    Keeps connections alive, and closes them after 0.3 s idle (as gunicorn does after 2 s)."""

    protocol_version = "HTTP/1.1"
    timeout = 0.3
    fail = 1
    seen: list = []

    def do_GET(self):  # noqa: N802
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        if len(type(self).seen) <= type(self).fail:
            body, status = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}', 503
        else:
            body, status = b'{"experiment": {"experiment_id": "7"}}', 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, body))
        status = 503 if len(type(self).seen) <= type(self).fail else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_client_retries_busy_answers_and_reports_errors(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.01")
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret")
        _Flaky.fail, _Flaky.seen = 1, []
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        assert RestClient(url).get_experiment_by_name("my exp").experiment_id == "7"
        assert len(_Flaky.seen) == 2
        assert _Flaky.seen[0] == ("/api/2.0/mlflow/experiments/get-by-name?experiment_name=my+exp", "Bearer secret")
        _Flaky.fail, _Flaky.seen = 5, []
        with pytest.raises(RestError, match="HTTP 503 TEMPORARILY_UNAVAILABLE: busy") as error:
            RestClient(url).get_experiment_by_name("my exp")
        assert error.value.status == 503 and len(_Flaky.seen) == 2
        # a connection the server closed while idle is replaced before sending, not retried after failing
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        _Flaky.fail, _Flaky.seen = 0, []
        client = RestClient(url)
        assert client.get_experiment_by_name("a").experiment_id == "7"
        assert client.get_experiment_by_name("b").experiment_id == "7"  # the same connection, kept alive
        time.sleep(0.8)
        assert client.get_experiment_by_name("c").experiment_id == "7"
        assert len(_Flaky.seen) == 3
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(ConnectionError, match="127.0.0.1"):  # nobody listens there any more
        RestClient(url).create_experiment("x")


@pytest.mark.parametrize("stream_above", [1 << 30, 1000], ids=["in-one-write", "streamed-from-disk"])
def test_artifact_uploads_arrive_whole_also_when_retried(tmp_path, monkeypatch, stream_above):
    import evolution.lineage_rest as rest

    monkeypatch.setattr(rest, "STREAM_ABOVE", stream_above)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.01")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    local = tmp_path / "trials part.parquet"
    local.write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = RestClient(f"http://127.0.0.1:{server.server_address[1]}")
        uploader = client.artifact_repository("mlflow-artifacts:/3/abc/artifacts")
        _Flaky.fail, _Flaky.seen = 1, []  # the first attempt is answered 503: the file goes again
        uploader.log_artifact(str(local), "trial_log/gen 1")
    finally:
        server.shutdown()
        server.server_close()
    path = "/api/2.0/mlflow-artifacts/artifacts/3/abc/artifacts/trial_log/gen%201/trials%20part.parquet"
    assert _Flaky.seen == [(path, local.read_bytes())] * 2
    assert client.artifact_repository("s3://bucket/3/abc/artifacts") is None  # MLflow's repository does those


def test_evolve_run_refuses_an_unknown_client_before_it_starts(tmp_path, monkeypatch, capsys):
    from evolution.cli import main

    monkeypatch.setenv("EVOLVE_TRACKING", "on")
    monkeypatch.setenv("EVOLVE_MLFLOW_CLIENT", "requests")
    assert main(["run", "--out", str(tmp_path / "run"), "--tracking-uri", "http://127.0.0.1:5000"]) == 2
    assert "EVOLVE_MLFLOW_CLIENT='requests': use 'auto' (the default), 'rest' or 'mlflow'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

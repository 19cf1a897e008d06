"""The MLflow side of lineage: carries operations out through ``MlflowClient``.

:class:`OpApplier` applies the operations of ``evolution/lineage/ops.py`` to one tracking
store (an ``http(s)://`` server, or a database URI such as ``sqlite:///...``) with MLflow's
public client, idempotently: a run is found again by its ``lineage.key`` tag, a logged
model by its source run, a model version by its run. It runs in the lineage sender
process (``evolution/lineage/sender.py``) and in ``evolve sync``, never in the driver.
MLflow's own settings apply (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME`` /
``_PASSWORD``, TLS, proxies, ``MLFLOW_HTTP_REQUEST_*``).
"""
from __future__ import annotations

import json
import math
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

import mlflow
from backtest.tracking_names import (
    CANDIDATE,
    REGISTERED_SUFFIX,
    STAGE_HISTORY_TAG,
    STAGE_TAG,
    STRATEGY_ID_TAG,
    stage_event_key,
    stage_event_value,
)
from evolution.lineage.ops import KEY_TAG, MODEL_ARTIFACT, PARENT_RUN_TAG, SyncState
from evolution.lineage.template import ModelTemplate
from mlflow import MlflowClient

# MLflow's limits per log_batch request
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
LARGEST_FLOAT = 1.7976931348623157e308


def open_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri``, also made the process's tracking URI: a database
    registry resolves a ``models:/<model id>`` version source through it. Call it once per
    process, with one store (the sender process and ``evolve sync`` each send to one)."""
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri)


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: for a SQLite store, ``mlruns/`` beside the
    database file (MLflow's default, ``./mlruns``, follows the working directory, which under
    ``ray job submit`` is Ray's temporary copy); for any other store, its server or default."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    if database in ("", ":memory:") or not Path(database).is_absolute():
        return None
    return (Path(database).parent / "mlruns").as_uri()


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _metric_value(value: Any) -> float:
    """MLflow stores no infinities: the largest float of the same sign stands in."""
    value = float(value)
    return value if not math.isinf(value) else math.copysign(LARGEST_FLOAT, value)


class OpApplier:
    """Carries operations out against one tracking store; every operation is idempotent."""

    def __init__(self, client: MlflowClient, state: SyncState, run_dir: str | Path, template: ModelTemplate):
        self.client = client
        self.state = state
        self.run_dir = Path(run_dir)
        self.template = template
        self._prefetched: set[str] = set()
        self._registered: set[str] = set()
        self._existing_versions: dict[str, str] = {}
        self._created_runs: set[str] = set()  # runs made here hold no logged model yet: no search before log_model
        self._lock = threading.RLock()  # hall-of-fame strategies are sent from several threads

    def apply(self, op: dict) -> None:
        getattr(self, "_op_" + op["op"])(op)

    # ---------------------------------------------------------------- ids

    def experiment_id(self) -> str:
        with self._lock:
            if self.state.experiment_id is None:
                name = self.state.experiment_name
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    try:
                        self.state.experiment_id = self.client.create_experiment(
                            name, artifact_location=artifact_root(self.state.tracking_uri))
                    except Exception:
                        experiment = self.client.get_experiment_by_name(name)  # created meanwhile elsewhere
                        if experiment is None:
                            raise
                if experiment is not None:
                    self.state.experiment_id = experiment.experiment_id
            return self.state.experiment_id

    def run_id(self, key: str) -> str:
        if key not in self.state.runs:
            found = self._find_run(key)
            if found is None:
                raise KeyError(f"no MLflow run for lineage key {key!r}; its start_run operation is missing")
            self.state.runs[key] = found
        return self.state.runs[key]

    def _find_run(self, key: str) -> str | None:
        escaped = key.replace("'", "\\'")
        runs = self.client.search_runs([self.experiment_id()], filter_string=f"tags.`{KEY_TAG}` = '{escaped}'",
                                       max_results=1)
        return runs[0].info.run_id if runs else None

    def _prefetch_runs(self, family: str) -> None:
        """One search for the evolution run and all its nested runs (they carry ``run_id`` = its key);
        none when this applier created the evolution run (then none of them can exist yet)."""
        with self._lock:
            if family in self._prefetched or self.state.runs.get(family) in self._created_runs:
                return
            escaped = family.replace("'", "\\'")
            for run in self.client.search_runs([self.experiment_id()], filter_string=f"tags.run_id = '{escaped}'",
                                               max_results=5000):
                found = run.data.tags.get(KEY_TAG)
                if found:
                    self.state.runs.setdefault(found, run.info.run_id)
            self._prefetched.add(family)

    # ---------------------------------------------------------------- operations

    def _op_start_run(self, op: dict) -> None:
        key = op["key"]
        if key in self.state.runs:
            return
        family = op.get("tags", {}).get("run_id")
        if family:
            self._prefetch_runs(family)
            if key in self.state.runs:
                return
        elif (existing := self._find_run(key)) is not None:
            self.state.runs[key] = existing
            return
        tags = dict(op.get("tags", {}))
        tags[KEY_TAG] = key
        if op.get("parent"):
            tags[PARENT_RUN_TAG] = self.run_id(op["parent"])
        run = self.client.create_run(self.experiment_id(), start_time=op["time"], tags=tags,
                                     run_name=op.get("run_name"))
        self.state.runs[key] = run.info.run_id
        self._created_runs.add(run.info.run_id)

    def _op_log_batch(self, op: dict) -> None:
        run_id = self.run_id(op["run"])
        metrics = [Metric(name, _metric_value(value), int(ts), int(step)) for name, value, ts, step in op.get("metrics", [])]
        params = [Param(k, str(v)) for k, v in sorted(op.get("params", {}).items())]
        tags = [RunTag(k, str(v)) for k, v in sorted(op.get("tags", {}).items())]
        if (len(params) <= MAX_PARAMS_PER_BATCH and len(tags) <= MAX_TAGS_PER_BATCH
                and len(params) + len(tags) + len(metrics) <= MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)  # one request
            return
        for chunk in _chunks(params, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(tags, MAX_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def _op_log_artifact(self, op: dict) -> None:
        run_id = self.run_id(op["run"])
        path = self.run_dir / op["path"]
        if not path.exists():
            raise FileNotFoundError(f"{path}: the artifact to log is gone from the run directory")
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), op.get("artifact_path"))
        else:
            self.client.log_artifact(run_id, str(path), op.get("artifact_path"))

    def _op_log_dict(self, op: dict) -> None:
        self.client.log_dict(self.run_id(op["run"]), op["data"], op["artifact_file"])

    def _op_log_model(self, op: dict) -> None:
        """A models-from-code pyfunc model of one genome, as an MLflow 3 logged model of the run."""
        model_key = op["model"]
        if model_key in self.state.models:
            return
        run_id = self.run_id(op["run"])
        experiment_id = self.experiment_id()
        name = op.get("name", MODEL_ARTIFACT)
        logged = None
        if run_id not in self._created_runs:  # a replay: the model may have gone through before
            found = self.client.search_logged_models(
                [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'", max_results=5)
            by_status = {str(getattr(m.status, "value", m.status)): m for m in found}
            if "READY" in by_status:
                self.state.models[model_key] = by_status["READY"].model_id
                return
            logged = by_status.get("PENDING")  # cut short while uploading: finish that one
        self.template.path()  # built (or found) before the logged model exists
        if logged is None:
            logged = self.client.create_logged_model(experiment_id, name=name, source_run_id=run_id,
                                                     tags={STRATEGY_ID_TAG: op["strategy_id"]}, model_type="strategy")
        with tempfile.TemporaryDirectory(prefix="strategy-model-") as tmp:
            model_dir = Path(tmp) / "model"
            self.template.write(model_dir, op["genome"], logged.model_id)
            self.client.log_model_artifacts(logged.model_id, str(model_dir))
        self.client.finalize_logged_model(logged.model_id, "READY")
        self.state.models[model_key] = logged.model_id

    def _op_register_model(self, op: dict) -> None:
        model_key, name = op["model"], op["name"]
        if model_key in self.state.versions:
            return
        run_id = self.run_id(op["run"])
        model_id = self.state.models.get(model_key)
        if model_id is None:
            raise KeyError(f"model {model_key!r} was never logged; its log_model operation is missing")
        self._ensure_registered_model(name)
        version = self._existing_version(name, run_id, op.get("tags", {}).get("run_id"))
        at = int(op["time"])
        if version is None:
            tags = {k: str(v) for k, v in op.get("tags", {}).items()}
            tags[STAGE_TAG] = CANDIDATE
            tags[STAGE_HISTORY_TAG] = json.dumps([{"stage": CANDIDATE, "at": at, "reason": "registered"}])
            version = str(self.client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id,
                                                           tags=tags, model_id=model_id, await_creation_for=0).version)
        # the same event tag set twice holds the same value: idempotent without a read
        self.client.set_registered_model_tag(
            name, stage_event_key(at, REGISTERED_SUFFIX.format(version=int(version))),
            stage_event_value(version, CANDIDATE, at, "registered", op["strategy_id"]))
        self.state.versions[model_key] = version

    def _ensure_registered_model(self, name: str) -> None:
        if name in self._registered:
            return
        try:
            self.client.get_registered_model(name)
        except Exception:
            try:
                self.client.create_registered_model(name)
            except Exception:
                self.client.get_registered_model(name)  # created meanwhile by someone else
        self._registered.add(name)

    def _existing_version(self, name: str, run_id: str, family: str | None) -> str | None:
        """The version already registered for this run, if any (one search per evolution run)."""
        if not family:
            found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
            return str(found[0].version) if found else None
        key = f"versions:{name}:{family}"
        with self._lock:
            if key not in self._prefetched and self.state.runs.get(family) not in self._created_runs:
                escaped = family.replace("'", "\\'")
                for mv in self.client.search_model_versions(f"name = '{name}' and tags.run_id = '{escaped}'"):
                    self._existing_versions[mv.run_id] = str(mv.version)
            self._prefetched.add(key)
        return self._existing_versions.get(run_id)

    def _op_end_run(self, op: dict) -> None:
        self.client.set_terminated(self.run_id(op["run"]), status=op.get("status", "FINISHED"), end_time=op["time"])

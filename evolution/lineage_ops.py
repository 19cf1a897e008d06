"""Logging operations: what the lineage logger sends to MLflow, as replayable JSON.

Everything the lineage logger tells MLflow is first an *operation*, a small JSON object
(``start_run``, ``log_batch``, ``log_artifact``, ``log_dict``, ``log_model``,
``register_model``, ``end_run``) that names runs by a stable key (the evolution run id,
``<run id>/<strategy id>`` for hall-of-fame runs) instead of an MLflow run id, and carries
its own timestamp. :class:`OpApplier` carries operations out against an ``MlflowClient``
(or, for an HTTP server, :class:`evolution.lineage_rest.RestClient`, which answers the same calls);
every operation is idempotent (a run is found again by its ``lineage.key`` tag, a model
version by its run id), so replaying an operation that already went through changes
nothing. That is what makes the spool work: when the tracking server cannot be reached,
the operations go to ``RUN_DIR/mlflow_spool/ops.jsonl`` and ``evolve sync`` replays them
later, with their original timestamps, to the same end state.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Tag and name conventions shared with serving/registry.py through MLflow (not imports).
KEY_TAG = "lineage.key"
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
STRATEGY_ID_TAG = "strategy_id"
STAGE_TAG = "stage"
STAGE_HISTORY_TAG = "stage_history"
STAGE_EVENT_PREFIX = "stage_event."
CANDIDATE = "candidate"
MODEL_ARTIFACT = "model"
GENOME_ARTIFACT = "genome"

SPOOL_DIR = "mlflow_spool"
OPS_FILE = "ops.jsonl"
STATE_FILE = "state.json"
RUN_RECORD_FILE = "mlflow_run.json"

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100


def now_ms() -> int:
    return int(time.time() * 1000)


def stage_event_key(at_ms: int, version: str | int) -> str:
    """Registered-model tag key of a registration event: sorts by time, unique per version.

    serving/registry.py appends later events as ``stage_event.<ms>.<sequence>``.
    """
    return f"{STAGE_EVENT_PREFIX}{int(at_ms):013d}.r{int(version):05d}"


# --------------------------------------------------------------------------- state


@dataclass
class SyncState:
    """What has been sent: MLflow ids of run keys and models, and how many spooled ops were applied."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str | None = None
    runs: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    applied: int = 0

    def to_dict(self) -> dict:
        return {"tracking_uri": self.tracking_uri, "experiment_name": self.experiment_name,
                "experiment_id": self.experiment_id, "runs": dict(self.runs), "models": dict(self.models),
                "versions": dict(self.versions), "applied": self.applied}

    @classmethod
    def from_dict(cls, data: dict) -> SyncState:
        return cls(tracking_uri=data["tracking_uri"], experiment_name=data["experiment_name"],
                   experiment_id=data.get("experiment_id"), runs=dict(data.get("runs", {})),
                   models=dict(data.get("models", {})), versions=dict(data.get("versions", {})),
                   applied=int(data.get("applied", 0)))


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


class Spool:
    """``RUN_DIR/mlflow_spool/``: ``ops.jsonl`` (append-only) and ``state.json``."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / SPOOL_DIR
        self.ops_path = self.dir / OPS_FILE
        self.state_path = self.dir / STATE_FILE

    def exists(self) -> bool:
        return self.ops_path.is_file() and self.state_path.is_file()

    def append(self, op: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.ops_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(op, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_ops(self) -> list[dict]:
        if not self.ops_path.is_file():
            return []
        ops = []
        for number, line in enumerate(self.ops_path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                # a line cut short by a crash mid-write is the last one; nothing after it exists
                if number == len(self.ops_path.read_text(encoding="utf-8").splitlines()):
                    break
                raise ValueError(f"{self.ops_path}:{number}: not valid JSON; the spool is damaged") from None
        return ops

    def save_state(self, state: SyncState) -> None:
        write_json_atomic(self.state_path, state.to_dict())

    def load_state(self) -> SyncState:
        return SyncState.from_dict(json.loads(self.state_path.read_text(encoding="utf-8")))

    def pending(self) -> int:
        if not self.exists():
            return 0
        return max(0, len(self.read_ops()) - self.load_state().applied)


# --------------------------------------------------------------------------- HTTP policy


@contextmanager
def fail_fast(retries: int = 1, timeout_s: int = 10) -> Iterator[None]:
    """Bound MLflow's HTTP retries while lineage is sent, so an outage is noticed in seconds.

    MLflow's REST client retries a refused connection up to 7 times with exponential
    backoff (minutes). Variables the user set are left alone.
    """
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s),
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    changed = {k: v for k, v in settings.items() if k not in os.environ}
    os.environ.update(changed)
    try:
        yield
    finally:
        for key in changed:
            os.environ.pop(key, None)


def server_reachable(tracking_uri: str, timeout_s: float = 2.0) -> bool:
    """True for a database/file store, or an HTTP server answering ``/health``."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --------------------------------------------------------------------------- applying


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _metric_value(value: Any) -> float:
    value = float(value)
    return value if not math.isinf(value) else math.copysign(1.7976931348623157e308, value)


class OpApplier:
    """Carries operations out against one tracking store; every operation is idempotent."""

    def __init__(self, client, state: SyncState, run_dir: str | Path, model_code: str | Path):
        self.client = client
        self.state = state
        self.run_dir = Path(run_dir)
        self.model_code = str(model_code)
        self._model_helpers = None
        self._model_template: Path | None = None
        self._template_dir: tempfile.TemporaryDirectory | None = None
        self._prefetched: set[str] = set()
        self._registered: set[str] = set()
        self._existing_versions: dict[str, str] = {}
        # Requests saved per operation: artifact repositories come from the ids' artifact
        # locations known at creation (no get_run / get_logged_model before each upload), and
        # a run created here cannot already hold a logged model (no search before log_model).
        self._repos: dict[str, Any] = {}
        self._created_runs: set[str] = set()
        self._lock = threading.RLock()  # the logger sends hall-of-fame strategies from several threads

    # ---------------------------------------------------------------- warm-up

    def prepare(self, pip_requirements: list[str] | None = None, genome: dict | None = None) -> None:
        """Find or build the pyfunc model template ahead of time, e.g. while the search runs."""
        self._template({"genome": genome, "pip_requirements": pip_requirements})

    def close(self) -> None:
        """Remove the model template's temporary directory (a process that ends with ``os._exit``
        skips the cleanup that would otherwise run at exit)."""
        with self._lock:
            if self._template_dir is not None:
                self._template_dir.cleanup()
                self._template_dir = None
                self._model_template = None

    def _registry(self):
        """The registry client without the tracking client's "is this a prompt?" read before every call."""
        get = getattr(self.client, "_get_registry_client", None)
        return get() if get is not None else self.client

    def _repo(self, resource_id: str, artifact_uri: str | None = None):
        """Artifact repository of a run or logged model, cached; ``artifact_uri`` when already known."""
        repo = self._repos.get(resource_id)
        if repo is None:
            if artifact_uri is None:
                artifact_uri = self.client.get_run(resource_id).info.artifact_uri
            direct = getattr(self.client, "artifact_repository", None)  # RestClient: the server's proxy
            repo = direct(artifact_uri) if direct is not None else None
            if repo is None:
                from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

                repo = get_artifact_repository(artifact_uri, tracking_uri=self.state.tracking_uri)
            self._repos[resource_id] = repo
        return repo

    # ---------------------------------------------------------------- helpers

    def experiment_id(self) -> str:
        if self.state.experiment_id is None:
            experiment = self.client.get_experiment_by_name(self.state.experiment_name)
            if experiment is None:
                try:
                    self.state.experiment_id = self.client.create_experiment(self.state.experiment_name)
                except Exception:
                    experiment = self.client.get_experiment_by_name(self.state.experiment_name)
                    if experiment is None:
                        raise
                    self.state.experiment_id = experiment.experiment_id
            else:
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

    # ---------------------------------------------------------------- operations

    def apply(self, op: dict) -> None:
        getattr(self, "_op_" + op["op"])(op)

    def _prefetch_runs(self, key: str) -> None:
        """One search for the evolution run and all its nested runs (they carry ``run_id`` = key).

        Not needed when this applier created the evolution run: then none of them can exist yet.
        """
        with self._lock:
            if key in self._prefetched or self.state.runs.get(key) in self._created_runs:
                return
            self._prefetch_runs_locked(key)

    def _prefetch_runs_locked(self, key: str) -> None:
        escaped = key.replace("'", "\\'")
        for run in self.client.search_runs([self.experiment_id()], filter_string=f"tags.run_id = '{escaped}'",
                                           max_results=5000):
            found = run.data.tags.get(KEY_TAG)
            if found:
                self.state.runs.setdefault(found, run.info.run_id)
        self._prefetched.add(key)

    def _op_start_run(self, op: dict) -> None:
        key = op["key"]
        if key in self.state.runs:
            return
        family = op.get("tags", {}).get("run_id")
        if family:
            self._prefetch_runs(family)
            if key in self.state.runs:
                return
            existing = None
        else:
            existing = self._find_run(key)
        if existing is not None:
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
        self._repo(run.info.run_id, run.info.artifact_uri)

    def _op_log_batch(self, op: dict) -> None:
        entities = getattr(self.client, "entities", None)
        if entities is None:
            import mlflow.entities as entities
        Metric, Param, RunTag = entities.Metric, entities.Param, entities.RunTag  # noqa: N806
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
            self._repo(run_id).log_artifacts(str(path), op.get("artifact_path"))
        else:
            self._repo(run_id).log_artifact(str(path), op.get("artifact_path"))

    def _op_log_dict(self, op: dict) -> None:
        """As ``MlflowClient.log_dict`` writes a ``.json`` artifact (indent 2), through the cached repository."""
        run_id = self.run_id(op["run"])
        artifact_file = Path(op["artifact_file"])
        with tempfile.TemporaryDirectory(prefix="lineage-dict-") as tmp:
            local = Path(tmp) / artifact_file.name
            with open(local, "w", encoding="utf-8") as handle:
                json.dump(op["data"], handle, indent=2, default=str)
            parent = artifact_file.parent.as_posix()
            self._repo(run_id).log_artifact(str(local), None if parent in ("", ".") else parent)

    def _op_log_model(self, op: dict) -> None:
        """A models-from-code pyfunc model of one genome, as an MLflow 3 logged model of the run."""
        model_key = op["model"]
        if model_key in self.state.models:
            return
        run_id = self.run_id(op["run"])
        experiment_id = self.experiment_id()
        name = op.get("name", MODEL_ARTIFACT)
        if run_id not in self._created_runs:  # a replay: the model may have gone through before
            found = self.client.search_logged_models(
                [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'", max_results=5)
            ready = [m for m in found if str(getattr(m.status, "value", m.status)) == "READY"]
            if ready:
                self.state.models[model_key] = ready[0].model_id
                return
        template = self._template(op)
        logged = self.client.create_logged_model(experiment_id, name=name, source_run_id=run_id,
                                                 tags={STRATEGY_ID_TAG: op["strategy_id"]}, model_type="strategy")
        with tempfile.TemporaryDirectory(prefix="strategy-model-") as tmp:
            model_dir = Path(tmp) / "model"
            shutil.copytree(template, model_dir)
            (model_dir / "artifacts" / "genome.json").write_text(json.dumps(op["genome"], sort_keys=True),
                                                                 encoding="utf-8")
            _stamp_model(model_dir, logged.model_id)
            self._repo(logged.model_id, logged.artifact_location).log_artifacts(str(model_dir))
        self.client.finalize_logged_model(logged.model_id, "READY")
        self.state.models[model_key] = logged.model_id

    def _template(self, op: dict) -> Path:
        """The pyfunc model saved once (signature, input example, code); each strategy swaps its genome in.

        Kept in the template cache (see :func:`template_cache_dir`), so that a process which
        finds it there never imports MLflow to build it.
        """
        with self._lock:
            if self._model_template is None:
                self._model_template = self._cached_template(op)
            return self._model_template

    def _cached_template(self, op: dict) -> Path:
        key = _template_key(self.model_code, op.get("pip_requirements"))
        root = template_cache_dir()
        final = root / key if root is not None else None
        if final is not None and _template_complete(final / "model"):
            return final / "model"
        if final is not None:
            try:
                root.mkdir(parents=True, exist_ok=True)
                building = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
            except OSError:
                final = None  # an unwritable cache: build in a temporary directory instead
        if final is None:
            self._template_dir = tempfile.TemporaryDirectory(prefix="strategy-model-template-")
            building = Path(self._template_dir.name)
        self._save_template(op, building)
        if final is None:
            return building / "model"
        try:
            if final.exists():  # a broken entry (or another process finished first): replace it
                if _template_complete(final / "model"):
                    shutil.rmtree(building, ignore_errors=True)
                    return final / "model"
                shutil.rmtree(final, ignore_errors=True)
            os.replace(building, final)
        except OSError:
            if _template_complete(final / "model"):
                shutil.rmtree(building, ignore_errors=True)
                return final / "model"
            return building / "model"
        return final / "model"

    def _save_template(self, op: dict, directory: Path) -> None:
        import mlflow

        if self._model_helpers is None:
            self._model_helpers = _model_signature_and_example(self.model_code)
        signature, example = self._model_helpers
        genome = op.get("genome")
        if genome is None:  # any genome will do: each strategy's replaces it
            from backtest.families.rules import sma_crossover_genome

            genome = sma_crossover_genome(10, 40)
        genome_path = directory / "genome.json"
        genome_path.write_text(json.dumps(genome, sort_keys=True), encoding="utf-8")
        model_dir = directory / "model"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "add type hints to predict": the signature is explicit
            mlflow.pyfunc.save_model(
                path=str(model_dir), python_model=self.model_code, artifacts={GENOME_ARTIFACT: str(genome_path)},
                signature=signature, input_example=example, pip_requirements=op.get("pip_requirements"),
            )
        if not _template_complete(model_dir):
            raise RuntimeError(f"pyfunc model layout changed: no artifacts/genome.json or MLmodel in {model_dir}")
        _stamp_model(model_dir, None)  # fails here, not per strategy, if MLmodel's layout moved

    def _op_register_model(self, op: dict) -> None:
        model_key = op["model"]
        name = op["name"]
        if model_key in self.state.versions:
            return
        run_id = self.run_id(op["run"])
        model_id = self.state.models.get(model_key)
        if model_id is None:
            raise KeyError(f"model {model_key!r} was never logged; its log_model operation is missing")
        if name not in self._registered:
            try:
                self.client.get_registered_model(name)
            except Exception:
                try:
                    self.client.create_registered_model(name, tags=op.get("model_tags"))
                except Exception:
                    self.client.get_registered_model(name)  # created meanwhile by someone else
            self._registered.add(name)
        family = op.get("tags", {}).get("run_id")
        prefetch_key = f"versions:{name}:{family}"
        if family and prefetch_key not in self._prefetched:
            escaped = family.replace("'", "\\'")
            for mv in self.client.search_model_versions(f"name = '{name}' and tags.run_id = '{escaped}'"):
                self._existing_versions[mv.run_id] = str(mv.version)
            self._prefetched.add(prefetch_key)
        if family:
            existing = [self._existing_versions[run_id]] if run_id in self._existing_versions else []
        else:
            existing = [mv.version for mv in self.client.search_model_versions(
                f"name = '{name}' and run_id = '{run_id}'")]
        tags = {k: str(v) for k, v in op.get("tags", {}).items()}
        at = int(op["time"])
        tags[STAGE_TAG] = CANDIDATE
        tags[STAGE_HISTORY_TAG] = json.dumps([{"stage": CANDIDATE, "at": at, "reason": "registered"}])
        if existing:
            version = existing[0]
        else:
            # a database store resolves the source itself; a server does that on its side
            http = self.state.tracking_uri.startswith(("http://", "https://"))
            with nullcontext() if http else _global_tracking_uri(self.state.tracking_uri):
                version = self._registry().create_model_version(
                    name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id,
                    await_creation_for=0,
                ).version
        # setting the same event tag twice writes the same value: idempotent without a read
        self._registry().set_registered_model_tag(name, stage_event_key(at, version), json.dumps(
            {"version": str(version), "stage": CANDIDATE, "at": at, "reason": "registered",
             STRATEGY_ID_TAG: op["strategy_id"]}, sort_keys=True))
        self.state.versions[model_key] = str(version)

    def _op_end_run(self, op: dict) -> None:
        self.client.set_terminated(self.run_id(op["run"]), status=op.get("status", "FINISHED"), end_time=op["time"])


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """A database registry store resolves a ``models:/<id>`` source through the *global* tracking
    URI: point it at this store for the call, then put back what was there (env var included)."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    import mlflow

    previous = getattr(tracking_utils, "_tracking_uri", None)
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


TEMPLATE_FORMAT = 1  # bump when the template's making changes, so that old cache entries are not used
CACHE_ENV = "EVOLVE_CACHE_DIR"


def template_cache_dir() -> Path | None:
    """Where pyfunc model templates are kept: ``$EVOLVE_CACHE_DIR/model-templates`` (default
    ``$XDG_CACHE_HOME/evolve`` or ``~/.cache/evolve``); ``EVOLVE_CACHE_DIR=off`` keeps none."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured.lower() in ("off", "none", "0"):
        return None
    if configured:
        base = Path(configured).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evolve"
    return base / "model-templates"


def _template_key(model_code: str | Path, pip_requirements: list[str] | None) -> str:
    """Everything the template's files depend on: the model code (its path is in MLmodel), the
    pip requirements, and the versions of Python, MLflow and cloudpickle written into it."""
    code = Path(model_code).resolve()

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return ""

    ingredients = [TEMPLATE_FORMAT, str(code), hashlib.sha256(code.read_bytes()).hexdigest(),
                   list(pip_requirements) if pip_requirements is not None else None,
                   sys.version, version("mlflow"), version("mlflow-skinny"), version("cloudpickle")]
    return hashlib.sha256(json.dumps(ingredients).encode("utf-8")).hexdigest()[:24]


def _template_complete(model_dir: Path) -> bool:
    return (model_dir / "MLmodel").is_file() and (model_dir / "artifacts" / "genome.json").is_file()


_MLMODEL_LINE = {key: re.compile(rf"^{key}: .*$", re.MULTILINE) for key in ("model_uuid", "model_id")}


def _stamp_model(model_dir: Path, model_id: str | None) -> None:
    """A fresh ``model_uuid`` and the logged model's id in ``MLmodel``, as MLflow's
    ``Model.save`` writes them (YAML, block style), without importing MLflow."""
    import yaml

    path = model_dir / "MLmodel"
    text = path.read_text(encoding="utf-8")
    for key, value in (("model_uuid", uuid.uuid4().hex), ("model_id", model_id)):
        line = yaml.safe_dump({key: value}, default_flow_style=False).rstrip("\n")
        text, found = _MLMODEL_LINE[key].subn(lambda _match, line=line: line, text)
        if found != 1:
            raise RuntimeError(f"{path}: expected one top-level {key!r} line, found {found}; "
                               "MLflow's model format changed: clear the template cache and update _stamp_model")
    path.write_text(text, encoding="utf-8")


def _model_signature_and_example(model_code: str):
    """Signature and input example from the model code file's own helpers."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_strategy_model_code", model_code)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model_signature(), module.input_example()

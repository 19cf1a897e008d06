"""Lineage operations and the spool: what the lineage logger asks MLflow to do, as replayable JSON.

Everything the logger (``evolution/lineage/logger.py``) tells MLflow is first an
*operation*, a small JSON object that names runs by a stable key (the evolution run id,
``<run id>/<strategy id>`` for hall-of-fame runs) instead of an MLflow run id and carries its
own timestamp:

==================  ==========================================================================
``start_run``       ``key``, optional ``parent`` (key), ``run_name``, ``tags``, ``time``
``log_batch``       ``run`` (key), optional ``metrics`` ([name, value, time, step]), ``params``, ``tags``
``log_artifact``    ``run``, ``path`` (a file or folder of the run directory), ``artifact_path``
``log_dict``        ``run``, ``data``, ``artifact_file``
``log_model``       ``run``, ``model`` (key), ``strategy_id``, ``genome``, ``name``, ``pip_requirements``
``register_model``  ``run``, ``model`` (key), ``strategy_id``, ``name`` (registered model), ``tags``
``end_run``         ``run``, ``status``
==================  ==========================================================================

``evolution/lineage/client.py`` carries them out through ``MlflowClient``; every operation is
idempotent (a run is found again by its ``lineage.key`` tag, a model by its run, a version
by its run), so replaying one that already went through changes nothing. That is what
makes the spool work: when the tracking server cannot be reached, the operations go to
``RUN_DIR/mlflow_spool/ops.jsonl`` and ``evolve sync`` replays them later, with their
original timestamps, to the same end state. No MLflow import here.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backtest.tracking_names import STRATEGY_ID_TAG

KEY_TAG = "lineage.key"  # a run's stable key, by which a replay finds it again
PARENT_RUN_TAG = "mlflow.parentRunId"
MODEL_ARTIFACT = "model"  # name of each hall-of-fame strategy's logged model

SPOOL_DIR = "mlflow_spool"
OPS_FILE = "ops.jsonl"
STATE_FILE = "state.json"
RUN_RECORD_FILE = "mlflow_run.json"

# MLflow's own HTTP settings while lineage is sent, unless the user set them: an outage is
# noticed in seconds (MLflow's default retries a refused connection for minutes), and
# nothing is printed that the user did not ask for.
SEND_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def send_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with :data:`SEND_ENV_DEFAULTS` where unset."""
    env = dict(os.environ if base is None else base)
    for key, value in SEND_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def first_line(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


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

    def merge_ids(self, other: SyncState) -> None:
        """Take the MLflow ids ``other`` knows and this state does not."""
        self.experiment_id = self.experiment_id or other.experiment_id
        for mine, theirs in ((self.runs, other.runs), (self.models, other.models), (self.versions, other.versions)):
            for key, value in theirs.items():
                mine.setdefault(key, value)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


class Spool:
    """``RUN_DIR/mlflow_spool/``: ``ops.jsonl`` (append-only, fsynced) and ``state.json``."""

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

    def rewrite(self, ops: list[dict]) -> None:
        """Replace the spooled operations at once (a crash leaves the old or the new list)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ops_path.with_name(self.ops_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for op in ops:
                handle.write(json.dumps(op, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.ops_path)

    def read_ops(self) -> list[dict]:
        if not self.ops_path.is_file():
            return []
        lines = self.ops_path.read_text(encoding="utf-8").splitlines()
        ops = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):  # a line cut short by a crash mid-write is the last one
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


def write_run_record(run_dir: str | Path, state: SyncState, run_key: str) -> None:
    """``RUN_DIR/mlflow_run.json``: where this run's lineage lives (the absolute tracking URI,
    the experiment, the MLflow ids of the run, its nested runs and model versions)."""
    write_json_atomic(Path(run_dir) / RUN_RECORD_FILE, {
        "tracking_uri": state.tracking_uri, "experiment_id": state.experiment_id,
        "experiment_name": state.experiment_name, "run_key": run_key,
        "mlflow_run_id": state.runs.get(run_key),
        "nested_runs": {k.split("/", 1)[1]: v for k, v in state.runs.items() if k.startswith(run_key + "/")},
        "model_versions": dict(state.versions),
    })


# --------------------------------------------------------------------------- the hall of fame's operations

METRIC_BLOCKS = ("walk_forward", "holdout")


def strategy_key(run_key: str, strategy_id: str) -> str:
    return f"{run_key}/{strategy_id}"


def metric_rows(entry: Mapping, blocks: Iterable[str], names: Iterable[str], at: int) -> list[list]:
    """[name, value, time, step 0] of the numeric, non-NaN values of ``blocks`` (as ``block/metric``)
    and of the top-level ``names`` of a hall-of-fame entry (infinities go through)."""
    values = [(f"{block}/{name}", value) for block in blocks
              for name, value in (entry.get("metrics", {}).get(block) or {}).items()]
    values += [(name, entry.get(name)) for name in names]
    return [[name, float(value), at, 0] for name, value in values
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value))]


def start_strategy_op(run_key: str, entry: Mapping, rank: int, promoted: bool | None, at: int,
                      node: Any = None) -> dict:
    """The nested run of a hall-of-fame strategy, with its lineage tags (``node``: its first
    appearance in the trial log, for entries that do not carry generation, island, operator, parents)."""
    sid = str(entry["strategy_id"])
    parents = entry.get("parents", list(node.parents) if node else [])
    tags = {
        STRATEGY_ID_TAG: sid,
        "generation": entry.get("generation", node.generation if node else ""),
        "island": entry.get("island", node.island if node else ""),
        "operator": entry.get("operator", node.operator if node else ""),
        "parents": json.dumps(list(parents)),
        "hall_of_fame_rank": rank,
        "run_id": run_key,
    }
    if promoted is not None:
        tags["promoted"] = str(promoted).lower()
    return {"op": "start_run", "key": strategy_key(run_key, sid), "parent": run_key,
            "run_name": f"hof-{rank:02d}-{sid}", "tags": {k: str(v) for k, v in tags.items()}, "time": at}


def genome_op(entry: Mapping, key: str, at: int) -> dict:
    return {"op": "log_dict", "run": key, "data": entry.get("genome"), "artifact_file": "genome.json", "time": at}


def model_op(entry: Mapping, key: str, at: int) -> dict:
    sid = str(entry["strategy_id"])
    return {"op": "log_model", "run": key, "model": sid, "strategy_id": sid, "genome": entry["genome"],
            "name": MODEL_ARTIFACT, "time": at}


def register_op(run_key: str, entry: Mapping, rank: int, registered_model: str, config_id: str, at: int) -> dict:
    sid = str(entry["strategy_id"])
    return {"op": "register_model", "run": strategy_key(run_key, sid), "model": sid, "strategy_id": sid,
            "name": registered_model, "time": at,
            "tags": {STRATEGY_ID_TAG: sid, "run_id": run_key, "config_id": config_id, "hall_of_fame_rank": str(rank)}}

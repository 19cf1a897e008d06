"""After the fact: send what a run spooled (``evolve sync``), or log a run directory as a whole.

``evolve sync RUN_DIR`` replays ``RUN_DIR/mlflow_spool/ops.jsonl`` from where the last
attempt stopped, through ``MlflowClient`` in this process (``evolution/lineage/client.py``),
with the operations' original timestamps. Every operation is idempotent, so repeating it
is safe; what was sent stays sent when the server fails again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from evolution.lineage.data import read_result
from evolution.lineage.logger import LineageLogger, LineageReport
from evolution.lineage.ops import SEND_ENV_DEFAULTS, Spool, first_line, write_run_record
from evolution.lineage.tracking import TrackingSettings


@dataclass
class SyncReport:
    sent: int
    pending: int
    mlflow_run_id: str | None
    tracking_uri: str | None
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.pending == 0 and self.error is None


def sync_run_directory(run_dir: str | Path, tracking_uri: str | None = None) -> SyncReport:
    """Send what a run spooled while MLflow was away; stops at the first failure.

    ``tracking_uri`` defaults to the one the run was logging to (the same store at a new
    address, e.g. a server that moved; a different store lacks the runs made before the
    outage: log the directory there with :func:`log_run_directory` instead).
    """
    run_dir = Path(run_dir)
    spool = Spool(run_dir)
    if not spool.exists():
        return SyncReport(0, 0, None, None)
    state = spool.load_state()
    if tracking_uri:
        state.tracking_uri = tracking_uri
    ops = spool.read_ops()
    for key, value in SEND_ENV_DEFAULTS.items():  # this process only sends: MLflow's settings for that
        os.environ.setdefault(key, value)
    from evolution.lineage.client import OpApplier, open_client
    from evolution.lineage.template import ModelTemplate

    template = ModelTemplate()
    applier = OpApplier(open_client(state.tracking_uri), state, run_dir, template)
    sent, error = 0, None
    try:
        for index in range(state.applied, len(ops)):
            try:
                applier.apply(ops[index])
            except Exception as exc:
                error = first_line(exc)
                break
            state.applied = index + 1
            sent += 1
            spool.save_state(state)
    finally:
        template.close()
    run_key = next((op["key"] for op in ops if op["op"] == "start_run" and not op.get("parent")), None)
    if error is None and run_key is not None:
        write_run_record(run_dir, state, run_key)
    return SyncReport(sent, len(ops) - state.applied, state.runs.get(run_key) if run_key else None,
                      state.tracking_uri, error)


def log_run_directory(run_dir: str | Path, settings: TrackingSettings) -> LineageReport:
    """Log a finished run directory (``result.json`` + trial log) as if it had been logged live."""
    run_dir = Path(run_dir)
    result = read_result(run_dir)
    logger = LineageLogger(settings)
    logger.start(run_dir, result.get("config", {}), run_id=result.get("run_id"), seed=result.get("seed"),
                 config_id=result.get("config_id"))
    return logger.finish(run_dir)

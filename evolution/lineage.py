"""Lineage logging to MLflow, from the driver only.

One evolution run is one MLflow run (config as params; tags seed, config id, git commit;
per-generation metrics per island; artifacts ``result.json``, the trial log, a
fitness-over-generations plot and a lineage graph). Each hall-of-fame strategy is a nested
run with its lineage tags and scores; each promoted strategy is a pyfunc model version of
one registered model (default ``strategy-evolution``), tagged ``stage=candidate``.

How the evolution engine calls it::

    logger = LineageLogger(tracking_uri)          # None: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    logger.start(run_dir, config.model_dump(), run_id=run_id, seed=seed, config_id=config_id)
    for generation ...:
        logger.log_generation(generation, [{"island": 0, "best_fitness": ..., "median_fitness": ...,
                                            "diversity": ..., "evaluations_per_second": ...}, ...])
    # ... write result.json and the trial log ...
    report = logger.finish(run_dir)               # artifacts, nested runs, model versions

Logging never slows the search: calls only queue operations (one ``log_batch`` per
generation) for a child process that sends them (:mod:`evolution.lineage_ship`), so sending
never takes the driver's interpreter lock from the search or the judging. When the tracking
server cannot be reached, the run goes on: that operation and all after it are spooled to
``RUN_DIR/mlflow_spool/`` and ``evolve sync RUN_DIR`` (:func:`sync_run_directory`) sends
them later.
:func:`log_run_directory` logs a finished run directory after the fact.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evolution import lineage_data as data
from evolution.lineage_ops import (
    RUN_RECORD_FILE,
    OpApplier,
    Spool,
    SyncState,
    fail_fast,
    now_ms,
    write_json_atomic,
)
from evolution.lineage_rest import tracking_client, use_rest_client
from evolution.lineage_ship import ProcessSender, Sender
from evolution.trials import part_path

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "strategy-evolution"
DEFAULT_REGISTERED_MODEL = "strategy-evolution"
LINEAGE_DIR = "lineage"
MODEL_PIP_REQUIREMENTS = ("mlflow>=3.0", "numpy>=1.26", "pandas>=2.1", "numba>=0.59", "strategy-evolution")
METRIC_BLOCKS = ("walk_forward", "holdout")


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def default_model_code() -> Path:
    """serving/model.py: the pyfunc model's code, logged as a file (models from code), never imported here."""
    import importlib.util

    spec = importlib.util.find_spec("serving.model")
    if spec is None or spec.origin is None:
        raise RuntimeError("serving/model.py not found: install the project (pip install -e .)")
    return Path(spec.origin)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b": "value"}; lists and other values as JSON text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, name + "."))
        elif isinstance(value, str):
            out[name] = value
        else:
            out[name] = json.dumps(value, sort_keys=True, default=str)
    return out


def git_commit(directory: str | Path | None = None) -> str | None:
    directory = Path(directory) if directory else Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass
class LineageReport:
    """What ``finish`` did: MLflow ids (when sent), whether it was spooled, lineage completeness."""

    run_dir: Path
    run_key: str
    mlflow_run_id: str | None
    spooled: bool
    pending_ops: int
    lineage_complete: bool
    missing_ancestors: dict[str, list[str]] = field(default_factory=dict)
    model_versions: dict[str, str] = field(default_factory=dict)
    nested_runs: dict[str, str] = field(default_factory=dict)
    send_seconds: dict[str, float] = field(default_factory=dict)
    # how it was sent: {"process": bool, "client": "RestClient" | "MlflowClient", "imported_mlflow": bool}
    sender: dict[str, Any] = field(default_factory=dict)


class LineageLogger:
    """Sends a run's lineage to MLflow from the driver; spools it when the server is away."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        experiment: str = DEFAULT_EXPERIMENT,
        registered_model: str = DEFAULT_REGISTERED_MODEL,
        asynchronous: bool = True,
        lineage_top: int = 5,
        http_retries: int = 1,
        http_timeout_s: int = 10,
        model_code: str | Path | None = None,
        flush_interval_s: float = 5.0,
        send_workers: int = 4,
        in_process: bool = False,
    ):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        self.registered_model = registered_model
        self.asynchronous = asynchronous
        self.lineage_top = lineage_top
        self.http_retries = http_retries
        self.http_timeout_s = http_timeout_s
        self.model_code = Path(model_code) if model_code else default_model_code()
        self.run_dir: Path | None = None
        self.run_key: str | None = None
        self.in_process = in_process
        self._sender: Sender | ProcessSender | None = None
        self._generation_rows: list[dict] = []
        self.flush_interval_s = flush_interval_s
        self.send_workers = send_workers
        self._pending_metrics: list[list] = []
        self._last_flush = 0.0
        self._sent_parts: set[str] = set()  # trial-log parts queued while searching
        self._staged: dict[str, int] = {}  # hall-of-fame strategy id -> rank, queued before the judging

    # ---------------------------------------------------------------- lifecycle

    def start(self, run_dir: str | Path, config: Mapping[str, Any], tags: Mapping[str, Any] | None = None, *,
              run_id: str | None = None, seed: int | None = None, config_id: str | None = None,
              run_name: str | None = None, at_ms: int | None = None) -> str:
        """Open the MLflow run of this evolution run; returns its lineage key (= ``run_id``).

        Calling ``start`` again with the same ``run_id`` (a resumed run) continues the same
        MLflow run.
        """
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_key = str(run_id) if run_id is not None else uuid.uuid4().hex
        spool = Spool(self.run_dir)
        state = (spool.load_state() if spool.exists()
                 else SyncState(tracking_uri=self.tracking_uri, experiment_name=self.experiment))
        use_rest_client(self.tracking_uri)  # a bad EVOLVE_MLFLOW_CLIENT fails here, before the search
        if self.asynchronous and not self.in_process:
            self._sender = ProcessSender(self.tracking_uri, state, self.run_dir, self.model_code, self.http_retries,
                                         self.http_timeout_s, workers=self.send_workers)
        else:
            applier = OpApplier(tracking_client(self.tracking_uri), state, self.run_dir, self.model_code)
            self._sender = Sender(applier, spool, self.asynchronous, self.http_retries, self.http_timeout_s,
                                  workers=self.send_workers)
        all_tags = {"run_id": self.run_key}
        if seed is not None:
            all_tags["seed"] = seed
        if config_id is not None:
            all_tags["config_id"] = config_id
        commit = git_commit()
        if commit:
            all_tags["git_commit"] = commit
            all_tags["mlflow.source.git.commit"] = commit
        all_tags.update(tags or {})
        at = at_ms if at_ms is not None else now_ms()
        self._send({"op": "start_run", "key": self.run_key, "run_name": run_name or f"evolution-{self.run_key}",
                    "tags": {k: str(v) for k, v in all_tags.items()}, "time": at})
        params = flatten_config(config)
        if params:
            self._send({"op": "log_batch", "run": self.run_key, "params": params, "time": at})
        # while the search runs: the pyfunc model template and matplotlib, so finish() only sends
        self._sender.prepare_model(list(MODEL_PIP_REQUIREMENTS))
        if self.asynchronous:
            threading.Thread(target=_import_plotting, name="lineage-import-plotting", daemon=True).start()
        return self.run_key

    def log_generation(self, generation: int, per_island_stats: Iterable[Mapping[str, Any]],
                       at_ms: int | None = None) -> None:
        """Every numeric statistic per island as ``island_<i>/<name>`` at step = generation.

        Also the across-island ``best_fitness`` (max) and ``evaluations_per_second`` (sum).
        Metrics are buffered and sent as one ``log_batch`` at most every ``flush_interval_s``
        seconds (the first generation at once; the rest at the latest by ``finish``). The
        generation's trial-log part, when the engine has written it, goes out now too (it never
        changes afterwards), so ``finish`` has that much less to send.
        """
        self._require_started()
        at = at_ms if at_ms is not None else now_ms()
        part = part_path(self.run_dir, generation).relative_to(self.run_dir)
        if (self.run_dir / part).is_file() and str(part) not in self._sent_parts:
            self._send({"op": "log_artifact", "run": self.run_key, "path": str(part), "artifact_path": "trial_log",
                        "time": at})
            self._sent_parts.add(str(part))
        metrics = []
        best, speed = [], []
        for position, stats in enumerate(per_island_stats):
            island = int(stats.get("island", position))
            row = {"generation": int(generation), "island": island}
            for name, value in stats.items():
                if name == "island" or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                metrics.append([f"island_{island}/{name}", float(value), at, int(generation)])
                row[name] = float(value)
            self._generation_rows.append(row)
            if _finite(stats.get("best_fitness")):
                best.append(float(stats["best_fitness"]))
            if _finite(stats.get("evaluations_per_second")):
                speed.append(float(stats["evaluations_per_second"]))
        if best:
            metrics.append(["best_fitness", max(best), at, int(generation)])
        if speed:
            metrics.append(["evaluations_per_second", sum(speed), at, int(generation)])
        self._pending_metrics.extend(metrics)
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._flush(at)

    def _flush(self, at: int) -> None:
        """Send the buffered generation metrics as one log_batch (at most every ``flush_interval_s``)."""
        if self._pending_metrics:
            self._send({"op": "log_batch", "run": self.run_key, "metrics": self._pending_metrics, "time": at})
            self._pending_metrics = []
        self._last_flush = time.monotonic()

    def stage_hall_of_fame(self, members: Iterable[Mapping[str, Any]], at_ms: int | None = None) -> None:
        """Queue what the hall of fame needs before it is judged: each member's nested run (its
        lineage tags and walk-forward metrics), its genome and its logged pyfunc model, side by
        side on the sender's threads while the driver computes the holdout, DSR and PBO
        (``evolution.runner.execute(on_hall_of_fame=...)``). ``finish`` then adds the judged
        metrics, closes the runs and registers the promoted models. Members are given best first
        (rank 0 first), as in ``result.json``; a model is logged for every member (one that is
        not promoted keeps its logged model, without a registered version)."""
        self._require_started()
        at = at_ms if at_ms is not None else now_ms()
        groups = []
        for rank, entry in enumerate(members):
            sid = str(entry["strategy_id"])
            key = f"{self.run_key}/{sid}"
            ops = [self._start_strategy_op(entry, rank, None, at)]
            metrics = self._metrics(entry, ("walk_forward",), (), at)
            if metrics:
                ops.append({"op": "log_batch", "run": key, "metrics": metrics, "time": at})
            ops.append(self._genome_op(entry, key, at))
            ops.append(self._model_op(entry, key, at))
            groups.append(ops)
            self._staged[sid] = rank
        self._sender.submit_parallel(groups)

    def finish(self, run_dir: str | Path | None = None, *, status: str = "FINISHED",
               at_ms: int | None = None, market: Any = None) -> LineageReport:
        """Log artifacts, nested hall-of-fame runs and promoted model versions; close the run.

        Reads ``result.json`` and the trial log from the run directory; waits until every
        operation is sent or spooled. With the run's ``market`` (an OHLCV), the equity curves
        of the top strategies on the walk-forward folds and the holdout are logged too
        (``lineage/equity.parquet``, for the notebook).
        """
        self._require_started()
        run_dir = Path(run_dir) if run_dir is not None else self.run_dir
        at = at_ms if at_ms is not None else now_ms()
        self._flush(at)
        try:
            lineage = self._log_results(run_dir, at, market)
        except BaseException:
            status = "FAILED"
            raise
        finally:
            self._send({"op": "end_run", "run": self.run_key, "status": status, "time": at})
            self._sender.close()
        return self._report(run_dir, lineage)

    # ---------------------------------------------------------------- internals

    def _require_started(self) -> None:
        if self._sender is None:
            raise RuntimeError("LineageLogger.start(run_dir, config) must be called first")

    def _send(self, op: dict) -> None:
        self._sender.submit(op)

    def _log_results(self, run_dir: Path, at: int, market: Any = None) -> data.Lineage | None:
        """Queue the run's summary, artifacts and hall-of-fame strategies, then write the lineage
        files and pictures and queue them too.

        On the wire: summary metrics; then ``result.json``, the trial-log parts not sent yet and
        every hall-of-fame strategy (the rest of its nested run and, when it was not staged,
        its genome and logged model) side by side; the model registrations one by one in
        hall-of-fame order (stable version numbers), beside them when every model was staged
        (logged already), after them otherwise; then the lineage files. The sender (a child
        process) works through the first three while the driver draws the pictures.
        """
        result = data.read_result(run_dir)
        columns = data.trial_log_columns(run_dir)
        trials = data.read_trials(run_dir, list(data.LINEAGE_COLUMNS) + [c for c in data.FITNESS_CANDIDATES
                                                                           if c in columns])
        hof = result.get("hall_of_fame", [])
        hof_ids = data.hall_of_fame_ids(result)
        nodes = data.first_appearances(trials)
        full = data.ancestry(hof_ids, nodes)

        key = self.run_key
        metrics = [["n_trials", float(result.get("n_trials", len(nodes))), at, 0],
                   ["n_promoted", float(len(result.get("promoted", []))), at, 0],
                   ["hall_of_fame_size", float(len(hof)), at, 0]]
        self._send({"op": "log_batch", "run": key, "metrics": metrics, "time": at,
                    "tags": {"lineage_complete": str(full.complete).lower(),
                             "promoted": json.dumps(result.get("promoted", []))}})
        artifacts = [{"op": "log_artifact", "run": key, "path": name, "artifact_path": None, "time": at}
                     for name in (data.RESULT_FILE, "report.html") if (run_dir / name).exists()]
        for path in data.trial_log_paths(run_dir):
            relative = path.relative_to(run_dir)
            if str(relative) in self._sent_parts and run_dir == self.run_dir:
                continue  # sent while searching
            artifact_path = "trial_log" if len(relative.parts) == 1 else str(Path("trial_log", *relative.parts[1:-1]))
            artifacts.append({"op": "log_artifact", "run": key, "path": str(relative), "artifact_path": artifact_path,
                              "time": at})
        promoted = set(result.get("promoted", []))
        groups, registrations, all_staged = [artifacts], [], True
        for rank, entry in enumerate(hof):
            ops, register = self._strategy_ops(entry, rank, entry["strategy_id"] in promoted, nodes, result, at)
            groups.append(ops)
            if register is not None:
                registrations.append(register)
                all_staged = all_staged and self._is_staged(entry, rank)
        if all_staged:
            # every model went out with the staged hall of fame, before this batch: the
            # registrations (one chain, in hall-of-fame order, the longest group) start first
            # and run beside the rest
            self._sender.submit_parallel([registrations] + groups)
        else:
            self._sender.submit_parallel(groups)
            for op in registrations:
                self._send(op)

        if market is not None:
            write_equity_curves(run_dir, market, top=self.lineage_top)
        shown = data.ancestry(hof_ids[: self.lineage_top], nodes)
        out = run_dir / LINEAGE_DIR
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "lineage.json", {**full.to_dict(), "hall_of_fame": hof_ids})
        stats = pd.DataFrame(self._generation_rows) if self._generation_rows else data.generation_stats(trials)
        if len(stats):
            stats.to_csv(out / "generations.csv", index=False)
        from evolution.lineage_plots import plot_fitness, plot_lineage

        plot_fitness(stats, out / "fitness.png")
        plot_lineage(shown, hof_ids[: self.lineage_top], out / "lineage.png")
        self._send({"op": "log_artifact", "run": key, "path": LINEAGE_DIR, "artifact_path": LINEAGE_DIR, "time": at})
        return full

    def _start_strategy_op(self, entry: Mapping, rank: int, promoted: bool | None, at: int,
                           node: data.Node | None = None) -> dict:
        sid = str(entry["strategy_id"])
        parents = entry.get("parents", list(node.parents) if node else [])
        tags = {
            "strategy_id": sid,
            "generation": entry.get("generation", node.generation if node else ""),
            "island": entry.get("island", node.island if node else ""),
            "operator": entry.get("operator", node.operator if node else ""),
            "parents": json.dumps(list(parents)),
            "hall_of_fame_rank": rank,
            "run_id": self.run_key,
        }
        if promoted is not None:
            tags["promoted"] = str(promoted).lower()
        return {"op": "start_run", "key": f"{self.run_key}/{sid}", "parent": self.run_key,
                "run_name": f"hof-{rank:02d}-{sid}", "tags": {k: str(v) for k, v in tags.items()}, "time": at}

    @staticmethod
    def _metrics(entry: Mapping, blocks: Iterable[str], names: Iterable[str], at: int) -> list[list]:
        """Metric rows [name, value, time, step 0] of the numeric, non-NaN values of ``blocks``
        (as ``block/metric``) and of ``names`` (infinities go through: see ``_metric_value``)."""
        values = [(f"{block}/{name}", value) for block in blocks
                  for name, value in (entry.get("metrics", {}).get(block) or {}).items()]
        values += [(name, entry.get(name)) for name in names]
        return [[name, float(value), at, 0] for name, value in values
                if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value))]

    def _is_staged(self, entry: Mapping, rank: int) -> bool:
        """Whether ``stage_hall_of_fame`` queued this member (its run, genome and model) at this rank."""
        return self._staged.get(str(entry["strategy_id"])) == rank

    @staticmethod
    def _genome_op(entry: Mapping, key: str, at: int) -> dict:
        return {"op": "log_dict", "run": key, "data": entry.get("genome"), "artifact_file": "genome.json", "time": at}

    @staticmethod
    def _model_op(entry: Mapping, key: str, at: int) -> dict:
        sid = str(entry["strategy_id"])
        return {"op": "log_model", "run": key, "model": sid, "strategy_id": sid, "genome": entry["genome"],
                "name": "model", "pip_requirements": list(MODEL_PIP_REQUIREMENTS), "time": at}

    def _strategy_ops(self, entry: Mapping, rank: int, promoted: bool, nodes: Mapping[str, data.Node],
                      result: Mapping, at: int) -> tuple[list[dict], dict | None]:
        """The nested run of one hall-of-fame strategy (and its logged model), and its registration.
        What ``stage_hall_of_fame`` queued already is not queued again."""
        sid = str(entry["strategy_id"])
        key = f"{self.run_key}/{sid}"
        staged = self._is_staged(entry, rank)
        if staged:
            ops = [{"op": "log_batch", "run": key, "time": at, "tags": {"promoted": str(promoted).lower()},
                    "metrics": self._metrics(entry, ("holdout",), ("dsr", "pbo"), at)}]
        else:
            ops = [self._start_strategy_op(entry, rank, promoted, at, nodes.get(sid)),
                   {"op": "log_batch", "run": key, "time": at,
                    "metrics": self._metrics(entry, METRIC_BLOCKS, ("dsr", "pbo"), at)},
                   self._genome_op(entry, key, at)]
        register = None
        if promoted:
            if not staged:
                ops.append(self._model_op(entry, key, at))
            register = {"op": "register_model", "run": key, "model": sid, "strategy_id": sid,
                        "name": self.registered_model, "time": at,
                        "tags": {"strategy_id": sid, "run_id": self.run_key,
                                 "config_id": str(result.get("config_id", "")),
                                 "hall_of_fame_rank": str(rank)}}
        ops.append({"op": "end_run", "run": key, "status": "FINISHED", "time": at})
        return ops, register

    def _report(self, run_dir: Path, lineage: data.Lineage | None) -> LineageReport:
        sender = self._sender
        state = sender.state
        spool = sender.spool
        pending = spool.pending() if sender.spooling else 0
        if not sender.spooling:
            _write_run_record(run_dir, state, self.run_key)
        return LineageReport(
            run_dir=run_dir, run_key=self.run_key,
            mlflow_run_id=state.runs.get(self.run_key) if not sender.spooling else None,
            spooled=sender.spooling, pending_ops=pending,
            lineage_complete=bool(lineage and lineage.complete),
            missing_ancestors=dict(lineage.missing) if lineage else {},
            model_versions=dict(state.versions) if not sender.spooling else {},
            nested_runs={k.split("/", 1)[1]: v for k, v in state.runs.items() if "/" in k and not sender.spooling},
            send_seconds=dict(sender.seconds),
            sender=dict(sender.info),
        )


def _import_plotting() -> None:
    """matplotlib for ``finish``, imported while the search runs (errors surface at ``finish``)."""
    try:
        from evolution.lineage_plots import _pyplot

        _pyplot()
    except Exception as error:  # pragma: no cover - finish imports it again and reports
        log.debug("importing matplotlib ahead of time failed: %s", error)


def run_folds(result: Mapping, n_bars: int) -> tuple[list[list[int]], list[int]]:
    """Walk-forward test folds and holdout [start, end) of a run, from result.json.

    The engine records them under ``market``; a fixture run records ``n_folds`` in its config.
    """
    market = result.get("market") or {}
    if "walk_forward_folds" in market and "holdout" in market:
        return [list(map(int, f)) for f in market["walk_forward_folds"]], list(map(int, market["holdout"]))
    from backtest.validation import walk_forward_split

    config = result.get("config", {})
    split = walk_forward_split(n_bars, n_folds=int(config.get("n_folds", 3)),
                               holdout_fraction=float(config.get("holdout_fraction", 0.2)))
    return split.test_ranges().tolist(), [split.holdout_start, split.holdout_end]


def write_equity_curves(run_dir: str | Path, market: Any, top: int = 5, points: int = 400) -> Path:
    """``RUN_DIR/lineage/equity.parquet``: equity of the top hall-of-fame strategies, walk-forward and holdout.

    Columns strategy_id, segment (walk_forward | holdout), bar (index of the segment's last
    bar in the bucket), timestamp, equity (growth of 1.0, folds chained).
    """
    import numpy as np

    from backtest import evaluate

    run_dir = Path(run_dir)
    result = data.read_result(run_dir)
    hof = result.get("hall_of_fame", [])[:top]
    rows = []
    n_bars = len(market.close)
    folds, holdout = run_folds(result, n_bars)
    if hof:
        genomes = [entry["genome"] for entry in hof]
        for segment, ranges in (("walk_forward", folds), ("holdout", [holdout])):
            ranges = np.asarray(ranges, dtype=np.int64)
            span = int(ranges[-1, 1] - ranges[0, 0])
            bucket = max(1, span // points)
            scored = evaluate(genomes, market, ranges, bucket_bars=bucket)
            ends = np.minimum(ranges[0, 0] + bucket * np.arange(1, scored.buckets.shape[1] + 1), ranges[-1, 1]) - 1
            for k, entry in enumerate(hof):
                equity = np.cumprod(np.nan_to_num(scored.buckets[k], nan=1.0))
                rows.extend({"strategy_id": entry["strategy_id"], "segment": segment, "bar": int(b),
                             "timestamp": int(market.timestamp[b]), "equity": float(e)}
                            for b, e in zip(ends, equity))
    out = run_dir / LINEAGE_DIR / "equity.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["strategy_id", "segment", "bar", "timestamp", "equity"]).to_parquet(out, index=False)
    return out


def _write_run_record(run_dir: Path, state: SyncState, run_key: str) -> None:
    """``RUN_DIR/mlflow_run.json``: where this run's lineage lives in MLflow."""
    write_json_atomic(Path(run_dir) / RUN_RECORD_FILE, {
        "tracking_uri": state.tracking_uri, "experiment_id": state.experiment_id,
        "experiment_name": state.experiment_name, "run_key": run_key,
        "mlflow_run_id": state.runs.get(run_key),
        "nested_runs": {k.split("/", 1)[1]: v for k, v in state.runs.items() if k.startswith(run_key + "/")},
        "model_versions": dict(state.versions),
    })


# --------------------------------------------------------------------------- after the fact


def log_run_directory(run_dir: str | Path, tracking_uri: str | None = None, **kwargs) -> LineageReport:
    """Log a finished run directory (``result.json`` + trial log) as if it had been logged live."""
    run_dir = Path(run_dir)
    result = data.read_result(run_dir)
    logger = LineageLogger(tracking_uri, **kwargs)
    logger.start(run_dir, result.get("config", {}), run_id=result.get("run_id"), seed=result.get("seed"),
                 config_id=result.get("config_id"))
    return logger.finish(run_dir)


@dataclass
class SyncReport:
    sent: int
    pending: int
    mlflow_run_id: str | None
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.pending == 0 and self.error is None


def sync_run_directory(run_dir: str | Path, tracking_uri: str | None = None, *,
                       model_code: str | Path | None = None, retries: int = 1, timeout_s: int = 10) -> SyncReport:
    """Send what a run spooled while MLflow was away (``evolve sync``); safe to repeat.

    ``tracking_uri`` defaults to the one the run was logging to. Stops at the first
    failure; what was sent stays sent, and the next call continues from there.
    """
    run_dir = Path(run_dir)
    spool = Spool(run_dir)
    if not spool.exists():
        return SyncReport(0, 0, None)
    state = spool.load_state()
    if tracking_uri:
        # the same store at a new address (a server that moved); a different store would lack
        # the runs created before the outage: use log_run_directory there instead
        state.tracking_uri = tracking_uri
    ops = spool.read_ops()
    applier = OpApplier(tracking_client(state.tracking_uri), state, run_dir, model_code or default_model_code())
    sent = 0
    error = None
    with fail_fast(retries, timeout_s):
        for index in range(state.applied, len(ops)):
            try:
                applier.apply(ops[index])
            except Exception as exc:
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                break
            state.applied = index + 1
            sent += 1
            spool.save_state(state)
    run_key = next((op["key"] for op in ops if op["op"] == "start_run" and not op.get("parent")), None)
    if error is None and run_key is None:
        run_key = next(iter(k for k in state.runs if "/" not in k), None)
    if error is None and run_key is not None:
        _write_run_record(run_dir, state, run_key)
    return SyncReport(sent, len(ops) - state.applied, state.runs.get(run_key) if run_key else None, error)

"""The lineage logger: a run's lineage to MLflow, queued from the driver.

One evolution run is one MLflow run (config as params; tags seed, config id, git commit;
per-generation metrics per island; artifacts ``result.json``, the trial log, a
fitness-over-generations plot and a lineage graph). Each hall-of-fame strategy is a nested
run with its lineage tags and scores and a logged pyfunc model; each promoted strategy is
a version of one registered model, tagged ``stage=candidate``.

How ``evolution/lineage/run.py`` (``evolve run``) calls it::

    logger = LineageLogger(settings)              # evolution.lineage.tracking.resolve_tracking(...)
    logger.start(run_dir, config.search_dict(), run_id=run_id, seed=seed, config_id=config_id)
    for generation ...:
        logger.log_generation(generation, [{"island": 0, "best_fitness": ..., ...}, ...])
    logger.stage_hall_of_fame(members)            # once known, while the driver judges it
    # ... write result.json ...
    report = logger.finish(run_dir, market=market) # judged metrics, registrations, artifacts

Every call only queues operations (``evolution/lineage/ops.py``) for the sender process
(``evolution/lineage/sender.py``); the driver never imports MLflow.
"""
from __future__ import annotations

import json
import math
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evolution.lineage import data
from evolution.lineage.ops import (
    METRIC_BLOCKS,
    Spool,
    SyncState,
    genome_op,
    metric_rows,
    model_op,
    now_ms,
    register_op,
    start_strategy_op,
    strategy_key,
    write_json_atomic,
    write_run_record,
)
from evolution.lineage.sender import ProcessSender
from evolution.lineage.tracking import TrackingSettings
from evolution.trials import part_path

LINEAGE_DIR = "lineage"
LINEAGE_TOP = 5  # strategies whose ancestry is drawn, and whose equity curves are kept
FLUSH_INTERVAL_S = 5.0  # generation metrics go out at most this often (the first at once)


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
    directory = Path(directory) if directory else Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass
class LineageReport:
    """What ``finish`` did: MLflow ids (when sent), what was spooled or dropped, lineage completeness."""

    run_dir: Path
    run_key: str
    tracking_uri: str
    mlflow_run_id: str | None
    spooled: bool
    pending_ops: int
    dropped_ops: int
    error: str | None
    lineage_complete: bool
    missing_ancestors: dict[str, list[str]] = field(default_factory=dict)
    model_versions: dict[str, str] = field(default_factory=dict)
    nested_runs: dict[str, str] = field(default_factory=dict)
    send_seconds: dict[str, float] = field(default_factory=dict)


class LineageLogger:
    """Queues a run's lineage for the sender process; see the module docstring."""

    def __init__(self, settings: TrackingSettings):
        if not settings.enabled:
            raise ValueError("tracking is off for this run: do not create a LineageLogger")
        self.settings = settings
        self.run_dir: Path | None = None
        self.run_key: str | None = None
        self._sender: ProcessSender | None = None
        self._generation_rows: list[dict] = []
        self._pending_metrics: list[list] = []
        self._last_flush = 0.0
        self._sent_parts: set[str] = set()  # trial-log parts queued while searching
        self._staged: dict[str, int] = {}  # hall-of-fame strategy id -> rank, queued before the judging

    @property
    def sender_pid(self) -> int | None:
        return self._sender.pid if self._sender is not None else None

    # ---------------------------------------------------------------- lifecycle

    def start(self, run_dir: str | Path, config: Mapping[str, Any], tags: Mapping[str, Any] | None = None, *,
              run_id: str | None = None, seed: int | None = None, config_id: str | None = None,
              run_name: str | None = None, at_ms: int | None = None) -> str:
        """Open the MLflow run of this evolution run; returns its lineage key (= ``run_id``).
        Starting again with the same ``run_id`` (a resumed run) continues the same MLflow run."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_key = str(run_id) if run_id is not None else uuid.uuid4().hex
        spool = Spool(self.run_dir)
        state = (spool.load_state() if spool.exists()
                 else SyncState(tracking_uri=self.settings.uri, experiment_name=self.settings.experiment))
        self._sender = ProcessSender(self.settings.uri, state, self.run_dir, keep=self.settings.spool)
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
        self._sender.prepare_model()  # the pyfunc model template while the search runs
        threading.Thread(target=_import_plotting, name="lineage-import-plotting", daemon=True).start()
        return self.run_key

    def log_generation(self, generation: int, per_island_stats: Iterable[Mapping[str, Any]],
                       at_ms: int | None = None) -> None:
        """Every numeric statistic per island as ``island_<i>/<name>`` at step = generation, plus the
        across-island ``best_fitness`` (max) and ``evaluations_per_second`` (sum). Metrics go out as
        one ``log_batch`` at most every ``FLUSH_INTERVAL_S`` (the first generation at once, the rest
        at the latest by ``finish``); the generation's trial-log part goes out now (it never changes)."""
        self._require_started()
        at = at_ms if at_ms is not None else now_ms()
        part = part_path(self.run_dir, generation).relative_to(self.run_dir)
        if (self.run_dir / part).is_file() and str(part) not in self._sent_parts:
            self._send({"op": "log_artifact", "run": self.run_key, "path": str(part), "artifact_path": "trial_log",
                        "time": at})
            self._sent_parts.add(str(part))
        best, speed = [], []
        for position, stats in enumerate(per_island_stats):
            island = int(stats.get("island", position))
            row = {"generation": int(generation), "island": island}
            for name, value in stats.items():
                if name == "island" or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                self._pending_metrics.append([f"island_{island}/{name}", float(value), at, int(generation)])
                row[name] = float(value)
            self._generation_rows.append(row)
            if _finite(stats.get("best_fitness")):
                best.append(float(stats["best_fitness"]))
            if _finite(stats.get("evaluations_per_second")):
                speed.append(float(stats["evaluations_per_second"]))
        if best:
            self._pending_metrics.append(["best_fitness", max(best), at, int(generation)])
        if speed:
            self._pending_metrics.append(["evaluations_per_second", sum(speed), at, int(generation)])
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self._flush(at)

    def stage_hall_of_fame(self, members: Iterable[Mapping[str, Any]], at_ms: int | None = None) -> None:
        """Queue what the hall of fame needs before it is judged (best first): each member's nested
        run with its walk-forward metrics, its genome and its logged model, side by side on the
        sender's threads while the driver computes the holdout, DSR and PBO. ``finish`` adds the
        judged metrics, closes the runs and registers the promoted models."""
        self._require_started()
        at = at_ms if at_ms is not None else now_ms()
        groups = []
        for rank, entry in enumerate(members):
            sid = str(entry["strategy_id"])
            key = strategy_key(self.run_key, sid)
            ops = [start_strategy_op(self.run_key, entry, rank, None, at)]
            metrics = metric_rows(entry, ("walk_forward",), (), at)
            if metrics:
                ops.append({"op": "log_batch", "run": key, "metrics": metrics, "time": at})
            ops += [genome_op(entry, key, at), model_op(entry, key, at)]
            groups.append(ops)
            self._staged[sid] = rank
        self._sender.submit_parallel(groups)

    def finish(self, run_dir: str | Path | None = None, *, status: str = "FINISHED",
               at_ms: int | None = None, market: Any = None) -> LineageReport:
        """Queue the results (from ``result.json`` and the trial log), close the run and wait until
        every operation is sent, spooled or dropped. With the run's ``market``, the equity curves
        of the top strategies (``lineage/equity.parquet``, for the notebook) go too."""
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

    def _flush(self, at: int) -> None:
        if self._pending_metrics:
            self._send({"op": "log_batch", "run": self.run_key, "metrics": self._pending_metrics, "time": at})
            self._pending_metrics = []
        self._last_flush = time.monotonic()

    def _log_results(self, run_dir: Path, at: int, market: Any = None) -> data.Lineage:
        """Queue the summary, artifacts and hall-of-fame strategies, then write and queue the lineage
        files. On the wire: summary metrics; ``result.json``, the trial-log parts not sent yet and
        every strategy's remaining operations side by side; the registrations one by one in
        hall-of-fame order (stable version numbers), beside them when every model was staged
        (logged already), after them otherwise; then the lineage files. The sender works through
        these while the driver draws the pictures."""
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
                     for name in (data.RESULT_FILE, data.REPORT_FILE) if (run_dir / name).exists()]
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
            is_promoted = entry["strategy_id"] in promoted
            groups.append(self._strategy_ops(entry, rank, is_promoted, nodes, at))
            if is_promoted:
                registrations.append(register_op(key, entry, rank, self.settings.registered_model,
                                                 str(result.get("config_id", "")), at))
                all_staged = all_staged and self._is_staged(entry, rank)
        if all_staged:
            # every model went out with the staged hall of fame: the registrations (one chain,
            # in hall-of-fame order) start first and run beside the rest
            self._sender.submit_parallel([registrations] + groups)
        else:
            self._sender.submit_parallel(groups)
            for op in registrations:
                self._send(op)

        if market is not None:
            from evolution.lineage.equity import write_equity_curves

            write_equity_curves(run_dir, market, top=LINEAGE_TOP)
        out = run_dir / LINEAGE_DIR
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "lineage.json", {**full.to_dict(), "hall_of_fame": hof_ids})
        stats = pd.DataFrame(self._generation_rows) if self._generation_rows else data.generation_stats(trials)
        if len(stats):
            stats.to_csv(out / "generations.csv", index=False)
        from evolution.lineage.plots import plot_fitness, plot_lineage

        plot_fitness(stats, out / "fitness.png")
        plot_lineage(data.ancestry(hof_ids[:LINEAGE_TOP], nodes), hof_ids[:LINEAGE_TOP], out / "lineage.png")
        self._send({"op": "log_artifact", "run": key, "path": LINEAGE_DIR, "artifact_path": LINEAGE_DIR, "time": at})
        return full

    def _is_staged(self, entry: Mapping, rank: int) -> bool:
        return self._staged.get(str(entry["strategy_id"])) == rank

    def _strategy_ops(self, entry: Mapping, rank: int, promoted: bool, nodes: Mapping[str, data.Node],
                      at: int) -> list[dict]:
        """The rest of a strategy's nested run (all of it when it was not staged), its logged model
        when promoted and not staged, and the end of the run."""
        sid = str(entry["strategy_id"])
        key = strategy_key(self.run_key, sid)
        if self._is_staged(entry, rank):
            ops = [{"op": "log_batch", "run": key, "time": at, "tags": {"promoted": str(promoted).lower()},
                    "metrics": metric_rows(entry, ("holdout",), ("dsr", "pbo"), at)}]
        else:
            ops = [start_strategy_op(self.run_key, entry, rank, promoted, at, nodes.get(sid)),
                   {"op": "log_batch", "run": key, "time": at,
                    "metrics": metric_rows(entry, METRIC_BLOCKS, ("dsr", "pbo"), at)},
                   genome_op(entry, key, at)]
            if promoted:
                ops.append(model_op(entry, key, at))
        ops.append({"op": "end_run", "run": key, "status": "FINISHED", "time": at})
        return ops

    def _report(self, run_dir: Path, lineage: data.Lineage) -> LineageReport:
        sender, state = self._sender, self._sender.state
        sent = not sender.failed
        if sent:
            write_run_record(run_dir, state, self.run_key)
        spooled = sender.failed and sender.keep
        return LineageReport(
            run_dir=run_dir, run_key=self.run_key, tracking_uri=self.settings.uri,
            mlflow_run_id=state.runs.get(self.run_key) if sent else None,
            spooled=spooled, pending_ops=sender.spool.pending() if spooled else 0, dropped_ops=sender.dropped,
            error=sender.error, lineage_complete=lineage.complete, missing_ancestors=dict(lineage.missing),
            model_versions=dict(state.versions) if sent else {},
            nested_runs={k.split("/", 1)[1]: v for k, v in state.runs.items() if "/" in k} if sent else {},
            send_seconds=dict(sender.seconds),
        )


def _import_plotting() -> None:
    """matplotlib for ``finish``, imported while the search runs (errors surface at ``finish``)."""
    try:
        from evolution.lineage.plots import pyplot

        pyplot()
    except Exception:  # pragma: no cover - finish imports it again and reports
        pass

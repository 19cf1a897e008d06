"""The lineage of one ``evolve run``, as ``evolution/run_cli.py`` wires it into the search.

    lineage = RunLineage(run, settings)           # settings: resolve_tracking(...); disabled: does nothing
    execute(run, pool, on_generation=lineage.on_generation, on_hall_of_fame=lineage.on_hall_of_fame)
    lineage.finish(run)                           # prints one line: where the lineage went

Per generation the island statistics of the rows the runner holds (no file read); the hall
of fame's nested runs and models once it is known, while the driver judges it; the rest
after ``result.json`` is written. A resumed run (``evolve run --resume``) continues the same
MLflow run and first sends the statistics of the generations it does not run again.
"""
from __future__ import annotations

import time

from evolution.lineage.data import island_stats, island_stats_from_rows
from evolution.lineage.ops import SPOOL_DIR
from evolution.lineage.tracking import TrackingSettings


class RunLineage:
    """Driver-side MLflow lineage of one run (:class:`evolution.lineage.logger.LineageLogger`)."""

    def __init__(self, run, settings: TrackingSettings | None):
        self.logger = None
        self._run = run
        if settings is None or not settings.enabled:
            return
        from evolution.lineage.logger import LineageLogger

        config = run.config
        self.logger = LineageLogger(settings)
        self.logger.start(run.run_dir, config.search_dict(), run_id=run.run_id, seed=config.seed,
                          config_id=config.config_id)
        # a resumed run: the statistics of the generations before its checkpoint, from the trial
        # log (a killed driver may not have sent them; sending them twice changes nothing)
        for generation in range(run.start_generation):
            self.logger.log_generation(generation, island_stats(run.run_dir, generation))
        self._last = time.perf_counter()

    def on_generation(self, generation: int, _pool) -> None:
        if self.logger is None:
            return
        now = time.perf_counter()
        self.logger.log_generation(generation, island_stats_from_rows(self._run.last_rows, now - self._last))
        self._last = now

    def on_hall_of_fame(self, members: list[dict]) -> None:
        """The hall of fame's nested runs and models go out while the driver judges it."""
        if self.logger is not None:
            self.logger.stage_hall_of_fame(members)

    def finish(self, run) -> None:
        if self.logger is None:
            return
        report = self.logger.finish(run.run_dir, market=run.spec.market)
        where = f"{report.tracking_uri} (experiment {self.logger.settings.experiment})"
        if report.spooled:
            print(f"lineage: MLflow at {where} failed ({report.error}); {report.pending_ops} operations spooled to "
                  f"{run.run_dir / SPOOL_DIR}; send them when it answers: evolve sync {run.run_dir}")
        elif report.error is not None:
            print(f"lineage: MLflow at {where} failed ({report.error}); {report.dropped_ops} operations not sent "
                  f"(tracking.spool is off)")
        else:
            print(f"lineage: MLflow run {report.mlflow_run_id} at {where}: {len(report.nested_runs)} strategy runs, "
                  f"{len(report.model_versions)} versions of {self.logger.settings.registered_model}, "
                  f"lineage complete: {str(report.lineage_complete).lower()}")

"""``evolve run``: evolve strategies on islands, judge the winners on the holdout.

    evolve run [--config PATH] [--data PATH] [--seed INT] [--out DIR] [--local]
               [--address ADDR] [--no-progress]
    evolve run --resume RUN_DIR [--local] [--address ADDR] [--no-progress]
    (both: [--tracking-uri URI | --no-tracking] for the MLflow lineage of the run)
    python -m evolution run ...            (the same, e.g. under `ray job submit`)

The config (default configs/demo.yaml) and the data are validated before Ray starts; a
bad field or candle row is one line on stderr and exit code 2, as is a Ray that cannot be
joined or started (evolution/ray_session.py: ``--address``, ``runtime.ray.address`` or
$RAY_ADDRESS, as set by ``ray job submit``, join a cluster; otherwise a local Ray of its own
starts). A run directory that cannot be written (full disk, read-only, no permission) is one
line and exit code 1, saying what is safe and how to resume; Ctrl-C and SIGTERM end with one
line and exit code 128 + the signal, after shutting the islands and the local Ray down.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

EXIT_FAILED = 1
EXIT_USER_ERROR = 2

RUN_EXAMPLES = """examples:
  evolve run                                        # configs/demo.yaml, writes runs/<run_id>/
  evolve run --config configs/demo.yaml --seed 3 --out runs/demo3
  evolve run --data btc-1h.parquet --local          # your candles, islands in this process
  evolve run --resume runs/<run_id>                 # continue from the last checkpoint
  evolve run --address 127.0.0.1:6380               # join a `ray start --head --port 6380` cluster
  evolve run --metrics-port 9477                    # Prometheus metrics on 127.0.0.1:9477/metrics
  evolve run --tracking-uri http://127.0.0.1:5000   # lineage to an MLflow server (--no-tracking: none)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="evolve trading strategies on Ray islands and gate the winners",
        description="Evolve strategy genomes with island GAs on Ray; judge the hall of fame on the "
        "holdout (DSR, PBO, trades, drawdown); write RUN_DIR/result.json and RUN_DIR/report.html.",
        epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", type=Path, help="YAML run config (default: configs/demo.yaml)")
    run.add_argument("--data", type=Path, help="CSV or Parquet OHLCV file instead of the config's market")
    run.add_argument("--seed", type=int, help="override the config's seed")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<run_id>)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    run.add_argument("--local", action="store_true", help="run islands in-process, without Ray")
    run.add_argument("--address", help="Ray address to join (default: $RAY_ADDRESS, else a local Ray)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--metrics-port", type=int, metavar="PORT",
                     help="serve Prometheus metrics on 127.0.0.1:PORT/metrics while the run lasts "
                     "(0: a free port; default: runtime.metrics_port, else none)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the config's "
                     "tracking.uri, else sqlite:///mlflow.db in the project folder)")
    run.add_argument("--no-tracking", action="store_true",
                     help="do not log lineage to MLflow (also: tracking.enabled: false in the config)")
    run.set_defaults(func=run_command)


def _fail(message: str, code: int = EXIT_USER_ERROR) -> int:
    print(f"evolve run: error: {message}", file=sys.stderr)
    return code


def run_command(args: argparse.Namespace) -> int:
    prepared = prepare_run(args)
    return prepared if isinstance(prepared, int) else launch_run(prepared, args.address)


@dataclass(frozen=True)
class PreparedRun:
    """A run planned from the command line, with the lineage tracking resolved once for it."""

    run: object  # evolution.runner.RunPlan
    tracking: object  # evolution.lineage.tracking.TrackingSettings
    compiling: bool


def prepare_run(args: argparse.Namespace) -> PreparedRun | int:
    """The run of ``evolve run`` (or ``evolve demo``) planned, or the exit code of a bad input
    (one line on stderr)."""
    from backtest.data import DataValidationError
    from evolution.config import ConfigError, load_config
    from evolution.lineage.tracking import TrackingError, resolve_tracking
    from evolution.runner import RunDirectoryError, needs_compilation, plan, plan_resume

    # the terminal is for the run: MLflow's INFO lines (database set-up, input example checks)
    # and artifact progress bars stay off it, in the lineage sender too (it inherits these)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    compiling = needs_compilation()
    overrides = {}
    if args.local:
        overrides["backend"] = "local"
    if args.no_progress:
        overrides["progress"] = False
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    try:
        if args.resume is not None:
            if args.config or args.data or args.seed is not None or args.out:
                return _fail("--resume takes the run's own config and data; drop --config/--data/--seed/--out")
            run = plan_resume(args.resume, **overrides)
            tracking = resolve_tracking(run.config.tracking, uri=args.tracking_uri, disabled=args.no_tracking)
            if problem := _start_metrics(run.config):
                return _fail(problem)
        else:
            config = load_config(args.config)
            top = {}
            if args.seed is not None:
                if args.seed < 0:
                    return _fail(f"--seed must be >= 0, got {args.seed}")
                top["seed"] = args.seed
            top.update({f"runtime.{k}": v for k, v in overrides.items()})
            if top:
                config = config.with_overrides(**top)
            tracking = resolve_tracking(config.tracking, uri=args.tracking_uri, disabled=args.no_tracking)
            if problem := _start_metrics(config):  # before the market is loaded: exchange requests count
                return _fail(problem)
            run = plan(config, data_path=args.data, out_dir=args.out)
    except (ConfigError, DataValidationError, TrackingError, FileNotFoundError, IsADirectoryError,
            RunDirectoryError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted before the run started", 128 + signal.SIGINT)
    return PreparedRun(run, tracking, compiling)


def launch_run(prepared: PreparedRun, address: str | None = None) -> int:
    """Run the search, judge its winners, write the result and send the lineage; the exit code.
    The lineage is sent (or spooled) when this returns."""
    from evolution.ray_session import RayUnavailable, interrupt_on_signals
    from evolution.runner import COMPILE_NOTICE, RunDirectoryError

    run = prepared.run
    if prepared.compiling:
        print(COMPILE_NOTICE, file=sys.stderr, flush=True)
    try:
        with interrupt_on_signals():
            return _execute(run, address, prepared.tracking, prepared.compiling)
    except RayUnavailable as error:
        return _fail(str(error))
    except RunDirectoryError as error:
        return _fail(str(error), EXIT_FAILED)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM/SIGHUP (evolution/ray_session.py)
        name = interrupt.args[0] if interrupt.args and interrupt.args[0] in signal.Signals.__members__ else "SIGINT"
        return _fail(f"interrupted; the finished generations are checkpointed: continue with "
                     f"`evolve run --resume {run.run_dir}`", 128 + signal.Signals[name].value)


def _start_metrics(config) -> str | None:
    """Serve the driver's /metrics when asked (evolution/telemetry.py); an error message if it cannot."""
    rc = config.runtime
    if rc.metrics_port is None:
        return None
    from evolution.telemetry import start_exporter

    try:
        _, port = start_exporter(rc.metrics_port, rc.metrics_host)
    except OSError as error:
        return (f"metrics port {rc.metrics_host}:{rc.metrics_port}: {error.strerror or error}; "
                "pick another --metrics-port (0: any free port)")
    print(f"metrics: http://{rc.metrics_host}:{port}/metrics", flush=True)
    return None


def _finish(run, result: dict, lineage) -> None:
    """The result first, then the report page (logged with the lineage), then the lineage."""
    from evolution.report import summary_table
    from evolution.report_html import write_report

    print(summary_table(result, run.run_dir), flush=True)
    page = write_report(run.run_dir, market=run.spec.market, progress=run.config.runtime.progress)
    print(f"report: {page.resolve()}", flush=True)
    lineage.finish(run)


def _execute(run, address: str | None, tracking=None, compiling: bool = False) -> int:
    from evolution.lineage.run import RunLineage
    from evolution.pools import LocalPool, RayPool
    from evolution.runner import execute

    config = run.config
    lineage = RunLineage(run, tracking)  # tracking: evolution.lineage.tracking.TrackingSettings, None: off
    if config.runtime.backend == "local":
        pool = LocalPool(config, run.spec.market, run.spec.split.test_ranges())
        try:
            result = execute(run, pool, on_generation=lineage.on_generation,
                             on_hall_of_fame=lineage.on_hall_of_fame, compiling=compiling)
        finally:
            pool.close()
        _finish(run, result, lineage)
        return 0

    from evolution.ray_session import check_capacity, ray_session

    with ray_session(config, address) as started:
        check_capacity(config, started)
        pool = RayPool(config, run.spec.market, run.spec.split.test_ranges())
        try:
            result = execute(run, pool, on_generation=lineage.on_generation,
                             on_hall_of_fame=lineage.on_hall_of_fame, compiling=compiling)
        finally:
            pool.close()
    _finish(run, result, lineage)
    return 0

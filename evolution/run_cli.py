"""``evolve run``: evolve strategies on islands, judge the winners on the holdout.

    evolve run [--config PATH] [--data PATH] [--seed INT] [--out DIR] [--local]
               [--address ADDR] [--no-progress]
    evolve run --resume RUN_DIR [--local] [--address ADDR] [--no-progress]
    (both: [--tracking-uri URI | --no-tracking] for the MLflow lineage of the run)
    python -m evolution run ...            (the same, e.g. under `ray job submit`)

The config (default configs/demo.yaml) and the data are validated before Ray starts; a
bad field or candle row is one line on stderr and exit code 2. Ray: ``--address`` (or
$RAY_ADDRESS, as set by ``ray job submit``) joins a cluster; otherwise a local Ray starts.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="evolve trading strategies on Ray islands and gate the winners",
        description="Evolve strategy genomes with island GAs on Ray; judge the hall of fame on the "
        "holdout (DSR, PBO, trades, drawdown); write RUN_DIR/result.json.",
    )
    run.add_argument("--config", type=Path, help="YAML run config (default: configs/demo.yaml)")
    run.add_argument("--data", type=Path, help="CSV or Parquet OHLCV file instead of the config's market")
    run.add_argument("--seed", type=int, help="override the config's seed")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<run_id>)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    run.add_argument("--local", action="store_true", help="run islands in-process, without Ray")
    run.add_argument("--address", help="Ray address to join (default: $RAY_ADDRESS, else a local Ray)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the config's "
                     "tracking.uri, else sqlite:///mlflow.db in the project folder)")
    run.add_argument("--no-tracking", action="store_true",
                     help="do not log lineage to MLflow (also: tracking.enabled: false in the config)")
    run.set_defaults(func=run_command)

    demo = subparsers.add_parser(
        "demo", help="the embedded-default path: configs/demo.yaml on a synthetic market, local Ray, "
        "lineage in sqlite:///mlflow.db",
        description="Run the demo search (configs/demo.yaml) with every embedded default and log its "
        "lineage to MLflow; `make mlflow-ui` then shows it.",
    )
    demo.add_argument("--out", type=Path, help="run directory (default: runs/<run_id>)")
    demo.add_argument("--local", action="store_true", help="run islands in-process, without Ray")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=demo_command, config=None, data=None, seed=None, resume=None, address=None,
                      tracking_uri=None, no_tracking=False)


def _fail(message: str) -> int:
    print(f"evolve run: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def demo_command(args: argparse.Namespace) -> int:
    code = run_command(args)
    if code == 0:
        print("demo: open the lineage with `make mlflow-ui` (MLflow UI on sqlite:///mlflow.db); "
              "the live Serve endpoint joins the demo with the serving issues.")
    return code


def run_command(args: argparse.Namespace) -> int:
    from backtest.data import DataValidationError
    from evolution.config import ConfigError, load_config
    from evolution.lineage.tracking import TrackingError, resolve_tracking
    from evolution.runner import plan, plan_resume

    overrides = {}
    if args.local:
        overrides["backend"] = "local"
    if args.no_progress:
        overrides["progress"] = False
    try:
        if args.resume is not None:
            if args.config or args.data or args.seed is not None or args.out:
                return _fail("--resume takes the run's own config and data; drop --config/--data/--seed/--out")
            run = plan_resume(args.resume, **overrides)
            tracking = resolve_tracking(run.config.tracking, uri=args.tracking_uri, disabled=args.no_tracking)
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
            run = plan(config, data_path=args.data, out_dir=args.out)
    except (ConfigError, DataValidationError, TrackingError, FileNotFoundError, IsADirectoryError) as error:
        return _fail(str(error))
    return _execute(run, args.address, tracking)


def _execute(run, address: str | None, tracking=None) -> int:
    from evolution.lineage.run import RunLineage
    from evolution.pools import LocalPool, RayPool
    from evolution.report import summary_table
    from evolution.runner import execute

    config = run.config
    lineage = RunLineage(run, tracking)  # tracking: evolution.lineage.tracking.TrackingSettings, None: off
    if config.runtime.backend == "local":
        pool = LocalPool(config, run.spec.market, run.spec.split.test_ranges())
        try:
            result = execute(run, pool, on_generation=lineage.on_generation,
                             on_hall_of_fame=lineage.on_hall_of_fame)
        finally:
            pool.close()
        print(summary_table(result, run.run_dir), flush=True)  # the result first; lineage goes out after
        lineage.finish(run)
        return 0

    import ray

    rc = config.runtime.ray
    started = False
    if not ray.is_initialized():
        address = address or rc.address or os.environ.get("RAY_ADDRESS")
        kwargs = dict(namespace=rc.namespace, log_to_driver=True)
        if address:
            ray.init(address=address, **kwargs)
        else:
            # "local": a new Ray of our own, never a cluster an earlier `ray start` left on the machine
            ray.init(address="local", num_cpus=rc.num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
        started = True
    pool = RayPool(config, run.spec.market, run.spec.split.test_ranges())
    try:
        result = execute(run, pool, on_generation=lineage.on_generation,
                         on_hall_of_fame=lineage.on_hall_of_fame)
    finally:
        pool.close()
        if started:
            ray.shutdown()
    print(summary_table(result, run.run_dir), flush=True)  # the result first; lineage goes out after
    lineage.finish(run)
    return 0

"""``evolve sync RUN_DIR``: send the lineage a run spooled while MLflow was unreachable.

    evolve sync RUN_DIR [--tracking-uri URI]
    evolve sync RUN_DIR --log-run [--tracking-uri URI]

``--log-run`` logs a finished run directory that was never logged (no spool, no
``mlflow_run.json``) as a whole, to the store its config's ``tracking:`` section names
(overrides as for ``evolve run``). MLflow's own settings bound each request
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 1 here; ``MLFLOW_HTTP_REQUEST_TIMEOUT``, 10 s).

Exit codes: 0 everything sent (or nothing to send), 1 the tracking server still fails
(what was sent stays sent; run the command again later), 2 user error (no such run
directory, damaged spool). Errors are one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_SERVER_ERROR = 1

EXAMPLES = """examples:
  evolve sync runs/<run_id>                                   # to the server the run was logging to
  evolve sync runs/<run_id> --tracking-uri http://mlflow:5000  # the same store at another address
  evolve sync runs/<run_id> --log-run                         # a run that was never logged
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    sync = subparsers.add_parser(
        "sync",
        help="send lineage spooled while the MLflow tracking server was unreachable",
        description="Replay RUN_DIR/mlflow_spool/ to MLflow: runs, params, metrics, tags, artifacts, models "
        "and model versions, with their original timestamps. Safe to repeat.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument("run_dir", type=Path, help="the run directory (holds result.json and mlflow_spool/)")
    sync.add_argument("--tracking-uri", help="the same tracking store at another address "
                      "(default: the URI the run was logging to)")
    sync.add_argument("--log-run", action="store_true",
                      help="log a finished run directory that has no spool (never logged) as a whole")
    sync.set_defaults(func=run_sync)


def _error(message: str, code: int = EXIT_USER_ERROR) -> int:
    print(f"evolve sync: error: {message}", file=sys.stderr)
    return code


def run_sync(args: argparse.Namespace) -> int:
    from evolution.lineage.data import RunDirectoryError
    from evolution.lineage.ops import RUN_RECORD_FILE, Spool
    from evolution.lineage.sync import sync_run_directory
    from evolution.lineage.tracking import TrackingError, check_scheme

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        return _error(f"{run_dir}: no such run directory")
    spool = Spool(run_dir)
    try:
        if args.tracking_uri:
            check_scheme(args.tracking_uri)
        if not spool.exists():
            if args.log_run:
                return _log_run(run_dir, args.tracking_uri)
            hint = "" if (run_dir / RUN_RECORD_FILE).is_file() else " (use --log-run to log it as a whole)"
            print(f"{run_dir}: nothing to sync{hint}")
            return 0
        report = sync_run_directory(run_dir, args.tracking_uri)
    except (RunDirectoryError, TrackingError, ValueError, FileNotFoundError, KeyError) as error:  # ConfigError too
        return _error(str(error))
    if report.error is not None:
        return _error(f"sent {report.sent} operation(s), {report.pending} still pending: {report.error}; run "
                      f"`evolve sync {run_dir}` again when {report.tracking_uri} answers", EXIT_SERVER_ERROR)
    if report.sent == 0:
        print(f"{run_dir}: nothing to sync (already sent)")
    else:
        print(f"sent {report.sent} operation(s); MLflow run {report.mlflow_run_id} at {report.tracking_uri}")
    return 0


def _log_run(run_dir: Path, tracking_uri: str | None) -> int:
    """Log a run directory as a whole, to the store its config.json's ``tracking:`` names (overrides apply)."""
    import json

    from evolution.config import parse_config
    from evolution.lineage.ops import SPOOL_DIR
    from evolution.lineage.sync import log_run_directory
    from evolution.lineage.tracking import resolve_tracking

    meta = run_dir / "config.json"
    config = parse_config(json.loads(meta.read_text(encoding="utf-8"))["config"]) if meta.is_file() else None
    settings = resolve_tracking(config.tracking if config is not None else None, uri=tracking_uri)
    report = log_run_directory(run_dir, settings)
    if report.error is not None:
        return _error(f"{report.error}; {report.pending_ops} operation(s) spooled to {run_dir / SPOOL_DIR}; "
                      f"run `evolve sync {run_dir}` when {settings.uri} answers", EXIT_SERVER_ERROR)
    print(f"logged {run_dir} as MLflow run {report.mlflow_run_id} at {settings.uri}")
    return 0

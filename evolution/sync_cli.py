"""``evolve sync RUN_DIR``: send the lineage a run spooled while MLflow was unreachable.

    evolve sync RUN_DIR [--tracking-uri URI] [--retries N] [--timeout-s S]

Also ``evolve sync RUN_DIR --log-run`` logs a finished run directory that was never logged
(no spool, no ``mlflow_run.json``) to MLflow as a whole.

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
        description="Replay RUN_DIR/mlflow_spool/ to the MLflow tracking server: runs, params, metrics, "
        "tags, artifacts and model versions, with their original timestamps. Safe to repeat.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument("run_dir", type=Path, help="the run directory (holds result.json and mlflow_spool/)")
    sync.add_argument("--tracking-uri", help="the same tracking store at another address "
                      "(default: the URI the run was logging to)")
    sync.add_argument("--log-run", action="store_true",
                      help="log a finished run directory that has no spool (never logged) as a whole")
    sync.add_argument("--retries", type=int, default=1, help="HTTP retries per request (default 1)")
    sync.add_argument("--timeout-s", type=int, default=10, help="HTTP timeout per request (default 10)")
    sync.set_defaults(func=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    from evolution.lineage import log_run_directory, sync_run_directory
    from evolution.lineage_data import RunDirectoryError
    from evolution.lineage_ops import RUN_RECORD_FILE, Spool

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        print(f"evolve sync: error: {run_dir}: no such run directory", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.retries < 0 or args.timeout_s < 1:
        print("evolve sync: error: --retries must be >= 0 and --timeout-s >= 1", file=sys.stderr)
        return EXIT_USER_ERROR
    spool = Spool(run_dir)
    try:
        if not spool.exists():
            if args.log_run:
                report = log_run_directory(run_dir, args.tracking_uri)
                if report.spooled:
                    print(f"evolve sync: error: tracking server unreachable; spooled to {spool.dir}",
                          file=sys.stderr)
                    return EXIT_SERVER_ERROR
                print(f"logged {run_dir} as MLflow run {report.mlflow_run_id}")
                return 0
            hint = "" if (run_dir / RUN_RECORD_FILE).is_file() else " (use --log-run to log it as a whole)"
            print(f"{run_dir}: nothing to sync{hint}")
            return 0
        report = sync_run_directory(run_dir, args.tracking_uri, retries=args.retries, timeout_s=args.timeout_s)
    except (RunDirectoryError, ValueError, FileNotFoundError, KeyError) as error:
        print(f"evolve sync: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    if report.error is not None:
        print(f"evolve sync: error: sent {report.sent} operation(s), {report.pending} still pending: "
              f"{report.error}; run `evolve sync {run_dir}` again when the tracking server answers",
              file=sys.stderr)
        return EXIT_SERVER_ERROR
    if report.sent == 0:
        print(f"{run_dir}: nothing to sync (already sent)")
    else:
        print(f"sent {report.sent} operation(s); MLflow run {report.mlflow_run_id}")
    return 0

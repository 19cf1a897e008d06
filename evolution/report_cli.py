"""``evolve report RUN_DIR``: write the run's self-contained HTML report and print its path.

    evolve report runs/<run_id> [--out FILE.html]

The page (evolution/report_html.py) needs no network to open: plots are inline SVG, styles
inline. ``evolve run`` writes the same page at the end of every run. Exit code 2 with one
line on stderr for a directory that holds no finished run.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

EXIT_USER_ERROR = 2

EXAMPLES = """examples:
  evolve report runs/3f2a9c1d0b7e              # writes runs/3f2a9c1d0b7e/report.html
  evolve report runs/3f2a9c1d0b7e --out /tmp/run.html
  xdg-open runs/3f2a9c1d0b7e/report.html       # any browser, offline
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "report", help="write a run's self-contained HTML report (plots, gates) and print its path",
        description="Draw a finished run as one HTML page: fitness per generation and island, the Pareto "
        "front, the champion's lineage back to generation 0, equity in-sample / walk-forward / holdout "
        "(and shadow when serving recorded it), drawdown, trade statistics and every gate against its "
        "threshold. Equity is recomputed on the run's market (from its config.json).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("run_dir", type=Path, help="the run directory (holds result.json and trials/)")
    report.add_argument("--out", type=Path, help="write the page here too (default: RUN_DIR/report.html only)")
    report.add_argument("--no-progress", action="store_true", help="no progress bar")
    report.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from evolution.report_html import write_report

    if not args.run_dir.is_dir():
        print(f"evolve report: error: {args.run_dir} is not a directory", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        path = write_report(args.run_dir, progress=not args.no_progress)
    except FileNotFoundError as error:
        print(f"evolve report: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, args.out)
        path = args.out
    print(path.resolve())
    return 0

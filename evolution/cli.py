"""The `evolve` command line (also `python -m evolution`)."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evolve",
        description="Distributed strategy evolution engine.",
        epilog="examples:\n  evolve demo\n  evolve run --config configs/demo.yaml --metrics-port 9477\n"
        "  evolve report runs/<run_id>\n  evolve data fetch --exchange binance --symbol BTC/USDT --timeframe 1h "
        "--since 2024-01-01\n  evolve sync runs/<run_id>\n  evolve warm\n\n`evolve COMMAND --help` shows each command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from evolution import data_cli, demo_cli, run_cli

    run_cli.register(sub)
    demo_cli.register(sub)
    data_cli.register(sub)
    from evolution import sync_cli

    sync_cli.register(sub)
    from evolution import report_cli

    report_cli.register(sub)
    from serving import cli as serving_cli  # shadow, promote, rollback, status (heavy imports stay inside the commands)

    serving_cli.register(sub)
    from serving import serve_cli  # light: Ray and the Serve app are imported when `evolve serve` runs

    serve_cli.register(sub)
    from evolution import warm

    warm.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``evolve data``: fetch candles from an exchange into the local store, and inspect them.

    evolve data fetch --exchange binance --symbol BTC/USDT --timeframe 1h --since 2024-01-01 \
        [--until 2025-01-01] [--store DIR] [--out FILE.parquet|FILE.csv] [--base-url URL]
        [--timeout-ms MS] [--max-attempts N] [--no-progress]
    evolve data show PATH
    evolve data show --exchange binance --symbol BTC/USDT --timeframe 1h [--store DIR]

Exit codes: 0 done, 2 user error (bad argument, unknown exchange/symbol/timeframe, missing
or invalid file), 1 the exchange kept failing (retries exhausted, circuit open). Errors are
one clear line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

EXIT_USER_ERROR = 2

FETCH_EXAMPLES = """examples:
  evolve data fetch --exchange binance --symbol BTC/USDT --timeframe 1h --since 2024-01-01
  evolve data fetch --exchange binance --symbol ETH/USDT --timeframe 15m --since 2024-06-01 \\
      --until 2024-07-01 --out eth-15m.parquet
  evolve data fetch --exchange binance --symbol BTC/USDT --timeframe 1h --since 2024-01-01 \\
      --base-url http://127.0.0.1:8080            # a proxy or a local server speaking the REST API
"""
SHOW_EXAMPLES = """examples:
  evolve data show btc-1h.parquet
  evolve data show --exchange binance --symbol BTC/USDT --timeframe 1h --json
"""
EXIT_EXCHANGE_ERROR = 1


class _UserError(Exception):
    pass


def _iso(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat().replace("+00:00", "Z")


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="fetch market data from exchanges and inspect stored candles",
                                 epilog=FETCH_EXAMPLES + SHOW_EXAMPLES.removeprefix("examples:\n"),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_command", required=True)

    fetch = sub.add_parser(
        "fetch",
        help="fetch candles into the local Parquet store (only what is missing)",
        description="Fetch OHLCV candles from a ccxt exchange into the local Parquet store. "
        "Only bars the store does not hold yet are requested.",
        epilog=FETCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance")
    fetch.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USDT")
    fetch.add_argument("--timeframe", required=True, help="e.g. 1m, 1h, 1d")
    fetch.add_argument("--since", required=True, help="first bar: ISO date (2024-01-01) or epoch ms")
    fetch.add_argument("--until", help="exclusive end: ISO date or epoch ms (default: last closed bar)")
    fetch.add_argument("--store", type=Path, help="store directory (default: $EVOLVE_DATA_DIR or data/ohlcv)")
    fetch.add_argument("--out", type=Path, help="also write the fetched range to this .parquet or .csv file")
    fetch.add_argument("--base-url", help="REST base URL override (default: $EVOLVE_EXCHANGE_BASE_URL)")
    fetch.add_argument("--timeout-ms", type=int, default=10_000, help="per-request timeout (default 10000)")
    fetch.add_argument("--max-attempts", type=int, default=6,
                       help="attempts per request before giving up (default 6; 1 means no retries)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_run_fetch)

    show = sub.add_parser(
        "show",
        help="show range, bar count and gaps of a candle file or a stored market",
        description="Show the range, bar count and gaps of a candle file, or of the stored "
        "market named by --exchange/--symbol/--timeframe.",
        epilog=SHOW_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("path", nargs="?", type=Path, help="a .parquet or .csv candle file")
    show.add_argument("--exchange")
    show.add_argument("--symbol")
    show.add_argument("--timeframe")
    show.add_argument("--store", type=Path, help="store directory (default: $EVOLVE_DATA_DIR or data/ohlcv)")
    show.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    show.set_defaults(func=_run_show)


# --------------------------------------------------------------------------- errors


def _guarded(run):
    """Turn known errors into a message on stderr and an exit code."""

    def wrapper(args: argparse.Namespace) -> int:
        from pydantic import ValidationError

        from backtest.data.fetch import (
            CircuitOpenError,
            DataFetchError,
            RetriesExhaustedError,
        )
        from backtest.data.frame import DataValidationError

        try:
            return run(args)
        except (RetriesExhaustedError, CircuitOpenError) as error:
            print(f"evolve data: error: {error}", file=sys.stderr)
            return EXIT_EXCHANGE_ERROR
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'market'}: {e['msg'].removeprefix('Value error, ')}"
                for e in error.errors()
            )
            print(f"evolve data: error: {problems}", file=sys.stderr)
            return EXIT_USER_ERROR
        except (_UserError, DataFetchError, DataValidationError, FileNotFoundError,
                IsADirectoryError, ValueError) as error:
            print(f"evolve data: error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("evolve data: interrupted; what was fetched so far is saved", file=sys.stderr)
            return 130

    wrapper.__name__ = run.__name__
    return wrapper


# --------------------------------------------------------------------------- fetch


@_guarded
def _run_fetch(args: argparse.Namespace) -> int:
    from backtest.data.fetch import Fetcher, FetcherConfig, RetryPolicy
    from backtest.data.loaders import save_csv, save_parquet
    from backtest.data.sources import ExchangeMarket
    from backtest.data.store import OHLCVStore, default_store_dir

    if args.out is not None and not str(args.out).lower().endswith((".parquet", ".pq", ".csv", ".csv.gz")):
        raise _UserError(f"--out {args.out}: use a .parquet or .csv file name")
    if args.timeout_ms < 1:
        raise _UserError("--timeout-ms must be positive")
    if not 1 <= args.max_attempts <= 100:
        raise _UserError("--max-attempts must be between 1 and 100")
    market = ExchangeMarket(
        exchange=args.exchange,
        symbol=args.symbol,
        timeframe=args.timeframe,
        since=args.since,
        until=args.until,
        base_url=args.base_url,
        store_dir=args.store or default_store_dir(),
    )
    config = FetcherConfig(timeout_ms=args.timeout_ms, retry=RetryPolicy(max_attempts=args.max_attempts))
    with Fetcher(config) as fetcher:
        store = OHLCVStore(market.store_dir, fetcher)
        step = fetcher.check_market(market.exchange, market.symbol, market.timeframe, market.base_url)
        end = market.until if market.until is not None else fetcher.default_until(step)
        bar = _progress(total=max(0, (end - market.since) // step), disable=args.no_progress)
        before = store.read_range(market.exchange, market.symbol, market.timeframe, market.since, end)
        bar.update(len(before))
        try:
            result = store.update(
                market.exchange, market.symbol, market.timeframe, market.since, end,
                base_url=market.base_url, on_page=lambda page: bar.update(len(page)),
            )
        finally:
            bar.close()
        candles = store.read_range(market.exchange, market.symbol, market.timeframe, market.since, end)
    print(f"{result.path}: {result.bars_added} new bar(s), {result.bars_after} stored")
    if len(candles):
        print(f"range {_iso(candles.timestamp[0])} .. {_iso(candles.timestamp[-1])}: {len(candles)} bar(s)")
    if args.out is not None:
        if len(candles) == 0:
            raise _UserError("nothing to write to --out: the exchange has no candles in that range")
        (save_csv if str(args.out).lower().endswith((".csv", ".csv.gz")) else save_parquet)(candles, args.out)
        print(f"wrote {args.out}")
    return 0


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="bar", desc="fetching", disable=disable, file=sys.stderr, dynamic_ncols=True)


# --------------------------------------------------------------------------- show


@_guarded
def _run_show(args: argparse.Namespace) -> int:
    from backtest.data.store import OHLCVStore, default_store_dir, interval_ms, read_store_file

    named = [args.exchange, args.symbol, args.timeframe]
    interval = None
    if args.path is not None:
        if any(named):
            raise _UserError("give either PATH or --exchange/--symbol/--timeframe, not both")
        candles = _read_any(args.path)
        source = str(args.path)
    else:
        if not all(named):
            raise _UserError("give a PATH, or all of --exchange, --symbol and --timeframe")
        store = OHLCVStore(args.store or default_store_dir())
        path = store.path(args.exchange, args.symbol, args.timeframe)
        if not path.exists():
            raise _UserError(
                f"nothing stored for {args.exchange} {args.symbol} {args.timeframe} at {path}; "
                "run `evolve data fetch` first"
            )
        candles = read_store_file(path)
        source = str(path)
        interval = interval_ms(args.timeframe)
    summary = summarize(candles, interval)
    summary["source"] = source
    if args.json:
        print(json.dumps(summary))
        return 0
    print(source)
    if summary["bars"] == 0:
        print("no bars")
        return 0
    print(f"range     {summary['first']} .. {summary['last']}")
    print(f"bars      {summary['bars']}")
    print(f"interval  {summary['interval_ms']} ms")
    print(f"gaps      {len(summary['gaps'])} ({summary['missing_bars']} missing bar(s))")
    for gap in summary["gaps"][:20]:
        print(f"  {gap['after']} .. {gap['before']}: {gap['missing_bars']} missing")
    if len(summary["gaps"]) > 20:
        print(f"  ... and {len(summary['gaps']) - 20} more")
    return 0


def _read_any(path: Path):
    from backtest.data.frame import COLUMNS
    from backtest.data.loaders import load
    from backtest.data.store import read_store_file

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        if set(COLUMNS) <= set(pq.read_schema(path).names):
            return read_store_file(path)  # keeps gaps, so they can be shown
    return load(path)


def summarize(candles, interval: int | None = None) -> dict:
    """Range, bar count and gaps of a frame, as plain data."""
    if len(candles) == 0:
        return {"bars": 0, "first": None, "last": None, "interval_ms": interval, "gaps": [], "missing_bars": 0}
    if interval is None and len(candles) >= 2:
        interval = candles.interval_ms
    gaps = candles.gaps(interval) if len(candles) >= 2 else []
    return {
        "bars": len(candles),
        "first": _iso(candles.timestamp[0]),
        "last": _iso(candles.timestamp[-1]),
        "interval_ms": interval,
        "gaps": [{"after": _iso(g.start_ms), "before": _iso(g.end_ms), "missing_bars": g.missing_bars} for g in gaps],
        "missing_bars": sum(g.missing_bars for g in gaps),
    }

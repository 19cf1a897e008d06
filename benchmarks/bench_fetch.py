"""Fetch throughput from a local Binance stub, with ccxt's default rate limiter.

Prints candles per second for a 2-year 1h fetch (17,520 bars) and how many requests it
takes (klines pages, plus the one markets request). A second line with the rate limiter
off shows how much of the time is the limiter's own pacing.

    .venv/bin/python benchmarks/bench_fetch.py [--years 2] [--timeframe 1h] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from binance_stub import DEFAULT_START_MS, INTERVAL_MS, BinanceStub, make_series  # noqa: E402

from backtest.data.fetch import Fetcher, FetcherConfig  # noqa: E402


def run(stub: BinanceStub, config: FetcherConfig, n_bars: int, timeframe: str) -> tuple[float, int, int, int]:
    stub.reset_log()
    with Fetcher(config) as fetcher:
        fetcher.exchange("binance", stub.url)  # instance creation is not part of the fetch
        start = time.perf_counter()
        candles = fetcher.fetch_ohlcv("binance", "BTC/USDT", timeframe, DEFAULT_START_MS,
                                      DEFAULT_START_MS + n_bars * INTERVAL_MS[timeframe], base_url=stub.url)
        elapsed = time.perf_counter() - start
        limit = fetcher.page_limit("binance", stub.url)
    if len(candles) != n_bars:
        raise SystemExit(f"fetched {len(candles)} bars, expected {n_bars}")
    return elapsed, len(stub.kline_requests()), len(stub.requests), limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--timeframe", default="1h", choices=sorted(INTERVAL_MS))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    n_bars = int(args.years * 365 * 24 * 3_600_000 // INTERVAL_MS[args.timeframe])
    series = make_series(interval=args.timeframe, n_bars=n_bars)
    with BinanceStub([series]) as stub:
        for label, config in (
            ("default rate limiter", FetcherConfig()),
            ("rate limiter off", FetcherConfig(enable_rate_limit=False)),
        ):
            best = None
            for _ in range(args.repeat):
                result = run(stub, config, n_bars, args.timeframe)
                best = result if best is None or result[0] < best[0] else best
            elapsed, klines, total, limit = best
            print(
                f"{label}: {n_bars} candles ({args.years:g} years of {args.timeframe}) in {elapsed:.3f} s "
                f"= {n_bars / elapsed:,.0f} candles/s; {klines} klines requests of up to {limit} "
                f"+ {total - klines} markets request = {total} requests (best of {args.repeat})"
            )


if __name__ == "__main__":
    main()

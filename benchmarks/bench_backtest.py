"""Backtest core benchmarks, side by side with vectorbt (issue 2).

(a) simulate() vs vectorbt Portfolio.from_signals: 100 strategies x 100,000 bars of random signals.
(b) population path: 100 SMA-crossover genomes (fast 5..104, slow = 3 x fast) vs vectorbt
    MA.run + ma_crossed_above/below + from_signals + total_return on the same windows.
(c) memory: 1,000 random genomes on 1,000,000 bars, peak resident memory (separate process).
(d) the asmbtr family's population path: 100 asmbtr genomes (depth 1..12, both directions, stops
    on half) on the same bars, beside the rules figure of (b), and a plain Python/numpy reference
    of the same state table + position rule (no simulation costs, a few genomes on fewer bars).

Single-threaded (NUMBA_NUM_THREADS=1). Run: make bench  (or python benchmarks/bench_backtest.py)
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import json
import subprocess
import sys
import time

import numpy as np


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gbm(n_bars: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n_bars)))


def bench_simulate(n_bars: int, n_strats: int, repeat: int) -> dict:
    import vectorbt as vbt

    from backtest import simulate

    rng = np.random.default_rng(1)
    close = gbm(n_bars, 0)
    entries = rng.random((n_bars, n_strats)) < 0.01
    exits = rng.random((n_bars, n_strats)) < 0.01
    close2d = np.broadcast_to(close[:, None], entries.shape).copy()
    kw = dict(fees=0.001, slippage=0.0005, direction="both", sl_stop=0.05, tp_stop=0.1, init_cash=1.0)

    def ours():
        return simulate(close, entries, exits, **kw)

    def ours_equity():
        return simulate(close, entries, exits, **kw).equity

    def theirs():
        pf = vbt.Portfolio.from_signals(close2d, entries, exits, **kw)
        return pf.total_return().values, pf.trades.count().values

    ours(), ours_equity(), theirs()  # compile
    t_ours = best_of(ours, repeat)
    t_ours_eq = best_of(ours_equity, repeat)
    t_vbt = best_of(theirs, max(1, repeat // 2))
    r = ours()
    tr, nt = theirs()
    cells = n_bars * n_strats
    return {
        "cells": cells,
        "ours_ns": t_ours / cells * 1e9,
        "ours_equity_ns": t_ours_eq / cells * 1e9,
        "vbt_ns": t_vbt / cells * 1e9,
        "max_rel_diff": float(np.max(np.abs(r.total_return - tr) / np.maximum(1.0, np.abs(tr)))),
        "trades_equal": bool((r.n_trades == nt).all()),
    }


def bench_population(n_bars: int, repeat: int) -> dict:
    import vectorbt as vbt

    from backtest import Evaluator, evaluate
    from backtest.families.rules import sma_crossover_genome

    close = gbm(n_bars, 2)
    ts = np.arange(n_bars, dtype=np.int64) * 60_000

    class Market:  # evaluate() needs only these arrays
        timestamp = ts
        high = close
        low = close
        interval_ms = 60_000

    Market.close = close
    fast = np.arange(5, 105)
    slow = 3 * fast
    genomes = [sma_crossover_genome(int(f), int(s)) for f, s in zip(fast, slow)]

    evaluator = Evaluator()

    def ours():  # as an island does it: one Evaluator for every generation
        return evaluator.evaluate(genomes, Market, None).metric("total_return")[:, 0]

    def ours_cold():  # a fresh evaluate() call: allocates and faults in its table
        return evaluate(genomes, Market, None).metric("total_return")[:, 0]

    def theirs():
        fast_ma = vbt.MA.run(close, window=list(fast), short_name="fast")
        slow_ma = vbt.MA.run(close, window=list(slow), short_name="slow")
        entries = fast_ma.ma_crossed_above(slow_ma.ma.values)
        exits = fast_ma.ma_crossed_below(slow_ma.ma.values)
        close2d = np.broadcast_to(close[:, None], entries.shape)  # vectorbt 1.2 rejects 1-D close with 2-D signals
        pf = vbt.Portfolio.from_signals(close2d, entries, exits, init_cash=1.0)
        return pf.total_return().values

    ours(), ours_cold(), theirs()
    trades = float(evaluator.evaluate(genomes, Market, None).metric("n_trades").mean())
    t_ours = best_of(ours, repeat)
    t_cold = best_of(ours_cold, repeat)
    t_vbt = best_of(theirs, max(1, repeat // 2))
    a, b = ours(), theirs()
    cells = n_bars * len(genomes)
    return {
        "cells": cells,
        "ours_ns": t_ours / cells * 1e9,
        "cold_ns": t_cold / cells * 1e9,
        "vbt_ns": t_vbt / cells * 1e9,
        "max_rel_diff": float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))),
        "trades_per_bar": trades / n_bars,
    }


def asmbtr_genomes(n: int) -> list[dict]:
    rng = np.random.default_rng(7)
    return [{"family": "asmbtr", "depth": 1 + i % 12, "decay": float(rng.uniform(0.8, 0.999)),
             "threshold": float(rng.uniform(0.5, 0.7)), "min_move": 0.0 if i % 2 else 0.0005,
             "direction": ("long", "short", "both")[i % 3], "neutral": ("flat", "hold")[(i // 3) % 2],
             "stop_loss": 0.02 if i % 4 == 0 else None, "take_profit": 0.04 if i % 4 == 0 else None}
            for i in range(n)]


def reference_asmbtr_positions(close: np.ndarray, genome: dict) -> np.ndarray:
    """The state table and target rule of backtest/families/asmbtr.py in plain Python over numpy
    returns (no stops, no costs): the speed of writing it without a compiler."""
    ret = np.concatenate([[0.0], close[1:] / close[:-1] - 1.0]).tolist()
    depth, decay, thr, mm = genome["depth"], genome["decay"], genome["threshold"], genome["min_move"]
    mask = (1 << depth) - 1
    up = [0.0] * (mask + 1)
    down = [0.0] * (mask + 1)
    state = seen = target = 0
    out = np.zeros(len(ret), dtype=np.int8)
    for t, r in enumerate(ret):
        if r > mm or r < -mm:
            d = 1 if r > 0 else 0
            if seen == depth:
                up[state] = decay * up[state] + d
                down[state] = decay * down[state] + 1 - d
            else:
                seen += 1
            state = ((state << 1) | d) & mask
            if seen == depth:
                bar = thr * (up[state] + down[state])
                target = 1 if up[state] > bar else (-1 if down[state] > bar else (target if genome["neutral"] == "hold" else 0))
        out[t] = target
    return out


def bench_asmbtr(n_bars: int, repeat: int, n_genomes: int = 100) -> dict:
    from backtest import Evaluator

    close = gbm(n_bars, 2)
    ts = np.arange(n_bars, dtype=np.int64) * 60_000

    class Market:
        timestamp = ts
        high = close
        low = close
        interval_ms = 60_000

    Market.close = close
    genomes = asmbtr_genomes(n_genomes)
    evaluator = Evaluator()

    def ours():
        return evaluator.evaluate(genomes, Market, None)

    first = ours()
    assert not first.errors
    t_ours = best_of(ours, repeat)
    ref_bars = min(n_bars, 20_000)
    few = genomes[:4]
    t0 = time.perf_counter()
    for g in few:
        reference_asmbtr_positions(close[:ref_bars], g)
    t_ref = time.perf_counter() - t0
    return {"ours_ns": t_ours / (n_bars * n_genomes) * 1e9, "reference_ns": t_ref / (ref_bars * len(few)) * 1e9,
            "trades_per_bar": float(first.metric("n_trades").mean()) / n_bars}


def memory_child(n_genomes: int, n_bars: int) -> None:
    import resource

    from backtest import evaluate
    from evolution.families.rules import init_genome as random_genome

    close = gbm(n_bars, 3)
    rng = np.random.default_rng(4)
    spread = np.abs(rng.normal(0, 0.001, n_bars))

    class Market:
        timestamp = np.arange(n_bars, dtype=np.int64) * 60_000
        interval_ms = 60_000

    Market.close = close
    Market.high = close * (1 + spread)
    Market.low = close * (1 - spread)
    genomes = [random_genome(np.random.default_rng(i)) for i in range(n_genomes)]
    t0 = time.perf_counter()
    result = evaluate(genomes, Market, [[0, n_bars // 2], [n_bars // 2, n_bars]])
    elapsed = time.perf_counter() - t0
    # VmHWM: this process image's peak RSS. (ru_maxrss survives execve on Linux, so it would
    # report the parent's size when the parent holds vectorbt's arrays.)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak_kb = int(line.split()[1])
    print(json.dumps({"peak_mb": peak_kb / 1024, "seconds": elapsed, "evaluated": int(result.ok().sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--strategies", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-genomes", type=int, default=1000)
    parser.add_argument("--memory-bars", type=int, default=1_000_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_genomes, args.memory_bars)
        return

    a = bench_simulate(args.bars, args.strategies, args.repeat)
    print(f"(a) simulate, {args.strategies} strategies x {args.bars:,} bars, direction=both, fees, slippage, stops")
    print(f"    ours (totals)        {a['ours_ns']:8.2f} ns per bar-strategy")
    print(f"    ours (with equity)   {a['ours_equity_ns']:8.2f} ns per bar-strategy")
    print(f"    vectorbt from_signals{a['vbt_ns']:8.2f} ns per bar-strategy")
    print(f"    ratio vectorbt/ours  {a['vbt_ns'] / a['ours_ns']:8.1f}x (target >= 30x)   with equity {a['vbt_ns'] / a['ours_equity_ns']:.1f}x")
    print(f"    parity: max rel diff total_return {a['max_rel_diff']:.2e}, trade counts equal: {a['trades_equal']}")

    b = bench_population(args.bars, args.repeat)
    print(f"(b) population path, 100 SMA-crossover genomes (fast 5..104, slow 3x) x {args.bars:,} bars")
    print(f"    ours Evaluator       {b['ours_ns']:8.2f} ns per bar-strategy (target <= 10), reused across calls as islands do")
    print(f"    ours evaluate() cold {b['cold_ns']:8.2f} ns per bar-strategy (fresh buffers every call)")
    print(f"    vectorbt MA+cross+from_signals+total_return {b['vbt_ns']:8.2f} ns per bar-strategy")
    print(f"    ratio vectorbt/ours  {b['vbt_ns'] / b['ours_ns']:8.1f}x (target >= 30x)")
    print(f"    parity: max rel diff total_return {b['max_rel_diff']:.2e}")

    d = bench_asmbtr(args.bars, args.repeat)
    print(f"(d) asmbtr population path, 100 asmbtr genomes (depth 1..12) x {args.bars:,} bars")
    print(f"    ours Evaluator       {d['ours_ns']:8.2f} ns per bar-strategy (rules, (b): {b['ours_ns']:.2f})")
    print(f"    trades per bar       {d['trades_per_bar']:8.4f} (rules, (b): {b['trades_per_bar']:.4f}); each order is the "
          "same vectorbt-exact fill in both families, so a family that trades more pays more per bar")
    print(f"    plain Python/numpy state table {d['reference_ns']:8.2f} ns per bar-strategy (positions only, no simulation)")
    print(f"    ratio reference/ours {d['reference_ns'] / d['ours_ns']:8.1f}x")

    if not args.skip_memory:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", "--memory-genomes", str(args.memory_genomes),
             "--memory-bars", str(args.memory_bars)],
            check=True, capture_output=True, text=True,
        )
        c = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"(c) memory, {args.memory_genomes:,} random genomes x {args.memory_bars:,} bars, 2 folds")
        print(f"    peak resident memory {c['peak_mb']:8.0f} MB (target < 2048), {c['seconds']:.1f} s, {c['evaluated']} evaluated")


if __name__ == "__main__":
    main()

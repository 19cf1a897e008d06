"""Backtest core benchmarks, side by side with vectorbt (issues 2 and 20).

(a) simulate() against vectorbt's Portfolio.from_signals with fees, as a user times it: the same
    100 x 100,000 random signal matrix (1% entries, 1% exits), one call on each side, best of
    three, the two sides alternating. Also, once, the comparison earlier versions of this file
    printed, to show where their larger ratios came from.
(b) the population path (Evaluator.evaluate: signals, simulation, metrics), per family:
    rules: 100 SMA-crossover genomes (fast 5..104, slow 3 x fast) against vectorbt's
           MA.run + ma_crossed_above/below + from_signals + total_return on the same windows;
    asmbtr: 100 asmbtr genomes (depth 1..12; long, short, and both with neutral "hold"; stops on
           a quarter). vectorbt has no indicator for the state table, so the closest honest
           pipeline is from_signals + total_return on the genomes' own signals (computed by our
           kernel, untimed on vectorbt's side): a lower bound on any vectorbt pipeline for it.
(c) memory: random SMA/EMA crossover genomes on 1,000,000 bars, 2 folds, one subprocess per population
    size (run side by side);
    the peak resident memory of that process (VmHWM from /proc/self/status, i.e. everything:
    interpreter, numba, market arrays, the genomes' dicts, the indicator table and the kernel's
    buffers; not tracemalloc, which would miss numba's own allocations).

Single-threaded (NUMBA_NUM_THREADS=1). Ratios are measured inside one run (alternating pairs).
Run: make bench  (or python benchmarks/bench_backtest.py [--bars N] [--strategies N] [--genomes N]
[--repeat N] [--memory-genomes 1000,10000] [--memory-bars N] [--skip-memory] [--skip-history])
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


def alternating_best(fns: dict, repeat: int) -> dict:
    """Best time of each callable over ``repeat`` rounds, the callables alternating in each round
    (on a busy machine both sides then see the same load)."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def gbm(n_bars: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n_bars)))


def market(close: np.ndarray):
    class Market:  # evaluate() needs only these arrays
        timestamp = np.arange(close.shape[0], dtype=np.int64) * 60_000
        high = close
        low = close
        interval_ms = 60_000

    Market.close = close
    return Market


def bench_simulate(n_bars: int, n_strats: int, repeat: int, history: bool) -> dict:
    import vectorbt as vbt

    from backtest import simulate

    rng = np.random.default_rng(1)
    close = gbm(n_bars, 0)
    entries = rng.random((n_bars, n_strats)) < 0.01
    exits = rng.random((n_bars, n_strats)) < 0.01
    # vectorbt 1.2 rejects a 1-D close with 2-D signals; a broadcast view is what a user passes
    # (and it is faster for vectorbt than a (T, N) copy)
    close2d = np.broadcast_to(close[:, None], entries.shape)

    def ours():
        return simulate(close, entries, exits, fees=0.001)

    def theirs():
        return vbt.Portfolio.from_signals(close2d, entries, exits, fees=0.001)

    ours(), theirs()  # compile both
    best = alternating_best({"ours": ours, "vbt": theirs}, repeat)
    cells = n_bars * n_strats
    r, pf = ours(), theirs()
    tr = pf.total_return().values
    out = {
        "ours_ns": best["ours"] / cells * 1e9,
        "vbt_ns": best["vbt"] / cells * 1e9,
        "max_rel_diff": float(np.max(np.abs(r.total_return - tr) / np.maximum(1.0, np.abs(tr)))),
        "trades_equal": bool((r.n_trades == pf.trades.count().values).all()),
    }
    if history:
        # what this file timed before: direction="both", slippage and stops on both sides, and
        # on vectorbt's side total_return() and trades.count() (trade records) after from_signals
        kw = dict(fees=0.001, slippage=0.0005, direction="both", sl_stop=0.05, tp_stop=0.1, init_cash=1.0)

        def ours_old():
            return simulate(close, entries, exits, **kw)

        def theirs_old():
            pf = vbt.Portfolio.from_signals(close2d, entries, exits, **kw)
            return pf.total_return().values, pf.trades.count().values

        def theirs_same_kw():
            return vbt.Portfolio.from_signals(close2d, entries, exits, **kw)

        ours_old(), theirs_old()
        old = alternating_best({"ours": ours_old, "vbt": theirs_old, "vbt_fs": theirs_same_kw}, 1)
        out.update(old_ours_ns=old["ours"] / cells * 1e9, old_vbt_ns=old["vbt"] / cells * 1e9,
                   old_vbt_fs_ns=old["vbt_fs"] / cells * 1e9)
    return out


def bench_rules(n_bars: int, n_genomes: int, repeat: int) -> dict:
    import vectorbt as vbt

    from backtest import Evaluator
    from backtest.families.rules import sma_crossover_genome

    close = gbm(n_bars, 2)
    m = market(close)
    fast = np.arange(5, 5 + n_genomes)
    slow = 3 * fast
    genomes = [sma_crossover_genome(int(f), int(s)) for f, s in zip(fast, slow)]
    evaluator = Evaluator()

    def ours():  # as an island does it: one Evaluator for every generation
        return evaluator.evaluate(genomes, m, None).metric("total_return")[:, 0]

    def theirs():
        fast_ma = vbt.MA.run(close, window=list(fast), short_name="fast")
        slow_ma = vbt.MA.run(close, window=list(slow), short_name="slow")
        entries = fast_ma.ma_crossed_above(slow_ma.ma.values)
        exits = fast_ma.ma_crossed_below(slow_ma.ma.values)
        close2d = np.broadcast_to(close[:, None], entries.shape)  # vectorbt 1.2 rejects 1-D close with 2-D signals
        pf = vbt.Portfolio.from_signals(close2d, entries, exits, init_cash=1.0)
        return pf.total_return().values

    return side_by_side(ours, theirs, evaluator, genomes, m, n_bars, repeat)



def side_by_side(ours, theirs, evaluator, genomes, m, n_bars: int, repeat: int) -> dict:
    """Both sides' total returns compared, then timed alternately: ns per bar-strategy each."""
    a, b = ours(), theirs()
    trades = float(evaluator.evaluate(genomes, m, None).metric("n_trades").mean())
    best = alternating_best({"ours": ours, "vbt": theirs}, repeat)
    cells = n_bars * len(genomes)
    return {"ours_ns": best["ours"] / cells * 1e9, "vbt_ns": best["vbt"] / cells * 1e9,
            "max_rel_diff": float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))),
            "trades_per_bar": trades / n_bars}

def asmbtr_genomes(n: int) -> list[dict]:
    """depth 1..12; long, short and both (neutral hold: entry/exit signals can say it, so
    vectorbt can simulate it), stops on a quarter."""
    rng = np.random.default_rng(7)
    return [{"family": "asmbtr", "depth": 1 + i % 12, "decay": float(rng.uniform(0.8, 0.999)),
             "threshold": float(rng.uniform(0.5, 0.7)), "min_move": 0.0 if i % 2 else 0.0005,
             "direction": ("long", "short", "both")[i % 3],
             "neutral": "hold" if i % 3 == 2 else ("flat", "hold")[(i // 3) % 2],
             "stop_loss": 0.02 if i % 4 == 0 else None, "take_profit": 0.04 if i % 4 == 0 else None}
            for i in range(n)]


def bench_asmbtr(n_bars: int, n_genomes: int, repeat: int) -> dict:
    import vectorbt as vbt

    from backtest import Evaluator, signals

    close = gbm(n_bars, 2)
    m = market(close)
    genomes = asmbtr_genomes(n_genomes)
    evaluator = Evaluator()
    candles = np.column_stack([m.timestamp, close, close, close, close, np.ones(n_bars)])
    sig = [signals(g, candles) for g in genomes]
    entries = np.column_stack([e for e, _ in sig])
    exits = np.column_stack([x for _, x in sig])
    close2d = np.broadcast_to(close[:, None], entries.shape)
    direction = np.array([{"long": 0, "short": 1, "both": 2}[g["direction"]] for g in genomes])
    sl = np.array([np.nan if g["stop_loss"] is None else g["stop_loss"] for g in genomes])
    tp = np.array([np.nan if g["take_profit"] is None else g["take_profit"] for g in genomes])

    def ours():
        return evaluator.evaluate(genomes, m, None).metric("total_return")[:, 0]

    def theirs():
        pf = vbt.Portfolio.from_signals(close2d, entries, exits, direction=direction, sl_stop=sl, tp_stop=tp,
                                        init_cash=1.0)
        return pf.total_return().values

    out = side_by_side(ours, theirs, evaluator, genomes, m, n_bars, repeat)
    out.update(asmbtr_split(genomes, close, n_bars, repeat))
    return out


def asmbtr_split(genomes: list[dict], close: np.ndarray, n_bars: int, repeat: int) -> dict:
    """Where the asmbtr population path's time goes: the state tables learning (the family's
    targets_group_nb over the population, GROUP genomes side by side, as the path runs it),
    and the same path's remainder (signals, the vectorbt-exact simulation of every fold, metrics)."""
    from backtest.families import asmbtr

    enc = asmbtr._encode(genomes)
    ret = asmbtr.returns_nb(close, n_bars)

    def learner(group: int):
        up = np.empty((group, asmbtr.MAX_STATES))
        down = np.empty((group, asmbtr.MAX_STATES))
        targets = np.empty((group, n_bars), dtype=np.int8)

        def learn():
            for g0 in range(0, len(genomes), group):
                sl = slice(g0, min(g0 + group, len(genomes)))
                asmbtr.targets_group_nb(ret, n_bars, enc["depth"][sl], enc["decay"][sl], enc["threshold"][sl],
                                        enc["min_move"][sl], enc["direction"][sl], enc["hold"][sl], up, down, targets)
        learn()
        return learn

    best = alternating_best({"learn": learner(min(asmbtr.GROUP, len(genomes))), "learn_one": learner(1)}, repeat)
    cells = n_bars * len(genomes)
    return {"learn_ns": best["learn"] / cells * 1e9, "learn_one_ns": best["learn_one"] / cells * 1e9}


def memory_genomes(n: int) -> list[dict]:
    """Random crossover genomes: fast and slow SMA or EMA (EMA rows fill the shared table up to
    its budget; SMAs are computed per time block), random direction and stops."""
    rng = np.random.default_rng(4)
    out = []
    for _ in range(n):
        fast, slow = sorted(int(w) for w in rng.choice(np.arange(2, 401), 2, replace=False))
        a = {"name": str(rng.choice(["sma", "ema"])), "window": fast}
        b = {"name": str(rng.choice(["sma", "ema"])), "window": slow}
        out.append({"entry": {"conditions": [{"lhs": a, "op": "crosses_above", "rhs": b}]},
                    "exit": {"conditions": [{"lhs": a, "op": "crosses_below", "rhs": b}]},
                    "direction": str(rng.choice(["long", "short", "both"])),
                    "stop_loss": float(rng.uniform(0.01, 0.1)) if rng.random() < 0.3 else None})
    return out


def memory_child(n_genomes: int, n_bars: int) -> None:
    from backtest import evaluate

    close = gbm(n_bars, 3)
    m = market(close)
    genomes = memory_genomes(n_genomes)
    t0 = time.perf_counter()
    result = evaluate(genomes, m, [[0, n_bars // 2], [n_bars // 2, n_bars]])
    elapsed = time.perf_counter() - t0
    # VmHWM: this process image's peak RSS (ru_maxrss survives execve on Linux, so it could
    # report the parent's size when the parent holds vectorbt's arrays)
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"peak_mb": peak_kb / 1024, "seconds": elapsed, "evaluated": int(result.ok().sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--strategies", type=int, default=100, help="columns of the simulate() comparison")
    parser.add_argument("--genomes", type=int, default=100, help="genomes of the population comparisons")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (best of)")
    parser.add_argument("--memory-genomes", default="1000,10000", help="population sizes, comma-separated")
    parser.add_argument("--memory-bars", type=int, default=1_000_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-history", action="store_true", help="skip the once-off rerun of the old comparison")
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory_bars)
        return

    a = bench_simulate(args.bars, args.strategies, args.repeat, not args.skip_history)
    print(f"(a) simulate() vs from_signals, fees=0.001, {args.strategies} x {args.bars:,} random signals, "
          f"one call each, best of {args.repeat}")
    print(f"    ours simulate()        {a['ours_ns']:8.2f} ns per bar-strategy")
    print(f"    vectorbt from_signals  {a['vbt_ns']:8.2f} ns per bar-strategy")
    print(f"    ratio vectorbt/ours    {a['vbt_ns'] / a['ours_ns']:8.1f}x (goal >= 50x)")
    print(f"    parity: max rel diff total_return {a['max_rel_diff']:.2e}, trade counts equal: {a['trades_equal']}")
    if "old_vbt_ns" in a:
        print(f"    why older runs said 56-104x: they compared something else: direction=both + slippage + stops, "
              f"vectorbt's side timing from_signals + total_return() + trades.count() (trade records) and getting "
              f"best of 2 calls against our best of 5. That comparison in this run: ours {a['old_ours_ns']:.2f} ns, "
              f"vectorbt {a['old_vbt_ns']:.2f} ns ({a['old_vbt_ns'] / a['old_ours_ns']:.1f}x; from_signals alone "
              f"{a['old_vbt_fs_ns']:.2f} ns, {a['old_vbt_fs_ns'] / a['old_ours_ns']:.1f}x)")

    b = bench_rules(args.bars, args.genomes, args.repeat)
    print(f"(b) population path, Evaluator.evaluate, {args.genomes} genomes x {args.bars:,} bars, best of {args.repeat}")
    print(f"    rules  (SMA crossovers)  ours {b['ours_ns']:6.2f} ns per bar-strategy (goal <= 4)   "
          f"vectorbt MA+cross+from_signals+total_return {b['vbt_ns']:7.2f} ns   "
          f"{b['vbt_ns'] / b['ours_ns']:5.1f}x (goal >= 40x)   max rel diff {b['max_rel_diff']:.1e}   "
          f"trades/bar {b['trades_per_bar']:.4f}")
    d = bench_asmbtr(args.bars, args.genomes, args.repeat)
    print(f"    asmbtr (state table)     ours {d['ours_ns']:6.2f} ns per bar-strategy              "
          f"vectorbt from_signals+total_return on its signals {d['vbt_ns']:7.2f} ns   "
          f"{d['vbt_ns'] / d['ours_ns']:5.1f}x   max rel diff {d['max_rel_diff']:.1e}   "
          f"trades/bar {d['trades_per_bar']:.4f}")
    print("    (asmbtr: vectorbt has no state-table indicator; its side is the simulation of signals we computed, a "
          "lower bound on a vectorbt pipeline; asmbtr trades "
          f"{d['trades_per_bar'] / max(b['trades_per_bar'], 1e-12):.0f}x as often as the crossovers and each order "
          "is the same vectorbt-exact fill)")
    sim_ns = d["ours_ns"] - d["learn_ns"]
    print(f"    asmbtr, where its {d['ours_ns']:.2f} ns go: the state tables learning {d['learn_ns']:.2f} ns (8 tables "
          f"side by side), signals + simulation + metrics {sim_ns:.2f} ns. Why not <= 4 ns: a table is a chain of "
          f"dependent loads and stores from bar to bar (one table at a time: {d['learn_one_ns']:.2f} ns a bar; 8 side "
          f"by side reach {d['learn_ns']:.2f}), and the simulation walks every bar, as the signals change on most bars, with an "
          f"order every {1 / max(d['trades_per_bar'], 1e-12):.1f} bars (vectorbt's own simulation of these signals: "
          f"{d['vbt_ns'] / max(sim_ns, 1e-12):.0f}x our simulation part)")

    if not args.skip_memory:
        sizes = [int(s) for s in args.memory_genomes.split(",") if s.strip()]
        children = [subprocess.Popen([sys.executable, __file__, "--memory-child", str(n), "--memory-bars",
                                      str(args.memory_bars)], stdout=subprocess.PIPE, text=True) for n in sizes]
        rows = []
        for n, child in zip(sizes, children):
            stdout, _ = child.communicate()
            if child.returncode != 0:
                raise SystemExit(f"memory child for {n} genomes failed ({child.returncode})")
            rows.append((n, json.loads(stdout.strip().splitlines()[-1])))
        print(f"(c) memory, random SMA/EMA crossover genomes x {args.memory_bars:,} bars, 2 folds, peak RSS (VmHWM) of "
              "one process each (the default Evaluator: 256 MB table budget, chunks of at most 512)")
        print("    " + "   ".join(f"{n:,} genomes: {c['peak_mb']:6.0f} MB ({c['seconds']:.1f} s, {c['evaluated']} evaluated)"
                                  for n, c in rows))


if __name__ == "__main__":
    main()

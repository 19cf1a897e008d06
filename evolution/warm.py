"""``evolve warm``: compile the JIT kernels of this version of the code once, before a run needs them.

    evolve warm [--if-needed] [--jobs N]

(This module names no JIT library on purpose: ``backtest/jit_cache.py`` versions the cache by
the modules that do, and this one compiles nothing of its own.)

A cold compile of every kernel takes about 100 s of CPU; a run that finds them
missing compiles them in generation 0, in every island actor at once. ``evolve warm`` does it
ahead, in parallel processes, and each kernel is written to the content-keyed cache
(``backtest/jit_cache.py``) where every later process of the same code on this machine loads
it in milliseconds: runs, their Ray workers, ``ray job submit`` working directories, shadow
traders, the Serve replicas. ``./dev setup``, ``./dev demo`` and ``./dev test`` call it with
``--if-needed`` after installing.

The kernels are found by running the product's own paths on a tiny synthetic market, not
from a list: for each registered genome family, random genomes through ``Evaluator.evaluate``
(walk-forward folds with out-of-sample buckets, the holdout without), ``positions``,
``signals`` and a shadow trader's bars; the synthetic market generator and NSGA-II selection;
``simulate``. Each part runs in a process of its own, as many at once as there are CPUs.
When every part has run, a marker (``jit_cache.warm_marker()``) records it, so ``--if-needed``
returns at once for this version of the code.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

WARM_BARS = 600  # enough for three walk-forward folds and a holdout
WARM_GENOMES = 48  # random genomes per family: every indicator, comparison and direction shows up
COMPILE_CPU_SECONDS = 95  # CPU seconds of a cold compile of every part, process starts included (see the README)

EXAMPLES = """examples:
  evolve warm                 # compile what this version of the code lacks, in parallel processes
  evolve warm --if-needed     # nothing to say when it is compiled already (./dev calls this)
  evolve warm --jobs 1        # one part after the other
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    warm = subparsers.add_parser(
        "warm", help="compile the JIT kernels of this version of the code ahead of any run (once per machine)",
        description="Compile every JIT kernel a run, the demo, shadow traders and the Serve endpoint use, by "
        "running their own code paths on a tiny synthetic market in parallel processes. The kernels are "
        "cached by the content of their source ($EVOLVE_JIT_CACHE_DIR, default under ~/.cache/evolve), "
        "so every later process of the same code on this machine (Ray workers and `ray job submit` "
        "working directories included) loads them instead of compiling.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    warm.add_argument("--if-needed", action="store_true",
                      help="print nothing and return at once when this version's kernels are compiled already")
    warm.add_argument("--jobs", type=int, default=None, metavar="N",
                      help="processes compiling at once (default: the CPUs this process may use)")
    warm.set_defaults(func=warm_command)


def warm_command(args: argparse.Namespace) -> int:
    from backtest.jit_cache import is_warm, jit_cache_dir, pin_jit_cache_dir, warm_marker

    if args.jobs is not None and args.jobs < 1:
        print(f"evolve warm: error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    pin_jit_cache_dir()  # the parts' processes compile into the same place
    state = is_warm()
    if state is None:
        if not args.if_needed:
            print("evolve warm: the kernel cache is off (EVOLVE_JIT_CACHE_DIR=off or NUMBA_CACHE_DIR set): "
                  "nothing kept to warm", file=sys.stderr)
        return 0
    if state:
        if not args.if_needed:
            print(f"kernels of this version of the code are compiled already ({jit_cache_dir()})")
        return 0
    jobs = args.jobs or available_cpus()
    parts = warm_parts()
    workers = min(jobs, len(parts))
    print(f"compiling kernels (first set-up only, about {expected_seconds(workers):.0f} s on "
          f"{workers} CPU{'s' if workers > 1 else ''})...", flush=True)
    started = time.perf_counter()
    try:
        times, failed = compile_parts(parts, workers)
    except KeyboardInterrupt:
        print("evolve warm: interrupted; what was compiled is kept, `evolve warm` compiles the rest",
              file=sys.stderr)
        return 130
    seconds = time.perf_counter() - started
    if failed:
        for part, error in failed:
            print(f"evolve warm: error: {part}: {error}", file=sys.stderr)
        print(f"evolve warm: {len(failed)} of {len(parts)} parts failed after {seconds:.0f} s; a run compiles what "
              "is missing itself", file=sys.stderr)
        return 1
    marker = warm_marker()
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"seconds": round(seconds, 1), "processes": workers, "parts": times}, indent=1))
        os.replace(tmp, marker)
    except OSError as error:  # e.g. a read-only cache: the kernels went to the JIT's own places
        print(f"compiled kernels in {seconds:.0f} s, but {marker.parent} cannot be written ({error.strerror or error}): "
              "`evolve warm` will run again; set EVOLVE_JIT_CACHE_DIR to a writable folder", flush=True)
        return 0
    print(f"compiled kernels in {seconds:.0f} s ({jit_cache_dir()})", flush=True)
    return 0


def expected_seconds(workers: int) -> float:
    """How long compiling should take: what the last warm-up of another version took on this
    machine with as many processes, else the CPU time measured on a quiet machine, shared."""
    from backtest.jit_cache import jit_cache_dir

    earlier = []
    for marker in jit_cache_dir().glob("warm-*.json"):
        try:
            record = json.loads(marker.read_text())
            if record["processes"] == workers:
                earlier.append((marker.stat().st_mtime, float(record["seconds"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    seconds = max(earlier)[1] if earlier else COMPILE_CPU_SECONDS / workers
    return max(10.0, round(seconds, -1))


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def warm_parts() -> list[str]:
    """The parts, each compiled in one process: one per registered genome family, then the rest."""
    from backtest.families import FAMILY_NAMES

    return [*(f"family:{name}" for name in FAMILY_NAMES), "simulate", "search"]  # the longest first


def compile_parts(parts: list[str], workers: int) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """Run every part (in ``workers`` fresh processes; in this one when ``workers`` is 1): the
    times of those that ran, and those that failed with their errors."""
    times, failed = {}, []
    if workers == 1:
        for part in parts:
            try:
                times[part] = run_part(part)
            except Exception as error:  # noqa: BLE001 - reported, the other parts go on
                failed.append((part, f"{type(error).__name__}: {error}"))
        return times, failed
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_part, part): part for part in parts}
        for future in as_completed(futures):
            try:
                times[futures[future]] = future.result()
            except Exception as error:  # noqa: BLE001
                failed.append((futures[future], f"{type(error).__name__}: {error}"))
    return times, failed


def run_part(part: str) -> dict:
    """Run one part in this process: its wall and CPU seconds (most of both: compiling)."""
    wall, cpu = time.perf_counter(), time.process_time()
    _run(part)
    return {"seconds": round(time.perf_counter() - wall, 1), "cpu_seconds": round(time.process_time() - cpu, 1)}


def _run(part: str) -> None:
    if part.startswith("family:"):
        family_paths(part.split(":", 1)[1])
    elif part == "search":
        search_paths()
    elif part == "simulate":
        simulate_paths()
    else:
        raise ValueError(f"unknown part {part!r}; choose one of {warm_parts()}")


def _market():
    from backtest.data import PlantedEdge, synthetic_market

    return synthetic_market(WARM_BARS, seed=0, interval_ms=3_600_000, planted_edge=PlantedEdge())


def family_paths(family: str) -> None:
    """What a search, the gates, the report, a shadow trader and the Serve endpoint run for a
    family's genomes."""
    import numpy as np

    from backtest import Evaluator, GenomeError, positions, signals
    from backtest.validation import walk_forward_split
    from evolution.families import init_genome
    from serving.state import FileStateStore
    from serving.trader import ShadowConfig, ShadowSpec, ShadowTrader

    market = _market()
    rng = np.random.default_rng(0)
    population = [init_genome(rng, 3, family) for _ in range(WARM_GENOMES)]
    split = walk_forward_split(len(market), n_folds=3, holdout_fraction=0.25, train_fraction=0.2)
    evaluator = Evaluator()
    evaluator.evaluate(population, market, split, bucket_bars=20, normalized=True)  # an island's generation
    evaluator.evaluate(population, market, split.holdout_range(), fees=0.001, slippage=0.0005)  # the gates
    genome = population[0]
    positions(genome, market.to_rows())  # the Serve endpoint's candles
    try:
        signals(genome, market)
    except GenomeError:  # a family whose positions entry/exit signals cannot express
        pass
    with tempfile.TemporaryDirectory() as state_dir:
        config = ShadowConfig(window_bars=64, warmup_factor=8, max_history_bars=1000, state_dir=state_dir)
        trader = ShadowTrader(ShadowSpec(genome, "bars:warm"), config, FileStateStore(state_dir))
        for row in market.to_rows()[:150]:
            trader.on_bar(dict(zip(("timestamp", "open", "high", "low", "close", "volume"), row)))
        trader.metrics()


def search_paths() -> None:
    """The search's own kernels besides the backtest: the synthetic market, NSGA-II ranks."""
    import numpy as np

    from evolution.nsga import select_nsga2

    _market()
    select_nsga2(np.random.default_rng(0).normal(size=(16, 2)), np.array([1.0, -1.0]), 8)


def simulate_paths() -> None:
    """``backtest.simulate`` (the vectorbt-compatible contract), with its equity."""
    import numpy as np

    from backtest import simulate

    close = np.linspace(100.0, 110.0, 50)
    entries = np.zeros((50, 2), dtype=bool)
    exits = np.zeros((50, 2), dtype=bool)
    entries[5], exits[20] = True, True
    assert simulate(close, entries, exits, direction="both", sl_stop=0.02, tp_stop=0.05).equity.shape == (50, 2)

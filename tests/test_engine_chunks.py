"""The population path's results do not depend on how it is cut: chunk sizes, memory budgets,
time blocks, and the crossing pairs decided without dividing. Each is held to exact equality."""
from __future__ import annotations

import numpy as np
import pytest

from backtest import Evaluator, evaluate, events, fused, signals
from backtest.data import synthetic_market
from backtest.engine import market_arrays
from backtest.families.rules import sma_crossover_genome
from backtest.kernels import N_METRICS
from backtest.metrics import periods_per_year
from evolution.families.rules import init_genome as random_genome

N_BARS = fused.TIME_BLOCK * 3 + 517  # several time blocks and a ragged last one


@pytest.fixture(scope="module")
def market():
    return synthetic_market(N_BARS, seed=21)


def _asmbtr(i: int) -> dict:
    return {"family": "asmbtr", "depth": 1 + i % 12, "decay": 0.8 + 0.01 * (i % 19), "threshold": 0.5 + 0.02 * (i % 10),
            "min_move": 0.0 if i % 2 else 0.0005, "direction": ("long", "short", "both")[i % 3],
            "neutral": ("flat", "hold")[(i // 3) % 2], "stop_loss": 0.02 if i % 4 == 0 else None,
            "take_profit": 0.04 if i % 4 == 0 else None}


def _population() -> list[dict]:
    rules = [random_genome(np.random.default_rng(s)) for s in range(40)]
    crossings = [sma_crossover_genome(f, 3 * f, d) for f, d in zip(range(4, 40, 3), ("long", "short", "both") * 4)]
    return rules + crossings + [_asmbtr(i) for i in range(12)]


@pytest.mark.parametrize("memory_bytes, max_chunk", [(8 * N_BARS * 2, 512), (256 * 2**20, 1), (256 * 2**20, 7),
                                                     (8 * N_BARS * 5, 3)])
def test_results_do_not_depend_on_the_chunks(market, memory_bytes, max_chunk):
    genomes = _population()
    folds = [[150, 3000], [3000, 4100], [4500, N_BARS]]
    kw = dict(fees=0.001, slippage=0.0005, bucket_bars=211)
    whole = Evaluator().evaluate(genomes, market, folds, **kw)
    cut = Evaluator(memory_bytes=memory_bytes, max_chunk=max_chunk).evaluate(genomes, market, folds, **kw)
    assert not whole.errors and not cut.errors
    np.testing.assert_array_equal(whole.metrics, cut.metrics)
    np.testing.assert_array_equal(whole.buckets, cut.buckets)


def _one_piece(genome, market, folds, fees, slippage):
    """The path before time blocks: the genome's full-history signals, then each fold walked in
    one piece (events.simulate_fold_events_nb), its metrics from fused.write_metrics."""
    e, x = signals(genome, market)
    close = market_arrays(market).close
    prefix, blocks = events.market_summary_nb(close)
    n8 = len(e) - len(e) % 8
    direction = {"long": 0, "short": 1, "both": 2}[genome["direction"]]
    sl = np.nan if genome["stop_loss"] is None else genome["stop_loss"]
    tp = np.nan if genome["take_profit"] is None else genome["take_profit"]
    out = np.empty((len(folds), N_METRICS))
    acc = np.empty(15)
    for f, (start, end) in enumerate(folds):
        events.simulate_fold_events_nb(close, prefix, blocks, e, x, e[:n8].view(np.uint64), x[:n8].view(np.uint64),
                                       start, end, direction, fees, slippage, 1.0, sl, tp, acc, np.ones(0), 0, 0,
                                       np.empty(0, np.int8))
        fused.write_metrics(out[f], acc, 1.0, end - start, periods_per_year(market.interval_ms))
    return out


def _plateau_market():
    """Closes that repeat for stretches: SMAs tie exactly, so crossing pairs fall back to dividing."""
    market = synthetic_market(N_BARS, seed=4)
    close = market.close.copy()
    for start in range(300, N_BARS, 700):
        close[start:start + 250] = close[start]
    return type("Plateaus", (), {"timestamp": market.timestamp, "high": close, "low": close, "close": close,
                                 "interval_ms": market.interval_ms})


@pytest.mark.parametrize("which", ["random", "plateaus"])
def test_time_blocks_equal_one_piece_walks(market, which):
    """The time-blocked kernel against the one-piece walk of each genome: bit for bit, on random
    genomes and on SMA / close crossings (the pairs decided without dividing), also where the
    SMAs tie."""
    bars = market if which == "random" else _plateau_market()
    genomes = [random_genome(np.random.default_rng(100 + s)) for s in range(25)]
    genomes += [sma_crossover_genome(f, s, d) for f, s, d in ((3, 9, "long"), (5, 50, "both"), (20, 21, "short"),
                                                              (2, 400, "both"), (7, 8, "long"))]
    close_cross = {"entry": {"conditions": [{"lhs": {"name": "close"}, "op": "crosses_above",
                                             "rhs": {"name": "sma", "window": 30}}]},
                   "exit": {"conditions": [{"lhs": {"name": "close"}, "op": "crosses_below",
                                            "rhs": {"name": "sma", "window": 30}}]},
                   "direction": "both", "stop_loss": 0.01, "take_profit": None}
    genomes.append(close_cross)
    folds = [[0, fused.TIME_BLOCK + 5], [fused.TIME_BLOCK + 5, 3 * fused.TIME_BLOCK], [3 * fused.TIME_BLOCK + 1, N_BARS]]
    got = evaluate(genomes, bars, folds, fees=0.001, slippage=0.0005)
    assert not got.errors
    for g, genome in enumerate(genomes):
        np.testing.assert_array_equal(got.metrics[g], _one_piece(genome, bars, folds, 0.001, 0.0005), err_msg=str(genome))

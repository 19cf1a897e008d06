"""evaluate() and positions(): the fused population path against simulate() and references."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import Evaluator, evaluate, positions, signals, simulate
from backtest.data import PlantedEdge, planted_edge_genome, synthetic_market
from backtest.families.base import SIMULATE_DIRECTION_OF
from backtest.families.rules import sma_crossover_genome
from backtest.metrics import METRIC_NAMES, equity_metrics, periods_per_year
from backtest.strategy import normalize_genome
from evolution.families.rules import init_genome as random_genome


@pytest.fixture(scope="module")
def market():
    return synthetic_market(4000, seed=11)


def _reference(genome, market, start, end, fees=0.0):
    """simulate() on the genome's signals over [start, end), plus numpy metrics."""
    e, x = signals(genome, market)
    r = simulate(market.close[start:end], e[start:end], x[start:end], direction=SIMULATE_DIRECTION_OF[genome["direction"]],
                 sl_stop=genome["stop_loss"], tp_stop=genome["take_profit"], fees=fees)
    em = equity_metrics(r.equity[:, 0], 1.0, periods_per_year(market.interval_ms))
    return r, em


@pytest.mark.parametrize("seed", range(25))
def test_fused_path_equals_simulate_and_numpy_metrics(market, seed):
    genome = random_genome(np.random.default_rng(seed))
    folds = [[200, 2000], [2000, 4000]]
    result = evaluate([genome], market, folds, fees=0.001)
    for f, (start, end) in enumerate(folds):
        r, em = _reference(genome, market, start, end, fees=0.001)
        assert result.metric("total_return")[0, f] == pytest.approx(r.total_return[0], rel=1e-9, abs=1e-12)
        assert result.metric("n_trades")[0, f] == r.n_trades[0]
        for name in ("sharpe", "max_drawdown", "cagr"):
            assert result.metric(name)[0, f] == pytest.approx(float(em[name]), rel=1e-7, abs=1e-9), name


def test_population_matches_vectorbt_ma_crossover(market):
    vbt = pytest.importorskip("vectorbt")
    fast = np.arange(5, 25)
    genomes = [sma_crossover_genome(int(f), int(3 * f)) for f in fast]
    ours = evaluate(genomes, market).metric("total_return")[:, 0]
    close = market.close
    fast_ma = vbt.MA.run(close, window=list(fast))
    slow_ma = vbt.MA.run(close, window=list(3 * fast))
    entries = fast_ma.ma_crossed_above(slow_ma.ma.values)
    exits = fast_ma.ma_crossed_below(slow_ma.ma.values)
    pf = vbt.Portfolio.from_signals(np.broadcast_to(close[:, None], entries.shape), entries, exits, init_cash=1.0)
    np.testing.assert_allclose(ours, pf.total_return().values, rtol=1e-9, atol=1e-12)


def _reference_positions(genome, market):
    """An independent, plain-Python position state machine (no costs) on the genome's signals."""
    e, x = signals(genome, market)
    direction = genome["direction"]
    sl, tp = genome["stop_loss"], genome["take_profit"]
    pos, entry_price, out = 0, None, []
    for t, c in enumerate(market.close):
        hit = False
        if pos != 0:
            if pos > 0:
                hit = (sl is not None and c <= entry_price * (1 - sl)) or (tp is not None and c >= entry_price * (1 + tp))
            else:
                hit = (sl is not None and c >= entry_price * (1 + sl)) or (tp is not None and c <= entry_price * (1 - tp))
        new = pos
        if hit:
            new = 0
        elif e[t] != x[t]:
            if direction == "long":
                new = 1 if (e[t] and pos == 0) else (0 if x[t] and pos > 0 else pos)
            elif direction == "short":
                new = -1 if (e[t] and pos == 0) else (0 if x[t] and pos < 0 else pos)
            else:
                new = 1 if e[t] else -1
        if new != pos and new != 0:
            entry_price = c
        pos = new
        out.append(pos)
    return np.array(out)


@pytest.mark.parametrize("seed", range(30))
def test_positions_match_an_independent_state_machine(market, seed):
    genome = random_genome(np.random.default_rng(1000 + seed))
    np.testing.assert_array_equal(positions(genome, market), _reference_positions(genome, market))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(2, 1500))
def test_positions_have_no_look_ahead(seed, cut):
    market = synthetic_market(1500, seed=seed % 1000)
    genome = random_genome(np.random.default_rng(seed))
    frame = market.to_frame()
    full = positions(genome, frame)
    part = positions(genome, frame.iloc[:cut])
    np.testing.assert_array_equal(part, full[:cut])


def test_positions_accept_ccxt_rows_and_dataframes(market):
    genome = sma_crossover_genome(5, 20, direction="both")
    frame = market.to_frame()
    rows = frame.to_numpy().tolist()
    a = positions(genome, frame)
    b = positions(genome, rows)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64 and set(np.unique(a)) <= {-1, 0, 1}


@pytest.mark.parametrize(
    "candles, message",
    [
        ([[1, 1, 1, 1, 1]], "rows of"),
        ([[1, 1.0, 2.0, 0.5, float("nan"), 1.0]], "candles: row 0.*close is nan.*NaN"),
        ([[2, 1.0, 2.0, 0.5, 1.0, 1.0], [1, 1.0, 2.0, 0.5, 1.0, 1.0]], "candles: row 1.*not sorted.*oldest first"),
        ([[1, 1.0, 0.5, 2.0, 1.0, 1.0]], r"candles: row 0.*high \(0.5\) is below low \(2.0\)"),
        ([[1, 1.0, 2.0, 0.5, 1.0, 1.0], [2.5, 1.0, 2.0, 0.5, 1.0, 1.0]], "not a whole number of milliseconds"),
        (pd.DataFrame({"close": [1.0]}), "candles: missing column"),
        ("not candles", "expected a DataFrame"),
    ],
)
def test_positions_bad_candles(candles, message):
    with pytest.raises(ValueError, match=message):
        positions(sma_crossover_genome(5, 20), candles)


def test_positions_take_candles_with_gaps_and_irregular_steps(market):
    """positions() checks candles with the data layer's rules but not its bar grid: a feed may skip bars."""
    frame = market.to_frame().iloc[:600]
    gappy = frame.drop(index=list(range(100, 130)) + [400]).reset_index(drop=True)
    genome = sma_crossover_genome(5, 20, direction="both")
    got = positions(genome, gappy)
    assert got.shape == (len(gappy),)
    np.testing.assert_array_equal(positions(genome, gappy.to_numpy().tolist()), got)


def test_folds_are_independent_and_chunking_does_not_change_results(market):
    genomes = [random_genome(np.random.default_rng(s)) for s in range(40)]
    together = evaluate(genomes, market, [[100, 1500], [1500, 4000]])
    first = evaluate(genomes, market, [[100, 1500]])
    tiny_chunks = Evaluator(memory_bytes=8 * 4000 * 3).evaluate(genomes, market, [[100, 1500], [1500, 4000]])
    np.testing.assert_array_equal(together.metrics[:, :1], first.metrics)
    np.testing.assert_array_equal(together.metrics, tiny_chunks.metrics)


def test_bad_genomes_are_values_not_exceptions(market):
    good = sma_crossover_genome(5, 20)
    bad = {"entry": {"conditions": []}, "direction": "long"}
    result = evaluate([good, bad, good], market)
    assert list(result.errors) == [1] and "conditions" in result.errors[1]
    assert np.isnan(result.metrics[1]).all()
    np.testing.assert_array_equal(result.metrics[0], result.metrics[2])  # same strategy, evaluated once
    assert result.strategy_ids[0] == result.strategy_ids[2] and result.strategy_ids[1] is None
    assert result.ok().tolist() == [True, False, True]


def test_buckets_compound_to_the_fold_returns(market):
    genomes = [random_genome(np.random.default_rng(s)) for s in range(10)]
    folds = [[500, 1700], [1700, 4000]]
    result = evaluate(genomes, market, folds, bucket_bars=250, fees=0.0005)
    assert result.buckets.shape == (10, 14)
    growth = np.prod(result.buckets, axis=1)
    expected = np.prod(1.0 + result.metric("total_return"), axis=1)
    np.testing.assert_allclose(growth, expected, rtol=1e-9)


def test_planted_edge_rule_scores_well_on_its_market():
    edge = PlantedEdge()
    planted = synthetic_market(100_000, seed=5, planted_edge=edge)
    flat = synthetic_market(100_000, seed=5)
    genome = planted_edge_genome(edge)
    with_edge = evaluate([genome], planted).metric("sharpe")[0, 0]
    without = evaluate([genome], flat).metric("sharpe")[0, 0]
    assert with_edge > 1.5 and with_edge > without + 1.0


def test_metric_names_and_bad_arguments(market):
    result = evaluate([sma_crossover_genome(5, 20)], market)
    assert result.metrics.shape == (1, 1, len(METRIC_NAMES))
    with pytest.raises(KeyError, match="unknown metric"):
        result.metric("sharp")
    with pytest.raises(ValueError, match="overlap"):
        evaluate([sma_crossover_genome(5, 20)], market, [[0, 100], [50, 200]])
    with pytest.raises(ValueError, match="at least 2 bars"):
        evaluate([sma_crossover_genome(5, 20)], market, [[0, 1]])
    with pytest.raises(ValueError, match="OHLCV frame"):
        evaluate([sma_crossover_genome(5, 20)], object())
    with pytest.raises(ValueError, match="fees"):
        evaluate([sma_crossover_genome(5, 20)], market, fees=2.0)


@pytest.mark.parametrize("swap_exit", [False, True])
@pytest.mark.parametrize("entry_op", ["crosses_above", "crosses_below"])
def test_crossover_pair_fast_path_equals_general_path(market, swap_exit, entry_op):
    """Entry and exit crossing the same two indicators take a one-pass kernel; adding a
    never-binding second exit condition forces the general path: signals must agree."""
    f, s = {"name": "ema", "window": 8}, {"name": "sma", "window": 30}
    exit_op = "crosses_below" if entry_op == "crosses_above" else "crosses_above"
    exit_cond = {"lhs": s, "op": entry_op, "rhs": f} if swap_exit else {"lhs": f, "op": exit_op, "rhs": s}
    pair = {"entry": {"logic": "and", "conditions": [{"lhs": f, "op": entry_op, "rhs": s}]},
            "exit": {"logic": "or", "conditions": [exit_cond]}, "direction": "both"}
    general = {**pair, "exit": {"logic": "or", "conditions": [exit_cond,
               {"lhs": {"name": "rsi", "window": 14}, "op": ">", "rhs": 100.0}]}}
    a = evaluate([pair], market).metrics
    b = evaluate([general], market).metrics
    np.testing.assert_array_equal(a, b)
    assert a[0, 0, 8] > 0  # it traded


@pytest.mark.parametrize("seed", range(15))
def test_event_driven_fold_equals_the_bar_by_bar_reference(market, seed):
    """events.simulate_fold_events_nb (stretches, prefix sums, block skipping) against the
    plain per-bar fold simulation, on every metric and every bucket."""
    from backtest import events, fused
    from backtest.kernels import N_METRICS

    genome = random_genome(np.random.default_rng(500 + seed))
    genome["stop_loss"] = genome["stop_loss"] or 0.02
    e, x = signals(genome, market)
    close = market.close
    prefix, blocks = events.market_summary_nb(close)
    direction = {"long": 0, "short": 1, "both": 2}[genome["direction"]]
    sl = np.nan if genome["stop_loss"] is None else genome["stop_loss"]
    tp = np.nan if genome["take_profit"] is None else genome["take_profit"]
    start, end, bucket = 130, 3900, 97
    ref = np.empty(N_METRICS)
    ref_buckets = np.ones(-(-(end - start) // bucket))
    fused.simulate_fold_nb(close, e, x, np.empty(0, np.bool_), start, end, direction, 0.001, 0.0005, 1.0, sl, tp, 525960.0, ref,
                           bucket, start, ref_buckets, np.empty(0, np.int8))
    acc = np.empty(15)
    got_buckets = np.ones_like(ref_buckets)
    n8 = len(e) - len(e) % 8
    events.simulate_fold_events_nb(close, prefix, blocks, e, x, e[:n8].view(np.uint64), x[:n8].view(np.uint64),
                                   start, end, direction, 0.001, 0.0005, 1.0, sl, tp, acc, got_buckets, bucket,
                                   start, np.empty(0, np.int8))
    got = np.empty(N_METRICS)
    fused.write_metrics(got, acc, 1.0, end - start, 525960.0)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got_buckets, ref_buckets, rtol=1e-10)


def _hour(op, value):
    return {"lhs": {"name": "hour"}, "op": op, "rhs": value}


CLOCK_GENOMES = [
    # long over the bars opening 13:00..16:00 UTC (levels), short from Monday to Wednesday (crossings)
    {"entry": {"logic": "and", "conditions": [_hour(">", 12.5), _hour("<", 16.5)]},
     "exit": {"logic": "or", "conditions": [_hour("<", 12.5), _hour(">", 16.5)]}, "direction": "long"},
    {"entry": {"logic": "and", "conditions": [{"lhs": {"name": "day_of_week"}, "op": "crosses_below", "rhs": 0.5}]},
     "exit": {"logic": "and", "conditions": [{"lhs": {"name": "day_of_week"}, "op": "crosses_above", "rhs": 2.5}]},
     "direction": "short", "stop_loss": 0.03},
]


def test_clock_genomes_agree_on_every_path():
    market = synthetic_market(4000, seed=11, interval_ms=3_600_000)  # hourly: 24 weeks
    stamps = pd.to_datetime(np.asarray(market.timestamp), unit="ms", utc=True)
    hour, weekday = np.asarray(stamps.hour), np.asarray(stamps.day_of_week)
    first = positions(CLOCK_GENOMES[0], market)
    np.testing.assert_array_equal(first, ((hour >= 13) & (hour <= 16)).astype(np.int64))
    rows = market.to_frame().to_numpy().tolist()
    for genome in CLOCK_GENOMES:
        mine = positions(genome, market)
        np.testing.assert_array_equal(mine, _reference_positions(normalize_genome(genome), market))
        np.testing.assert_array_equal(positions(genome, market.to_frame()), mine)
        np.testing.assert_array_equal(positions(genome, rows), mine)  # ccxt rows: float timestamps
    second = positions(CLOCK_GENOMES[1], market)
    assert (second[weekday >= 3] == 0).all() and (second == -1).any()
    # the population path: each clock genome among random ones (one shared table) scores as
    # simulate() on its signals, and as when evaluated alone
    folds = [[200, 2000], [2000, 4000]]
    population = [random_genome(np.random.default_rng(s)) for s in range(6)] + [normalize_genome(g) for g in CLOCK_GENOMES]
    together = evaluate(population, market, folds, fees=0.001)
    assert not together.errors
    for i, genome in enumerate(population[-2:], start=len(population) - 2):
        alone = evaluate([genome], market, folds, fees=0.001)
        np.testing.assert_array_equal(together.metrics[i], alone.metrics[0])
        for f, (start, end) in enumerate(folds):
            r, em = _reference(genome, market, start, end, fees=0.001)
            assert together.metric("total_return")[i, f] == pytest.approx(r.total_return[0], rel=1e-9, abs=1e-12)
            assert together.metric("n_trades")[i, f] == r.n_trades[0] > 0
            assert together.metric("sharpe")[i, f] == pytest.approx(float(em["sharpe"]), rel=1e-7, abs=1e-9)

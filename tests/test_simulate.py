"""simulate(): hand-checked cases, parity with vectorbt, properties, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import simulate


def _sig(n, idx):
    a = np.zeros(n, dtype=bool)
    a[list(idx)] = True
    return a


# ---------------------------------------------------------------- hand-checked five-bar cases


def test_long_round_trip_without_costs():
    close = np.array([10.0, 11.0, 12.0, 9.0, 10.0])
    r = simulate(close, _sig(5, [1]), _sig(5, [3]), init_cash=100.0)
    # buy 100/11 units at 11, sell at 9 -> 100 * 9 / 11
    assert r.final_value[0] == pytest.approx(100 * 9 / 11, rel=1e-12)
    assert r.n_trades[0] == 1
    np.testing.assert_allclose(r.equity[:, 0], [100, 100, 100 * 12 / 11, 100 * 9 / 11, 100 * 9 / 11], rtol=1e-12)


def test_long_with_fees_and_slippage():
    close = np.array([10.0, 10.0, 20.0, 20.0, 20.0])
    r = simulate(close, _sig(5, [0]), _sig(5, [2]), init_cash=1.0, fees=0.01, slippage=0.02)
    units = (1.0 / 1.01) / (10.0 * 1.02)  # all-in: cash / (1 + fees) at the slipped price
    proceeds = units * 20.0 * 0.98 * (1 - 0.01)
    assert r.final_value[0] == pytest.approx(proceeds, rel=1e-12)
    assert r.total_return[0] == pytest.approx(proceeds - 1.0, rel=1e-12)


def test_short_gains_when_price_falls():
    close = np.array([10.0, 10.0, 5.0, 5.0, 5.0])
    r = simulate(close, _sig(5, [1]), _sig(5, [3]), direction="shortonly", init_cash=1.0)
    # short 0.1 units at 10 (cash 2.0), cover at 5 -> 1.5
    assert r.final_value[0] == pytest.approx(1.5, rel=1e-12)
    assert r.n_trades[0] == 1


def test_both_reverses_and_counts_open_trade():
    close = np.array([10.0, 10.0, 12.0, 6.0, 6.0])
    entries = _sig(5, [0])
    exits = _sig(5, [2])  # reverse long -> short at 12
    r = simulate(close, entries, exits, direction="both", init_cash=1.0)
    # long 0.1 @10 -> value 1.2 at 12; short 0.1 units worth 1.2 @12 -> at 6 value 1.2 + 0.1*6 = 1.8
    assert r.final_value[0] == pytest.approx(1.8, rel=1e-12)
    assert r.n_trades[0] == 2  # one closed, one still open


def test_conflicting_signals_are_ignored():
    close = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    both = _sig(5, [1])
    r = simulate(close, both, both, init_cash=1.0)
    assert r.n_trades[0] == 0
    np.testing.assert_array_equal(r.equity[:, 0], np.ones(5))


def test_stop_loss_exits_at_close_without_slippage():
    close = np.array([10.0, 10.0, 9.6, 9.4, 20.0])
    r = simulate(close, _sig(5, [1]), _sig(5, []), sl_stop=0.05, slippage=0.01, init_cash=1.0)
    units = 1.0 / (10.0 * 1.01)
    assert r.final_value[0] == pytest.approx(units * 9.4, rel=1e-12)  # 9.4 <= 9.5, filled at close
    assert r.n_trades[0] == 1


def test_take_profit_for_short():
    close = np.array([10.0, 10.0, 9.05, 8.9, 5.0])  # level 9.0: not hit at 9.05, hit at 8.9
    r = simulate(close, _sig(5, [0]), _sig(5, []), direction="shortonly", tp_stop=0.1, init_cash=1.0)
    assert r.final_value[0] == pytest.approx(2.0 - 0.1 * 8.9, rel=1e-12)


def test_one_dimensional_inputs_are_one_strategy():
    close = np.linspace(10, 20, 50)
    r = simulate(close, _sig(50, [3]), _sig(50, [40]))
    assert r.total_return.shape == (1,) and r.equity.shape == (50, 1)


def test_close_per_column():
    rng = np.random.default_rng(0)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.01, (200, 3)), axis=0)
    e = rng.random((200, 3)) < 0.05
    x = rng.random((200, 3)) < 0.05
    both = simulate(close, e, x)
    for j in range(3):
        single = simulate(close[:, j], e[:, j], x[:, j])
        assert single.total_return[0] == both.total_return[j]


# ---------------------------------------------------------------- parity with vectorbt


@pytest.fixture(scope="module")
def vbt():
    return pytest.importorskip("vectorbt")


@pytest.mark.parametrize("direction", ["longonly", "shortonly", "both"])
@pytest.mark.parametrize(
    "costs",
    [
        {},
        {"fees": 0.001, "slippage": 0.0005},
        {"fees": 0.002, "slippage": 0.001, "sl_stop": 0.02, "tp_stop": 0.04},
        {"sl_stop": 0.01},
        {"tp_stop": 0.03, "fees": 0.0005},
    ],
)
def test_parity_with_vectorbt(vbt, direction, costs):
    rng = np.random.default_rng(hash((direction, tuple(sorted(costs)))) % 2**32)
    n_bars, n = 1500, 12
    close = 100 * np.cumprod(1 + rng.normal(0, 0.012, n_bars))
    entries = rng.random((n_bars, n)) < 0.04
    exits = rng.random((n_bars, n)) < 0.04
    ours = simulate(close, entries, exits, direction=direction, init_cash=1.0, **costs)
    close2d = np.broadcast_to(close[:, None], entries.shape)  # vectorbt 1.2 needs close broadcast
    pf = vbt.Portfolio.from_signals(close2d, entries, exits, direction=direction, init_cash=1.0, **costs)
    np.testing.assert_allclose(ours.total_return, pf.total_return().values, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.final_value, pf.final_value().values, rtol=1e-9)
    np.testing.assert_array_equal(ours.n_trades, pf.trades.count().values)
    np.testing.assert_allclose(ours.equity, pf.value().values, rtol=1e-9)


def test_parity_per_column_stops(vbt):
    rng = np.random.default_rng(7)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.01, (800, 4)), axis=0)
    e = rng.random((800, 4)) < 0.05
    x = rng.random((800, 4)) < 0.02
    sl = np.array([0.01, np.nan, 0.03, 0.05])
    ours = simulate(close, e, x, direction="both", sl_stop=sl, fees=0.001)
    pf = vbt.Portfolio.from_signals(close, e, x, direction="both", sl_stop=sl, fees=0.001, init_cash=1.0)
    np.testing.assert_allclose(ours.total_return, pf.total_return().values, rtol=1e-9)
    np.testing.assert_array_equal(ours.n_trades, pf.trades.count().values)


# ---------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 60),
    seed=st.integers(0, 2**32 - 1),
    direction=st.sampled_from(["longonly", "shortonly", "both"]),
    init_cash=st.floats(0.5, 1e6),
)
def test_no_signals_means_flat_equity(n, seed, direction, init_cash):
    close = 50 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.02, n)))
    none = np.zeros((n, 2), dtype=bool)
    r = simulate(close, none, none, direction=direction, init_cash=init_cash, fees=0.01, sl_stop=0.01)
    assert (r.equity == init_cash).all()
    assert (r.n_trades == 0).all() and (r.total_return == 0).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(1, 80))
def test_equity_has_no_look_ahead(seed, cut):
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, 80)))
    e = rng.random(80) < 0.1
    x = rng.random(80) < 0.1
    full = simulate(close, e, x, direction="both", fees=0.001, sl_stop=0.03).equity[:, 0]
    part = simulate(close[:cut], e[:cut], x[:cut], direction="both", fees=0.001, sl_stop=0.03).equity[:, 0]
    np.testing.assert_array_equal(part, full[:cut])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"close": np.arange(1, 6)}, "float64"),
        ({"close": np.array([1.0, np.nan, 2.0, 3.0, 4.0])}, "finite and positive"),
        ({"close": np.array([1.0, -1.0, 2.0, 3.0, 4.0])}, "index"),
        ({"entries": np.zeros(5, dtype=np.int64)}, "dtype bool"),
        ({"exits": np.zeros(4, dtype=bool)}, "same shape"),
        ({"close": [1.0, 2.0, 3.0, 4.0, 5.0]}, "numpy array"),
        ({"direction": "long"}, "direction"),
        ({"fees": -0.1}, "fees"),
        ({"slippage": float("nan")}, "slippage"),
        ({"init_cash": 0}, "init_cash"),
        ({"sl_stop": -0.1}, "sl_stop"),
        ({"tp_stop": np.array([0.1, 0.2])}, "tp_stop"),
    ],
)
def test_bad_input_says_what_to_pass(kwargs, message):
    args = {
        "close": np.linspace(1.0, 2.0, 5),
        "entries": np.zeros(5, dtype=bool),
        "exits": np.zeros(5, dtype=bool),
    }
    args.update(kwargs)
    close, entries, exits = args.pop("close"), args.pop("entries"), args.pop("exits")
    with pytest.raises(ValueError, match=message):
        simulate(close, entries, exits, **args)


def test_two_dimensional_close_with_one_dimensional_signals_is_rejected():
    with pytest.raises(ValueError, match="2-D entries"):
        simulate(np.ones((5, 2)), np.zeros(5, dtype=bool), np.zeros(5, dtype=bool))

"""The gates' parts: market-scaled thresholds, PBO candidates, rankings, config errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evolution_helpers import small_config

from evolution.config import ConfigError, parse_config
from evolution.gates import _verdict, buy_and_hold_drawdown, pbo_columns
from evolution.ranking import rank_scores, rank_trials


def test_buy_and_hold_drawdown_is_measured_over_the_holdout_bars_only():
    close = np.array([100.0, 50.0, 80.0, 120.0, 90.0, 130.0])
    assert buy_and_hold_drawdown(close, 2, 6) == pytest.approx(0.25)  # 120 -> 90
    assert buy_and_hold_drawdown(close, 0, 3) == pytest.approx(0.5)


def test_drawdown_and_trade_gates_scale_with_the_market_and_the_holdout_length():
    gates = small_config().gates.model_copy(update={"max_drawdown_vs_market": 1.0, "min_trades_per_year": 10.0,
                                                    "min_trades": 5, "max_drawdown": None, "min_calmar": 0.5})
    holdout = {"n_trades": 30, "max_drawdown": 0.18, "calmar": 0.8}
    verdict = _verdict(gates, holdout, 0.99, 0.99, 0.1, market_mdd=0.2, years=2.5)
    assert verdict == {"dsr": True, "holdout_dsr": True, "pbo": True, "min_trades": True,
                       "min_trades_per_year": True, "max_drawdown_vs_market": True, "min_calmar": True}
    # the same strategy on a calmer market, over a longer holdout
    verdict = _verdict(gates, holdout, 0.99, 0.99, 0.1, market_mdd=0.1, years=4.0)
    assert verdict["max_drawdown_vs_market"] is False and verdict["min_trades_per_year"] is False
    # absolute forms still available; null thresholds are not gates at all
    absolute = gates.model_copy(update={"max_drawdown": 0.15, "max_drawdown_vs_market": None, "min_trades_per_year": None,
                                        "max_pbo": None, "min_holdout_dsr": None, "min_calmar": None})
    verdict = _verdict(absolute, holdout, 0.99, 0.0, 0.9, market_mdd=0.1, years=4.0)
    assert verdict == {"dsr": True, "min_trades": True, "max_drawdown": False}


def test_pbo_candidates_are_one_per_cluster_and_a_seeded_sample_beyond_the_limit():
    labels = np.array([0, 0, 1, 0, 2, 1, 3, -1, 4, 2])
    assert pbo_columns(labels, 10) == [0, 2, 4, 6, 8]  # the best member of each cluster
    few = pbo_columns(labels, 3, seed=1)
    assert len(few) == 3 and few[0] == 0 and set(few) <= {0, 2, 4, 6, 8}
    assert few == pbo_columns(labels, 3, seed=1)


def _frame(fold_sharpes, fitness):
    return pd.DataFrame({
        "strategy_id": [f"s{i}" for i in range(len(fold_sharpes))],
        "evaluated": True,
        "fold_sharpe": fold_sharpes,
        "fitness": fitness,
        "oos_returns": [np.array([0.01, -0.005, 0.02, 0.0]) * (i + 1) for i in range(len(fold_sharpes))],
    })


def test_the_lower_bound_ranking_prefers_a_rule_that_earns_in_every_fold():
    folds = [[6.0, 0.0, 0.0, 0.0], [1.4, 1.6, 1.5, 1.5], [1.0, 1.0, 1.0, None]]
    frame = _frame(folds, [[1.5, 0.1], [1.5, 0.1], [1.0, 0.1]])
    lower = rank_scores(frame, "sharpe_lower_bound")
    assert lower[0] == pytest.approx(1.5 - np.std([6, 0, 0, 0], ddof=1) / 2)
    assert lower[1] == pytest.approx(1.5 - np.std([1.4, 1.6, 1.5, 1.5], ddof=1) / 2)
    assert lower[2] == pytest.approx(1.0)  # three finite folds, no spread
    assert rank_scores(frame, "min_fold_sharpe").tolist() == [0.0, 1.4, 1.0]
    config = small_config(**{"gates.rank_by": "sharpe_lower_bound"})
    assert rank_trials(frame, config)["strategy_id"].tolist() == ["s1", "s2", "s0"]


def test_trials_the_ga_rejected_rank_last_and_fitness_keeps_the_ga_order():
    frame = _frame([[9.0, 9.0, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0]], [[-1e9, 1e9], [1.0, 0.1]])
    ranked = rank_trials(frame, small_config(**{"gates.rank_by": "sharpe_lower_bound"}))
    assert ranked["strategy_id"].tolist() == ["s1", "s0"] and ranked["rank_score"].iloc[1] == -np.inf
    ranked = rank_trials(_frame([[1.0] * 4, [2.0] * 4], [[1.0, 0.2], [1.0, 0.1]]), small_config(**{"gates.rank_by": "fitness"}))
    assert ranked["strategy_id"].tolist() == ["s1", "s0"]  # equal Sharpe: the smaller drawdown first


@pytest.mark.parametrize("gates, message", [
    ({"max_drawdown": 30}, r"gates\.max_drawdown: .*did you mean 0\.3"),
    ({"max_drawdown_vs_market": 0}, r"gates\.max_drawdown_vs_market: must be a multiple > 0 .*or null"),
    ({"min_trades_per_year": -2}, r"gates\.min_trades_per_year: must be a number of trades per year > 0"),
    ({"max_drawdown_vs_market": None, "max_drawdown": None}, r"no drawdown gate: set max_drawdown_vs_market"),
    ({"rank_by": "sharpe"}, r"gates\.rank_by: Input should be 'fitness', 'sharpe_lower_bound'"),
    ({"pbo_max_correlation": 0.7}, r"did you mean 'cluster_correlation'"),
    ({"pbo_blocks": 7}, r"pbo_blocks must be even, got 7; use 8"),
])
def test_gate_config_errors_say_what_to_do(gates, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"gates": gates})

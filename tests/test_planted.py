"""backtest/data/planted.py: each rule kind's genome trades the planted rule."""
from __future__ import annotations

import numpy as np
import pytest

from backtest import evaluate, positions
from backtest.data.planted import HOUR_MS, RULES, PlantedSpec, planted_market, rule_sharpe
from backtest.data.synthetic_state import StateEdge, planted_state_positions
from backtest.strategy import normalize_genome, warmup_bars


@pytest.mark.parametrize("interval_hours", [1, 4])
@pytest.mark.parametrize("start_hour,hours", [(14, 4), (0, 4), (22, 5), (1, 23), (23, 1), (10, 1)])
def test_the_time_of_day_genome_holds_the_planted_positions_from_the_first_bar(interval_hours, start_hour, hours):
    spec = PlantedSpec(rule="time_of_day", sharpe=3.0, n_bars=1000, interval_ms=interval_hours * HOUR_MS,
                       params=(("start_hour", start_hour), ("hours", hours)), seed=3)
    planted = planted_market(spec)
    genome = normalize_genome(planted.genome)
    assert warmup_bars(genome) == 0
    np.testing.assert_array_equal(positions(genome, planted.market), planted.signal)
    # the rule: long over the bars whose open hour lies in [start_hour, start_hour + hours)
    open_hour = (planted.market.timestamp % (24 * HOUR_MS)) // HOUR_MS
    held = ((open_hour[1:] - start_hour) % 24) < hours
    np.testing.assert_array_equal(planted.signal[:-1], held.astype(np.int8))


def test_the_default_time_of_day_genome_reads_hour_13_to_16():
    genome = planted_market(PlantedSpec(rule="time_of_day", n_bars=200)).genome
    assert genome["direction"] == "long"
    assert [(c["op"], c["rhs"]) for c in genome["entry"]["conditions"]] == [(">", 12.5), ("<", 16.5)]


def test_bars_shorter_than_an_hour_have_no_time_of_day_genome():
    assert planted_market(PlantedSpec(rule="time_of_day", n_bars=200, interval_ms=HOUR_MS // 4)).genome is None


@pytest.mark.parametrize("rule", ["trend", "mean_reversion"])
def test_the_indicator_genomes_hold_the_planted_positions_after_warmup(rule):
    planted = planted_market(PlantedSpec(rule=rule, n_bars=3000, seed=5))
    got = positions(planted.genome, planted.market)
    start = int(np.argmax(got != 0))  # a crossing genome holds nothing until its first crossing
    assert 0 < start < 500
    np.testing.assert_array_equal(got[start:], planted.signal[start:])


def test_the_asmbtr_rule_is_the_state_parity_and_its_genome_learns_it():
    planted = planted_market(PlantedSpec(rule="asmbtr", sharpe=5.0, n_bars=40_000, seed=7))
    np.testing.assert_array_equal(planted.signal, planted_state_positions(planted.market, StateEdge(depth=3)))
    genome = normalize_genome(planted.genome)
    assert genome["family"] == "asmbtr" and genome["depth"] == 3
    late = slice(20_000, 40_000)  # once its counts have settled it trades the rule
    assert (positions(genome, planted.market)[late] == planted.signal[late]).mean() > 0.8
    earned = evaluate([genome], planted.market, np.array([[20_000, 40_000]])).metric("sharpe")[0, 0]
    assert earned > 0.5 * rule_sharpe(planted, 20_000, 40_000) > 1.0


def test_every_rule_kind_has_a_genome_on_hourly_bars():
    for rule in RULES:
        planted = planted_market(PlantedSpec(rule=rule, n_bars=500))
        assert planted.genome is not None, rule
        normalize_genome(planted.genome)

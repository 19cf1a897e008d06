"""Shadow traders: backtest signals bar for bar, the backtest's equity, exact resumes, and the
Ray actors surviving a kill and a Redis restart mid-stream."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from serving_helpers import PrivateRedis, unique_prefix

from backtest import positions, signals, simulate
from backtest.data import PlantedEdge, planted_edge_genome, synthetic_market
from backtest.families.base import SIMULATE_DIRECTION_OF as GENOME_DIRECTION
from backtest.families.rules import sma_crossover_genome
from backtest.strategy import normalize_genome, warmup_bars
from evolution.families.rules import init_genome as random_genome
from serving.bus import SIGNALS, BusConfig, BusUnavailable, InProcessBus, replay_stream
from serving.feed import bars_of, replay
from serving.paper import PaperBook
from serving.shadow import LocalShadow, ShadowRunner, start_ray_shadow, wait_until
from serving.state import FileStateStore, RedisStateStore
from serving.trader import ShadowConfig, ShadowSpec, ShadowTrader

MARKET = synthetic_market(3000, seed=21, planted_edge=PlantedEdge())
WARMUP = 1000
SMALL = ShadowConfig(window_bars=64, warmup_factor=8)


def genomes():
    rng = np.random.default_rng(4)
    found = [planted_edge_genome(PlantedEdge()), sma_crossover_genome(12, 60, "long")]
    while len(found) < 8:
        g = random_genome(rng)
        # genomes that trade, with windows short enough for the windowed path to be used here
        held = positions(g, MARKET.to_frame())
        if warmup_bars(normalize_genome(g)) <= 120 and (held != 0).sum() > 50 and np.count_nonzero(np.diff(held[WARMUP:])) >= 10:
            found.append(g)
    for g in found[2:]:  # stops only where the tests put them (a stop exit fills without slippage in the backtest)
        g["stop_loss"] = g["take_profit"] = None
    found[3]["stop_loss"], found[4]["take_profit"] = 0.01, 0.02
    return found


GENOMES = genomes()


def trade_all(trader, market=MARKET, warmup=WARMUP, batch=100):
    bars = list(bars_of(market))
    for i, bar in enumerate(bars):
        bar["warmup"] = i < warmup
    return [s for k in range(0, len(bars), batch) for s in trader.on_bars(bars[k:k + batch])]


@pytest.mark.parametrize("index", range(len(GENOMES)))
def test_signals_equal_backtest_positions_bar_for_bar(index, tmp_path):
    genome = GENOMES[index]
    trader = ShadowTrader(ShadowSpec(genome, "s"), SMALL, FileStateStore(tmp_path))
    got = np.array([s["position"] for s in trade_all(trader)])
    np.testing.assert_array_equal(got, positions(genome, MARKET.to_frame())[WARMUP:])
    assert trader.window < len(MARKET)  # the last bars went through the windowed computation


@pytest.mark.parametrize("fees,slippage", [(0.0, 0.0), (0.001, 0.0005)])
def test_paper_book_follows_the_backtest_equity(fees, slippage):
    close = MARKET.close
    for genome in (GENOMES[0], GENOMES[1], sma_crossover_genome(10, 40, "short")):
        entries, exits = signals(genome, MARKET.to_frame())
        expected = simulate(close, entries, exits, fees=fees, slippage=slippage,
                            direction=GENOME_DIRECTION[genome["direction"]])
        book = PaperBook.start()
        equity = [book.step(c, int(p), fees=fees, slippage=slippage) for c, p in zip(close, positions(genome, MARKET.to_frame()))]
        np.testing.assert_allclose(equity, expected.equity[:, 0], rtol=1e-12)
        assert book.trades == int(expected.n_trades[0])


@pytest.mark.parametrize("index,slippage", [(0, 0.0005), (1, 0.0005), (5, 0.0005), (4, 0.0)])
def test_drift_to_the_backtest_on_the_same_bars_is_nil_on_a_replay(index, slippage, tmp_path):
    """The book joins the strategy at a clean point; from there the backtest from a flat book
    (backtest.evaluate over the traded bars, same costs) has the very same equity. (Stop exits
    fill without slippage in the backtest: with stops, the case without slippage.)"""
    genome = GENOMES[index]
    trader = ShadowTrader(ShadowSpec(genome, "s", fees=0.001, slippage=slippage), SMALL, FileStateStore(tmp_path))
    trade_all(trader)
    metrics = trader.metrics()
    assert metrics["drift"] < 1e-9 and metrics["backtest_equity"] == pytest.approx(metrics["equity"], rel=1e-9)
    assert metrics["bars"] == len(MARKET) - WARMUP and metrics["trades"] > 3
    assert metrics["error_rate"] == 0.0


def test_drift_shows_stop_exits_filled_without_slippage(tmp_path):
    trader = ShadowTrader(ShadowSpec(GENOMES[4], "s", fees=0.001, slippage=0.002), SMALL, FileStateStore(tmp_path))
    trade_all(trader)
    assert trader.metrics()["drift"] > 1e-4


def test_a_bad_candle_is_an_error_and_not_traded(tmp_path):
    genome = GENOMES[1]
    trader = ShadowTrader(ShadowSpec(genome, "s"), SMALL, FileStateStore(tmp_path))
    bars = list(bars_of(MARKET[:1500]))
    for i, bar in enumerate(bars):
        bar["warmup"] = i < WARMUP
    bad = dict(bars[1200], close=-1.0, timestamp=bars[1200]["timestamp"] + 1)
    signals_ = trader.on_bars(bars[:1201] + [bad] + bars[1201:])
    assert [s["position"] for s in signals_] == positions(genome, MARKET[:1500].to_frame())[WARMUP:].tolist()
    metrics = trader.metrics()
    assert metrics["errors"] == 1 and metrics["error_rate"] == pytest.approx(1 / 500)
    assert "bad prices" in trader.last_error


def test_a_restarted_trader_resumes_exactly(tmp_path):
    genome = GENOMES[3]
    undisturbed = ShadowTrader(ShadowSpec(genome, "s", fees=0.0005), SMALL, FileStateStore(tmp_path / "a"))
    expected = trade_all(undisturbed)
    store = FileStateStore(tmp_path / "b")
    bars = list(bars_of(MARKET))
    for i, bar in enumerate(bars):
        bar["warmup"] = i < WARMUP
    got = []
    trader = ShadowTrader(ShadowSpec(genome, "s", fees=0.0005), SMALL, store)
    for i, bar in enumerate(bars):
        if i in (500, 1500, 2222):  # a new process: state from the store, and the last 30 bars delivered again
            trader = ShadowTrader(ShadowSpec(genome, "s", fees=0.0005), SMALL, store)
            assert trader.on_bars(bars[i - 30:i]) == []
        if i in (1700, 2500):  # a process that dies before committing its last 40 bars: they come again
            for old in bars[i:i + 40]:
                trader.on_bar(old)
            trader = ShadowTrader(ShadowSpec(genome, "s", fees=0.0005), SMALL, store)
        got += trader.on_bars([bar])
    assert got == expected
    state, records = store.load(undisturbed.spec.strategy_id)
    assert records.shape[0] == len(MARKET) and np.array_equal(records[:, 0], MARKET.timestamp.astype(float))


def test_a_record_written_without_its_state_is_cut_off(tmp_path):
    store = FileStateStore(tmp_path)
    trader = ShadowTrader(ShadowSpec(GENOMES[1], "s"), SMALL, store)
    bars = list(bars_of(MARKET[:200]))
    trader.on_bars(bars[:100])
    records_path = tmp_path / trader.spec.strategy_id / "records.f64"
    with open(records_path, "ab") as handle:  # died between appending the record and renaming the state
        handle.write(np.zeros(9).tobytes())
    state, records = store.load(trader.spec.strategy_id)
    assert records.shape[0] == 100 == state["n_records"]
    assert records_path.stat().st_size == 100 * 9 * 8


def test_a_state_written_for_another_genome_is_refused(tmp_path):
    store = FileStateStore(tmp_path)
    spec = ShadowSpec(GENOMES[1], "s")
    ShadowTrader(spec, SMALL, store).on_bars([next(bars_of(MARKET))])
    other = ShadowSpec(GENOMES[2], "s", strategy_id=spec.strategy_id)
    with pytest.raises(ValueError, match="another genome"):
        ShadowTrader(other, SMALL, store)


def test_local_shadows_trade_a_replay_on_the_in_process_bus(tmp_path):
    bus = InProcessBus(BusConfig(block_ms=50))
    stream = replay_stream("local")
    shadows = [LocalShadow(ShadowSpec(g, stream), SMALL, bus, FileStateStore(tmp_path)) for g in GENOMES[:3]]
    try:
        stats = replay(bus, stream, MARKET[WARMUP:], warmup=MARKET[:WARMUP])
        assert (stats.published, stats.warmup) == (len(MARKET) - WARMUP, WARMUP)
        statuses = wait_until(shadows, int(MARKET.timestamp[-1]), timeout_s=120)
    finally:
        for s in shadows:
            s.stop()
    for genome, status in zip(GENOMES[:3], statuses):
        assert status["bars"] == len(MARKET) - WARMUP and status["errors"] == 0
        traded = [m.data for m in bus.range("signals") if m.data["strategy_id"] == status["strategy_id"]]
        assert [s["position"] for s in traded] == positions(genome, MARKET.to_frame())[WARMUP:].tolist()
    assert replay(bus, stream, MARKET[WARMUP:]).repeated == len(MARKET) - WARMUP  # a second feed adds nothing


class FlakyStore(FileStateStore):
    """A state store whose commits fail with the bus now and then (Redis restarting), sometimes
    after the commit went through (its reply lost)."""

    def __init__(self, directory, fail_at):
        super().__init__(directory)
        self.calls, self.fail_at = 0, set(fail_at)

    def commit(self, strategy_id, records, state):
        self.calls += 1
        if self.calls in self.fail_at:
            if self.calls % 2:
                super().commit(strategy_id, records, state)  # done, but the caller never hears
            raise BusUnavailable("Redis restarting")
        super().commit(strategy_id, records, state)


def test_a_batch_whose_commit_failed_is_read_again_and_every_bar_is_traded_once(tmp_path):
    """The bus was up for the read but away for the commit: the batch stays pending, and the
    runner reads it again (the bars the store has are skipped), not the entries after it."""
    bus = InProcessBus(BusConfig(block_ms=1))
    stream = replay_stream("flaky")
    spec = ShadowSpec(GENOMES[0], stream)
    replay(bus, stream, MARKET[WARMUP:], warmup=MARKET[:WARMUP])
    store = FlakyStore(tmp_path / "flaky", fail_at={3, 4, 8})
    runner = ShadowRunner(spec, ShadowConfig(window_bars=64, warmup_factor=8, batch_bars=50), bus, store)
    failures = 0
    while runner.trader.last_timestamp != int(MARKET.timestamp[-1]):
        try:
            runner.step(block_ms=1)
        except BusUnavailable:
            failures += 1
        assert failures < 10
    assert failures == 3
    _, records = store.load(spec.strategy_id)
    np.testing.assert_array_equal(records[:, 0].astype(np.int64), MARKET.timestamp)
    np.testing.assert_array_equal(records, undisturbed_records([spec], tmp_path)[spec.strategy_id])


class AwayForPublishes(InProcessBus):
    """A bus that is away for the first ``away`` publishes of signals (Redis restarting while
    the trader publishes), up for everything else."""

    def __init__(self, config, away):
        super().__init__(config)
        self.away = away

    def publish(self, stream, data, *, entry_id=None):
        if stream == SIGNALS and self.away > 0:
            self.away -= 1
            raise BusUnavailable("Redis restarting")
        return super().publish(stream, data, entry_id=entry_id)


def test_an_outage_met_while_publishing_counts_as_a_reconnect_and_loses_no_signal(tmp_path):
    """The runner retries a signal it could not publish; the outage shows in its status (the
    operator's only sign of a flapping Redis) wherever the runner met it."""
    bus = AwayForPublishes(BusConfig(block_ms=1, backoff_base_s=0.001, backoff_cap_s=0.002), away=3)
    stream = replay_stream("away-publishing")
    spec = ShadowSpec(GENOMES[0], stream)
    replay(bus, stream, MARKET[WARMUP:], warmup=MARKET[:WARMUP])
    runner = ShadowRunner(spec, ShadowConfig(window_bars=64, warmup_factor=8, batch_bars=50), bus,
                          FileStateStore(tmp_path / "away"))
    while runner.trader.last_timestamp != int(MARKET.timestamp[-1]):
        runner.step(block_ms=1)
    assert bus.away == 0
    assert runner.status()["reconnects"] == 3
    published = bus.tail(SIGNALS, len(MARKET))
    assert [m.data["timestamp"] for m in published] == MARKET.timestamp[WARMUP:].tolist()


def undisturbed_records(specs, tmp_path):
    """The reference: each spec traded once over every bar, in-process, nothing killed."""
    out = {}
    for spec in specs:
        store = FileStateStore(tmp_path / "reference")
        trade_all(ShadowTrader(spec, SMALL, store))
        out[spec.strategy_id] = store.load(spec.strategy_id)[1]
    return out


@pytest.mark.slow
def test_shadow_actors_survive_a_kill_and_a_redis_restart(ray_session, tmp_path):
    """Two actors trade a replay; one is killed mid-stream (Ray restarts it), then Redis restarts
    (AOF on): afterwards every bar was traded exactly once and the equity equals an undisturbed run's."""
    ray = ray_session
    server = PrivateRedis(tmp_path / "redis").start()
    bus_config = BusConfig(redis_url=server.url, prefix=unique_prefix("shadow"), block_ms=100, socket_timeout_s=1.0,
                           backoff_cap_s=0.3)
    stream = replay_stream("kill-test")
    specs = [ShadowSpec(GENOMES[0], stream, fees=0.0005, slippage=0.0002),
             ShadowSpec(GENOMES[3], stream, fees=0.0005, slippage=0.0002)]
    expected = undisturbed_records(specs, tmp_path)
    try:
        from serving.redis_bus import RedisBus

        bus = RedisBus(bus_config)
        shadows = [start_ray_shadow(spec, SMALL, bus_config) for spec in specs]
        pids = [ray.get(s.actor.pid.remote(), timeout=120) for s in shadows]
        stop = threading.Event()
        feed = threading.Thread(target=replay, args=(bus, stream, MARKET[WARMUP:]),
                                kwargs={"warmup": MARKET[:WARMUP], "speed": 400.0, "stop": stop})
        feed.start()
        first_ts = int(MARKET.timestamp[WARMUP])
        wait_until(shadows, first_ts + 400 * 60_000, timeout_s=120)
        ray.kill(shadows[0].actor, no_restart=False)   # the actor dies mid-stream; Ray restarts it
        wait_until(shadows, first_ts + 900 * 60_000, timeout_s=120)
        server.restart(down_s=3.0)                      # Redis goes away (long enough for every trader to notice)
        feed.join(120)
        assert not feed.is_alive()
        statuses = wait_until(shadows, int(MARKET.timestamp[-1]), timeout_s=180)
        assert ray.get(shadows[0].actor.pid.remote()) != pids[0]
        assert sum(s["reconnects"] for s in statuses) > 0
        store = RedisStateStore(server.url, bus_config.prefix)
        for spec, status in zip(specs, statuses):
            state, records = store.load(spec.strategy_id)
            reference = expected[spec.strategy_id]
            seen = records[:, 0].astype(np.int64)
            missing = np.setdiff1d(MARKET.timestamp, seen)
            assert np.array_equal(seen, MARKET.timestamp), (  # each bar once, in order
                f"{spec.strategy_id}: {len(seen)} records of {len(MARKET)} bars; missing {missing.size} "
                f"(bar {np.searchsorted(MARKET.timestamp, missing[:1])} on), {len(seen) - np.unique(seen).size} twice")
            np.testing.assert_array_equal(records, reference)                   # positions and equity too
            assert status["bars"] == len(MARKET) - WARMUP
            assert status["equity"] == reference[-1, 8]
        for s in shadows:
            s.stop()
        bus.close()
        store.close()
    finally:
        server.stop()


def test_a_clock_genome_trades_the_backtest_positions(tmp_path):
    hour = {"name": "hour"}
    genome = {"entry": {"logic": "and", "conditions": [{"lhs": hour, "op": "crosses_above", "rhs": 7.5}]},
              "exit": {"logic": "and", "conditions": [{"lhs": hour, "op": "crosses_above", "rhs": 9.5}]},
              "direction": "long"}
    market = synthetic_market(3000, seed=5, interval_ms=15 * 60_000)  # quarter hours: a position per morning
    trader = ShadowTrader(ShadowSpec(genome, "s"), SMALL, FileStateStore(tmp_path))
    got = np.array([s["position"] for s in trade_all(trader, market, warmup=500)])
    expected = positions(genome, market.to_frame())[500:]
    assert (expected == 1).sum() > 100
    np.testing.assert_array_equal(got, expected)

"""Promotion gates (k of n, with recorded values) and the controller on a real MLflow registry
(SQLite store): a passing shadow becomes champion, a failing one is retired, and a live
drawdown breach rolls back to the previous champion within the bar."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from serving_registry import register_genome

from backtest.data import OHLCV, PlantedEdge, planted_edge_genome, synthetic_market
from backtest.telemetry import PrometheusRecorder, install
from serving.bus import ALERTS, STAGES, BusConfig, InProcessBus, bar_id, replay_stream
from serving.controller import Controller, ControllerConfig, promote_version
from serving.feed import bars_of, replay
from serving.promotion import HOLD, PROMOTE, REJECT, WAIT, Criterion, GateConfig, judge
from serving.registry import ModelRegistry
from serving.service import ShadowService
from serving.shadow import ShadowRunner
from serving.state import FileStateStore
from serving.trader import ShadowConfig, ShadowSpec

SMALL = ShadowConfig(window_bars=64, warmup_factor=8)
EDGE = PlantedEdge(strength=0.3)
GOOD = planted_edge_genome(EDGE)
BAD = copy.deepcopy(GOOD)
BAD["entry"], BAD["exit"] = BAD["exit"], BAD["entry"]
ALWAYS_LONG = [{"entry": {"logic": "and", "conditions": [{"lhs": {"name": "close"}, "op": ">",
                                                            "rhs": {"name": "sma", "window": w}}]},
                "exit": {"logic": "and", "conditions": []}, "direction": "long"} for w in (2, 3)]


def metrics(**overrides):
    base = {"win_rate": 0.6, "max_drawdown": 0.05, "error_rate": 0.0, "total_return": 0.1, "drift": 0.001,
            "bars": 1000, "trades": 20}
    return {**base, **overrides}


@pytest.mark.parametrize("overrides,verdict,passed", [
    ({}, PROMOTE, 5),
    ({"win_rate": 0.4}, PROMOTE, 4),                              # 4 of 5 is enough
    ({"win_rate": 0.4, "drift": 0.5}, REJECT, 3),
    ({"win_rate": float("nan"), "total_return": -0.1}, REJECT, 3),  # no closed trade: the criterion fails
    ({"drift": None, "max_drawdown": 0.2}, REJECT, 3),
    ({"bars": 10}, WAIT, 5),                                      # too early to judge
    ({"trades": 2}, WAIT, 5),
])
def test_gates_k_of_n(overrides, verdict, passed):
    decision = judge(metrics(**overrides), GateConfig())
    assert (decision.verdict, decision.passed, decision.k, decision.n) == (verdict, passed, 4, 5)
    by_name = {r.name: r for r in decision.results}
    assert by_name["win_rate"].threshold == 0.5 and by_name["max_drawdown"].op == "<="
    value = metrics(**overrides)["win_rate"]
    assert by_name["win_rate"].value == (None if value != value else value)
    if verdict != WAIT:
        assert f"{passed}/5 criteria passed (k=4)" in decision.reason
        assert "win_rate: win_rate=" in decision.reason and ("FAILED" in decision.reason) == (passed < 5)


def test_gate_config_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="k = 6 but only 5 criteria"):
        GateConfig(k=6)
    with pytest.raises(ValueError, match="Did you mean 'win_rate'"):
        Criterion(name="w", metric="winrate", op=">=", threshold=0.5)
    with pytest.raises(ValueError, match="unique"):
        GateConfig(criteria=(Criterion(name="a", metric="drift", op="<", threshold=1),) * 2, k=1)
    custom = GateConfig(criteria=(Criterion(name="sharp_profit", metric="total_return", op=">", threshold=0.5),), k=1)
    assert judge(metrics(), custom).verdict == REJECT and judge(metrics(total_return=0.6), custom).verdict == PROMOTE


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    base = tmp_path_factory.mktemp("controller")
    reg = ModelRegistry("serving-controller-test", f"sqlite:///{base}/mlflow.db")
    versions = {name: register_genome(reg, genome, fees=0.0002) for name, genome in
                (("good", GOOD), ("bad", BAD), ("a", ALWAYS_LONG[0]), ("b", ALWAYS_LONG[1]))}
    return reg, versions


@pytest.fixture
def recorded():
    """The serving metrics as `evolve shadow --metrics-port` exports them (a registry of this test)."""
    rec = PrometheusRecorder()
    install(rec)
    yield rec
    install(None)


def sample(rec, name, **labels):
    return rec.registry.get_sample_value(name, labels) or 0.0


def test_the_controller_promotes_what_passes_and_retires_what_fails(registry, recorded, tmp_path):
    reg, versions = registry
    market = synthetic_market(3000, seed=8, planted_edge=EDGE, regimes=False)
    bus = InProcessBus(BusConfig(block_ms=1))
    stream = replay_stream("gates")
    runners = {}
    for name in ("good", "bad"):
        v = versions[name]
        reg.set_stage(v, "shadow", reason="paper trading")
        fees, slippage = reg.costs(v)
        spec = ShadowSpec(reg.genome(v), stream, fees=fees, slippage=slippage, version=v)
        runners[v] = ShadowRunner(spec, SMALL, bus, FileStateStore(tmp_path))
    controller = Controller(reg, bus, ControllerConfig(judge_every_bars=1000),
                            metrics_of=lambda v: runners[v].metrics())
    for i, bar in enumerate(bars_of(market)):
        bar["warmup"] = i < 1000
        bus.publish(stream, bar, entry_id=bar_id(bar["timestamp"]))
        if i % 50 == 49 or i == len(market) - 1:
            for runner in runners.values():
                runner.step(block_ms=0)
            while controller.step(block_ms=0):
                pass
    good, bad = versions["good"], versions["bad"]
    decisions = {d.version: d for d in controller.decisions}
    assert decisions[good].verdict == PROMOTE and decisions[good].passed == 5
    assert decisions[bad].verdict == REJECT and decisions[bad].passed < 4
    assert reg.champion().version == good and reg.version(bad).stage == "retired"
    assert sample(recorded, "serving_promotions_total", stage="live") == 1
    assert sample(recorded, "serving_promotions_total", stage="shadow") == 2
    assert sample(recorded, "serving_stage_changes_total", from_stage="shadow", to_stage="live") == 1
    assert sample(recorded, "serving_stage_changes_total", from_stage="shadow", to_stage="retired") == 1
    assert sample(recorded, "shadow_bars_processed_total") == 2 * (len(market) - 1000)
    assert sample(recorded, "shadow_drift_ratio_count") == 2  # one judgement each
    # each decision records every criterion with the value judged, in the stage history and on the bus
    for v, stage in ((good, "live"), (bad, "retired")):
        latest = reg.version(v).history[-1]
        assert latest["stage"] == stage and latest["reason"] == decisions[v].reason
        judged = {r.metric: r.value for r in decisions[v].results}
        assert set(judged) == {"win_rate", "max_drawdown", "error_rate", "total_return", "drift"}
        assert all(f"{m}={value:.6g}" in latest["reason"] for m, value in judged.items() if value is not None)
    events = {e.data["version"]: e.data for e in bus.range(STAGES)}
    assert events[good]["kind"] == "promotion" and events[good]["decision"]["passed"] == 5
    assert events[bad]["kind"] == "rejection" and events[bad]["decision"]["results"][0]["name"] == "win_rate"
    # the app reads the latest metrics from the registry
    live = reg.latest_metrics(good)
    assert live["bars"] >= 1000 and live["drift"] < 1e-9 and live["strategy_id"] == reg.version(good).strategy_id


def test_of_several_passing_shadows_the_best_becomes_champion(tmp_path):
    """Champion and challengers: a shadow that passes the gates replaces the champion only when
    its log return per paper-traded bar beats the champion's; otherwise it holds (stays in
    shadow and is judged again), so the champion is the best that passed, not the last judged."""
    reg = ModelRegistry("serving-challenge-test", f"sqlite:///{tmp_path}/mlflow.db")
    first, weaker, stronger, late = (register_genome(reg, g, fees=0.0002) for g in (GOOD, *ALWAYS_LONG, BAD))
    for v in (first, weaker, stronger, late):
        reg.set_stage(v, "shadow", reason="paper trading")
    paper = {first: metrics(total_return=0.10), weaker: metrics(total_return=0.12, bars=2000),
             stronger: metrics(total_return=0.15), late: metrics(total_return=0.01)}
    controller = Controller(reg, InProcessBus(BusConfig(block_ms=1)), ControllerConfig(champion_refresh_s=0),
                            metrics_of=paper.__getitem__)
    assert controller.judge(first).verdict == PROMOTE  # no champion yet
    held = controller.judge(weaker)  # 12% over 2,000 bars is less per bar than 10% over 1,000
    assert held.verdict == HOLD and held.passed == 5
    assert held.reason.startswith("hold: 5/5 criteria passed") and f"the champion (version {first})" in held.reason
    assert reg.version(weaker).stage == "shadow" and reg.champion().version == first
    assert controller.judge(stronger).verdict == PROMOTE and reg.champion().version == stronger
    paper[weaker] = metrics(total_return=0.40, bars=2000)  # judged again on its later record: now it beats it
    assert controller.judge(weaker).verdict == PROMOTE and reg.champion().version == weaker
    # the champion's trader is not here (metrics_of has no record): its last recorded metrics are used
    del paper[weaker]
    reg.set_latest_metrics(weaker, metrics(total_return=0.40, bars=2000))
    assert controller.judge(late).verdict == HOLD
    # beat_champion off: every shadow that passes is promoted, as judged
    plain = Controller(reg, InProcessBus(BusConfig(block_ms=1)),
                       ControllerConfig(gates=GateConfig(beat_champion=False), champion_refresh_s=0),
                       metrics_of=paper.__getitem__)
    assert plain.judge(late).verdict == PROMOTE and reg.champion().version == late


def crash_market(n=300, crash_at=250):
    """An uptrend, then two 10% falls at ``crash_at`` and the bar after."""
    steps = np.full(n, 1.002)
    steps[crash_at] = steps[crash_at + 1] = 0.9
    close = 100 * np.cumprod(steps)
    open_ = np.concatenate([[100.0], close[:-1]])
    ts = 1_704_067_200_000 + 60_000 * np.arange(n, dtype=np.int64)
    return OHLCV(ts, open_, np.maximum(open_, close) * 1.0005, np.minimum(open_, close) * 0.9995, close,
                 np.full(n, 10.0))


def test_a_drawdown_breach_rolls_back_to_the_previous_champion_within_the_bar(registry, recorded, tmp_path):
    reg, versions = registry
    a, b = versions["a"], versions["b"]
    promote_version(reg, None, a, reason="test: first champion")
    promote_version(reg, None, b, reason="test: second champion")
    assert (reg.champion().version, reg.previous_champion().version) == (b, a)
    market = crash_market()
    bus = InProcessBus(BusConfig(block_ms=1))
    stream = replay_stream("crash")
    runner = ShadowRunner(ShadowSpec(reg.genome(b), stream, version=b), SMALL, bus, FileStateStore(tmp_path))
    controller = Controller(reg, bus, ControllerConfig(gates=GateConfig(live_max_drawdown=0.15),
                                                       judge_every_bars=10**6, champion_refresh_s=0))
    rolled_back_at = None
    for i, bar in enumerate(bars_of(market)):
        bus.publish(stream, bar, entry_id=bar_id(bar["timestamp"]))
        runner.step(block_ms=0)
        controller.step(block_ms=0)
        if reg.champion().version != b:
            rolled_back_at = i
            break
    # 10% down at bar 250 is within the limit; 19% at bar 251 is not: rolled back on that bar
    assert rolled_back_at == 251
    assert reg.champion().version == a and reg.previous_champion() is None
    assert reg.version(b).stage == "retired" and reg.version(a).stage == "live"
    assert sample(recorded, "serving_rollbacks_total") == 1
    breach_ts = int(market.timestamp[251])
    for stream_name in (STAGES, ALERTS):
        event = bus.range(stream_name)[-1].data
        assert (event["kind"], event["cause"], event["version"], event["previous"]) == ("rollback", "drawdown", a, b)
        assert event["bar_timestamp"] == breach_ts and "drawdown 0.19" in event["reason"]
    # the alias history: b retired and a live again, with the reason, after b's promotion
    history = reg.history()
    assert [(e.version, e.stage) for e in history[-2:]] == [(b, "retired"), (a, "live")]
    assert f"at bar {breach_ts}" in history[-1].reason
    assert reg.live_version_at(history[-1].at) == a and reg.live_version_at(history[-1].at - 1) == b


def test_the_service_watches_a_restored_champion_from_the_next_bar(registry, tmp_path):
    """evolve shadow's loop: after a rollback, the restored champion gets a trader of its own
    that takes the stream's last bars as history and trades every bar after them."""
    reg, versions = registry
    a, b = versions["a"], versions["b"]
    if reg.champion() is None or reg.champion().version != a:
        promote_version(reg, None, a, reason="test: first champion")
    promote_version(reg, None, b, reason="test: second champion")
    market = crash_market(n=450)
    service = ShadowService(reg, BusConfig(block_ms=5), ShadowConfig(window_bars=64, warmup_factor=8,
                                                                     state_dir=str(tmp_path)),
                            ControllerConfig(judge_every_bars=10**6, champion_refresh_s=0), backend="local")
    stream = replay_stream("service")
    service.add(ShadowSpec(reg.genome(b), stream, version=b))
    try:
        def feed(stop):
            replay(service.bus, stream, market[:260], speed=100.0, stop=stop)
            while len(service.shadows) < 2 and not stop.wait(0.05):
                pass  # the rollback (at bar 251) and the restored champion's trader come first
            replay(service.bus, stream, market[260:], speed=100.0, stop=stop)

        service.run(feed, until_timestamp=int(market.timestamp[-1]))
    finally:
        service.close()
    assert reg.champion().version == a
    rollback = [e for e in service.controller.events if e["kind"] == "rollback"]
    assert len(rollback) == 1 and rollback[0]["bar_timestamp"] == int(market.timestamp[251])
    restored = ShadowSpec(reg.genome(a), stream)
    assert set(service.shadows) == {ShadowSpec(reg.genome(b), stream).strategy_id, restored.strategy_id}
    state, records = FileStateStore(tmp_path).load(restored.strategy_id)
    warm, traded = records[records[:, 6] == 1], records[records[:, 6] == 0]
    assert warm.shape[0] >= 1 and warm[-1, 0] >= market.timestamp[251]      # it started after the breach
    assert traded.shape[0] > 0
    first = int(np.searchsorted(market.timestamp, traded[0, 0]))
    np.testing.assert_array_equal(traded[:, 0], market.timestamp[first:])   # then every bar, once
    assert first == int(np.searchsorted(market.timestamp, warm[-1, 0])) + 1

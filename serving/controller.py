"""The serving controller: judges shadows, moves the champion, watches the live strategy's risk.

It reads the ``signals`` stream (group ``controller``), one event per bar a trader traded,
idempotently by (strategy, candle timestamp):

* a **shadow** version is judged by the promotion gates (:mod:`serving.promotion`) every
  ``judge_every_bars`` bars; its metrics go to the registry's ``latest_metrics`` tag; a
  ``promote`` verdict moves the ``champion`` alias (the old champion becomes
  ``previous-champion``) when the shadow also beats the champion's log return per bar (else
  it holds: it stays in shadow and is judged again), a ``reject`` retires it. Each decision is a stage-history entry
  whose reason lists every criterion with its value, and an event on the ``stages`` stream;
* the **live** version (the champion) is watched on every bar: when its drawdown since it
  went live passes ``gates.live_max_drawdown``, it is rolled back to the previous champion
  while that bar is handled: a stage-history entry, events on ``stages`` and ``alerts``, and
  ``serving_rollbacks_total`` goes up.

:func:`promote_version` and :func:`rollback_champion` are the same moves by hand
(``evolve promote``, ``evolve rollback``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from backtest.telemetry import catalogue as M
from backtest.telemetry.recorder import recorder
from serving.bus import ALERTS, SIGNALS, STAGES, EventBus, GroupReader
from serving.promotion import HOLD, PROMOTE, REJECT, Decision, GateConfig, judge, return_per_bar
from serving.registry import LIVE, RETIRED, SHADOW, ModelRegistry, RegistryError
from serving.trader import DRIFT

log = logging.getLogger(__name__)


class ControllerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gates: GateConfig = GateConfig()
    judge_every_bars: int = Field(500, ge=1, description="bars between two judgements of a shadow")
    champion_refresh_s: float = Field(1.0, ge=0, description="how long the champion read from MLflow is trusted")
    group: str = Field("controller", min_length=1, description="consumer group on the signals stream")


def now_ms() -> int:
    return int(time.time() * 1000)


def _publish(bus: EventBus | None, stream: str, event: dict) -> None:
    if bus is not None:
        bus.publish(stream, event)


def promote_version(registry: ModelRegistry, bus: EventBus | None, version: str, *, reason: str,
                    decision: Decision | None = None) -> dict:
    """Make ``version`` the champion; records the stage change and publishes it on ``stages``."""
    previous = registry.champion()
    registry.promote(version, reason=reason)
    info = registry.version(version)
    event = {"kind": "promotion", "version": info.version, "strategy_id": info.strategy_id, "stage": LIVE,
             "previous": previous.version if previous else None, "reason": reason, "at": now_ms(),
             "decision": decision.to_dict() if decision else None}
    _publish(bus, STAGES, event)
    recorder().count(M.SERVING_PROMOTIONS, stage=LIVE)
    return event


def rollback_champion(registry: ModelRegistry, bus: EventBus | None, *, reason: str, kind: str = "manual",
                      bar_timestamp: int | None = None) -> dict:
    """Put the previous champion back live; publishes on ``stages`` and ``alerts``, counts the rollback."""
    failed = registry.champion()
    restored = registry.rollback(reason=reason)
    event = {"kind": "rollback", "cause": kind, "version": restored.version, "strategy_id": restored.strategy_id,
             "stage": LIVE, "previous": failed.version if failed else None, "reason": reason, "at": now_ms(),
             "bar_timestamp": bar_timestamp}
    _publish(bus, STAGES, event)
    _publish(bus, ALERTS, event)
    recorder().count(M.SERVING_ROLLBACKS)
    return event


class Controller:
    """Judges and watches from the signals stream. ``metrics_of(version)`` gives a version's full
    metrics (drift included, e.g. a shadow handle's ``metrics``); without it the signal's own
    numbers are judged. ``on_stage_change(event)`` is told of every promotion, rejection and rollback."""

    def __init__(self, registry: ModelRegistry, bus: EventBus, config: ControllerConfig | None = None, *,
                 metrics_of: Callable[[str], dict] | None = None, on_stage_change: Callable[[dict], None] | None = None):
        self.registry, self.bus = registry, bus
        self.config = config or ControllerConfig()
        self.metrics_of = metrics_of
        self.on_stage_change = on_stage_change
        self.reader = GroupReader(bus, SIGNALS, self.config.group)
        self.decisions: list[Decision] = []
        self.events: list[dict] = []
        self._last: dict[str, int] = {}
        self._judged: dict[str, int] = {}
        self._champion: str | None = None
        self._champion_read = -1e9
        self._live_peak: tuple[str, float] | None = None  # (champion version, highest equity since it went live)

    # ------------------------------------------------------------------ reading

    def step(self, block_ms: int | None = None) -> int:
        """Handle one batch of signals; returns how many were new."""
        batch = self.reader.read(block_ms)
        new = sum(self.on_signal(m.data) for m in batch)
        if batch:
            self.reader.ack([m.id for m in batch])
        return new

    def champion(self) -> str | None:
        if time.monotonic() - self._champion_read > self.config.champion_refresh_s:
            info = self.registry.champion()
            self._set_champion(info.version if info else None)
        return self._champion

    def _set_champion(self, version: str | None) -> None:
        if version != self._champion:
            self._live_peak = None
        self._champion = version
        self._champion_read = time.monotonic()

    def on_signal(self, signal: dict) -> bool:
        key, ts = str(signal.get("strategy_id")), int(signal["timestamp"])
        if ts <= self._last.get(key, -1):
            return False  # delivered again: handled already
        self._last[key] = ts
        version = signal.get("version")
        if version is None:
            return True
        version = str(version)
        if version == self.champion():
            self._watch(version, signal)
        if int(signal.get("bars", 0)) - self._judged.get(version, 0) >= self.config.judge_every_bars:
            self._judged[version] = int(signal.get("bars", 0))
            if version == self._champion:
                self.registry.set_latest_metrics(version, self._metrics(version, signal))
            else:
                self.judge(version, signal)
        return True

    def _metrics(self, version: str, signal: dict) -> dict:
        return self.metrics_of(version) if self.metrics_of is not None else dict(signal)

    # ------------------------------------------------------------------ deciding

    def judge(self, version: str, signal: dict | None = None) -> Decision | None:
        """Judge a shadow version now; promote or retire it as the gates say. None if it is not in shadow."""
        info = self.registry.version(version)
        if info.stage != SHADOW:
            return None
        metrics = self._metrics(version, signal or {})
        self.registry.set_latest_metrics(version, metrics)
        decision = judge(metrics, self.config.gates)
        decision = Decision(**{**decision.__dict__, "version": version, "strategy_id": info.strategy_id})
        if decision.verdict == PROMOTE and self.config.gates.beat_champion:
            decision = self._challenge(decision, metrics)
        self.decisions.append(decision)
        if metrics.get(DRIFT) is not None:
            recorder().observe(M.SHADOW_DRIFT, float(metrics[DRIFT]))
        if decision.verdict == PROMOTE:
            event = promote_version(self.registry, self.bus, version, reason=decision.reason, decision=decision)
            self._set_champion(version)
        elif decision.verdict == REJECT:
            self.registry.set_stage(version, RETIRED, reason=decision.reason)
            event = {"kind": "rejection", "version": version, "strategy_id": info.strategy_id, "stage": RETIRED,
                     "reason": decision.reason, "at": now_ms(), "decision": decision.to_dict()}
            self.bus.publish(STAGES, event)
        else:
            return decision
        self._changed(event)
        return decision

    def _challenge(self, decision: Decision, metrics: dict) -> Decision:
        """A passing shadow against the champion: it holds (stays in shadow, judged again later)
        unless its log return per bar beats the champion's, so of several shadows that pass the
        best replaces the champion, not the last one judged."""
        champion = self.champion()
        if champion is None or champion == decision.version:
            return decision
        try:
            theirs = return_per_bar(self.metrics_of(champion) if self.metrics_of is not None else None)
        except LookupError:  # no trader of the champion here: its last recorded metrics
            theirs = None
        if theirs is None:
            theirs = return_per_bar(self.registry.latest_metrics(champion))
        mine = return_per_bar(metrics)
        if theirs is None or (mine is not None and mine > theirs):
            return decision
        note = (f"its log return per bar {'missing' if mine is None else f'{mine:.3g}'} does not beat the champion "
                f"(version {champion}) {theirs:.3g}")
        return Decision(**{**decision.__dict__, "verdict": HOLD, "note": note})

    def _watch(self, version: str, signal: dict) -> None:
        equity = float(signal["equity"])
        if self._live_peak is None or self._live_peak[0] != version:
            self._live_peak = (version, equity)
        peak = max(self._live_peak[1], equity)
        self._live_peak = (version, peak)
        drawdown = 1.0 - equity / peak if peak > 0 else 0.0
        limit = self.config.gates.live_max_drawdown
        if drawdown <= limit:
            return
        reason = (f"drawdown {drawdown:.4f} since going live > limit {limit:.4f} at bar {signal['timestamp']} "
                  f"(equity {equity:.6g}, peak {peak:.6g})")
        try:
            event = rollback_champion(self.registry, self.bus, reason=reason, kind="drawdown",
                                      bar_timestamp=int(signal["timestamp"]))
        except RegistryError as error:  # nothing to roll back to: alert, keep the champion
            log.error("live version %s breached its drawdown limit, but %s", version, error)
            self.bus.publish(ALERTS, {"kind": "drawdown_breach", "version": version, "reason": f"{reason}; {error}",
                                      "at": now_ms(), "bar_timestamp": int(signal["timestamp"])})
            self._live_peak = (version, equity)  # alert once per new low, not on every bar
            return
        self._set_champion(event["version"])
        self._changed(event)

    def _changed(self, event: dict) -> None:
        self.events.append(event)
        if self.on_stage_change is not None:
            self.on_stage_change(event)

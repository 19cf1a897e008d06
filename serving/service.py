"""What ``evolve shadow`` runs: a bar feed, one trader per shadow or live version, the controller.

    service = ShadowService(registry, bus_config, shadow_config, controller_config, backend="local")
    service.add(spec)                       # a trader per strategy (Ray actor or in-process thread)
    service.run(feed, until_timestamp=...)  # feed in a thread, controller in this one

Traders run as Ray actors (``backend="ray"``, needs Redis for the bus) or as threads of this
process (``"local"``, any bus). When the controller moves the champion to a version nobody
trades yet (a rollback to the previous champion), a trader for it starts on the same stream,
so the new live strategy is watched from the next bar.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from serving.bus import BusConfig, EventBus, open_bus
from serving.controller import Controller, ControllerConfig
from serving.registry import ModelRegistry
from serving.shadow import LocalShadow, start_ray_shadow
from serving.trader import ShadowConfig, ShadowSpec

log = logging.getLogger(__name__)
BACKENDS = ("local", "ray")


class ShadowService:
    def __init__(self, registry: ModelRegistry, bus_config: BusConfig, shadow_config: ShadowConfig,
                 controller_config: ControllerConfig, *, backend: str = "local", bus: EventBus | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if backend == "ray" and not bus_config.redis_url:
            raise ValueError("Ray shadow actors need Redis for the bus: set REDIS_URL or --redis-url (or use --local)")
        self.registry, self.bus_config, self.shadow_config = registry, bus_config, shadow_config
        self.backend = backend
        self.bus = bus or open_bus(bus_config)
        self.shadows: dict[str, object] = {}  # strategy_id -> LocalShadow | RayShadow
        self.versions: dict[str, str] = {}    # version -> strategy_id
        self.stream: str | None = None
        self.controller = Controller(registry, self.bus, controller_config, metrics_of=self._metrics_of,
                                     on_stage_change=self._on_stage_change)

    def add(self, spec: ShadowSpec, *, start: str = "0"):
        """A trader for ``spec`` (``start``: see :class:`serving.shadow.ShadowRunner`)."""
        if spec.strategy_id in self.shadows:
            return self.shadows[spec.strategy_id]
        self.stream = self.stream or spec.stream
        if self.backend == "ray":
            handle = start_ray_shadow(spec, self.shadow_config, self.bus_config, start=start)
        else:
            handle = LocalShadow(spec, self.shadow_config, self.bus, start=start)
        self.shadows[spec.strategy_id] = handle
        if spec.version is not None:
            self.versions[str(spec.version)] = spec.strategy_id
        return handle

    def _metrics_of(self, version: str) -> dict:
        return self.shadows[self.versions[version]].metrics()

    def _on_stage_change(self, event: dict) -> None:
        version = str(event["version"])
        if event["kind"] == "rollback" and version not in self.versions and self.stream is not None:
            fees, slippage = self.registry.costs(version)
            spec = ShadowSpec(self.registry.genome(version), self.stream, fees=fees, slippage=slippage, version=version)
            log.info("watching the restored champion %s (%s)", version, spec.name)
            self.add(spec, start="$")  # from the next bar, the stream's last bars as its history

    def statuses(self) -> list[dict]:
        return [handle.status() for handle in self.shadows.values()]

    def run(self, feed: Callable[[threading.Event], object] | None = None, *, until_timestamp: int | None = None,
            stop: threading.Event | None = None, poll_s: float = 0.2) -> list[dict]:
        """Run ``feed(stop)`` in a thread and the controller here, until every trader has traded
        ``until_timestamp`` (a replay's last bar) or ``stop`` is set (Ctrl-C); returns the statuses."""
        stop = stop or threading.Event()
        errors: list[BaseException] = []

        def feed_thread() -> None:
            try:
                feed(stop)
            except BaseException as error:  # reported by run(), which stops
                errors.append(error)
                stop.set()

        thread = threading.Thread(target=feed_thread, name="bar-feed", daemon=True) if feed else None
        if thread:
            thread.start()
        try:
            while not stop.is_set():
                self.controller.step(block_ms=int(poll_s * 1000))
                if until_timestamp is not None and (thread is None or not thread.is_alive()):
                    statuses = self.statuses()
                    if all((s["last_timestamp"] or -1) >= until_timestamp for s in statuses):
                        while self.controller.step(block_ms=0):
                            pass
                        break
        finally:
            stop.set()
            if thread:
                thread.join(timeout=30)
        if errors:
            raise errors[0]
        return self.statuses()

    def judge_all(self) -> list:
        """A last judgement of every shadow version (e.g. at the end of a replay)."""
        return [d for d in (self.controller.judge(v) for v in list(self.versions)) if d is not None]

    def close(self) -> None:
        for handle in self.shadows.values():
            handle.stop()
        self.bus.close()


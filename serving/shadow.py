"""Shadow traders on the bus: Ray actors named ``shadow-<strategy_id>`` and their in-process twin.

A :class:`ShadowRunner` reads one bar stream through its own consumer group (the actor
name), hands each bar to a :class:`serving.trader.ShadowTrader`, publishes the signal on
the ``signals`` stream and acks the batch. Delivery is at least once and the trader skips
bars it already committed, so a trader killed mid-batch, or a Redis restart, neither loses a
bar nor trades one twice. On :class:`serving.bus.BusUnavailable` the runner backs off and
reconnects; when a commit to a Redis state store failed, it reloads the trader from the
store before going on (the commit may or may not have gone through).

Two ways to run one, behind the same methods (``status``, ``metrics``, ``stop``):

* :func:`start_ray_shadow`: a Ray actor (fractional CPU, restarted by Ray when it dies; its
  constructor resumes from the state store); needs Redis for the bus;
* :class:`LocalShadow`: a thread in this process (the embedded default, any bus).

``start="0"`` trades the stream from its first entry (a replay); ``start="$"`` makes the bars
already in the stream the trader's warm-up history and trades the ones after them (a trader
started on a live stream, e.g. for a champion restored by a rollback).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from backtest.telemetry import catalogue as M
from backtest.telemetry.recorder import recorder
from serving.bus import SIGNALS, Backoff, BusConfig, BusUnavailable, EventBus, GroupReader, open_bus, retrying
from serving.state import FileStateStore, RedisStateStore, StateStore
from serving.trader import ShadowConfig, ShadowSpec, ShadowTrader

log = logging.getLogger(__name__)


def open_store(config: ShadowConfig, bus_config: BusConfig) -> StateStore:
    """Redis when the bus is on Redis, else files under ``config.state_dir``."""
    if bus_config.redis_url:
        return RedisStateStore(bus_config.redis_url, bus_config.prefix)
    return FileStateStore(config.state_dir)


class ShadowRunner:
    """The consume-trade-publish-ack loop of one shadow."""

    def __init__(self, spec: ShadowSpec, config: ShadowConfig, bus: EventBus, store: StateStore, *,
                 on_signal: Callable[[dict], None] | None = None, start: str = "0"):
        self.spec, self.config, self.bus, self.store = spec, config, bus, store
        self.on_signal = on_signal
        self.backoff = Backoff(bus.config.backoff_base_s, bus.config.backoff_cap_s)
        self.reconnects = 0  # times the bus or the store was found away, wherever the runner was
        self.trader = retrying(lambda: ShadowTrader(spec, config, store), self.backoff, on_retry=self._away)
        if start == "$" and self.trader.last_timestamp is None:
            start = retrying(self._warm_from_tail, self.backoff, on_retry=self._away)
        self.reader = GroupReader(bus, spec.stream, spec.name, start=start, count=config.batch_bars)
        self.processed = 0  # bars traded by this incarnation
        self._stop: threading.Event | None = None
        self._lock = threading.Lock()

    def _warm_from_tail(self) -> str:
        """A trader starting at the stream's end ("$"): the last bars already in the stream are its
        warm-up history; it trades the bars after them. Returns the group's start id."""
        tail = self.bus.tail(self.spec.stream, self.trader.window + 1)
        if not tail:
            return "0"
        self.trader.on_bars([{**m.data, "warmup": True} for m in tail])
        return tail[-1].id

    def step(self, block_ms: int | None = None) -> int:
        """Read one batch and trade it; returns how many bars were traded (repeats skipped)."""
        batch = self.reader.read(block_ms)
        try:
            with self._lock:
                signals = self.trader.on_bars([m.data for m in batch])
        except BusUnavailable:
            with self._lock:  # the commit's outcome is unknown: the store knows
                self.trader = retrying(lambda: ShadowTrader(self.spec, self.config, self.store), self.backoff,
                                       on_retry=self._away)
            self.reader.rewind()  # the batch is pending: read it again (bars already traded are skipped)
            raise
        for signal in signals:
            retrying(lambda signal=signal: self.bus.publish(SIGNALS, signal), self.backoff, stop=self._stop,
                     on_retry=self._away)
            if self.on_signal is not None:
                self.on_signal(signal)
        traded = len(signals)
        if traded:
            recorder().count(M.SHADOW_BARS, traded)
        if batch:
            try:
                self.reader.ack([m.id for m in batch])
            except BusUnavailable:
                self.reader.rewind()
                raise
        self.processed += traded
        return traded

    def run(self, stop: threading.Event) -> None:
        """Trade until ``stop`` is set, reconnecting with backoff whenever the bus is away."""
        self._stop = stop
        while not stop.is_set():
            try:
                self.step()
                self.backoff.reset()
            except BusUnavailable as error:
                self._away(error)
                stop.wait(self.backoff.next())
            except Exception:  # pragma: no cover - logged, the loop goes on (failures are values)
                log.exception("%s: unexpected error; retrying", self.spec.name)
                stop.wait(self.backoff.next())

    def _away(self, error: BaseException) -> None:
        self.reconnects += 1
        log.warning("%s: bus unavailable (%s); retrying", self.spec.name, error)

    def status(self) -> dict:
        with self._lock:
            out = self.trader.metrics(with_drift=False)
        out.update({"name": self.spec.name, "stream": self.spec.stream, "reconnects": self.reconnects,
                    "processed": self.processed, "last_timestamp": self.trader.last_timestamp})
        return out

    def metrics(self) -> dict:
        """Metrics with drift (runs the backtest over the traded bars)."""
        with self._lock:
            return self.trader.metrics(with_drift=True)


class LocalShadow:
    """A shadow trader in a thread of this process: the in-process twin of the Ray actor."""

    def __init__(self, spec: ShadowSpec, config: ShadowConfig, bus: EventBus, store: StateStore | None = None,
                 *, start: str = "0"):
        self.spec = spec
        self.runner = ShadowRunner(spec, config, bus, store or open_store(config, bus.config), start=start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.runner.run, args=(self._stop,), name=spec.name, daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self.spec.name

    def status(self) -> dict:
        return self.runner.status()

    def metrics(self) -> dict:
        return self.runner.metrics()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class _ShadowActor:
    """The Ray actor body (decorated in :func:`shadow_actor_class`): a runner in a thread that
    starts in the constructor, so an actor Ray restarts resumes by itself."""

    def __init__(self, spec: dict, config: dict, bus_config: dict, start: str = "0"):
        from ray.util.metrics import Counter

        self.spec = ShadowSpec(**spec)
        shadow_config = ShadowConfig(**config)
        bus = open_bus(BusConfig(**bus_config))
        self._bars = Counter("serving_shadow_bars", description="bars traded by shadow and live paper traders",
                             tag_keys=("strategy_id",))
        tags = {"strategy_id": self.spec.strategy_id}
        self.runner = ShadowRunner(self.spec, shadow_config, bus, open_store(shadow_config, bus.config),
                                   on_signal=lambda _signal: self._bars.inc(1, tags), start=start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.runner.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def status(self) -> dict:
        return self.runner.status()

    def metrics(self) -> dict:
        return self.runner.metrics()

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join(timeout=30)
        return True

    def pid(self) -> int:
        import os

        return os.getpid()


def shadow_actor_class(config: ShadowConfig):
    import ray

    return ray.remote(num_cpus=config.num_cpus, max_restarts=-1, max_task_retries=-1, max_concurrency=4)(_ShadowActor)


class RayShadow:
    """Handle of a shadow actor, with the methods of :class:`LocalShadow`."""

    def __init__(self, spec: ShadowSpec, actor):
        self.spec, self.actor = spec, actor

    @property
    def name(self) -> str:
        return self.spec.name

    def status(self, timeout: float = 60) -> dict:
        import ray

        return ray.get(self.actor.status.remote(), timeout=timeout)

    def metrics(self, timeout: float = 120) -> dict:
        import ray

        return ray.get(self.actor.metrics.remote(), timeout=timeout)

    def stop(self) -> None:
        import ray

        try:
            ray.get(self.actor.stop.remote(), timeout=60)
        finally:
            ray.kill(self.actor, no_restart=True)


def start_ray_shadow(spec: ShadowSpec, config: ShadowConfig, bus_config: BusConfig, *, start: str = "0") -> RayShadow:
    """Start (or find again, by name) the actor ``shadow-<strategy_id>``. Needs ``bus_config.redis_url``."""
    if not bus_config.redis_url:
        raise ValueError("shadow actors on Ray read the bus from Redis: set REDIS_URL (or run them in-process)")
    actor = shadow_actor_class(config).options(name=spec.name, get_if_exists=True).remote(
        spec.to_dict(), config.model_dump(), bus_config.model_dump(), start)
    return RayShadow(spec, actor)


def wait_until(shadows, timestamp: int, timeout_s: float = 300, poll_s: float = 0.05) -> list[dict]:
    """Wait until every shadow has traded the bar at ``timestamp``; returns their statuses."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = [s.status() for s in shadows]
        if all((st["last_timestamp"] or -1) >= timestamp for st in statuses):
            return statuses
        if time.monotonic() > deadline:
            behind = {st["name"]: st["last_timestamp"] for st in statuses if (st["last_timestamp"] or -1) < timestamp}
            raise TimeoutError(f"shadows still behind bar {timestamp} after {timeout_s} s: {behind}")
        time.sleep(poll_s)

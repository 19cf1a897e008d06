"""The one seam code records metrics through: ``recorder().count(SPEC, n, label=value)``.

Code that has something to count (the driver's generation loop, an island, the exchange
fetcher, the candle cache) asks :func:`recorder` for the process's recorder and never knows
which client library sits behind it:

* :class:`NullRecorder` (default): does nothing, so a run without ``--metrics-port``, a test or
  a notebook pays one attribute lookup per call.
* :class:`PrometheusRecorder`: ``prometheus_client`` objects in a registry; the entry point that
  installs it (``evolve run --metrics-port``, a serving process) serves that registry on ``/metrics``.
* :class:`RayRecorder`: ``ray.util.metrics`` objects, exposed by Ray's metrics agent. Inside a
  Ray actor nobody installs a recorder: :func:`recorder` picks this one by itself.

Only entry points call :func:`install` (as only entry points call ``ray.init``). Client
libraries are imported when a recorder is built, never by ``import backtest``.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

from backtest.telemetry.catalogue import CATALOGUE, COUNTER, GAUGE, PROCESS, MetricSpec


class NullRecorder:
    """Records nothing."""

    def count(self, spec: MetricSpec, amount: float = 1.0, **labels: str) -> None:
        pass

    def set(self, spec: MetricSpec, value: float, **labels: str) -> None:
        pass

    def observe(self, spec: MetricSpec, value: float, **labels: str) -> None:
        pass

    def observe_many(self, spec: MetricSpec, values, **labels: str) -> None:
        pass


class _Recorder:
    """Metric objects built on first use (or up front for ``eager`` specs), one per spec."""

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _build(self, spec: MetricSpec) -> Any:
        raise NotImplementedError

    def _metric(self, spec: MetricSpec) -> Any:
        metric = self._metrics.get(spec.name)
        if metric is None:
            with self._lock:
                metric = self._metrics.get(spec.name)
                if metric is None:
                    metric = self._metrics[spec.name] = self._build(spec)
        return metric

    @staticmethod
    def _check(spec: MetricSpec, labels: dict) -> None:
        if len(labels) != len(spec.labels) or any(k not in labels for k in spec.labels):
            raise ValueError(f"{spec.name} takes labels {list(spec.labels)}, got {sorted(labels)}")


class PrometheusRecorder(_Recorder):
    """``prometheus_client`` metrics in ``registry`` (a fresh ``CollectorRegistry`` by default).

    ``eager``: specs created at once, so ``/metrics`` lists them before their first event
    (default: every spec with the ``process`` exporter); any other spec is created on first use.
    """

    def __init__(self, registry: Any = None, eager: tuple[MetricSpec, ...] | None = None) -> None:
        super().__init__()
        import prometheus_client

        self._client = prometheus_client
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        for spec in (eager if eager is not None else [s for s in CATALOGUE if s.exporter == PROCESS]):
            self._metric(spec)

    def _build(self, spec: MetricSpec) -> Any:
        pc = self._client
        common = dict(labelnames=spec.labels, unit=spec.unit, registry=self.registry)
        if spec.kind == COUNTER:
            return pc.Counter(spec.family, spec.help, **common)
        if spec.kind == GAUGE:
            return pc.Gauge(spec.family, spec.help, **common)
        return pc.Histogram(spec.family, spec.help, buckets=spec.buckets, **common)

    def _child(self, spec: MetricSpec, labels: dict) -> Any:
        metric = self._metric(spec)
        if spec.labels:
            self._check(spec, labels)
            return metric.labels(*(str(labels[k]) for k in spec.labels))
        if labels:
            self._check(spec, labels)
        return metric

    def count(self, spec: MetricSpec, amount: float = 1.0, **labels: str) -> None:
        if amount:
            self._child(spec, labels).inc(amount)

    def set(self, spec: MetricSpec, value: float, **labels: str) -> None:
        self._child(spec, labels).set(value)

    def observe(self, spec: MetricSpec, value: float, **labels: str) -> None:
        self._child(spec, labels).observe(value)

    def observe_many(self, spec: MetricSpec, values, **labels: str) -> None:
        child = self._child(spec, labels)
        for value in values:
            child.observe(value)

    def touch(self, spec: MetricSpec, **labels: str) -> None:
        """Create a labelled series at zero (so it exists before its first event)."""
        self._child(spec, labels)


class RayRecorder(_Recorder):
    """``ray.util.metrics`` objects (inside Ray actors and Serve replicas): Ray's metrics agent
    exports them as ``ray_<name>`` (:attr:`MetricSpec.exported_name`)."""

    def __init__(self) -> None:
        super().__init__()
        from ray.util import metrics

        self._client = metrics

    def _build(self, spec: MetricSpec) -> Any:
        m = self._client
        if spec.kind == COUNTER:
            return m.Counter(spec.name, description=spec.help, tag_keys=spec.labels)
        if spec.kind == GAUGE:
            return m.Gauge(spec.name, description=spec.help, tag_keys=spec.labels)
        return m.Histogram(spec.name, description=spec.help, boundaries=list(spec.buckets), tag_keys=spec.labels)

    def _tags(self, spec: MetricSpec, labels: dict) -> dict | None:
        if labels or spec.labels:
            self._check(spec, labels)
            return {k: str(v) for k, v in labels.items()}
        return None

    def count(self, spec: MetricSpec, amount: float = 1.0, **labels: str) -> None:
        if amount:
            self._metric(spec).inc(amount, tags=self._tags(spec, labels))

    def set(self, spec: MetricSpec, value: float, **labels: str) -> None:
        self._metric(spec).set(value, tags=self._tags(spec, labels))

    def observe(self, spec: MetricSpec, value: float, **labels: str) -> None:
        self._metric(spec).observe(value, tags=self._tags(spec, labels))

    def observe_many(self, spec: MetricSpec, values, **labels: str) -> None:
        metric, tags = self._metric(spec), self._tags(spec, labels)
        for value in values:
            metric.observe(value, tags=tags)


_installed: Any = None
_NULL = NullRecorder()


def install(recorder: Any | None) -> None:
    """Make ``recorder`` the process's recorder (None: back to the default). Entry points only."""
    global _installed
    _installed = recorder


def recorder() -> Any:
    """The installed recorder; inside a Ray actor with none installed, a :class:`RayRecorder`
    (made once); else the :class:`NullRecorder`."""
    if _installed is not None:
        return _installed
    if _in_ray_actor():
        install(RayRecorder())
        return _installed
    return _NULL


def _in_ray_actor() -> bool:
    ray = sys.modules.get("ray")  # a process that never imported Ray is not an actor
    if ray is None or not ray.is_initialized():
        return False
    return ray.get_runtime_context().get_actor_id() is not None

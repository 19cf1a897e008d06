"""Metrics: one catalogue of names (:mod:`backtest.telemetry.catalogue`) and one recording seam
(:mod:`backtest.telemetry.recorder`) shared by the backtest's data layer, the search and serving.

    from backtest.telemetry import catalogue as M, recorder
    recorder().count(M.TRIALS_EVALUATED, 48)

No client library is imported here: a process records into the recorder its entry point
installed (``prometheus_client`` for ``evolve run --metrics-port``), into ``ray.util.metrics``
inside Ray actors, and nowhere otherwise.
"""
from backtest.telemetry import catalogue
from backtest.telemetry.catalogue import CATALOGUE, MetricSpec
from backtest.telemetry.recorder import NullRecorder, PrometheusRecorder, RayRecorder, install, recorder

__all__ = ["CATALOGUE", "MetricSpec", "NullRecorder", "PrometheusRecorder", "RayRecorder", "catalogue", "install",
           "recorder"]

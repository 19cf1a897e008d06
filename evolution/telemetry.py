"""The driver's metrics: its ``/metrics`` endpoint and what the search records there.

``evolve run --metrics-port PORT`` (or ``runtime.metrics_port`` in the config; default off)
calls :func:`start_exporter`, which installs a :class:`~backtest.telemetry.PrometheusRecorder`
for the process and serves it with ``prometheus_client.start_http_server`` on
``runtime.metrics_host`` (127.0.0.1 by default). Port 0 picks a free port. Names, types and
units come from :mod:`backtest.telemetry.catalogue`; island actors record theirs through Ray
(``ray_evolution_island_*``), see :mod:`backtest.telemetry.recorder`.

The runner calls the ``record_*`` functions below with what it already holds (a generation's
trial rows, the judged result); with no exporter they return at once.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable

from backtest.telemetry import NullRecorder, PrometheusRecorder, install, recorder
from backtest.telemetry import catalogue as M

HOLDOUT_GATES = ("dsr", "pbo", "min_trades", "max_drawdown")

#: what the driver records (listed on /metrics from the start): the search, and the market data
#: it loads before the search (exchange requests, retries, circuit breaker; a candle cache)
DRIVER_METRICS = (M.GENERATIONS, M.GENERATION_DURATION, M.LAST_GENERATION, M.EVALUATIONS_PER_SECOND,
                  M.TRIALS_EVALUATED, M.TRIALS_CACHED, M.SHARPE, M.PROFIT_FACTOR, M.WIN_RATE, M.GATE_OUTCOMES,
                  M.PROMOTED, M.ERRORS, M.MARKET_DATA_REQUESTS, M.MARKET_DATA_RETRIES, M.MARKET_DATA_CIRCUIT_STATE,
                  M.MARKET_DATA_CACHE_HITS, M.MARKET_DATA_CACHE_MISSES)
#: what island actors record (Ray's metrics agent exports them as ray_<name>; a --local run's
#: islands record them on the driver's endpoint under their own names)
ISLAND_METRICS = (M.ISLAND_EVALUATION_DURATION, M.ISLAND_TRIALS_EVALUATED, M.ISLAND_TRIALS_CACHED)


def start_exporter(port: int, host: str = "127.0.0.1") -> tuple[PrometheusRecorder, int]:
    """Serve the driver's metrics on ``http://host:port/metrics``; returns the recorder and the port."""
    import prometheus_client

    prometheus_client.disable_created_metrics()  # no *_created series next to every counter
    rec = PrometheusRecorder(eager=DRIVER_METRICS)
    for gate in HOLDOUT_GATES:  # every series the alerts and dashboard read exists from the start
        for outcome in ("pass", "fail"):
            rec.touch(M.GATE_OUTCOMES, gate=gate, stage="holdout", outcome=outcome)
    for kind in ("evaluation", "island_lost", "run"):
        rec.touch(M.ERRORS, type=kind)
    server, _thread = prometheus_client.start_http_server(port, addr=host, registry=rec.registry)
    install(rec)
    return rec, int(server.server_port)


def _finite(values: Iterable) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def record_generation(rows: list[dict], seconds: float, cached: int = 0) -> None:
    """One completed generation: its trial rows (evaluations and migrations), driver wall time
    and the offspring the islands scored from their caches."""
    rec = recorder()
    if isinstance(rec, NullRecorder):
        return
    evaluated = [r for r in rows if r["evaluated"]]
    ok = [r for r in evaluated if r.get("error") is None]
    rec.count(M.GENERATIONS)
    rec.observe(M.GENERATION_DURATION, seconds)
    rec.set(M.LAST_GENERATION, time.time())
    rec.set(M.EVALUATIONS_PER_SECOND, len(evaluated) / seconds if seconds > 0 else 0.0)
    rec.count(M.TRIALS_EVALUATED, len(evaluated))
    rec.count(M.TRIALS_CACHED, cached)
    rec.count(M.ERRORS, len(evaluated) - len(ok), type="evaluation")
    rec.observe_many(M.SHARPE, _finite(r.get("wf_sharpe") for r in ok))
    rec.observe_many(M.PROFIT_FACTOR, _finite(r.get("wf_profit_factor") for r in ok))
    rec.observe_many(M.WIN_RATE, _finite(r.get("wf_win_rate") for r in ok))


def record_result(result: dict) -> None:
    """Gate verdicts of the judged hall of fame and the promoted count."""
    rec = recorder()
    for member in result.get("hall_of_fame", []):
        for gate, passed in (member.get("gates") or {}).items():
            rec.count(M.GATE_OUTCOMES, gate=gate, stage="holdout", outcome="pass" if passed else "fail")
    rec.count(M.PROMOTED, len(result.get("promoted", [])))


def record_error(kind: str) -> None:
    """An error of the search: ``island_lost`` or ``run`` (evaluation errors come with the rows)."""
    recorder().count(M.ERRORS, type=kind)


def record_island(island: int, evaluated: int, cached: int, seconds: float) -> None:
    """One island's generation (inside its actor: Ray's metrics agent exports it as ``ray_...``)."""
    rec = recorder()
    if isinstance(rec, NullRecorder):
        return
    label = str(island)
    rec.count(M.ISLAND_TRIALS_EVALUATED, evaluated, island=label)
    rec.count(M.ISLAND_TRIALS_CACHED, cached, island=label)
    if evaluated:
        rec.observe(M.ISLAND_EVALUATION_DURATION, seconds, island=label)

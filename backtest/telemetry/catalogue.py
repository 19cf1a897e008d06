"""Every metric the project exports: its name, type, unit, help and labels, written once.

Plain data, importable from every package (backtest, evolution, serving); the recorders
in :mod:`backtest.telemetry.recorder` build client-library objects from these specs, the
Grafana dashboard and the alert rules under ``configs/`` use exactly these names (a test
checks both), and README.md's metrics table is generated from :data:`CATALOGUE`.

Naming follows Prometheus' conventions: a prefix per room (``evolution_``, ``market_data_``,
``lineage_``, ``serving_``, ``shadow_``), base units as suffixes (``_seconds``, ``_ratio``),
counters end in ``_total``, durations are histograms, and no label takes unbounded values
(no strategy ids: an island index, an exchange id or a gate name are bounded by config).

``exporter`` says where a metric is exposed:

* ``process``: the ``/metrics`` endpoint of the process that records it (the ``evolve run``
  driver, ``--metrics-port``; a serving process's own endpoint), through ``prometheus_client``.
* ``ray``: recorded inside Ray actors and Serve replicas with ``ray.util.metrics`` and exposed
  by Ray's metrics agent on every node, which prefixes the name with ``ray_``
  (:attr:`MetricSpec.exported_name`). Islands of a ``--local`` run live in the driver: there
  their metrics appear on the driver's endpoint without the prefix.
"""
from __future__ import annotations

from dataclasses import dataclass

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
PROCESS, RAY = "process", "ray"
RAY_PREFIX = "ray_"

#: label values of the circuit-breaker gauge (market_data_circuit_state)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class MetricSpec:
    name: str  # the sample name a process exports (counters with _total)
    kind: str  # counter | gauge | histogram
    unit: str  # base unit the name ends with ("seconds", "ratio"), or "" when dimensionless
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histograms only
    exporter: str = PROCESS

    @property
    def family(self) -> str:
        """The metric family name (OpenMetrics): a counter's name without ``_total``."""
        return self.name.removesuffix("_total") if self.kind == COUNTER else self.name

    @property
    def exported_name(self) -> str:
        """The name Prometheus stores: Ray's metrics agent adds ``ray_`` to what actors record."""
        return RAY_PREFIX + self.name if self.exporter == RAY else self.name

    @property
    def exported_family(self) -> str:
        return RAY_PREFIX + self.family if self.exporter == RAY else self.family


def _spec(name: str, kind: str, help: str, *, unit: str = "", labels: tuple[str, ...] = (),
          buckets: tuple[float, ...] = (), exporter: str = PROCESS) -> MetricSpec:
    return MetricSpec(name, kind, unit, help, labels, buckets, exporter)


# ------------------------------------------------------------------ the search (evolve run driver)
GENERATIONS = _spec("evolution_generations_total", COUNTER,
                    "Generations completed (trial-log part and checkpoint written).")
GENERATION_DURATION = _spec("evolution_generation_duration_seconds", HISTOGRAM,
                            "Driver wall time of one generation, from queueing it to its checkpoint.",
                            unit="seconds", buckets=_DURATION_BUCKETS)
LAST_GENERATION = _spec("evolution_last_generation_timestamp_seconds", GAUGE,
                        "Unix time at which the latest generation completed.", unit="seconds")
EVALUATIONS_PER_SECOND = _spec("evolution_evaluations_per_second", GAUGE,
                               "Genomes backtested per second of driver wall time in the latest generation.")
TRIALS_EVALUATED = _spec("evolution_trials_evaluated_total", COUNTER,
                         "Genomes backtested (each distinct genome once per island).")
TRIALS_CACHED = _spec("evolution_trials_cached_total", COUNTER,
                      "Offspring an island had already scored: fitness reused, no backtest.")
SHARPE = _spec("evolution_trial_sharpe", HISTOGRAM,
               "Walk-forward Sharpe ratio (annualized) of each genome evaluated; increase() over a "
               "generation's span is that generation's distribution.",
               buckets=(-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0))
PROFIT_FACTOR = _spec("evolution_trial_profit_factor", HISTOGRAM,
                      "Walk-forward profit factor (gross profit / gross loss) of each genome evaluated.",
                      buckets=(0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0))
WIN_RATE = _spec("evolution_trial_win_rate_ratio", HISTOGRAM,
                 "Walk-forward share of winning trades of each genome evaluated.", unit="ratio",
                 buckets=(0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9))
GATE_OUTCOMES = _spec("evolution_gate_outcomes_total", COUNTER,
                      "Gate verdicts: gate name (dsr, pbo, min_trades, max_drawdown, or a shadow gate), "
                      "stage (holdout: after the search; shadow: paper trading) and outcome (pass, fail).",
                      labels=("gate", "stage", "outcome"))
PROMOTED = _spec("evolution_strategies_promoted_total", COUNTER,
                 "Hall-of-fame strategies that passed every holdout gate (result.json's promoted).")
ERRORS = _spec("evolution_errors_total", COUNTER,
               "Errors of the search by type: evaluation (a genome's backtest failed), island_lost "
               "(an actor died; the generation was replayed), run (the run stopped).",
               labels=("type",))

# ------------------------------------------------------------------ island actors (Ray metrics agent)
ISLAND_EVALUATION_DURATION = _spec("evolution_island_evaluation_duration_seconds", HISTOGRAM,
                                   "Time an island spent backtesting one generation's new genomes.",
                                   unit="seconds", labels=("island",), buckets=_DURATION_BUCKETS, exporter=RAY)
ISLAND_TRIALS_EVALUATED = _spec("evolution_island_trials_evaluated_total", COUNTER,
                                "Genomes an island backtested.", labels=("island",), exporter=RAY)
ISLAND_TRIALS_CACHED = _spec("evolution_island_trials_cached_total", COUNTER,
                             "Offspring whose fitness an island took from its cache of scored genomes.",
                             labels=("island",), exporter=RAY)

# ------------------------------------------------------------------ market data (backtest.data)
MARKET_DATA_REQUESTS = _spec("market_data_requests_total", COUNTER,
                             "Requests to an exchange's REST API by outcome (ok, retryable_error, fatal_error).",
                             labels=("exchange", "outcome"))
MARKET_DATA_RETRIES = _spec("market_data_retries_total", COUNTER,
                            "Requests retried after a transient error (backoff or Retry-After).",
                            labels=("exchange",))
MARKET_DATA_CIRCUIT_STATE = _spec("market_data_circuit_state", GAUGE,
                                  "Circuit breaker per exchange: 0 closed, 1 half_open, 2 open.",
                                  labels=("exchange",))
MARKET_DATA_CACHE_HITS = _spec("market_data_cache_hits_total", COUNTER,
                               "Candle-cache lookups that found the candles.")
MARKET_DATA_CACHE_MISSES = _spec("market_data_cache_misses_total", COUNTER,
                                 "Candle-cache lookups that did not (absent, expired or too short).")
MARKET_DATA_FEED_LAG = _spec("market_data_feed_lag_seconds", GAUGE,
                             "Age of the newest closed bar the bar feed has delivered, per market.",
                             unit="seconds", labels=("exchange", "symbol", "timeframe"))

# ------------------------------------------------------------------ lineage (driver and its sender)
LINEAGE_QUEUED = _spec("lineage_operations_queued_total", COUNTER,
                       "MLflow lineage operations the driver queued for its sender process.")
LINEAGE_SENT = _spec("lineage_operations_sent_total", COUNTER,
                     "Lineage operations the sender applied to the tracking server.")
LINEAGE_SPOOLED = _spec("lineage_operations_spooled_total", COUNTER,
                        "Lineage operations written to the run's mlflow_spool/ (server unreachable or "
                        "sender gone), for `evolve sync`.")

# ------------------------------------------------------------------ serving (controller process)
SERVING_PROMOTIONS = _spec("serving_promotions_total", COUNTER,
                           "Strategies promoted, by the stage they entered (shadow, live).", labels=("stage",))
SERVING_ROLLBACKS = _spec("serving_rollbacks_total", COUNTER,
                          "Live champions rolled back to the previous champion.")
SERVING_STAGE_CHANGES = _spec("serving_stage_changes_total", COUNTER,
                              "Stage changes of registered strategies (MLflow stage tag), from one stage to another.",
                              labels=("from_stage", "to_stage"))
SERVING_ERRORS = _spec("serving_errors_total", COUNTER,
                       "Errors of the serving path by type (feed, shadow, predict, registry, controller).",
                       labels=("type",))

# ------------------------------------------------------------------ Serve replicas and shadow actors (Ray)
SERVING_PREDICTIONS = _spec("serving_predictions_total", COUNTER,
                            "Predictions answered by the Serve endpoint, by outcome (ok, bad_request, error).",
                            labels=("outcome",), exporter=RAY)
SERVING_PREDICTION_LATENCY = _spec("serving_prediction_latency_seconds", HISTOGRAM,
                                   "Time to answer POST /v1/predict inside the replica.", unit="seconds",
                                   buckets=_LATENCY_BUCKETS, exporter=RAY)
SHADOW_BARS = _spec("shadow_bars_processed_total", COUNTER,
                    "Bars the shadow traders paper-traded (one per strategy and bar).", exporter=RAY)
SHADOW_DRIFT = _spec("shadow_drift_ratio", HISTOGRAM,
                     "Absolute difference between a strategy's shadow return and its backtest's return on "
                     "the same bars, observed each time a shadow strategy is judged.", unit="ratio",
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5), exporter=RAY)


CATALOGUE: tuple[MetricSpec, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, MetricSpec))
BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE}


def exported_names(spec: MetricSpec) -> tuple[str, ...]:
    """Every sample name the spec yields in Prometheus (a histogram's _bucket, _sum, _count)."""
    if spec.kind == HISTOGRAM:
        return tuple(spec.exported_name + s for s in ("_bucket", "_sum", "_count"))
    return (spec.exported_name,)

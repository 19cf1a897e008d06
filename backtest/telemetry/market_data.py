"""What the market-data layer records (backtest/data/fetch.py and cache.py call these).

Each is one call into the process's recorder (:func:`backtest.telemetry.recorder`): nothing
when no entry point installed one, ``prometheus_client`` in the ``evolve run`` driver or a
serving process, ``ray.util.metrics`` inside a Ray actor (a bar feed running as one).
"""
from __future__ import annotations

from backtest.telemetry import catalogue as M
from backtest.telemetry.recorder import recorder


def record_request(exchange: str, outcome: str) -> None:
    """A REST request that got an answer (``ok``), a transient error (``retryable_error``) or a
    refusal no retry fixes (``fatal_error``)."""
    recorder().count(M.MARKET_DATA_REQUESTS, exchange=exchange, outcome=outcome)


def record_retry(exchange: str) -> None:
    recorder().count(M.MARKET_DATA_RETRIES, exchange=exchange)


def record_circuit(exchange: str, state: str) -> None:
    """The breaker of ``exchange`` moved to ``state`` (closed, half_open, open)."""
    recorder().set(M.MARKET_DATA_CIRCUIT_STATE, M.CIRCUIT_STATES[state], exchange=exchange)


def record_cache_lookup(hit: bool) -> None:
    recorder().count(M.MARKET_DATA_CACHE_HITS if hit else M.MARKET_DATA_CACHE_MISSES)

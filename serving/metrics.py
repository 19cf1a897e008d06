"""Prometheus metrics of the serving controller (on the driver; actors use ``ray.util.metrics``).

Counters are process-wide by Prometheus' design: the client library exposes them as
``serving_rollbacks_total`` etc. from the default registry.
"""
from __future__ import annotations

from prometheus_client import Counter

ROLLBACKS = Counter("serving_rollbacks", "Live strategies rolled back to the previous champion", ["reason"])
PROMOTIONS = Counter("serving_promotions", "Shadow strategies promoted to champion")
DECISIONS = Counter("serving_gate_decisions", "Promotion-gate decisions by verdict", ["verdict"])

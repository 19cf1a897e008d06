"""Names the search and serving share through MLflow, defined once.

The search (``evolution/lineage/``) registers every promoted strategy as a version of one
registered model; serving (``serving/registry.py``) moves versions through the stages and
reads them back, through MLflow only. Neither imports the other, so the names both write
and read live here, beside the genome they describe: the default experiment and registered
model, the tags of versions and runs, the stages, the model's genome artifact, and the
format of a stage event (a registered-model tag per stage change).

Plain strings and two small functions; no MLflow import.
"""
from __future__ import annotations

import json

DEFAULT_EXPERIMENT = "strategy-evolution"
DEFAULT_REGISTERED_MODEL = "strategy-evolution"

# tags of model versions, logged models and hall-of-fame runs
STRATEGY_ID_TAG = "strategy_id"
STAGE_TAG = "stage"
STAGE_HISTORY_TAG = "stage_history"
LATEST_METRICS_TAG = "latest_metrics"

# the stages a version goes through; a run registers candidates, serving does the rest
CANDIDATE, SHADOW, LIVE, RETIRED = "candidate", "shadow", "live", "retired"
STAGES = (CANDIDATE, SHADOW, LIVE, RETIRED)
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"

# the pyfunc model's artifact holding the genome (serving/model.py reads it)
GENOME_ARTIFACT = "genome"

# stage events: registered-model tags ``stage_event.<13-digit ms>.<suffix>`` that sort by time
STAGE_EVENT_PREFIX = "stage_event."
REGISTERED_SUFFIX = "r{version:05d}"  # a run's registration: one per version, so replaying it is idempotent
SEQUENCE_SUFFIX = "{sequence:06d}"  # a later stage change: the next free sequence number


def stage_event_key(at_ms: int, suffix: str) -> str:
    """Registered-model tag key of a stage event at ``at_ms`` (``suffix``: see the two formats above)."""
    return f"{STAGE_EVENT_PREFIX}{int(at_ms):013d}.{suffix}"


def stage_event_value(version: str | int, stage: str, at_ms: int, reason: str = "",
                      strategy_id: str | None = None) -> str:
    """The JSON a stage event tag holds."""
    return json.dumps({"version": str(version), "stage": stage, "at": int(at_ms), "reason": reason,
                       STRATEGY_ID_TAG: strategy_id}, sort_keys=True)

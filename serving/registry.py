"""The model registry of promoted strategies: MLflow aliases and tags, no deprecated stages.

Conventions (written by the evolution run when it registers a candidate, read here through
MLflow only):

* one registered model (default ``strategy-evolution``); each promoted strategy is a
  version with tags ``strategy_id`` and ``stage`` (candidate, shadow, live, retired);
* alias ``champion``: the live version; alias ``previous-champion``: the one it replaced,
  kept for rollback;
* every stage change is an append-only event: a registered-model tag
  ``stage_event.<ms>.<suffix>`` (format in ``backtest/tracking_names.py``, shared with the
  run that registers the candidates) holding ``{"version", "stage", "at", "reason", "strategy_id"}``,
  and the version's own ``stage_history`` tag (a JSON list) repeats its events;
* a version in shadow or live carries its latest paper-trading metrics in the tag
  ``latest_metrics`` (JSON: the metric names of ``backtest.metrics`` plus ``bars``, ``trades``
  and ``at``, the ms timestamp of the last bar judged), written by the serving controller
  when it judges the version and read by ``GET /v1/strategies`` and ``evolve status``.

So "which version was live at time t" is :meth:`ModelRegistry.live_version_at`::

    registry = ModelRegistry("strategy-evolution", tracking_uri)
    registry.set_stage("3", "shadow")
    registry.promote("3")                 # champion -> 3, old champion -> previous-champion, retired
    registry.rollback(reason="drawdown")  # champion -> previous-champion again
    registry.live_version_at(t_ms)
    registry.load_model()                 # mlflow.pyfunc model of models:/NAME@champion
    registry.in_stages("shadow", "live")  # versions by stage, with their aliases
    registry.set_latest_metrics("3", {...}); registry.latest_metrics("3")
    registry.genome("3"); registry.costs("3")   # what a shadow trader needs: genome, (fees, slippage)
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from backtest.telemetry import catalogue as M
from backtest.telemetry.recorder import recorder
from backtest.tracking_names import (  # noqa: F401  (names serving's modules import from here)
    CANDIDATE,
    CHAMPION,
    LATEST_METRICS_TAG,
    LIVE,
    PREVIOUS_CHAMPION,
    RETIRED,
    SEQUENCE_SUFFIX,
    SHADOW,
    STAGE_EVENT_PREFIX,
    STAGE_HISTORY_TAG,
    STAGE_TAG,
    STAGES,
    STRATEGY_ID_TAG,
    stage_event_key,
    stage_event_value,
)
from backtest.tracking_names import DEFAULT_REGISTERED_MODEL as DEFAULT_MODEL_NAME

PARENT_RUN_TAG = "mlflow.parentRunId"
COSTS_FEES_PARAM = "costs.fees"
COSTS_SLIPPAGE_PARAM = "costs.slippage"


class RegistryError(ValueError):
    """A registry request that cannot be carried out (unknown version or stage, nothing to roll back to)."""


def to_ms(t: int | float | datetime) -> int:
    """Milliseconds since the epoch from ms (int/float) or an aware/naive-UTC datetime."""
    if isinstance(t, datetime):
        return int(t.timestamp() * 1000)
    return int(t)


@dataclass(frozen=True)
class StageEvent:
    version: str
    stage: str
    at: int
    reason: str = ""
    strategy_id: str | None = None
    key: str = ""

    def to_json(self) -> str:
        return stage_event_value(self.version, self.stage, self.at, self.reason, self.strategy_id)


@dataclass(frozen=True)
class VersionInfo:
    version: str
    strategy_id: str | None
    stage: str | None
    aliases: tuple[str, ...]
    run_id: str | None
    tags: dict

    @property
    def history(self) -> list[dict]:
        return json.loads(self.tags.get(STAGE_HISTORY_TAG, "[]"))


def parse_events(tags: dict) -> list[StageEvent]:
    """Stage events from registered-model tags, in order (time, then key)."""
    events = []
    for key, value in tags.items():
        if not key.startswith(STAGE_EVENT_PREFIX):
            continue
        data = json.loads(value)
        events.append(StageEvent(str(data["version"]), data["stage"], int(data["at"]), data.get("reason", ""),
                                 data.get("strategy_id"), key))
    return sorted(events, key=lambda e: (e.at, e.key))


def live_version_at(events: Iterable[StageEvent], t: int | float | datetime) -> str | None:
    """The version that was live at time ``t`` (ms or datetime), from the stage events; None if none was."""
    t_ms = to_ms(t)
    live = None
    for event in sorted(events, key=lambda e: (e.at, e.key)):
        if event.at > t_ms:
            break
        if event.stage == LIVE:
            live = event.version
        elif event.version == live:
            live = None
    return live


class ModelRegistry:
    """Stages of one registered model's versions through aliases and tags."""

    def __init__(self, name: str = DEFAULT_MODEL_NAME, tracking_uri: str | None = None, client=None):
        from mlflow import MlflowClient

        self.name = name
        self.tracking_uri = tracking_uri
        self.client = client or MlflowClient(tracking_uri)

    # ---------------------------------------------------------------- reading

    def _info(self, mv) -> VersionInfo:
        tags = dict(mv.tags or {})
        return VersionInfo(str(mv.version), tags.get(STRATEGY_ID_TAG), tags.get(STAGE_TAG),
                           tuple(getattr(mv, "aliases", None) or ()), mv.run_id, tags)

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first, with its aliases (a search does not return them: they
        come from the registered model)."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        infos = sorted((self._info(mv) for mv in found), key=lambda v: int(v.version))
        if not infos:
            return infos
        aliases: dict[str, list[str]] = {}
        for alias, version in (getattr(self.client.get_registered_model(self.name), "aliases", None) or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        return [replace(v, aliases=tuple(sorted(aliases.get(v.version, ())))) for v in infos]

    def version(self, version: str | int) -> VersionInfo:
        try:
            return self._info(self.client.get_model_version(self.name, str(version)))
        except Exception as error:
            raise RegistryError(f"{self.name} has no version {version!r}: {str(error).splitlines()[0]}") from None

    def version_of(self, strategy_id: str) -> VersionInfo | None:
        """The newest version registered for a strategy id."""
        found = [v for v in self.versions() if v.strategy_id == strategy_id]
        return found[-1] if found else None

    def by_alias(self, alias: str) -> VersionInfo | None:
        try:
            return self._info(self.client.get_model_version_by_alias(self.name, alias))
        except Exception:
            return None

    def champion(self) -> VersionInfo | None:
        return self.by_alias(CHAMPION)

    def previous_champion(self) -> VersionInfo | None:
        return self.by_alias(PREVIOUS_CHAMPION)

    def in_stages(self, *stages: str) -> list[VersionInfo]:
        """Versions whose ``stage`` tag is one of ``stages`` (oldest first)."""
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise RegistryError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
        return [v for v in self.versions() if v.stage in stages]

    def latest_metrics(self, version: str | int) -> dict | None:
        """The version's latest shadow or live paper-trading metrics (the ``latest_metrics`` tag)."""
        raw = self.version(version).tags.get(LATEST_METRICS_TAG)
        return json.loads(raw) if raw else None

    def genome(self, version: str | int) -> dict:
        """The genome a version's pyfunc model carries (its ``genome.json`` artifact)."""
        import mlflow

        self.version(version)  # a clear error for an unknown version
        try:
            location = self.client.get_model_version_download_uri(self.name, str(version))
            path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location.rstrip('/')}/artifacts/genome.json",
                                                       tracking_uri=self.tracking_uri)
        except Exception as error:
            raise RegistryError(f"{self.name} version {version}: no genome artifact ({str(error).splitlines()[0]})") from None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    def costs(self, version: str | int) -> tuple[float, float]:
        """(fees, slippage) of the run that found the version: params ``costs.fees`` and
        ``costs.slippage`` of its run or of that run's parent (the evolution run); 0 when absent."""
        run_id = self.version(version).run_id
        seen = 0
        while run_id and seen < 3:
            run = self.client.get_run(run_id)
            params = run.data.params or {}
            if COSTS_FEES_PARAM in params or COSTS_SLIPPAGE_PARAM in params:
                return float(params.get(COSTS_FEES_PARAM, 0.0)), float(params.get(COSTS_SLIPPAGE_PARAM, 0.0))
            run_id = (run.data.tags or {}).get(PARENT_RUN_TAG)
            seen += 1
        return 0.0, 0.0

    def history(self) -> list[StageEvent]:
        return parse_events(dict(self.client.get_registered_model(self.name).tags or {}))

    def live_version_at(self, t: int | float | datetime) -> str | None:
        return live_version_at(self.history(), t)

    def model_uri(self, alias: str = CHAMPION) -> str:
        return f"models:/{self.name}@{alias}"

    def load_model(self, alias: str = CHAMPION):
        """The pyfunc model under an alias; ``predict(candles)`` gives backtest positions."""
        import mlflow

        if self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.pyfunc.load_model(self.model_uri(alias))

    # ---------------------------------------------------------------- writing

    def set_stage(self, version: str | int, stage: str, *, reason: str = "", at: int | float | datetime | None = None
                  ) -> StageEvent:
        """Record a stage change (append-only) and set the version's ``stage`` tag.

        ``live`` goes through :meth:`promote`, which also moves the aliases.
        """
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; choose one of {list(STAGES)}")
        if stage == LIVE:
            return self.promote(version, reason=reason, at=at)
        return self._record(self.version(version), stage, reason, at)

    def promote(self, version: str | int, *, reason: str = "", at: int | float | datetime | None = None
                ) -> StageEvent:
        """Make ``version`` the champion (live); the old champion is retired and kept as previous-champion."""
        info = self.version(version)
        current = self.champion()
        at_ms = self._now(at)
        if current is not None and current.version == info.version:
            return self._record(info, LIVE, reason or "already champion", at_ms)
        event = self._record(info, LIVE, reason, at_ms)
        if current is not None:
            self._record(current, RETIRED, f"replaced by version {info.version}", at_ms)
            self.client.set_registered_model_alias(self.name, PREVIOUS_CHAMPION, current.version)
        self.client.set_registered_model_alias(self.name, CHAMPION, info.version)
        return event

    def rollback(self, *, reason: str = "", at: int | float | datetime | None = None) -> VersionInfo:
        """Put the previous champion back live; the failed champion is retired."""
        previous = self.previous_champion()
        if previous is None:
            raise RegistryError(f"{self.name} has no {PREVIOUS_CHAMPION!r} version to roll back to")
        current = self.champion()
        at_ms = self._now(at)
        if current is not None:
            self._record(current, RETIRED, reason or f"rolled back to version {previous.version}", at_ms)
        self._record(previous, LIVE, reason or "rollback", at_ms)
        self.client.set_registered_model_alias(self.name, CHAMPION, previous.version)
        self.client.delete_registered_model_alias(self.name, PREVIOUS_CHAMPION)
        return self.version(previous.version)

    def set_latest_metrics(self, version: str | int, metrics: dict) -> None:
        """Write the version's latest paper-trading metrics (NaN and infinities become null)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self.client.set_model_version_tag(self.name, str(version), LATEST_METRICS_TAG,
                                          json.dumps(clean, sort_keys=True, allow_nan=False))

    # ---------------------------------------------------------------- internals

    @staticmethod
    def _now(at: Any) -> int:
        return to_ms(at) if at is not None else int(time.time() * 1000)

    def _record(self, info: VersionInfo, stage: str, reason: str, at: Any) -> StageEvent:
        at_ms = self._now(at)
        registered_tags = dict(self.client.get_registered_model(self.name).tags or {})
        seq = sum(1 for k in registered_tags if k.startswith(STAGE_EVENT_PREFIX))
        key = stage_event_key(at_ms, SEQUENCE_SUFFIX.format(sequence=seq))
        while key in registered_tags:
            seq += 1
            key = stage_event_key(at_ms, SEQUENCE_SUFFIX.format(sequence=seq))
        event = StageEvent(info.version, stage, at_ms, reason, info.strategy_id, key)
        self.client.set_registered_model_tag(self.name, key, event.to_json())
        history = info.history + [{"stage": stage, "at": at_ms, "reason": reason}]
        self.client.set_model_version_tag(self.name, info.version, STAGE_HISTORY_TAG, json.dumps(history))
        self.client.set_model_version_tag(self.name, info.version, STAGE_TAG, stage)
        if info.stage != stage:
            recorder().count(M.SERVING_STAGE_CHANGES, from_stage=info.stage or "none", to_stage=stage)
            if stage == SHADOW:
                recorder().count(M.SERVING_PROMOTIONS, stage=SHADOW)
        return event

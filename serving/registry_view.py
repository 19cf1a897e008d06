"""What one Serve replica knows of the model registry: loaded strategies, the champion, reachability.

:class:`RegistryView` reads the registry of ``serving/registry.py`` through ``MlflowClient``:

* the ``champion`` alias is polled every ``poll_s`` seconds on a thread of its own; a new
  champion is loaded before it is switched to, so no request waits for a load and every
  request is answered by either the old or the new champion, never by none. Shadow versions
  and the previous champion are kept loaded on standby (refreshed every
  ``standby_refresh_s``), so a promotion or a rollback is a switch, not a download;
* versions load from MLflow as the pyfunc model of ``serving/model.py`` and are unwrapped:
  :class:`LoadedStrategy` calls ``backtest.positions`` on the candle array directly (the
  pyfunc ``predict`` on a DataFrame costs about 0.3 ms more for 500 candles);
* strategy ids resolve to versions (the champion first, then the newest shadow or live
  version, then the newest of any stage), an answer kept for ``resolve_ttl_s``;
* when the registry cannot be reached, everything already loaded goes on answering and
  :meth:`RegistryView.health` says so.

MLflow errors are sorted into "the registry says no" (:class:`UnknownVersion`, a 404 for the
client) and "the registry cannot be asked" (:class:`RegistryUnavailable`, a 503).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.registry import (
    CHAMPION,
    LATEST_METRICS_TAG,
    LIVE,
    PREVIOUS_CHAMPION,
    SHADOW,
    STAGE_TAG,
    STRATEGY_ID_TAG,
    ModelRegistry,
)

logger = logging.getLogger("ray.serve")
_ABSENT_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
SERVED_STAGES = (SHADOW, LIVE)


class UnknownVersion(LookupError):
    """The registry answered: no such version or strategy."""


class RegistryUnavailable(RuntimeError):
    """The registry could not be asked (server away, timeout)."""


def _absent(error: Exception) -> bool:
    return getattr(error, "error_code", None) in _ABSENT_CODES


def _one_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class LoadedStrategy:
    """One registered version, ready to answer: the genome on the fast path, else the pyfunc model."""

    version: str
    strategy_id: str | None
    warmup: int
    genome: dict | None = None
    pyfunc: Any = None

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Target positions (T,) for validated ccxt rows (float64 (T, 6))."""
        if self.genome is not None:
            from backtest import positions

            return positions(self.genome, rows)
        import pandas as pd

        from backtest.data import COLUMNS

        frame = pd.DataFrame(rows, columns=list(COLUMNS)).astype({"timestamp": "int64"})
        return np.asarray(self.pyfunc.predict(frame)).reshape(-1)

    def signal(self, rows: np.ndarray) -> int:
        return int(self.positions(rows)[-1])


def strategy_from_pyfunc(version: str, strategy_id: str | None, model) -> LoadedStrategy:
    """Unwrap ``serving/model.py``'s StrategyModel to its genome; any other pyfunc model is used as is."""
    from backtest import normalize_genome
    from backtest import strategy_id as genome_id
    from backtest.strategy import warmup_bars

    python_model = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else None
    genome = getattr(python_model, "genome", None)
    if not isinstance(genome, dict):
        return LoadedStrategy(version, strategy_id, 1, pyfunc=model)
    normalized = normalize_genome(genome)
    found = genome_id(genome)
    if strategy_id is not None and found != strategy_id:
        raise RegistryUnavailable(f"version {version} is tagged strategy {strategy_id} but its genome is {found}")
    return LoadedStrategy(version, found, max(1, warmup_bars(normalized)), genome=genome)


class RegistryView:
    """One replica's reading of a registered model (see the module docstring)."""

    def __init__(self, registry: ModelRegistry, *, poll_s: float = 0.5, listing_ttl_s: float = 1.0,
                 resolve_ttl_s: float = 10.0, standby_refresh_s: float = 10.0, standby_max: int = 16):
        self.registry = registry
        self.poll_s = float(poll_s)
        self.listing_ttl_s = float(listing_ttl_s)
        self.resolve_ttl_s = float(resolve_ttl_s)
        self.standby_refresh_s = float(standby_refresh_s)
        self.standby_max = int(standby_max)
        self._standby: dict[str, LoadedStrategy] = {}
        self._resolved: dict[str, tuple[str, float]] = {}
        self._champion: LoadedStrategy | None = None
        self._champion_known = False
        self._last_ok_ms: int | None = None
        self._last_error: str | None = None
        self._listing: tuple[float, dict] | None = None
        self._load_lock = threading.Lock()  # MLflow's models-from-code loading is not thread-safe
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tmp = tempfile.mkdtemp(prefix="evolve-serve-models-")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Read the champion once (so a replica starts with it), then watch it on a thread."""
        self.poll_champion()
        self._thread = threading.Thread(target=self._watch, name="champion-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        shutil.rmtree(self._tmp, ignore_errors=True)

    @property
    def watching(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _watch(self) -> None:
        next_standby = 0.0
        while not self._stop.wait(self.poll_s):
            self.poll_champion()
            if time.monotonic() >= next_standby:
                self.refresh_standby()
                next_standby = time.monotonic() + self.standby_refresh_s

    def refresh_standby(self) -> None:
        """Keep the shadow versions (candidates for promotion) and the previous champion loaded,
        so that a promotion or a rollback is a switch, not a download. Never raises."""
        try:
            versions = self.registry.versions()
            champion = self._champion
            wanted = {v.version: v for v in versions if v.stage == SHADOW}
            previous = _aliases(self.registry.client.get_registered_model(self.registry.name)).get(PREVIOUS_CHAMPION)
            wanted.update({v.version: v for v in versions if v.version == previous})
            wanted.pop(champion.version if champion else None, None)
            for version in list(self._standby):
                if version not in wanted:
                    del self._standby[version]
            for version, info in list(wanted.items())[-self.standby_max:]:
                if version not in self._standby:
                    self._standby[version] = self.load(version, info.tags)
        except Exception as error:
            self._last_error = self._last_error or _one_line(error)

    # ------------------------------------------------------------------ registry calls

    def _call(self, method: str, *args):
        """One MlflowClient call; connection trouble becomes RegistryUnavailable, "no such thing" stays."""
        try:
            result = getattr(self.registry.client, method)(*args)
        except Exception as error:
            if _absent(error):
                self._contact_ok()
                raise UnknownVersion(_one_line(error)) from None
            self._last_error = _one_line(error)
            raise RegistryUnavailable(f"the model registry cannot be reached: {self._last_error}") from None
        self._contact_ok()
        return result

    def _contact_ok(self) -> None:
        self._last_ok_ms = _now_ms()
        self._last_error = None

    def poll_champion(self) -> LoadedStrategy | None:
        """Read the alias; load and switch to a new champion. Never raises (the state says what went wrong)."""
        try:
            try:
                mv = self._call("get_model_version_by_alias", self.registry.name, CHAMPION)
            except UnknownVersion:
                self._champion, self._champion_known = None, True
                return None
            version = str(mv.version)
            current = self._champion
            if current is None or current.version != version:
                started = time.monotonic()
                ready = self._standby.pop(version, None)
                self._champion = ready or self.load(version, dict(mv.tags or {}))
                if current is not None:
                    self._standby[current.version] = current  # a rollback to it needs no load
                logger.info("champion: version %s -> %s (%s in %.0f ms)", current.version if current else None,
                            version, "kept loaded" if ready else "loaded", 1000 * (time.monotonic() - started))
            self._champion_known = True
        except Exception as error:  # the watch goes on; health() reports it
            self._last_error = self._last_error or _one_line(error)
        return self._champion

    # ------------------------------------------------------------------ reading

    @property
    def champion(self) -> LoadedStrategy | None:
        return self._champion

    def version_tags(self, version: str) -> dict:
        return dict(self._call("get_model_version", self.registry.name, version).tags or {})

    def load(self, version: str, tags: dict | None = None) -> LoadedStrategy:
        """Download and load one version (blocking: call it off the event loop)."""
        import mlflow

        tags = self.version_tags(version) if tags is None else tags
        # the version's own artifact location, through this registry's client: MLflow's models:/
        # scheme would ask the process-wide registry URI
        uri = self._call("get_model_version_download_uri", self.registry.name, version)
        with self._load_lock:
            target = tempfile.mkdtemp(prefix=f"v{version}-", dir=self._tmp)
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=target,
                                                            tracking_uri=self.registry.tracking_uri)
                model = mlflow.pyfunc.load_model(local)
            except Exception as error:
                shutil.rmtree(target, ignore_errors=True)
                if _absent(error):
                    raise UnknownVersion(f"{self.registry.name} has no version {version}") from None
                self._last_error = _one_line(error)
                raise RegistryUnavailable(f"version {version} could not be loaded: {self._last_error}") from None
        self._contact_ok()
        return strategy_from_pyfunc(version, tags.get(STRATEGY_ID_TAG), model)

    def resolve(self, strategy_id: str) -> str:
        """The version that answers for a strategy id (blocking). An answer is reused for
        ``resolve_ttl_s``, and for as long as the registry is away."""
        champion = self._champion
        if champion is not None and champion.strategy_id == strategy_id:
            return champion.version
        cached = self._resolved.get(strategy_id)
        if cached is not None and time.monotonic() - cached[1] < self.resolve_ttl_s:
            return cached[0]
        try:
            found = self._call("search_model_versions",
                               f"name = '{self.registry.name}' and tags.{STRATEGY_ID_TAG} = '{strategy_id}'")
        except RegistryUnavailable:
            if cached is not None:
                return cached[0]
            raise
        if not found:
            raise UnknownVersion(f"no registered version of strategy {strategy_id!r} in {self.registry.name!r}")
        served = [mv for mv in found if (mv.tags or {}).get(STAGE_TAG) in SERVED_STAGES]
        version = str(max(served or found, key=lambda mv: int(mv.version)).version)
        self._resolved[strategy_id] = (version, time.monotonic())
        return version

    def strategies(self) -> dict:
        """Every shadow and live version with its stage and latest metrics (cached ``listing_ttl_s``)."""
        cached = self._listing
        if cached is not None and time.monotonic() - cached[0] < self.listing_ttl_s:
            # fresh, unless the registry went away since it was read (the alias poll noticed)
            return cached[1] if self._last_error is None else {**cached[1], "stale": True}
        try:
            versions = self.registry.versions()
            aliases = _aliases(self.registry.client.get_registered_model(self.registry.name)) if versions else {}
        except Exception as error:
            self._last_error = _one_line(error)
            if cached is None:
                raise RegistryUnavailable(f"the model registry cannot be reached: {self._last_error}") from None
            return {**cached[1], "stale": True}
        self._contact_ok()
        listing = {
            "champion": aliases.get(CHAMPION),
            "strategies": [{"strategy_id": v.strategy_id, "model_version": v.version, "stage": v.stage,
                            "aliases": sorted(a for a, target in aliases.items() if target == v.version),
                            "latest_metrics": _metrics(v.tags)}
                           for v in versions if v.stage in SERVED_STAGES],
            "stale": False,
            "as_of": _now_ms(),
        }
        self._listing = (time.monotonic(), listing)
        return listing

    def health(self, loaded: list[str]) -> dict:
        last = self._last_ok_ms
        stale_after_ms = 1000 * max(5 * self.poll_s, 2.0)
        reachable = self._last_error is None and last is not None and _now_ms() - last <= stale_after_ms
        champion = self._champion
        return {
            "status": "ok" if reachable else "degraded",
            "registry_reachable": reachable,
            "registry_error": self._last_error,
            "last_registry_contact_ms": last,
            "champion": champion.version if champion else None,
            "loaded_versions": sorted(set(loaded) | set(self._standby) | ({champion.version} if champion else set()),
                                      key=int),
        }


def _aliases(registered_model) -> dict[str, str]:
    """alias -> version of a registered model (search results carry no aliases)."""
    found = registered_model.aliases or {}
    if isinstance(found, dict):
        return {str(k): str(v) for k, v in found.items()}
    return {a.alias: str(a.version) for a in found}


def _metrics(tags: dict) -> dict | None:
    text = tags.get(LATEST_METRICS_TAG)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}
    return value if isinstance(value, dict) else {"value": value}

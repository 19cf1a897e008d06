"""Where a run's lineage goes: the run config's ``tracking:`` section with its overrides, resolved once.

One function, :func:`resolve_tracking`, used by ``evolve run``, ``evolve sync`` and
``notebooks/lineage.ipynb`` alike. The tracking URI is, first found:

1. ``--tracking-uri`` (``evolve run``, ``evolve sync``),
2. ``$MLFLOW_TRACKING_URI`` (MLflow's own variable),
3. ``tracking.uri`` in the run config,
4. ``sqlite:///mlflow.db``.

A relative SQLite path is made absolute against the project folder: the nearest folder
upward from the working directory that holds ``pyproject.toml`` (the repository root,
also from ``notebooks/``), else the working directory. Under ``ray job submit`` the
working directory is Ray's temporary copy of the project, so a relative SQLite path there
is an error that says what to pass instead (an absolute URI through the job's runtime
environment). ``$MLFLOW_EXPERIMENT_NAME`` overrides ``tracking.experiment``; ``--no-tracking``
or ``tracking.enabled: false`` turns lineage off. No MLflow import here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from backtest.tracking_names import DEFAULT_EXPERIMENT, DEFAULT_REGISTERED_MODEL

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the entrypoint of `ray job submit`
PROJECT_MARKER = "pyproject.toml"
SQLITE_PREFIX = "sqlite:///"
# URI schemes MLflow 3 tracks to (MLflow 3 refuses a plain ./mlruns file store)
SCHEMES = ("http://", "https://", "sqlite://", "postgresql://", "postgresql+", "mysql://", "mysql+", "mssql://",
           "mssql+", "databricks")


class TrackingError(ValueError):
    """A tracking setting that cannot be used; the message says what to pass instead."""


@dataclass(frozen=True)
class TrackingSettings:
    """Resolved tracking of one run (``uri`` absolute for SQLite)."""

    enabled: bool
    uri: str
    experiment: str = DEFAULT_EXPERIMENT
    registered_model: str = DEFAULT_REGISTERED_MODEL
    spool: bool = True


def project_folder(start: str | Path | None = None) -> Path:
    """The nearest folder from ``start`` (default: the working directory) upward holding
    ``pyproject.toml``; ``start`` itself when there is none."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_MARKER).is_file():
            return folder
    return start


def ray_job_id(environ: dict | None = None) -> str | None:
    """The submission id when this process is the entrypoint of a ``ray job submit`` job."""
    raw = (os.environ if environ is None else environ).get(RAY_JOB_ENV)
    if not raw:
        return None
    try:
        metadata = json.loads(raw).get("metadata") or {}
    except (ValueError, AttributeError):
        metadata = {}
    return str(metadata.get("job_submission_id") or "unknown")


def sqlite_path(uri: str) -> str | None:
    """The database path of a ``sqlite:///`` URI (None for other URIs or an in-memory database)."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = uri[len(SQLITE_PREFIX):].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def check_scheme(uri: str) -> str:
    """``uri`` stripped; TrackingError unless MLflow 3 can track to it."""
    uri = uri.strip()
    if not uri.startswith(SCHEMES):
        raise TrackingError(f"tracking URI {uri!r}: use an MLflow server (http://HOST:PORT) or a database "
                            f"(sqlite:///mlflow.db, postgresql://...); MLflow 3 refuses a ./mlruns file store")
    return uri


def resolve_uri(uri: str, base: str | Path | None = None, environ: dict | None = None) -> str:
    """``uri`` with a relative SQLite path made absolute against ``base`` (default: the project
    folder); other URIs unchanged. Raises TrackingError for a relative SQLite path inside a
    ``ray job submit`` job, or a URI MLflow cannot track to."""
    uri = check_scheme(uri)
    path = sqlite_path(uri)
    if path is None or Path(path).is_absolute():
        return uri
    job = ray_job_id(environ)
    if job is not None:
        raise TrackingError(
            f"tracking URI {uri!r} is relative, and this Ray job ({job}) runs where its lineage would be lost (Ray's "
            f"temporary copy of the working directory, or a container's); pass an absolute one, e.g. "
            f"ray job submit --runtime-env-json '{{\"env_vars\": {{\"{TRACKING_URI_ENV}\": "
            f"\"sqlite:////ABSOLUTE/PATH/mlflow.db\"}}}}' ... (or an http:// server; or --no-tracking)")
    folder = Path(base) if base is not None else project_folder()
    rest = uri[len(SQLITE_PREFIX):][len(path):]
    return SQLITE_PREFIX + str((folder / path).resolve()) + rest


def resolve_tracking(config=None, *, uri: str | None = None, disabled: bool = False,
                     environ: dict | None = None, base: str | Path | None = None) -> TrackingSettings:
    """The tracking of a run from its config's ``tracking`` section (``evolution.config.TrackingConfig``,
    or None for the defaults) and the overrides: ``uri`` (``--tracking-uri``), ``disabled``
    (``--no-tracking``), ``$MLFLOW_TRACKING_URI`` and ``$MLFLOW_EXPERIMENT_NAME``."""
    env = os.environ if environ is None else environ
    enabled = not disabled and (config is None or config.enabled)
    chosen = uri or env.get(TRACKING_URI_ENV) or (config.uri if config is not None else None) or DEFAULT_TRACKING_URI
    experiment = env.get(EXPERIMENT_ENV) or (config.experiment if config is not None else DEFAULT_EXPERIMENT)
    registered = config.registered_model if config is not None else DEFAULT_REGISTERED_MODEL
    spool = config.spool if config is not None else True
    if not enabled:
        return TrackingSettings(False, chosen, experiment, registered, spool)
    return TrackingSettings(True, resolve_uri(chosen, base, env), experiment, registered, spool)


def existing_store(settings: TrackingSettings) -> str:
    """The URI of a store to read from; for SQLite, TrackingError unless the database exists
    (opening a missing one would create an empty file)."""
    path = sqlite_path(settings.uri)
    if path is not None and not Path(path).is_file():
        raise TrackingError(f"no MLflow store at {settings.uri}: run `evolve run` first, or set "
                            f"{TRACKING_URI_ENV} to the store your runs log to")
    return settings.uri

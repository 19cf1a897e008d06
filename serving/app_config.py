"""The one config of the Serve app (``serving/app.py``): where the registry is, how often the
champion alias is read, request limits. The ``args`` of ``serving/serve_config.yaml`` and the
options of ``evolve serve`` map onto it one to one.

Replica placement (``num_cpus``, autoscaling bounds, health-check period) is Ray Serve's
own deployment config: defaults on the deployment in ``serving/app.py``, overridable under
``deployments:`` in ``serving/serve_config.yaml``.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serving.registry import DEFAULT_MODEL_NAME
from serving.schemas import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CANDLES

TOKEN_ENV = "EVOLVE_SERVE_TOKEN"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # as `evolve run`: $MLFLOW_TRACKING_URI first
# Settings a running app takes without restarting its replicas (Serve's user_config, reconfigure()).
LIVE_SETTINGS = ("alias_poll_s", "listing_ttl_s", "max_body_bytes", "max_candles")


class ServeAppConfig(BaseModel):
    """Settings of the Serve app; unknown keys are refused ("did you mean ...?")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tracking_uri: str | None = Field(None, description="MLflow tracking/registry URI; default $MLFLOW_TRACKING_URI, "
                                                       f"else {DEFAULT_TRACKING_URI} (made absolute)")
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1)
    alias_poll_s: float = Field(0.5, gt=0.0, le=300.0, description="seconds between reads of the champion alias")
    listing_ttl_s: float = Field(1.0, ge=0.0, le=300.0, description="GET /v1/strategies reads the registry at most this often")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, le=256 * 1024 * 1024)
    max_candles: int = Field(DEFAULT_MAX_CANDLES, ge=1, le=1_000_000)
    max_models_per_replica: int = Field(16, ge=1, le=4096, description="versions kept loaded per replica (LRU)")
    registry_timeout_s: int = Field(5, ge=1, le=300, description="MLflow HTTP request timeout in a replica (s)")
    registry_retries: int = Field(1, ge=0, le=10, description="MLflow HTTP retries in a replica")

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else value.strip()

    def resolved(self) -> ServeAppConfig:
        """The same config with the tracking URI decided here (replicas may run in another directory)."""
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
        return self.model_copy(update={"tracking_uri": uri})

    def live_settings(self) -> dict:
        return {name: getattr(self, name) for name in LIVE_SETTINGS}


def load_config(args: dict | None) -> ServeAppConfig:
    """A config from a dict (the YAML's ``args``), with a one-line error for a wrong key or value."""
    args = dict(args or {})
    unknown = [key for key in args if key not in ServeAppConfig.model_fields]
    if unknown:
        guess = difflib.get_close_matches(unknown[0], list(ServeAppConfig.model_fields), n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else f"; known: {sorted(ServeAppConfig.model_fields)}"
        raise ValueError(f"serve app config: unknown key {unknown[0]!r}{hint}")
    try:
        return ServeAppConfig(**args).resolved()
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"serve app config: {where}: {first['msg']}") from None

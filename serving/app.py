"""The Ray Serve app: the HTTP prediction endpoint of the registry's strategies.

Routes (the contract in ``design.md``; OpenAPI at ``/openapi.json``, pages at ``/docs``):

* ``POST /v1/predict`` ``{"strategy_id"?, "model_version"?, "candles": [[ts_ms, o, h, l, c, v], ...]}``
  -> ``{"strategy_id", "model_version", "signal", "action", "timestamp"}``; without a strategy id
  or version the live champion answers. A version can also be named by Serve's multiplexing
  header ``serve_multiplexed_model_id``, which routes the request to a replica holding it.
* ``GET /v1/strategies``: every shadow and live version, its stage and latest metrics.
* ``GET /healthz``: 200 with ``status`` ``ok`` or ``degraded`` (registry unreachable: loaded
  models still answer).
* ``POST /v1/strategies/{version}/promote``, ``POST /v1/rollback``: stage changes through
  ``ModelRegistry``; they need ``Authorization: Bearer $EVOLVE_SERVE_TOKEN`` (401 without or
  with a wrong one; 403 while the server has no token set).

One deployment, :class:`StrategyServer`: each replica parses and validates the candles
(``serving/schemas.py``), picks the version (``serving/registry_view.py``: the champion
through its alias, any other version through ``serve.multiplexed``) and answers with the last
value of ``backtest.positions``. Client mistakes are 4xx with a one-line ``detail``; 503 means
the registry is needed and away. Build it with :func:`application` or, from
``serve run serving/serve_config.yaml``, with :func:`build_app`.
"""
# no `from __future__ import annotations` in this module: FastAPI reads the routes' type hints
import asyncio
import hmac
import os
import time

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve

from backtest.telemetry import catalogue as M
from backtest.telemetry.recorder import recorder
from serving.app_config import LIVE_SETTINGS, TOKEN_ENV, ServeAppConfig, load_config
from serving.registry import LIVE, ModelRegistry, RegistryError
from serving.registry_view import LoadedStrategy, RegistryUnavailable, RegistryView, UnknownVersion
from serving.schemas import (
    ACTIONS,
    MODEL_VERSION_HEADER,
    ClientError,
    ErrorResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    StageChangeRequest,
    StageChangeResponse,
    StrategiesResponse,
    check_version,
    parse_predict_body,
)

DEPLOYMENT_NAME = "StrategyServer"
# replicas of 0.25 CPU (2-CPU machines): two for availability, up to four under load
AUTOSCALING = {"min_replicas": 2, "initial_replicas": 2, "max_replicas": 4, "target_ongoing_requests": 8}
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 422, 503)}
_AUTH_ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422, 503)}
_STAGE_BODY = {"requestBody": {"required": False, "content": {
    "application/json": {"schema": StageChangeRequest.model_json_schema()}}}}

api = FastAPI(
    title="Strategy evolution: live strategies",
    version="1",
    description="Signals of the registry's champion and shadow strategies, computed as `backtest.positions`.",
)


@api.exception_handler(ClientError)
async def _client_error(request: Request, error: ClientError) -> JSONResponse:
    return JSONResponse({"detail": error.message}, status_code=error.status)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


def _json(payload: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ClientError(413, f"the body is {int(length)} bytes, the limit is {limit}; send fewer candles")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ClientError(413, f"the body is over the limit of {limit} bytes; send fewer candles")
        chunks.append(chunk)
    return b"".join(chunks)


async def _reason(request: Request) -> str:
    """The optional ``{"reason": ...}`` body of a stage change."""
    body = await _read_body(request, 64 * 1024)
    if not body.strip():
        return ""
    try:
        return StageChangeRequest.model_validate_json(body).reason
    except ValueError as error:
        first = error.errors()[0] if hasattr(error, "errors") else {"msg": str(error), "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ClientError(422, f"{where}: {first.get('msg', 'invalid')}; send {{\"reason\": \"...\"}} or nothing") from None


def _warm_up_kernels() -> None:
    """Load the compiled positions kernels before the first request (from the numba cache)."""
    from backtest import positions
    from backtest.data import synthetic_market
    from backtest.families.rules import sma_crossover_genome

    positions(sma_crossover_genome(5, 20, "both"), synthetic_market(64, seed=0).to_rows())


# (helpers above the class: @serve.deployment serializes the class when it is decorated)
@serve.deployment(
    name=DEPLOYMENT_NAME,
    ray_actor_options={"num_cpus": 0.25},
    autoscaling_config=AUTOSCALING,
    max_ongoing_requests=32,
    health_check_period_s=2.0,
    health_check_timeout_s=10.0,
    graceful_shutdown_timeout_s=5.0,
)
@serve.ingress(api)
class StrategyServer:
    """One replica of the endpoint (see the module docstring)."""

    def __init__(self, config: dict):
        self.config = ServeAppConfig(**config)
        # MLflow reads these per request; a replica fails fast instead of retrying for minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.config.registry_timeout_s))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.config.registry_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        self.token = os.environ.get(TOKEN_ENV) or None
        self.limits = self.config.live_settings()
        self.registry = ModelRegistry(self.config.model_name, self.config.tracking_uri)
        self.view = RegistryView(self.registry, poll_s=self.config.alias_poll_s, listing_ttl_s=self.config.listing_ttl_s,
                                 standby_max=self.config.max_models_per_replica)
        self._tags: dict[str, dict] = {}
        self._loaded: set[str] = set()

        async def load(version: str) -> LoadedStrategy:  # a function: serve.multiplexed keeps its cache on it
            return await self._load(version)

        self.get_model = serve.multiplexed(max_num_models_per_replica=self.config.max_models_per_replica)(load)
        _warm_up_kernels()
        self.view.start()

    def reconfigure(self, user_config: dict) -> None:
        """Serve's user_config: the live settings (:data:`LIVE_SETTINGS`), applied without a restart."""
        unknown = set(user_config or {}) - set(LIVE_SETTINGS)
        if unknown:
            raise ValueError(f"user_config: unknown keys {sorted(unknown)}; live settings are {list(LIVE_SETTINGS)}")
        self.config = self.config.model_copy(update=dict(user_config or {}))
        ServeAppConfig(**self.config.model_dump())  # validate the merged values
        self.limits = self.config.live_settings()
        self.view.poll_s = self.config.alias_poll_s
        self.view.listing_ttl_s = self.config.listing_ttl_s

    def check_health(self) -> None:
        """Serve's health check: the champion watch must be running (the registry may be away)."""
        if not self.view.watching:
            raise RuntimeError("the champion watch thread has stopped")

    def __del__(self):
        view = getattr(self, "view", None)
        if view is not None:
            view.stop()

    # ------------------------------------------------------------------ models

    async def _load(self, version: str) -> LoadedStrategy:
        strategy = await asyncio.to_thread(self.view.load, version, self._tags.get(version))
        self._loaded.add(version)
        return strategy

    async def _strategy(self, strategy_id: str | None, version: str | None) -> LoadedStrategy:
        try:
            if version is None and strategy_id is not None:
                version = await asyncio.to_thread(self.view.resolve, strategy_id)
            champion = self.view.champion
            if version is None:
                if champion is None:
                    health = self.view.health([])
                    if not health["registry_reachable"]:
                        raise ClientError(503, f"no champion loaded and the registry is unreachable: "
                                               f"{health['registry_error']}")
                    raise ClientError(404, f"{self.registry.name!r} has no live champion yet: promote a version, "
                                           "or ask one with model_version")
                strategy = champion
            elif champion is not None and champion.version == version:
                strategy = champion
            else:
                if version not in self._tags:
                    self._tags[version] = await asyncio.to_thread(self.view.version_tags, version)
                strategy = await self.get_model(version)
        except UnknownVersion:
            what = f"strategy {strategy_id!r}" if version is None else f"model version {version}"
            raise ClientError(404, f"{what} is not registered in {self.registry.name!r}; "
                                   "GET /v1/strategies lists the served ones") from None
        except RegistryUnavailable as error:
            raise ClientError(503, str(error)) from None
        if strategy_id is not None and strategy.strategy_id != strategy_id:
            raise ClientError(422, f"model version {strategy.version} is strategy {strategy.strategy_id}, "
                                   f"not {strategy_id}; send one of strategy_id and model_version")
        return strategy

    # ------------------------------------------------------------------ routes

    @api.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": PredictRequest.model_json_schema()}}}},
              summary="The target position of a strategy at the close of the last candle")
    async def predict(self, request: Request) -> Response:
        started, outcome = time.perf_counter(), "error"
        try:
            response = await self._predict(request)
            outcome = "ok"
            return response
        except ClientError:
            outcome = "bad_request"
            raise
        finally:
            recorder().count(M.SERVING_PREDICTIONS, outcome=outcome)
            recorder().observe(M.SERVING_PREDICTION_LATENCY, time.perf_counter() - started)

    async def _predict(self, request: Request) -> Response:
        body = await _read_body(request, self.limits["max_body_bytes"])
        parsed = parse_predict_body(body, max_candles=self.limits["max_candles"],
                                    header_version=serve.get_multiplexed_model_id() or None)
        strategy = await self._strategy(parsed.strategy_id, parsed.model_version)
        n = parsed.rows.shape[0]
        if n < strategy.warmup:
            raise ClientError(422, f"strategy {strategy.strategy_id} (version {strategy.version}) needs at least "
                                   f"{strategy.warmup} candles (its warm-up), got {n}; send more history")
        try:
            signal = strategy.signal(parsed.rows)
        except ValueError as error:  # the backtest's own candle checks
            raise ClientError(422, f"candles: {error}") from None
        return _json({"strategy_id": strategy.strategy_id, "model_version": strategy.version, "signal": signal,
                      "action": ACTIONS[signal], "timestamp": parsed.last_timestamp})

    @api.get("/v1/strategies", response_model=StrategiesResponse, responses={503: {"model": ErrorResponse}},
             summary="Every shadow and live strategy with its stage and latest metrics")
    async def strategies(self) -> Response:
        try:
            return _json(await asyncio.to_thread(self.view.strategies))
        except RegistryUnavailable as error:
            raise ClientError(503, str(error)) from None

    @api.get("/healthz", response_model=HealthResponse,
             summary="ok, or degraded while the registry is away (loaded versions still answer)")
    async def healthz(self) -> Response:
        return _json(self.view.health(sorted(self._loaded)))

    @api.post("/v1/strategies/{version}/promote", response_model=StageChangeResponse, responses=_AUTH_ERRORS,
              openapi_extra=_STAGE_BODY,
              summary="Make a version the live champion (needs the bearer token)")
    async def promote(self, version: str, request: Request) -> Response:
        self._authorize(request)
        version = check_version(version, "version")
        reason = await _reason(request) or "promoted over HTTP"

        def run() -> dict:
            self.view.version_tags(version)  # 404 for an unknown version, 503 for an absent registry
            previous = self.view.champion
            self.registry.promote(version, reason=reason)
            return {"champion": version, "previous_champion": previous.version if previous else None}

        return await self._stage_change(run)

    @api.post("/v1/rollback", response_model=StageChangeResponse, responses=_AUTH_ERRORS, openapi_extra=_STAGE_BODY,
              summary="Put the previous champion back live (needs the bearer token)")
    async def rollback(self, request: Request) -> Response:
        self._authorize(request)
        reason = await _reason(request) or "rolled back over HTTP"

        def run() -> dict:
            previous = self.view.champion
            restored = self.registry.rollback(reason=reason)
            return {"champion": restored.version, "previous_champion": previous.version if previous else None}

        return await self._stage_change(run)

    async def _stage_change(self, run) -> Response:
        try:
            result = await asyncio.to_thread(run)
        except UnknownVersion as error:
            raise ClientError(404, str(error)) from None
        except RegistryUnavailable as error:
            raise ClientError(503, str(error)) from None
        except RegistryError as error:
            raise ClientError(409, str(error)) from None
        except Exception as error:  # MLflow's client failing mid-way: the registry is the problem
            raise ClientError(503, f"the model registry failed: {str(error).splitlines()[0][:300]}") from None
        await asyncio.to_thread(self.view.poll_champion)  # this replica at once, the others within alias_poll_s
        return _json({**result, "stage": LIVE})

    def _authorize(self, request: Request) -> None:
        if self.token is None:
            raise ClientError(403, f"stage changes over HTTP are disabled: start the server with {TOKEN_ENV} set")
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ClientError(401, f"send 'Authorization: Bearer <token>' (the server's {TOKEN_ENV})")
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ClientError(401, "the bearer token is wrong")


def application(config: ServeAppConfig | None = None, **deployment_options) -> serve.Application:
    """The Serve application for a config; ``deployment_options`` go to ``StrategyServer.options``."""
    config = (config or ServeAppConfig()).resolved()
    deployment = StrategyServer.options(user_config=config.live_settings(), **deployment_options)
    return deployment.bind(config.model_dump())


def build_app(args: dict) -> serve.Application:
    """Serve's application builder (``import_path: serving.app:build_app``; ``args`` = :class:`ServeAppConfig`)."""
    return application(load_config(args))


__all__ = ["DEPLOYMENT_NAME", "MODEL_VERSION_HEADER", "StrategyServer", "application", "build_app"]

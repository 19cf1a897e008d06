"""The wire format of the Serve HTTP API (``serving/app.py``): request and response models,
and the parsing of a ``POST /v1/predict`` body into validated candles.

The models document the API in its OpenAPI schema (``/openapi.json``, ``/docs``). The
predict body is parsed by :func:`parse_predict_body` (orjson, then one numpy array and the
data layer's own candle checks, ``backtest.data.OHLCV``): 0.5 ms for 500 candles on a busy
2-CPU machine, where the ``json.loads`` FastAPI uses took 1.4 ms alone before pydantic
(``benchmarks/bench_serve.py`` prints the profile). Every problem raises
:class:`ClientError` with an HTTP status and a one-line message naming the field or row.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from backtest.data import COLUMNS, OHLCV, DataValidationError

ACTIONS = {-1: "SELL", 0: "HOLD", 1: "BUY"}
# Serve's own header for model multiplexing: the proxy routes the request to a replica that
# already holds that model (ray.serve: serve.get_multiplexed_model_id()).
MODEL_VERSION_HEADER = "serve_multiplexed_model_id"
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024  # ~18,000 candles of typical ccxt JSON
DEFAULT_MAX_CANDLES = 20_000
_MAX_EXACT_INTEGER = 2.0**53  # float64 holds every integer below this exactly
_VERSION = re.compile(r"^[1-9][0-9]{0,9}$")
_STRATEGY_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

CandleRow = Annotated[list[float], Field(min_length=6, max_length=6,
                                         description="[ts_ms, open, high, low, close, volume]")]


class ClientError(Exception):
    """A request the client must fix (4xx), or a server state it must wait out (503)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class PredictRequest(BaseModel):
    """``POST /v1/predict``: candles oldest first, as ccxt's ``fetch_ohlcv`` returns them."""

    model_config = ConfigDict(extra="forbid")

    strategy_id: str | None = Field(None, description="The strategy to ask; default: the live champion.")
    model_version: str | int | None = Field(
        None, description=f"A registered model version to ask (any stage); also the header {MODEL_VERSION_HEADER!r}.")
    candles: list[CandleRow] = Field(
        ..., min_length=1, max_length=DEFAULT_MAX_CANDLES,
        description="Rows [ts_ms, open, high, low, close, volume], oldest first, strictly increasing timestamps.")


class PredictResponse(BaseModel):
    strategy_id: str | None
    model_version: str
    signal: Literal[-1, 0, 1] = Field(..., description="Target position at the close of the last candle.")
    action: Literal["SELL", "HOLD", "BUY"]
    timestamp: int = Field(..., description="ts_ms of the last candle.")


class StrategyEntry(BaseModel):
    strategy_id: str | None
    model_version: str
    stage: str
    aliases: list[str]
    latest_metrics: dict[str, Any] | None = Field(
        None, description="The version's latest paper-trading metrics (tag latest_metrics), if any were judged yet.")


class StrategiesResponse(BaseModel):
    champion: str | None
    strategies: list[StrategyEntry]
    stale: bool = Field(False, description="True when the registry is unreachable and this is the last list read.")
    as_of: int = Field(..., description="ms timestamp of the registry read.")


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    registry_reachable: bool
    registry_error: str | None
    last_registry_contact_ms: int | None
    champion: str | None
    loaded_versions: list[str]


class StageChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500)


class StageChangeResponse(BaseModel):
    champion: str
    previous_champion: str | None
    stage: str


class ErrorResponse(BaseModel):
    detail: str


@dataclass(frozen=True)
class PredictInput:
    strategy_id: str | None
    model_version: str | None
    rows: np.ndarray  # float64 (T, 6), validated
    last_timestamp: int


def check_version(value: Any, where: str = "model_version") -> str:
    """A registered model version number as MLflow spells it ("3")."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ClientError(422, f"{where}: expected a version number such as \"3\", got {type(value).__name__}")
    text = str(value).strip()
    if not _VERSION.match(text):
        raise ClientError(422, f"{where}: {str(value)[:40]!r} is not a model version number (1, 2, 3, ...)")
    return text


def check_strategy_id(value: Any) -> str:
    if not isinstance(value, str):
        raise ClientError(422, f"strategy_id: expected a string, got {type(value).__name__}")
    if not _STRATEGY_ID.match(value):
        raise ClientError(422, f"strategy_id: {value[:40]!r} is not a strategy id (letters, digits, '_.:-', "
                               "at most 128 characters)")
    return value


def parse_predict_body(body: bytes, *, max_candles: int = DEFAULT_MAX_CANDLES,
                       header_version: str | None = None) -> PredictInput:
    """The validated request of a ``POST /v1/predict`` body (raises :class:`ClientError`)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        data = _lenient_json(body, error)  # NaN, Infinity, 1e999: JSON has no such numbers, Python's json does
    if not isinstance(data, dict):
        raise ClientError(422, f"the body must be a JSON object with 'candles', got {type(data).__name__}")
    unknown = [key for key in data if key not in PredictRequest.model_fields]
    if unknown:
        guess = difflib.get_close_matches(unknown[0], list(PredictRequest.model_fields), n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else f"; expected {list(PredictRequest.model_fields)}"
        raise ClientError(422, f"unknown field {unknown[0]!r}{hint}")
    strategy_id = data.get("strategy_id")
    strategy_id = None if strategy_id is None else check_strategy_id(strategy_id)
    version = data.get("model_version")
    version = None if version is None else check_version(version)
    if header_version:
        header_version = check_version(header_version, f"header {MODEL_VERSION_HEADER}")
        if version is not None and version != header_version:
            raise ClientError(422, f"model_version {version} and header {MODEL_VERSION_HEADER} {header_version} "
                                   "disagree; send one of them")
        version = header_version
    if "candles" not in data:
        raise ClientError(422, "candles: missing; send rows [[ts_ms, open, high, low, close, volume], ...], oldest first")
    rows = candle_rows(data["candles"], max_candles)
    return PredictInput(strategy_id, version, rows, int(rows[-1, 0]))


def _lenient_json(body: bytes, strict_error: Exception) -> Any:
    """What Python's json makes of a body orjson refused: non-finite numbers reach the candle
    checks (which name the row); anything else is a 400 with orjson's message."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ClientError(400, f"the body is not valid JSON: {strict_error}") from None


def candle_rows(candles: Any, max_candles: int = DEFAULT_MAX_CANDLES) -> np.ndarray:
    """ccxt-style rows as a validated float64 ``(T, 6)`` array (raises :class:`ClientError`)."""
    if not isinstance(candles, list):
        raise ClientError(422, f"candles: expected a list of rows [ts_ms, open, high, low, close, volume], "
                               f"got {type(candles).__name__}")
    if not candles:
        raise ClientError(422, "candles: the list is empty; send at least the strategy's warm-up bars")
    if len(candles) > max_candles:
        raise ClientError(413, f"candles: {len(candles)} rows, the limit is {max_candles}; send the most recent ones")
    try:
        rows = np.array(candles)
    except (ValueError, TypeError, OverflowError):
        rows = None
    if rows is None or rows.ndim != 2 or rows.shape[1] != len(COLUMNS) or rows.dtype.kind not in "iuf":
        raise ClientError(422, _first_bad_row(candles))
    rows = rows.astype(np.float64, copy=False)
    timestamp = rows[:, 0]
    bad = ~np.isfinite(rows)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ClientError(422, f"candles row {row}: {COLUMNS[column]} is {rows[row, column]} (NaN or infinite); "
                               "fill or drop this candle")
    bad = (np.abs(timestamp) >= _MAX_EXACT_INTEGER) | (timestamp != np.floor(timestamp))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ClientError(422, f"candles row {row}: timestamp {timestamp[row]!r} is not a whole number of epoch "
                               "milliseconds")
    try:
        OHLCV(timestamp=timestamp.astype(np.int64), open=rows[:, 1], high=rows[:, 2], low=rows[:, 3],
              close=rows[:, 4], volume=rows[:, 5])
    except DataValidationError as error:
        raise ClientError(422, f"candles {error}") from None
    return rows


def _first_bad_row(candles: list) -> str:
    """The message for the first row that is not six numbers (the slow path of a bad request)."""
    for row, values in enumerate(candles):
        if not isinstance(values, list):
            return f"candles row {row}: expected a list [ts_ms, open, high, low, close, volume], got {_short(values)}"
        if len(values) != len(COLUMNS):
            return (f"candles row {row}: {len(values)} values, expected 6 "
                    "[ts_ms, open, high, low, close, volume]")
        for column, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"candles row {row}: {COLUMNS[column]} is {_short(value)}, expected a number"
            if isinstance(value, int) and abs(value) >= _MAX_EXACT_INTEGER:
                return f"candles row {row}: {COLUMNS[column]} {value} is out of range"
    return "candles: expected rows of six numbers [ts_ms, open, high, low, close, volume]"


def _short(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode() if value is not None else "null"
    return text if len(text) <= 40 else text[:37] + "..."

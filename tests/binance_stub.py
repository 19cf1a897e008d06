"""A local HTTP server that speaks the public Binance spot REST endpoints ccxt calls.

Serves ``GET /api/v3/exchangeInfo`` (markets) and ``GET /api/v3/klines`` (candles) from a
known, deterministic series, so tests and benchmarks can check that what was fetched is
exactly what was served. Faults are injectable:

- ``inject("429", retry_after=2)``   429 with a ``Retry-After`` header
- ``inject("5xx", status=503)``       a server error
- ``inject("timeout", delay=0.5)``    sleep past the client's timeout before answering
- ``inject("truncated")``             a 200 whose JSON body is cut in half
- ``shuffle = True``                  candles in each page come out of order
- ``duplicate = True``                pages repeat candles (inside a page and across pages)
- ``fail_after_pages = k``            after k good klines pages, every klines request is a 503
- ``delist(symbol_id)``: listed in exchangeInfo, but klines answer -1121
- unknown symbols answer 400 ``{"code": -1121, "msg": "Invalid symbol."}`` like Binance

Only the standard library is used (``http.server`` in a daemon thread).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

HOUR_MS = 3_600_000
DEFAULT_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
INTERVAL_MS = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": HOUR_MS,
    "4h": 4 * HOUR_MS,
    "1d": 24 * HOUR_MS,
}


@dataclass(frozen=True)
class Series:
    """A deterministic candle series: rows are ``[ts_ms, open, high, low, close, volume]``."""

    symbol_id: str
    interval: str
    rows: tuple[tuple[int, float, float, float, float, float], ...]

    @property
    def timestamps(self) -> np.ndarray:
        return np.array([r[0] for r in self.rows], dtype=np.int64)

    def column(self, i: int) -> np.ndarray:
        return np.array([r[i] for r in self.rows], dtype=np.float64)


def make_series(
    symbol_id: str = "BTCUSDT",
    *,
    interval: str = "1h",
    start_ms: int = DEFAULT_START_MS,
    n_bars: int = 2500,
    seed: int = 7,
    omit: frozenset[int] = frozenset(),
) -> Series:
    """A random walk rounded to cents (exact through a decimal string round trip).

    ``omit`` holds bar indices the exchange never had (outages), so the series has gaps.
    """
    step = INTERVAL_MS[interval]
    rng = np.random.default_rng(seed)
    close = np.round(20_000.0 + np.cumsum(rng.normal(0.0, 50.0, n_bars)), 2)
    open_ = np.round(np.concatenate([[close[0] - 10.0], close[:-1]]), 2)
    spread = np.round(rng.uniform(1.0, 40.0, n_bars), 2)
    high = np.round(np.maximum(open_, close) + spread, 2)
    low = np.round(np.minimum(open_, close) - spread, 2)
    volume = np.round(rng.uniform(1.0, 500.0, n_bars), 3)
    rows = tuple(
        (start_ms + i * step, float(open_[i]), float(high[i]), float(low[i]), float(close[i]), float(volume[i]))
        for i in range(n_bars)
        if i not in omit
    )
    return Series(symbol_id, interval, rows)


@dataclass
class Fault:
    kind: str  # "429" | "5xx" | "timeout" | "truncated"
    path: str = "klines"  # the fault applies to requests whose path ends with this
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.5


@dataclass
class RequestRecord:
    path: str
    params: dict[str, str]
    status: int


@dataclass
class _State:
    series: dict[str, Series]
    faults: list[Fault] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    shuffle: bool = False
    duplicate: bool = False
    fail_after_pages: int | None = None
    good_pages: int = 0
    delisted: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _market(symbol_id: str, base: str, quote: str) -> dict:
    return {
        "symbol": symbol_id,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _split_symbol(symbol_id: str) -> tuple[str, str]:
    for quote in ("USDT", "USDC", "BUSD", "BTC", "ETH", "EUR"):
        if symbol_id.endswith(quote) and len(symbol_id) > len(quote):
            return symbol_id[: -len(quote)], quote
    return symbol_id[:-3], symbol_id[-3:]


def _fmt(x: float) -> str:
    return repr(float(x))


class _Handler(BaseHTTPRequestHandler):
    server_version = "binance-stub/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    @property
    def state(self) -> _State:
        return self.server.state  # type: ignore[attr-defined]

    def do_GET(self):  # noqa: N802 - http.server naming
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        fault = self._take_fault(path)
        try:
            if fault is not None:
                self._serve_fault(fault, path, params)
            elif path == "/api/v3/exchangeInfo":
                self._exchange_info(path, params)
            elif path == "/api/v3/klines":
                self._klines(path, params)
            elif path in ("/api/v3/ping",):
                self._send(200, {}, path, params)
            elif path == "/api/v3/time":
                self._send(200, {"serverTime": int(time.time() * 1000)}, path, params)
            else:
                self._send(404, {"code": -1, "msg": f"stub does not serve {path}"}, path, params)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout fired); nothing to answer

    # -- faults -----------------------------------------------------------------

    def _take_fault(self, path: str) -> Fault | None:
        with self.state.lock:
            for i, fault in enumerate(self.state.faults):
                if path.endswith(fault.path):
                    return self.state.faults.pop(i)
            if (
                path.endswith("klines")
                and self.state.fail_after_pages is not None
                and self.state.good_pages >= self.state.fail_after_pages
            ):
                return Fault("5xx", status=503)
        return None

    def _serve_fault(self, fault: Fault, path: str, params: dict[str, str]) -> None:
        if fault.kind == "429":
            headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
            body = {"code": -1003, "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE."}
            self._send(429, body, path, params, headers=headers)
        elif fault.kind == "5xx":
            self._send(fault.status, {"code": -1001, "msg": "Internal error; unable to process your request."},
                       path, params)
        elif fault.kind == "timeout":
            time.sleep(fault.delay)
            self._send(200, [], path, params, status_logged=-1)
        elif fault.kind == "truncated":
            if path.endswith("klines"):
                body = json.dumps(self._page(params)[1])
            else:
                body = json.dumps(self._exchange_info_body())
            self._send_raw(200, body[: len(body) // 2].encode(), path, params)
        else:  # pragma: no cover - a typo in a test
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    # -- endpoints --------------------------------------------------------------

    def _exchange_info_body(self) -> dict:
        symbols = [_market(sid, *_split_symbol(sid)) for sid in sorted(self.state.series)]
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _exchange_info(self, path: str, params: dict[str, str]) -> None:
        self._send(200, self._exchange_info_body(), path, params)

    def _page(self, params: dict[str, str]) -> tuple[int, object]:
        symbol_id = params.get("symbol", "")
        series = self.state.series.get(symbol_id)
        if series is None or symbol_id in self.state.delisted:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if params.get("interval") != series.interval:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        limit = min(int(params.get("limit", 500)), 1000)
        rows = series.rows
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if "startTime" in params:
            lo = int(np.searchsorted(ts, int(params["startTime"]), side="left"))
            hi = len(rows) if "endTime" not in params else int(np.searchsorted(ts, int(params["endTime"]), side="right"))
            chosen = list(rows[lo:min(hi, lo + limit)])
        else:
            hi = len(rows) if "endTime" not in params else int(np.searchsorted(ts, int(params["endTime"]), side="right"))
            chosen = list(rows[max(0, hi - limit):hi])
        if self.state.duplicate and chosen:
            # repeat the candle before the window (overlap across pages) and one inside it
            lo_index = rows.index(chosen[0])
            if lo_index > 0:
                chosen.insert(0, rows[lo_index - 1])
            chosen.insert(len(chosen) // 2, chosen[len(chosen) // 2])
        if self.state.shuffle and len(chosen) > 1:
            order = np.random.default_rng(len(chosen)).permutation(len(chosen))
            chosen = [chosen[i] for i in order]
        step = INTERVAL_MS[series.interval]
        body = [
            [r[0], _fmt(r[1]), _fmt(r[2]), _fmt(r[3]), _fmt(r[4]), _fmt(r[5]), r[0] + step - 1, "0", 10, "0", "0", "0"]
            for r in chosen
        ]
        return 200, body

    def _klines(self, path: str, params: dict[str, str]) -> None:
        status, body = self._page(params)
        if status == 200:
            with self.state.lock:
                self.state.good_pages += 1
        self._send(status, body, path, params)

    # -- plumbing ---------------------------------------------------------------

    def _send(self, status: int, body: object, path: str, params: dict[str, str], *,
              headers: dict[str, str] | None = None, status_logged: int | None = None) -> None:
        self._send_raw(status, json.dumps(body).encode(), path, params, headers=headers,
                       status_logged=status_logged)

    def _send_raw(self, status: int, payload: bytes, path: str, params: dict[str, str], *,
                  headers: dict[str, str] | None = None, status_logged: int | None = None) -> None:
        with self.state.lock:
            self.state.requests.append(RequestRecord(path, params, status if status_logged is None else status_logged))
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


class BinanceStub:
    """Start with ``with BinanceStub() as stub:``; point ccxt at ``stub.url``."""

    def __init__(self, series: list[Series] | None = None) -> None:
        series = series if series is not None else [make_series()]
        self._state = _State(series={s.symbol_id: s for s in series})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.state = self._state  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def series(self, symbol_id: str = "BTCUSDT") -> Series:
        return self._state.series[symbol_id]

    # fault controls
    def inject(self, kind: str, *, times: int = 1, path: str = "klines", status: int = 503,
               retry_after: str | None = None, delay: float = 0.5) -> None:
        with self._state.lock:
            for _ in range(times):
                self._state.faults.append(Fault(kind, path, status, retry_after, delay))

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()
            self._state.fail_after_pages = None
            self._state.good_pages = 0

    @property
    def shuffle(self) -> bool:
        return self._state.shuffle

    @shuffle.setter
    def shuffle(self, value: bool) -> None:
        self._state.shuffle = value

    @property
    def duplicate(self) -> bool:
        return self._state.duplicate

    @duplicate.setter
    def duplicate(self, value: bool) -> None:
        self._state.duplicate = value

    def delist(self, symbol_id: str) -> None:
        """Keep listing the market in exchangeInfo, but answer its klines with -1121."""
        with self._state.lock:
            self._state.delisted.add(symbol_id)

    def fail_after(self, pages: int | None) -> None:
        with self._state.lock:
            self._state.fail_after_pages = pages
            self._state.good_pages = 0

    @property
    def requests(self) -> list[RequestRecord]:
        with self._state.lock:
            return list(self._state.requests)

    def kline_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.path.endswith("/klines")]

    def reset_log(self) -> None:
        with self._state.lock:
            self._state.requests.clear()

    def start(self) -> BinanceStub:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="binance-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> BinanceStub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

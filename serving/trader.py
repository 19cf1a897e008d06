"""One strategy paper-trading bar by bar: the logic of a shadow (or live) trader, no bus, no Ray.

For each new closed candle the trader computes the strategy's target position with the
backtest's own code (``backtest.positions``), moves its :class:`serving.paper.PaperBook`
there with the run's fees and slippage, and commits the bar, its position and equity to
its :class:`serving.state.StateStore` (a batch of bars in one step, before the bus entries
are acked). A candle at or before the last one traded is skipped, so a bar delivered twice
is traded once.

Signals equal ``backtest.positions`` over the whole history, bar for bar. Computing them
over all bars every time would cost O(T) per bar; instead positions are computed over the
last ``window`` bars (at least ``warmup_factor`` x the genome's warm-up, so that moving
averages with infinite memory have converged to the last bit), which starts that
computation from a flat book. Its answer is used only when, in the second half of the
window, it agrees with the recorded positions on a bar where both are flat or both opened
the same position at the same bar (for a rules genome without stops: hold the same
position): from there on both walks are in the same state and see the same signals.
Otherwise (no such bar in the window) the positions over the whole in-memory history
answer (``fallbacks`` counts those).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from backtest import evaluate, positions, strategy_id
from backtest.data import OHLCV
from backtest.metrics import TOTAL_RETURN
from backtest.strategy import normalize_genome, warmup_bars
from serving.paper import PaperBook
from serving.state import N_RECORDS, RECORD_WIDTH, StateStore

UNKNOWN = -2  # recorded position of a warm-up bar before the first trade
DRIFT = "drift"
ERROR_RATE = "error_rate"
BARS = "bars"
TRADES = "trades"
AT = "at"


def _candles(rows: np.ndarray) -> OHLCV:
    """History rows as candles: OHLCV's array checks, not the DataFrame validation that
    ``positions`` gives raw rows (70% of a bar's time over a long window)."""
    return OHLCV(rows[:, 0].astype(np.int64), rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5])


class ShadowConfig(BaseModel):
    """How shadow traders run (one config for all of them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_bars: int = Field(1024, ge=64, description="bars of the signal window (raised to warmup_factor x warm-up)")
    warmup_factor: int = Field(64, ge=8)
    max_history_bars: int = Field(100_000, ge=1_000, description="bars kept in memory per trader")
    init_cash: float = Field(1.0, gt=0)
    batch_bars: int = Field(200, ge=1, description="bars read from the bus per request")
    num_cpus: float = Field(0.05, gt=0, le=2, description="CPUs reserved per shadow actor")
    state_dir: str = Field("shadow_state", description="state files when no Redis is configured")


@dataclass(frozen=True)
class ShadowSpec:
    """What one trader trades: a genome with the run's costs, on one bar stream."""

    genome: dict
    stream: str
    fees: float = 0.0
    slippage: float = 0.0
    version: str | None = None
    strategy_id: str = field(default="")

    def __post_init__(self) -> None:
        genome = normalize_genome(self.genome)
        object.__setattr__(self, "genome", genome)
        if not self.strategy_id:
            object.__setattr__(self, "strategy_id", strategy_id(genome))

    @property
    def name(self) -> str:
        """The Ray actor name, also the bus consumer group."""
        return f"shadow-{self.strategy_id}"

    def to_dict(self) -> dict:
        return {"genome": self.genome, "stream": self.stream, "fees": self.fees, "slippage": self.slippage,
                "version": self.version, "strategy_id": self.strategy_id}


class _History:
    """Candle rows (n, 6) and recorded positions (n,), capped at ``cap`` rows, amortized appends."""

    def __init__(self, cap: int, rows: np.ndarray, recorded: np.ndarray):
        self.cap = cap
        size = max(1024, 2 * rows.shape[0])
        self._rows = np.empty((size, 6), dtype=np.float64)
        self._pos = np.empty(size, dtype=np.int64)
        self.n = 0
        self.extend(rows, recorded)

    def extend(self, rows: np.ndarray, recorded: np.ndarray) -> None:
        k = rows.shape[0]
        if self.n + k > self._rows.shape[0]:
            keep = min(self.n, self.cap)
            size = max(2 * (keep + k), 1024)
            new_rows, new_pos = np.empty((size, 6)), np.empty(size, dtype=np.int64)
            new_rows[:keep] = self._rows[self.n - keep:self.n]
            new_pos[:keep] = self._pos[self.n - keep:self.n]
            self._rows, self._pos, self.n = new_rows, new_pos, keep
        self._rows[self.n:self.n + k] = rows
        self._pos[self.n:self.n + k] = recorded
        self.n += k

    @property
    def rows(self) -> np.ndarray:
        return self._rows[max(0, self.n - self.cap):self.n]

    @property
    def recorded(self) -> np.ndarray:
        return self._pos[max(0, self.n - self.cap):self.n]


class ShadowTrader:
    """Paper-trades one :class:`ShadowSpec`; resumes from its store where it stopped."""

    def __init__(self, spec: ShadowSpec, config: ShadowConfig, store: StateStore):
        self.spec, self.config, self.store = spec, config, store
        # a rules genome without stops carries no state but its position: agreeing on it suffices
        self._stateless = (spec.genome.get("family", "rules") == "rules" and spec.genome.get("stop_loss") is None
                           and spec.genome.get("take_profit") is None)
        self.window = max(config.window_bars, config.warmup_factor * max(1, warmup_bars(spec.genome)))
        state, records = store.load(spec.strategy_id)
        if state is not None and (state.get("spec") or {}).get("genome") != spec.genome:
            raise ValueError(f"shadow state of {spec.strategy_id} was written for another genome; "
                             f"clear it (state dir {config.state_dir}) to start over")
        state = state or {}
        self.book = PaperBook.from_dict(state["book"]) if "book" in state else PaperBook.start(config.init_cash)
        self.last_timestamp: int | None = state.get("last_timestamp")
        self.bars = int(state.get(BARS, 0))
        self.warmup = int(state.get("warmup", 0))
        self.errors = int(state.get("errors", 0))
        self.fallbacks = int(state.get("fallbacks", 0))
        self.last_error: str | None = state.get("last_error")
        self.n_records = int(state.get(N_RECORDS, 0))
        records = records[-config.max_history_bars:]  # the rest stays in the store
        recorded = records[:, 7].astype(np.int64)
        recorded[records[:, 6] > 0] = UNKNOWN
        self.history = _History(config.max_history_bars, records[:, :6], recorded)
        self._known = False  # recorded positions of earlier bars filled in (at the next traded bar, once)
        self.joined_timestamp: int | None = state.get("joined_timestamp")
        self._pending: list[np.ndarray] = []

    # ------------------------------------------------------------------ signals

    def _positions_all(self) -> np.ndarray:
        return positions(self.spec.genome, _candles(self.history.rows))

    def _target(self) -> int:
        rows, recorded = self.history.rows, self.history.recorded
        n = rows.shape[0]
        if not self._known:  # the first traded bar since (re)start: positions over every bar so far, once
            full = self._positions_all()
            recorded[:-1] = full[:-1]
            self._known = True
            return int(full[-1])
        if n <= self.window:
            return int(self._positions_all()[-1])
        w = self.window
        windowed = positions(self.spec.genome, _candles(rows[n - w:]))
        mine, past = windowed[w // 2:-1], recorded[n - w + w // 2:n - 1]
        opened = (np.diff(windowed[w // 2 - 1:-1]) != 0) & (np.diff(recorded[n - w + w // 2 - 1:n - 1]) != 0)
        if ((mine == past) & ((past == 0) | opened | self._stateless)).any():
            return int(windowed[-1])
        self.fallbacks += 1
        return int(self._positions_all()[-1])

    # ------------------------------------------------------------------ bars

    def on_bar(self, bar: dict) -> dict | None:
        """Trade one closed candle (a dict with timestamp, open, high, low, close, volume and
        optionally ``warmup``). Returns the signal event, or None for a warm-up or repeated bar.
        Nothing is stored until :meth:`flush`: a trader that dies first trades those bars again."""
        ts = int(bar["timestamp"])
        if self.last_timestamp is not None and ts <= self.last_timestamp:
            return None
        try:
            row = np.array([ts, bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]], dtype=np.float64)
            problem = None if np.isfinite(row).all() and (row[1:5] > 0).all() and row[2] >= row[3] else "bad prices"
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:  # a bad candle is an error, never part of the history
            self.errors += 1
            self.last_error = f"bar {ts}: {problem}; skipped"
            return None
        warm = bool(bar.get("warmup", False))
        self.history.extend(row[None, :], np.array([UNKNOWN if warm else 0]))
        error = None
        if warm:
            self.warmup += 1
            target = self.book.position
        else:
            try:
                target = self._target()
            except Exception as exc:  # failures are values: the position is held, the error counted
                error = f"{type(exc).__name__}: {exc}"
                target = self.book.position
            if self.joined_timestamp is None and error is None:
                before = self.history.recorded[-2] if self.history.n > 1 else 0
                if target == 0 or target != before:  # a clean point: the backtest from a flat book agrees here
                    self.joined_timestamp = ts
            held = target if self.joined_timestamp is not None else 0
            self.book.step(float(row[4]), held, fees=self.spec.fees, slippage=self.spec.slippage)
            self.bars += 1
            self.history.recorded[-1] = target
        if error is not None:
            self.errors += 1
            self.last_error = error
        self.last_timestamp = ts
        self.n_records += 1
        self._pending.append(np.concatenate([row, [1.0 if warm else 0.0, float(target), self.book.equity]]))
        if warm:
            return None
        return self.signal(ts, target, error)

    def flush(self) -> None:
        """Commit the bars traded since the last flush, with the state, in one step."""
        if self._pending:
            self.store.commit(self.spec.strategy_id, np.array(self._pending).reshape(-1, RECORD_WIDTH), self.state())
            self._pending = []

    def on_bars(self, bars) -> list[dict]:
        """Trade a batch and commit it; the signals of the bars traded (warm-up and repeats give none)."""
        signals = [s for s in (self.on_bar(bar) for bar in bars) if s is not None]
        self.flush()
        return signals

    def signal(self, ts: int, position: int, error: str | None = None) -> dict:
        metrics = self.book.metrics()
        return {"strategy_id": self.spec.strategy_id, "version": self.spec.version, "timestamp": ts,
                "position": position, "equity": metrics["equity"], "drawdown": metrics["drawdown"],
                "max_drawdown": metrics["max_drawdown"], BARS: self.bars, "errors": self.errors,
                "error": error}

    def state(self) -> dict:
        return {"spec": self.spec.to_dict(), "book": self.book.to_dict(), "last_timestamp": self.last_timestamp,
                BARS: self.bars, "warmup": self.warmup, "errors": self.errors, "fallbacks": self.fallbacks,
                "last_error": self.last_error, N_RECORDS: self.n_records,
                "joined_timestamp": self.joined_timestamp}

    # ------------------------------------------------------------------ judging

    def backtest_equity(self) -> float | None:
        """The backtest's equity on the same bars: ``backtest.evaluate`` from a flat book at the
        bar the book joined the strategy, with the same costs (None before two traded bars)."""
        if self.joined_timestamp is None or self.bars < 2:
            return None
        rows = self.history.rows
        start = int(np.searchsorted(rows[:, 0], self.joined_timestamp))
        if rows.shape[0] - start < 2 or rows[start, 0] != self.joined_timestamp:
            return None  # the first traded bar left the in-memory history
        market = _candles(rows)
        result = evaluate([self.spec.genome], market, np.array([[start, rows.shape[0]]]), fees=self.spec.fees,
                          slippage=self.spec.slippage, init_cash=self.config.init_cash)
        return self.config.init_cash * (1.0 + float(result.metric(TOTAL_RETURN)[0, 0]))

    def metrics(self, *, with_drift: bool = True) -> dict:
        """The paper-trading metrics a gate judges (names of backtest.metrics plus bars, trades,
        error_rate, drift and ``at``, the last candle's timestamp)."""
        out = self.book.metrics()
        out.update({BARS: self.bars, TRADES: self.book.trades, "errors": self.errors,
                    ERROR_RATE: self.errors / self.bars if self.bars else 0.0, AT: self.last_timestamp,
                    "fallbacks": self.fallbacks, "strategy_id": self.spec.strategy_id, "version": self.spec.version})
        if with_drift:
            reference = self.backtest_equity()
            out["backtest_equity"] = reference
            out[DRIFT] = abs(self.book.equity / reference - 1.0) if reference else None
        return out

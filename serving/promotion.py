"""Promotion gates: k of n criteria on a shadow's paper-trading metrics.

Defaults: win rate >= 50%, max drawdown <= 15%, error rate < 5%, profit (total return) > 0,
drift (shadow equity against the backtest's on the same bars) <= 2%; judged only after
``min_bars`` bars and ``min_trades`` trades; promote when at least ``k`` = 4 of the n = 5
pass. A missing value (no closed trade yet, no drift yet) fails its criterion. Every
:class:`Decision` carries each criterion with its value and threshold::

    decision = judge(metrics, GateConfig())
    decision.verdict          # "promote", "reject" or "wait"
    decision.reason           # "4/5 passed (k=4): win_rate=0.53>=0.5 ok, max_drawdown=0.21<=0.15 FAILED, ..."
"""
from __future__ import annotations

import difflib
import math
import operator
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backtest.metrics import MAX_DRAWDOWN, TOTAL_RETURN, WIN_RATE
from serving.trader import BARS, DRIFT, ERROR_RATE, TRADES

PROMOTE, REJECT, WAIT, HOLD = "promote", "reject", "wait", "hold"
OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
#: metrics a criterion may name (what a shadow trader reports)
GATE_METRICS = (WIN_RATE, MAX_DRAWDOWN, ERROR_RATE, TOTAL_RETURN, DRIFT, "profit_factor", "equity", TRADES, BARS)


class Criterion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    metric: str
    op: Literal[">=", ">", "<=", "<"]
    threshold: float

    @model_validator(mode="after")
    def _known(self) -> Criterion:
        if self.metric not in GATE_METRICS:
            close = difflib.get_close_matches(self.metric, GATE_METRICS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"criterion {self.name!r}: unknown metric {self.metric!r}.{hint} Known: {list(GATE_METRICS)}")
        return self


DEFAULT_CRITERIA = (
    Criterion(name="win_rate", metric=WIN_RATE, op=">=", threshold=0.5),
    Criterion(name="max_drawdown", metric=MAX_DRAWDOWN, op="<=", threshold=0.15),
    Criterion(name="error_rate", metric=ERROR_RATE, op="<", threshold=0.05),
    Criterion(name="profit", metric=TOTAL_RETURN, op=">", threshold=0.0),
    Criterion(name="drift", metric=DRIFT, op="<=", threshold=0.02),
)


class GateConfig(BaseModel):
    """The promotion gates of shadow strategies and the drawdown limit of the live one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    criteria: tuple[Criterion, ...] = DEFAULT_CRITERIA
    k: int = Field(4, ge=1, description="criteria that must pass out of the n given")
    min_bars: int = Field(500, ge=1, description="paper-traded bars before a shadow is judged")
    min_trades: int = Field(5, ge=0, description="trades opened before a shadow is judged")
    live_max_drawdown: float = Field(0.15, gt=0, lt=1, description="drawdown since going live that rolls back")
    beat_champion: bool = Field(True, description="a shadow that passes replaces the champion only when its log "
                                "return per paper-traded bar beats the champion's (else it holds: stays in shadow "
                                "and is judged again); false: every shadow that passes is promoted")

    @model_validator(mode="after")
    def _check(self) -> GateConfig:
        if not self.criteria:
            raise ValueError("criteria: give at least one")
        names = [c.name for c in self.criteria]
        if len(set(names)) != len(names):
            raise ValueError(f"criteria: names must be unique, got {names}")
        if self.k > len(self.criteria):
            raise ValueError(f"k = {self.k} but only {len(self.criteria)} criteria are given; k must be at most n")
        return self


@dataclass(frozen=True)
class CriterionResult:
    name: str
    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool

    def describe(self) -> str:
        value = "missing" if self.value is None else f"{self.value:.6g}"
        return f"{self.name}: {self.metric}={value} {self.op} {self.threshold:g} {'ok' if self.passed else 'FAILED'}"


@dataclass(frozen=True)
class Decision:
    """What the gates said about one version's metrics, with every value they looked at."""

    verdict: str
    passed: int
    k: int
    n: int
    results: tuple[CriterionResult, ...]
    bars: int
    trades: int
    version: str | None = None
    strategy_id: str | None = None
    note: str = ""  # why a passing shadow holds (HOLD)

    @property
    def reason(self) -> str:
        if self.verdict == WAIT:
            return f"waiting: {self.bars} bars, {self.trades} trades so far"
        if self.verdict == HOLD:
            return f"hold: {self.passed}/{self.n} criteria passed (k={self.k}) but {self.note}"
        checks = "; ".join(r.describe() for r in self.results)
        return f"{self.verdict}: {self.passed}/{self.n} criteria passed (k={self.k}) after {self.bars} bars, {self.trades} trades: {checks}"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["results"] = [asdict(r) for r in self.results]
        out["reason"] = self.reason
        return out


def return_per_bar(metrics: dict | None) -> float | None:
    """Log return per paper-traded bar (``log(1 + total_return) / bars``): what a challenger and
    the champion are compared by, fair between paper records of different lengths."""
    if not metrics:
        return None
    total, bars = _number(metrics.get(TOTAL_RETURN)), _number(metrics.get(BARS))
    if total is None or bars is None or bars <= 0 or total <= -1.0:
        return None
    return math.log1p(total) / bars


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def judge(metrics: dict, config: GateConfig) -> Decision:
    """The gates' verdict on paper-trading metrics (as :meth:`serving.trader.ShadowTrader.metrics` reports)."""
    bars, trades = int(metrics.get(BARS) or 0), int(metrics.get(TRADES) or 0)
    results = []
    for c in config.criteria:
        value = _number(metrics.get(c.metric))
        results.append(CriterionResult(c.name, c.metric, c.op, c.threshold, value,
                                       value is not None and OPERATORS[c.op](value, c.threshold)))
    passed = sum(r.passed for r in results)
    if bars < config.min_bars or trades < config.min_trades:
        verdict = WAIT
    else:
        verdict = PROMOTE if passed >= config.k else REJECT
    return Decision(verdict, passed, config.k, len(results), tuple(results), bars, trades,
                    metrics.get("version"), metrics.get("strategy_id"))

"""Paper trading of target positions: one all-in book per strategy, bar by bar.

The accounting is the backtest's (vectorbt ``from_signals`` with its defaults, as in
``backtest.simulate``): fills at the bar's close, all-in sizing, fees on the traded value,
slippage moving the fill price against the trade (buy at ``close * (1 + slippage)``, sell at
``close * (1 - slippage)``), a reversal as one close and one open at the same close. So a
book fed ``backtest.positions`` reproduces the backtest's equity bar for bar; the one
known difference is a stop-loss or take-profit exit, which the backtest fills without
slippage and a book that only sees the position cannot tell from a signal exit.

Metric names are those of :mod:`backtest.metrics`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from backtest.metrics import MAX_DRAWDOWN, N_TRADES, TOTAL_RETURN, WIN_RATE


@dataclass
class PaperBook:
    """Cash, signed units and the running trade statistics of one strategy."""

    init_cash: float = 1.0
    cash: float = 1.0
    units: float = 0.0
    position: int = 0
    equity: float = 1.0
    peak: float = 1.0
    max_drawdown: float = 0.0
    trades: int = 0          # positions opened
    closed: int = 0
    wins: int = 0
    gross_win: float = 0.0
    gross_loss: float = 0.0
    value_at_open: float = 1.0

    @classmethod
    def start(cls, init_cash: float = 1.0) -> PaperBook:
        return cls(init_cash, init_cash, equity=init_cash, peak=init_cash, value_at_open=init_cash)

    def _close(self, price: float, fees: float, slippage: float) -> None:
        if self.units > 0:
            self.cash += self.units * price * (1.0 - slippage) * (1.0 - fees)
        elif self.units < 0:
            self.cash -= -self.units * price * (1.0 + slippage) * (1.0 + fees)
        self.units = 0.0
        pnl = self.cash - self.value_at_open
        self.closed += 1
        if pnl > 0:
            self.wins += 1
            self.gross_win += pnl
        elif pnl < 0:
            self.gross_loss -= pnl

    def _open(self, target: int, price: float, fees: float, slippage: float) -> None:
        self.value_at_open = self.cash
        if self.cash <= 0:
            return
        if target > 0:
            self.units = self.cash / (price * (1.0 + slippage) * (1.0 + fees))
            self.cash = 0.0
        else:
            size = self.cash / (price * (1.0 - slippage) * (1.0 + fees))
            self.units = -size
            self.cash += size * price * (1.0 - slippage) * (1.0 - fees)
        self.trades += 1

    def step(self, close: float, target: int, *, fees: float = 0.0, slippage: float = 0.0) -> float:
        """Move to ``target`` (-1/0/1) at ``close``; return the equity after the bar."""
        if target != self.position:
            if self.position != 0:
                self._close(close, fees, slippage)
            if target != 0:
                self._open(target, close, fees, slippage)
            self.position = target
        self.equity = self.cash + self.units * close
        self.peak = max(self.peak, self.equity)
        if self.peak > 0:
            self.max_drawdown = max(self.max_drawdown, 1.0 - self.equity / self.peak)
        return self.equity

    @property
    def drawdown(self) -> float:
        """The drawdown now, from the highest equity so far (a positive fraction)."""
        return 1.0 - self.equity / self.peak if self.peak > 0 else 0.0

    def metrics(self) -> dict:
        return {
            TOTAL_RETURN: self.equity / self.init_cash - 1.0,
            MAX_DRAWDOWN: self.max_drawdown,
            WIN_RATE: self.wins / self.closed if self.closed else math.nan,
            N_TRADES: self.trades,
            "equity": self.equity,
            "drawdown": self.drawdown,
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PaperBook:
        return cls(**data)

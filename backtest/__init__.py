"""The numerical core: data, genomes, kernels, simulation, metrics and validation.

No Ray, no MLflow, no HTTP server here. Public contracts:

- ``backtest.simulate(close, entries, exits, *, fees, slippage, init_cash, direction, sl_stop, tp_stop)``
- ``backtest.positions(genome, candles)``
- ``backtest.evaluate(population, market, folds)``
"""
from backtest import jit_cache  # noqa: F401  (first: the kernels below are cached by content, see jit_cache.py)
from backtest.engine import EvaluationResult, Evaluator, SimulationResult, evaluate, positions, signals, simulate
from backtest.strategy import GenomeError, normalize_genome, strategy_id

__all__ = [
    "EvaluationResult",
    "Evaluator",
    "GenomeError",
    "SimulationResult",
    "evaluate",
    "normalize_genome",
    "positions",
    "signals",
    "simulate",
    "strategy_id",
]

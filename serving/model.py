"""The MLflow pyfunc model of one strategy (MLflow "models from code").

This file is logged as the model's code: MLflow copies it into the model artifact and
executes it on ``mlflow.pyfunc.load_model``, where ``mlflow.models.set_model`` below hands
it the model object. The genome travels as the JSON artifact ``genome``::

    model = mlflow.pyfunc.load_model("models:/strategy-evolution@champion")
    model.predict(candles)  # == backtest.positions(genome, candles), bar for bar

``candles``: a DataFrame with columns timestamp (int64 ms), open, high, low, close,
volume, oldest first (the model's signature), or ccxt-style rows when the model is used
through ``unwrap_python_model()``. The answer is an int64 array (T,) of target positions
-1/0/1, one per candle, decided at that candle's close.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

import mlflow
from backtest.data.frame import COLUMNS as CANDLE_COLUMNS
from backtest.tracking_names import GENOME_ARTIFACT

SIGNAL_COLUMN = "signal"


def model_signature():
    """OHLCV candles in, one signal per candle out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("long", "timestamp")] + [ColSpec("double", c) for c in CANDLE_COLUMNS[1:]])
    outputs = Schema([ColSpec("long", SIGNAL_COLUMN)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(n_bars: int = 64, seed: int = 0) -> pd.DataFrame:
    """A small, valid candle frame (a deterministic random walk) for the model's input example."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n_bars)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    return pd.DataFrame({
        "timestamp": 1_704_067_200_000 + 60_000 * np.arange(n_bars, dtype=np.int64),
        "open": open_, "high": high, "low": low, "close": close,
        "volume": np.full(n_bars, 1000.0),
    })


class StrategyModel(mlflow.pyfunc.PythonModel):
    """Target positions of one genome; the same numbers as ``backtest.positions``."""

    def __init__(self, genome: dict | None = None):
        self.genome = genome

    def load_context(self, context) -> None:
        with open(context.artifacts[GENOME_ARTIFACT], encoding="utf-8") as handle:
            self.genome = json.load(handle)

    # Type hints MLflow reads: a DataFrame input validates against the explicit signature (no
    # schema is inferred from the hint), so loading and logging the model stay quiet.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        from backtest import positions

        if self.genome is None:
            raise ValueError("StrategyModel has no genome: load it with mlflow.pyfunc.load_model")
        if isinstance(model_input, pd.DataFrame) and "timestamp" in model_input.columns:
            model_input = model_input.astype({"timestamp": "int64"})
        return positions(self.genome, model_input)


mlflow.models.set_model(StrategyModel())

"""Market data for the backtest: the validated OHLCV frame, file loaders, synthetic markets."""

from backtest.data.frame import COLUMNS, OHLCV, DataValidationError, Gap, validate
from backtest.data.loaders import load, load_csv, load_parquet, save_csv, save_parquet
from backtest.data.synthetic import (
    REGIME_NAMES,
    PlantedEdge,
    planted_edge_genome,
    synthetic_market,
)

__all__ = [
    "COLUMNS",
    "OHLCV",
    "DataValidationError",
    "Gap",
    "validate",
    "load",
    "load_csv",
    "load_parquet",
    "save_csv",
    "save_parquet",
    "REGIME_NAMES",
    "PlantedEdge",
    "planted_edge_genome",
    "synthetic_market",
]

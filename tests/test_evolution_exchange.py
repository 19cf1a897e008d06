"""An evolution config can name an exchange market instead of a file (ccxt through the
local Binance stub, cached in the Parquet store)."""
from __future__ import annotations

import json

import numpy as np
import yaml
from binance_stub import DEFAULT_START_MS, HOUR_MS, BinanceStub, make_series

from evolution.cli import main
from evolution.config import load_config
from evolution.market import resolve


def _config(tmp_path, url):
    data = {
        "seed": 1,
        "market": {"exchange": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h",
                                "since": DEFAULT_START_MS, "until": DEFAULT_START_MS + 1200 * HOUR_MS,
                                "base_url": url, "store_dir": str(tmp_path / "store")}},
        "islands": 1,
        "population": 8,
        "generations": 2,
        "walk_forward": {"folds": 2, "holdout_fraction": 0.25, "train_fraction": 0.2, "bucket_bars": 20},
        "hall_of_fame": 3,
        "runtime": {"backend": "local", "progress": False},
    }
    path = tmp_path / "exchange.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_exchange_market_resolves_to_the_served_series_and_runs(tmp_path):
    series = make_series(n_bars=1200)
    with BinanceStub([series]) as stub:
        path = _config(tmp_path, stub.url)
        spec = resolve(load_config(path))
        served = np.array([row[4] for row in series.rows])
        np.testing.assert_array_equal(spec.market.close, served)
        assert main(["run", "--config", str(path), "--out", str(tmp_path / "run"), "--no-tracking"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["hall_of_fame"] and result["n_trials"] > 0
    # the store now holds the whole range: resolving again needs no server
    again = resolve(load_config(path))
    np.testing.assert_array_equal(again.market.close, spec.market.close)

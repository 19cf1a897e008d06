"""Equity curves of the top hall-of-fame strategies, for the lineage notebook.

``RUN_DIR/lineage/equity.parquet``: walk-forward and holdout equity, recomputed with the
backtest on the run's market and its folds (``market`` in ``result.json``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evolution.lineage.data import read_result

EQUITY_FILE = Path("lineage") / "equity.parquet"
EQUITY_COLUMNS = ["strategy_id", "segment", "bar", "timestamp", "equity"]


def write_equity_curves(run_dir: str | Path, market: Any, top: int = 5, points: int = 400) -> Path:
    """Columns strategy_id, segment (walk_forward | holdout), bar (index of the segment's last bar
    in the bucket), timestamp, equity (growth of 1.0, folds chained); about ``points`` rows per
    strategy and segment."""
    from backtest import evaluate

    run_dir = Path(run_dir)
    result = read_result(run_dir)
    hof = result.get("hall_of_fame", [])[:top]
    rows = []
    if hof:
        folds = result["market"]["walk_forward_folds"]
        holdout = result["market"]["holdout"]
        genomes = [entry["genome"] for entry in hof]
        for segment, ranges in (("walk_forward", folds), ("holdout", [holdout])):
            ranges = np.asarray(ranges, dtype=np.int64)
            span = int(ranges[-1, 1] - ranges[0, 0])
            bucket = max(1, span // points)
            scored = evaluate(genomes, market, ranges, bucket_bars=bucket)
            ends = np.minimum(ranges[0, 0] + bucket * np.arange(1, scored.buckets.shape[1] + 1), ranges[-1, 1]) - 1
            for k, entry in enumerate(hof):
                equity = np.cumprod(np.nan_to_num(scored.buckets[k], nan=1.0))
                rows.extend({"strategy_id": entry["strategy_id"], "segment": segment, "bar": int(b),
                             "timestamp": int(market.timestamp[b]), "equity": float(e)}
                            for b, e in zip(ends, equity))
    out = run_dir / EQUITY_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=EQUITY_COLUMNS).to_parquet(out, index=False)
    return out

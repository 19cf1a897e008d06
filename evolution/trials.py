"""The trial log: every evaluated genome (and every migration), as Parquet.

Layout: ``<run dir>/trials/generation-00000.parquet``, one part per generation holding
the rows of all islands (island order, then the island's own order). Read the whole log
with ``pandas.read_parquet("<run dir>/trials")`` or :func:`read_trials`.

Columns:

=================  ==========================================================================
strategy_id        content hash of the canonical genome
island             island that evaluated (or received, for migrations) the genome
generation         0 = random initial population
parents            list of parent strategy ids ([] for init)
operator           one of evolution.operators.OPERATOR_NAMES (init, the crossovers, the
                   mutations, reproduction, immigrant, migration)
genome             canonical JSON text of the genome (its ``family`` key names a family other
                   than the default ``rules``)
error              null, or why the evaluation failed (the genome got the worst fitness)
evaluated          false for migration rows (metrics copied from the sending island)
migrated_from      sending island for migration rows, else null
fitness            objective values in config order (selection.objectives), worst if failed
wf_<metric>        walk-forward summary: sharpe, total_return, max_drawdown, n_trades, ...
fold_<metric>      one value per walk-forward test fold, for every metric of backtest.metrics
oos_returns        out-of-sample return per bucket of walk_forward.bucket_bars bars over the
                   folds' span (the series for DSR and PBO); null for failures and migrations
=================  ==========================================================================

A part is written before the checkpoint of its generation; on resume, parts after the
checkpoint are deleted and replayed, so the log never holds a generation twice.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.metrics import METRIC_NAMES
from evolution.fitness import SUMMARY_NAMES

TRIALS_DIR = "trials"

SCHEMA = pa.schema(
    [
        ("strategy_id", pa.string()),
        ("island", pa.int32()),
        ("generation", pa.int32()),
        ("parents", pa.list_(pa.string())),
        ("operator", pa.string()),
        ("genome", pa.string()),
        ("error", pa.string()),
        ("evaluated", pa.bool_()),
        ("migrated_from", pa.int32()),
        ("fitness", pa.list_(pa.float64())),
        *[(f"wf_{n}", pa.float64()) for n in SUMMARY_NAMES],
        *[(f"fold_{n}", pa.list_(pa.float64())) for n in METRIC_NAMES],
        ("oos_returns", pa.list_(pa.float64())),
    ]
)


def part_path(run_dir: Path, generation: int) -> Path:
    return Path(run_dir) / TRIALS_DIR / f"generation-{generation:05d}.parquet"


_DICTIONARY_COLUMNS = [f.name for f in SCHEMA if pa.types.is_string(f.type)
                       or (pa.types.is_list(f.type) and pa.types.is_string(f.type.value_type))]
# min/max statistics serve filters on scalar columns (generation, island, ...); over the list
# columns (the return series above all) nobody filters, and computing them was a sixth of the write
_STATISTICS_COLUMNS = [f.name for f in SCHEMA if not pa.types.is_list(f.type)]


def write_part(run_dir: Path, generation: int, rows: list[dict]) -> Path:
    """Write one generation's rows atomically (temp file + rename)."""
    path = part_path(run_dir, generation)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{name: row.get(name) for name in SCHEMA.names} for row in rows], schema=SCHEMA)
    tmp = path.with_suffix(".parquet.tmp")
    # dictionary encoding only where values repeat (ids, operators, genomes): tried on the
    # float return series it only costs time (half of the write) and bytes
    pq.write_table(table, tmp, use_dictionary=_DICTIONARY_COLUMNS, write_statistics=_STATISTICS_COLUMNS)
    os.replace(tmp, path)
    return path


def drop_parts_after(run_dir: Path, generation: int) -> None:
    """Delete parts of generations after ``generation`` (they will be replayed)."""
    folder = Path(run_dir) / TRIALS_DIR
    if not folder.exists():
        return
    for path in folder.iterdir():
        if path.name.endswith(".tmp"):
            path.unlink()
            continue
        if path.name.startswith("generation-") and int(path.name[11:16]) > generation:
            path.unlink()


def read_trials(run_dir: Path) -> pd.DataFrame:
    """The whole trial log in (generation, island, row) order."""
    folder = Path(run_dir) / TRIALS_DIR
    parts = sorted(folder.glob("generation-*.parquet")) if folder.exists() else []
    if not parts:
        return SCHEMA.empty_table().to_pandas()
    return pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts]).to_pandas()

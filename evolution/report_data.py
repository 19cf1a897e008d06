"""What the run report shows, gathered from a run directory (no drawing here).

Sources: ``result.json`` (hall of fame, gates, Pareto front), the trial log
(``trials/``, :mod:`evolution.trials`: fitness per generation, parents for the lineage),
``config.json`` (the config and ``--data``, to rebuild the market with
:func:`evolution.market.resolve`), ``timing.json`` when present, and shadow equity when
serving left some (:data:`SHADOW_EQUITY_FILE`). Equity curves are recomputed with
``backtest.evaluate`` on the run's market, with the run's costs: the same engine, the same
numbers as the search and the gates.

:func:`gather` returns a :class:`ReportData`; :mod:`evolution.report_plots` draws it and
:mod:`evolution.report_html` lays out the page.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evolution import trials
from evolution.fitness import WORST, weights
from evolution.lineage.data import Node as LineageNode

#: Equity of a strategy in shadow (paper) trading, when serving recorded it for this run:
#: columns strategy_id, timestamp (ms), equity (growth of 1.0). Absent until serving writes it.
SHADOW_EQUITY_FILE = "shadow/equity.parquet"
EQUITY_POINTS = 400  # points per equity curve (the backtest's growth per bucket of bars)
MAX_LINEAGE_NODES = 1500

#: gate name -> (where its value is, the threshold key in result["gate_thresholds"], comparison)
GATE_VALUES = {
    "dsr": (("dsr",), "min_dsr", ">="),
    "pbo": (("pbo",), "max_pbo", "<="),
    "min_trades": (("metrics", "holdout", "n_trades"), "min_trades", ">="),
    "max_drawdown": (("metrics", "holdout", "max_drawdown"), "max_drawdown", "<="),
}


@dataclass
class ReportData:
    run_dir: Path
    result: dict
    config: dict
    timing: dict | None
    fitness: pd.DataFrame  # generation, island, best, median (objective 0, natural units)
    objective: str
    trials_points: pd.DataFrame  # distinct trials: strategy_id, x, y (objectives 0 and 1 or sharpe / drawdown)
    axes: tuple[str, str]
    pareto_ids: list[str]
    lineage: dict[str, LineageNode]  # the champion's ancestors back to generation 0
    lineage_truncated: bool
    equity: dict[str, pd.DataFrame] = field(default_factory=dict)  # segment -> timestamp, equity
    equity_note: str = ""
    shadow: pd.DataFrame | None = None

    @property
    def champion(self) -> dict | None:
        hof = self.result.get("hall_of_fame") or []
        return hof[0] if hof else None


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def fitness_by_generation(frame: pd.DataFrame, objective: str) -> pd.DataFrame:
    """Best and median of the first objective among each island's evaluated genomes, per generation."""
    ev = frame[frame["evaluated"]]
    sign = weights([objective])[0]
    values = np.array([f[0] if f is not None and len(f) else np.nan for f in ev["fitness"]], dtype=np.float64)
    values[np.abs(values) >= WORST / 10] = np.nan  # failures and too few trades carry WORST
    table = pd.DataFrame({"generation": ev["generation"].to_numpy(), "island": ev["island"].to_numpy(),
                          "value": values})
    rows = []
    for (generation, island), group in table.groupby(["generation", "island"], sort=True):
        v = group["value"].dropna()
        best = float(v.max() if sign > 0 else v.min()) if len(v) else math.nan
        rows.append({"generation": int(generation), "island": int(island), "best": best,
                     "median": float(v.median()) if len(v) else math.nan})
    return pd.DataFrame(rows, columns=["generation", "island", "best", "median"])


def trial_points(frame: pd.DataFrame, objectives: list[str]) -> tuple[pd.DataFrame, tuple[str, str]]:
    """One point per distinct evaluated trial on two axes: the first two objectives, or walk-forward
    Sharpe against maximum drawdown for a single-objective run."""
    ev = frame[frame["evaluated"]].drop_duplicates("strategy_id")
    if len(objectives) >= 2:
        axes = (objectives[0], objectives[1])
        xs = [f[0] if len(f) > 1 else np.nan for f in ev["fitness"]]
        ys = [f[1] if len(f) > 1 else np.nan for f in ev["fitness"]]
    else:
        axes = ("sharpe", "max_drawdown")
        xs, ys = ev["wf_sharpe"].tolist(), ev["wf_max_drawdown"].tolist()
    points = pd.DataFrame({"strategy_id": ev["strategy_id"].to_numpy(),
                           "x": np.asarray(xs, dtype=np.float64), "y": np.asarray(ys, dtype=np.float64)})
    ok = np.isfinite(points["x"]) & np.isfinite(points["y"]) & (points["x"].abs() < WORST / 10) \
        & (points["y"].abs() < WORST / 10)
    return points[ok].reset_index(drop=True), axes


def first_appearances(frame: pd.DataFrame) -> dict[str, LineageNode]:
    """Each strategy where it was first evaluated (migration rows only copy it elsewhere)."""
    nodes: dict[str, LineageNode] = {}
    ev = frame[frame["evaluated"]]
    for sid, generation, island, operator, parents in zip(ev["strategy_id"], ev["generation"], ev["island"],
                                                           ev["operator"], ev["parents"]):
        if sid not in nodes:
            nodes[sid] = LineageNode(sid, int(generation), int(island), str(operator),
                                     tuple(p for p in (parents if parents is not None else []) if p != sid))
    return nodes


def ancestors(champion: str, nodes: dict[str, LineageNode], limit: int = MAX_LINEAGE_NODES) -> tuple[dict, bool]:
    """The champion and every ancestor in the trial log (parents of parents, to generation 0);
    at most ``limit`` of them, the closest generations first (then ``truncated`` is True)."""
    out: dict[str, LineageNode] = {}
    frontier = [champion]
    while frontier:
        nxt = []
        for sid in frontier:
            node = nodes.get(sid)
            if node is None or sid in out:
                continue
            if len(out) == limit:
                return out, True
            out[sid] = node
            nxt.extend(node.parents)
        frontier = nxt
    return out, False


def _segments(result: dict) -> dict[str, np.ndarray]:
    market = result["market"]
    folds = np.asarray(market["walk_forward_folds"], dtype=np.int64)
    start, end = (int(v) for v in market["holdout"])
    return {
        "in_sample": np.array([[0, start]], dtype=np.int64),  # every bar the search could see
        "walk_forward": folds,  # the folds' test windows the fitness was measured on, chained
        "holdout": np.array([[start, end]], dtype=np.int64),  # never seen by the search
    }


def equity_curves(genome: dict, market: Any, result: dict, config: dict) -> dict[str, pd.DataFrame]:
    """Growth of 1.0 for one genome on each segment, sampled at ~EQUITY_POINTS bucket ends."""
    from backtest import evaluate

    costs = config.get("costs", {})
    out = {}
    for segment, ranges in _segments(result).items():
        span = int(ranges[-1, 1] - ranges[0, 0])
        bucket = max(1, span // EQUITY_POINTS)
        scored = evaluate([genome], market, ranges, fees=costs.get("fees", 0.0), slippage=costs.get("slippage", 0.0),
                          init_cash=costs.get("init_cash", 1.0), bucket_bars=bucket)
        if scored.errors or scored.buckets is None:
            continue
        growth = np.nan_to_num(scored.buckets[0], nan=1.0)
        ends = np.minimum(ranges[0, 0] + bucket * np.arange(1, growth.shape[0] + 1), ranges[-1, 1]) - 1
        out[segment] = pd.DataFrame({"timestamp": np.asarray(market.timestamp)[ends],
                                     "equity": np.cumprod(growth)})
    return out


def _market_for(run_dir: Path, result: dict, meta: dict) -> tuple[Any, str]:
    """The run's market rebuilt from config.json, or None and why not."""
    from evolution.config import ConfigError, parse_config
    from evolution.market import resolve

    try:
        spec = resolve(parse_config(meta["config"]), meta.get("data"))
    except (ConfigError, OSError, ValueError) as error:
        return None, f"the run's market could not be loaded again ({str(error).splitlines()[0]})"
    if spec.fingerprint != result.get("market", {}).get("fingerprint"):
        return None, "the run's market changed since the run (fingerprint differs): equity curves left out"
    return spec.market, ""


def read_shadow(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / SHADOW_EQUITY_FILE
    return pd.read_parquet(path) if path.exists() else None


def gather(run_dir: str | Path, market: Any = None) -> ReportData:
    """Everything the report draws. ``market``: the run's OHLCV when the caller holds it (the end
    of ``evolve run``); otherwise it is rebuilt from ``config.json``."""
    run_dir = Path(run_dir)
    result = _read_json(run_dir / "result.json")
    if result is None:
        raise FileNotFoundError(f"{run_dir}: no result.json; is this the directory of a finished `evolve run`?")
    meta = _read_json(run_dir / "config.json") or {}
    config = meta.get("config") or result.get("config") or {}
    objectives = list(result.get("objectives") or ["sharpe"])
    frame = trials.read_trials(run_dir)
    points, axes = trial_points(frame, objectives)
    champion = (result.get("hall_of_fame") or [{}])[0].get("strategy_id")
    lineage, truncated = ancestors(champion, first_appearances(frame)) if champion else ({}, False)
    data = ReportData(run_dir, result, config, _read_json(run_dir / "timing.json"),
                      fitness_by_generation(frame, objectives[0]), objectives[0], points, axes,
                      list(result.get("pareto_front") or []), lineage, truncated, shadow=read_shadow(run_dir))
    if data.champion is not None:
        note = ""
        if market is None:
            market, note = _market_for(run_dir, result, meta)
        if market is not None:
            data.equity = equity_curves(data.champion["genome"], market, result, config)
        data.equity_note = note
    return data


def gate_rows(result: dict) -> list[dict]:
    """One row per hall-of-fame member and gate: value, threshold, comparison, verdict."""
    thresholds = result.get("gate_thresholds") or {}
    rows = []
    for member in result.get("hall_of_fame") or []:
        for gate, passed in (member.get("gates") or {}).items():
            path, key, op = GATE_VALUES.get(gate, ((gate,), gate, ""))
            value: Any = member
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            rows.append({"strategy_id": member["strategy_id"], "gate": gate, "value": value,
                         "threshold": thresholds.get(key), "op": op, "passed": bool(passed)})
    return rows

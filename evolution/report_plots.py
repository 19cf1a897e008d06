"""The run report's pictures: each function draws one plot of a :class:`~evolution.report_data.ReportData`
and returns it as inline SVG text (matplotlib, Agg; fonts left to the browser, no external
reference), or None when the run has nothing to draw for it.
"""
from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd

from evolution.report_data import ReportData

SEGMENT_LABELS = {"in_sample": "in-sample (all bars before the holdout)", "walk_forward": "walk-forward test folds",
                  "holdout": "holdout (never seen by the search)", "shadow": "shadow (paper trading)"}
_SVG_START = re.compile(r"<svg\b")
# inside HTML an SVG needs neither its RDF metadata (links to purl.org, creativecommons.org) nor
# namespace declarations: without them the page names no URL at all
_SVG_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_SVG_NAMESPACES = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "evolve-report", "font.size": 9, "axes.grid": True,
          "grid.alpha": 0.3}


def _figure(**kwargs):
    """A matplotlib Figure of its own: no pyplot, no backend switch (safe beside other threads
    that draw with pyplot)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _style():
    import matplotlib

    return matplotlib.rc_context(_STYLE)


def _styled(draw):
    """Run a drawing function inside the report's style (rc parameters apply when artists are made)."""
    import functools

    @functools.wraps(draw)
    def wrapper(data):
        with _style():
            return draw(data)

    return wrapper


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def _svg(fig) -> str:
    buf = io.StringIO()
    with _style():
        fig.tight_layout()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[_SVG_START.search(text).start():]  # no XML declaration or DOCTYPE inside HTML
    return _SVG_NAMESPACES.sub("", _SVG_METADATA.sub("", text, count=1))


def _dates(timestamps) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(timestamps, dtype=np.int64), unit="ms", utc=True)


@_styled
def fitness(data: ReportData) -> str | None:
    stats = data.fitness.dropna(subset=["best"])
    if stats.empty:
        return None
    fig = _figure(figsize=(8, 3.6))
    ax = fig.subplots()
    cmap = _cmap("tab10")
    for island, group in stats.groupby("island"):
        color = cmap(int(island) % 10)
        ax.plot(group["generation"], group["best"], marker="o", ms=3, color=color, label=f"island {island} best")
        ax.plot(group["generation"], group["median"], ls="--", color=color, alpha=0.6,
                label=f"island {island} median")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"walk-forward {data.objective}")
    ax.legend(fontsize=7, ncol=2)
    return _svg(fig)


@_styled
def pareto(data: ReportData) -> str | None:
    points = data.trials_points
    if points.empty:
        return None
    fig = _figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    front = points[points["strategy_id"].isin(set(data.pareto_ids))].sort_values("x")
    ax.scatter(points["x"], points["y"], s=8, color="0.7", label=f"{len(points)} distinct trials")
    if len(front):
        ax.plot(front["x"], front["y"], "-o", ms=4, color="tab:red", label=f"Pareto front ({len(front)})")
    champion = data.champion
    if champion is not None:
        hit = points[points["strategy_id"] == champion["strategy_id"]]
        ax.scatter(hit["x"], hit["y"], s=160, marker="*", color="gold", edgecolors="black", zorder=5,
                   label="champion")
    ax.set_xlabel(f"walk-forward {data.axes[0]}")
    ax.set_ylabel(f"walk-forward {data.axes[1]}")
    ax.legend(fontsize=7)
    return _svg(fig)


@_styled
def lineage(data: ReportData) -> str | None:
    nodes = data.lineage
    if not nodes:
        return None
    from matplotlib.collections import LineCollection

    by_generation: dict[int, list] = {}
    for node in nodes.values():
        by_generation.setdefault(node.generation, []).append(node)
    pos = {}
    for generation, members in by_generation.items():
        members.sort(key=lambda n: (n.island, n.strategy_id))
        offset = (len(members) - 1) / 2.0
        for rank, node in enumerate(members):
            pos[node.strategy_id] = (generation, rank - offset)
    widest = max(len(m) for m in by_generation.values())
    fig = _figure(figsize=(9, min(10.0, 2.5 + 0.12 * widest)))
    ax = fig.subplots()
    segments = [[pos[p], pos[sid]] for sid, node in nodes.items() for p in node.parents if p in pos]
    ax.add_collection(LineCollection(segments, colors="0.6", linewidths=0.6, zorder=1))
    cmap = _cmap("tab10")
    for island in sorted({n.island for n in nodes.values()}):
        xy = np.array([pos[n.strategy_id] for n in nodes.values() if n.island == island], dtype=float)
        ax.scatter(xy[:, 0], xy[:, 1], s=14, color=cmap(island % 10), zorder=2, label=f"island {island}")
    champion = data.champion["strategy_id"]
    cx, cy = pos[champion]
    ax.scatter([cx], [cy], s=220, marker="*", color="gold", edgecolors="black", zorder=3, label="champion")
    ax.annotate(f"{champion[:10]} ({nodes[champion].operator})", (cx, cy), xytext=(6, 6),
                textcoords="offset points", fontsize=7)
    ax.autoscale_view()
    ax.set_xlabel("generation")
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="upper left")
    return _svg(fig)


def _curves(data: ReportData) -> dict[str, pd.DataFrame]:
    curves = dict(data.equity)
    shadow = data.shadow
    if shadow is not None and data.champion is not None:
        mine = shadow[shadow["strategy_id"] == data.champion["strategy_id"]].sort_values("timestamp")
        if len(mine):
            curves["shadow"] = mine[["timestamp", "equity"]]
    return curves


@_styled
def equity(data: ReportData) -> str | None:
    curves = _curves(data)
    if not curves:
        return None
    fig = _figure(figsize=(3.2 * len(curves) + 1, 3.4))
    axes = fig.subplots(1, len(curves), squeeze=False)
    for ax, (segment, frame) in zip(axes[0], curves.items()):
        ax.plot(_dates(frame["timestamp"]), frame["equity"], color="tab:blue", lw=1.2)
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        ax.set_title(SEGMENT_LABELS[segment], fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    axes[0][0].set_ylabel("equity (growth of 1.0)")
    return _svg(fig)


@_styled
def drawdown(data: ReportData) -> str | None:
    curves = _curves(data)
    if not curves:
        return None
    fig = _figure(figsize=(3.2 * len(curves) + 1, 2.8))
    axes = fig.subplots(1, len(curves), squeeze=False, sharey=True)
    for ax, (segment, frame) in zip(axes[0], curves.items()):
        values = np.asarray(frame["equity"], dtype=np.float64)
        dd = values / np.maximum.accumulate(values) - 1.0
        ax.fill_between(_dates(frame["timestamp"]), dd, 0.0, color="tab:red", alpha=0.45)
        ax.set_title(SEGMENT_LABELS[segment], fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    axes[0][0].set_ylabel("drawdown from the running peak")
    return _svg(fig)


TRADE_STATS = ("n_trades", "win_rate", "profit_factor", "exposure", "sharpe", "max_drawdown")


@_styled
def trade_statistics(data: ReportData, top: int = 5) -> str | None:
    hof = (data.result.get("hall_of_fame") or [])[:top]
    if not hof:
        return None
    fig = _figure(figsize=(12, 3.0))
    axes = fig.subplots(1, len(TRADE_STATS))
    width = 0.38
    x = np.arange(len(hof))
    for ax, name in zip(axes, TRADE_STATS):
        for k, (block, color) in enumerate((("walk_forward", "tab:blue"), ("holdout", "tab:orange"))):
            values = [(m["metrics"].get(block) or {}).get(name) for m in hof]
            ax.bar(x + (k - 0.5) * width, [np.nan if v is None else v for v in values], width, color=color,
                   label=block.replace("_", "-"))
        ax.set_title(name.replace("_", " "), fontsize=8)
        ax.set_xticks(x, [f"#{i + 1}" for i in x], fontsize=7)
    axes[0].legend(fontsize=7)
    return _svg(fig)


PLOTS = {
    "fitness": ("Fitness per generation and island", fitness),
    "pareto": ("Pareto front", pareto),
    "lineage": ("The champion's lineage, back to generation 0", lineage),
    "equity": ("Equity of the champion", equity),
    "drawdown": ("Drawdown of the champion", drawdown),
    "trades": ("Trade statistics of the hall of fame (walk-forward against holdout)", trade_statistics),
}

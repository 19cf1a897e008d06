"""The two pictures of a run: fitness over generations and the lineage graph of the top strategies.

Matplotlib with the Agg backend (no display needed); both functions write a PNG and
return its path. Used by the lineage logger (artifacts) and by notebooks/lineage.ipynb.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from evolution.lineage.data import Lineage

OPERATOR_STYLES = {"crossover": "-", "mutation": "--", "elite": ":", "migration": "-."}


def pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, ax, own: bool, path: str | Path | None):
    """Lay out a figure this module made and write it to ``path`` (returned); else return ``ax``."""
    if own:
        fig = ax.figure
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
            plt.close(fig)
            return Path(path)
    return ax


def plot_fitness(stats: pd.DataFrame, path: str | Path | None = None, ax=None):
    """Best (solid) and median (dashed) fitness per generation, one colour per island.

    ``stats``: columns generation, island, best_fitness, median_fitness.
    """
    plt = pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for island, group in stats.sort_values("generation").groupby("island"):
        line, = ax.plot(group["generation"], group["best_fitness"], marker="o", ms=3, label=f"island {island} best")
        ax.plot(group["generation"], group["median_fitness"], ls="--", color=line.get_color(), alpha=0.7,
                label=f"island {island} median")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    ax.set_title("Fitness over generations")
    ax.grid(alpha=0.3)
    if len(stats):
        ax.legend(fontsize=7, ncol=2)
    return _finish(plt, ax, own, path)


def lineage_layout(lineage: Lineage) -> dict[str, tuple[float, float]]:
    """x = generation, y = rank inside the generation (island, then id): a layered tree."""
    positions: dict[str, tuple[float, float]] = {}
    by_generation: dict[int, list] = {}
    for node in lineage.nodes.values():
        by_generation.setdefault(node.generation, []).append(node)
    for generation, nodes in by_generation.items():
        nodes.sort(key=lambda n: (n.island, n.strategy_id))
        offset = (len(nodes) - 1) / 2.0
        for rank, node in enumerate(nodes):
            positions[node.strategy_id] = (float(generation), rank - offset)
    return positions


def plot_lineage(lineage: Lineage, highlight: Iterable[str] = (), path: str | Path | None = None, ax=None,
                 label_limit: int = 40):
    """The lineage graph: a line from each parent to its child (left to right in generations), styled by operator.

    Nodes are coloured by island; ``highlight`` (the hall of fame) are drawn as stars. One
    line collection per operator and one scatter per island and kind keep the drawing cheap
    for hundreds of ancestors.
    """
    from matplotlib.collections import LineCollection

    plt = pyplot()
    own = ax is None
    if own:
        height = min(12.0, 3.0 + 0.25 * max((sum(1 for n in lineage.nodes.values() if n.generation == g)
                                              for g in {n.generation for n in lineage.nodes.values()}), default=1))
        fig, ax = plt.subplots(figsize=(10, height), dpi=100)
    pos = lineage_layout(lineage)
    cmap = plt.get_cmap("tab10")
    segments: dict[str, list] = {}
    for parent, child in lineage.edges():
        style = OPERATOR_STYLES.get(lineage.nodes[child].operator, "-")
        segments.setdefault(style, []).append([pos[parent], pos[child]])
    for style, lines in segments.items():
        ax.add_collection(LineCollection(lines, linestyles=style, colors="0.55", linewidths=0.8, zorder=1))
    highlight = set(highlight)
    groups: dict[tuple[int, bool], list] = {}
    for sid, node in lineage.nodes.items():
        star = sid in highlight
        groups.setdefault((node.island, star), []).append(pos[sid])
        if star or len(lineage.nodes) <= label_limit:
            x, y = pos[sid]
            ax.text(x, y, f" {sid[:8]}\n {node.operator}", fontsize=6, va="bottom", ha="left")
    for (island, star), points in sorted(groups.items()):
        xs, ys = zip(*points)
        ax.scatter(xs, ys, s=140 if star else 40, marker="*" if star else "o", color=cmap(island % 10),
                   edgecolors="black" if star else "none", zorder=3)
    if pos:
        ax.autoscale_view()
    islands = sorted({n.island for n in lineage.nodes.values()})
    for island in islands:
        ax.scatter([], [], color=cmap(island % 10), label=f"island {island}")
    for operator, style in OPERATOR_STYLES.items():
        ax.plot([], [], ls=style, color="0.55", label=operator)
    ax.set_xlabel("generation")
    ax.set_yticks([])
    ax.set_title(f"Lineage of the top strategies ({len(lineage.nodes)} strategies"
                 + ("" if lineage.complete else ", INCOMPLETE") + ")")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return _finish(plt, ax, own, path)

"""The run report: one self-contained HTML page per run, ``RUN_DIR/report.html``.

Everything is inside the file (SVG plots, CSS): it opens from disk or as an MLflow artifact
with no network. Written at the end of every ``evolve run`` and by ``evolve report RUN_DIR``::

    from evolution.report_html import write_report
    path = write_report("runs/<run_id>")

Data: :mod:`evolution.report_data`; pictures: :mod:`evolution.report_plots`.
"""
from __future__ import annotations

import html
import os
import sys
from pathlib import Path
from typing import Any

from evolution.report_data import SHADOW_EQUITY_FILE, ReportData, gate_rows, gather
from evolution.report_plots import PLOTS

REPORT_FILE = "report.html"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1.5rem; color: #222; background: #fff; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.meta { color: #555; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; font-family: ui-monospace, monospace; }
td.pass { color: #186a1b; font-weight: 600; } td.fail { color: #a11; font-weight: 600; }
figure.plot { margin: 1rem 0 2rem; } figure.plot svg { max-width: 100%; height: auto; }
figcaption { font-weight: 600; margin-bottom: .4rem; } p.note { color: #666; font-size: .85rem; }
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[str]], classes: list[list[str]] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="{classes[i][j]}">{cell}</td>' if classes and classes[i][j] else f"<td>{cell}</td>"
                        for j, cell in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary(data: ReportData) -> str:
    r = data.result
    market = r.get("market", {})
    timing = data.timing or {}
    rate = timing.get("evaluations_per_second")
    facts = [
        f"seed {r.get('seed')}", f"{r.get('n_trials')} distinct trials", f"{r.get('n_evaluations')} evaluations",
        f"{r.get('n_errors')} errors", f"PBO {_fmt(r.get('pbo'))}", f"{market.get('n_bars')} bars",
        f"selection {r.get('selection')} on {', '.join(r.get('objectives', []))}",
    ]
    if rate:
        facts.append(f"{rate:.0f} evaluations/s")
    promoted = r.get("promoted") or []
    return (f"<h1>Run {html.escape(str(r.get('run_id')))}</h1>"
            f"<p class='meta'>{' · '.join(html.escape(f) for f in facts)}</p>"
            f"<p class='meta'>promoted: {len(promoted)} "
            f"({html.escape(', '.join(promoted[:10])) or 'none'})</p>")


def _hall_of_fame(data: ReportData) -> str:
    rows = []
    for i, m in enumerate(data.result.get("hall_of_fame") or []):
        wf, ho = m["metrics"].get("walk_forward") or {}, m["metrics"].get("holdout") or {}
        rows.append([f"#{i + 1} {html.escape(m['strategy_id'])}", _fmt(m.get("generation")), _fmt(m.get("island")),
                     html.escape(str(m.get("operator"))), _fmt(wf.get("sharpe")), _fmt(ho.get("sharpe")),
                     _fmt(ho.get("max_drawdown")), _fmt(ho.get("n_trades")), _fmt(m.get("dsr")),
                     _fmt(m.get("promoted"))])
    return "<h2>Hall of fame</h2>" + _table(
        ["strategy", "generation", "island", "operator", "wf Sharpe", "holdout Sharpe", "holdout max DD",
         "holdout trades", "DSR", "promoted"], rows)


def _gates(data: ReportData) -> str:
    rows, classes = [], []
    for g in gate_rows(data.result):
        rows.append([html.escape(g["strategy_id"]), html.escape(g["gate"]), _fmt(g["value"], 4),
                     html.escape(g["op"]), _fmt(g["threshold"], 4), "pass" if g["passed"] else "fail"])
        classes.append(["", "", "", "", "", "pass" if g["passed"] else "fail"])
    if not rows:
        return "<h2 id='gates'>Gates</h2><p class='note'>No hall of fame: nothing was judged.</p>"
    return ("<h2 id='gates'>Gates on the holdout</h2><p class='note'>Each value against its threshold "
            "(gates: in the run's config).</p>" + _table(["strategy", "gate", "value", "", "threshold", "verdict"],
                                                         rows, classes))


def _figure(key: str, title: str, svg: str | None, note: str = "") -> str:
    body = svg if svg is not None else "<p class='note'>Nothing to draw for this run.</p>"
    extra = f"<p class='note'>{html.escape(note)}</p>" if note else ""
    return f'<figure class="plot" id="plot-{key}"><figcaption>{html.escape(title)}</figcaption>{body}{extra}</figure>'


def render(data: ReportData, on_plot=None) -> str:
    """The page's HTML; ``on_plot()`` after each plot is drawn (progress)."""
    figures = []
    for key, (title, draw) in PLOTS.items():
        note = ""
        if key == "equity":
            note = data.equity_note or (
                "" if data.shadow is not None else
                f"Shadow trading: none recorded for this run yet (serving writes {SHADOW_EQUITY_FILE}).")
        figures.append(_figure(key, title, draw(data), note))
        if on_plot is not None:
            on_plot()
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>evolve run {html.escape(str(data.result.get('run_id')))}</title><style>{_CSS}</style></head>"
            f"<body>{_summary(data)}{_hall_of_fame(data)}{''.join(figures)}{_gates(data)}</body></html>\n")


def write_report(run_dir: str | Path, market: Any = None, progress: bool = False) -> Path:
    """Write ``RUN_DIR/report.html`` (atomically) and return its path. ``market``: the run's
    OHLCV if the caller holds it; otherwise it is rebuilt from the run's config.json.
    ``progress``: a progress bar on stderr (when it is a terminal)."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    with tqdm(total=len(PLOTS) + 1, desc="report", unit="step", file=sys.stderr, disable=None if progress else True,
              leave=False) as bar:
        data = gather(run_dir, market=market)  # equity curves: the champion backtested again
        bar.update(1)
        text = render(data, on_plot=lambda: bar.update(1))
    path = run_dir / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

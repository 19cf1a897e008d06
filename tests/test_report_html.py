"""`evolve run` writes RUN_DIR/report.html and prints its path; `evolve report RUN_DIR` writes the
same page again from the run directory alone; the page renders in headless Chromium (Debian's
`chromium`) with every plot drawn, and nothing in it asks for the network."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from evolution_helpers import small_config
from prometheus_helpers import require_binary

from evolution.cli import main
from evolution.report_data import SHADOW_EQUITY_FILE
from evolution.report_plots import PLOTS

#: records the document coordinates of every plot into the DOM (added to a copy of the page)
PROBE = """<script>
document.body.dataset.rects = JSON.stringify(Array.from(document.querySelectorAll("figure.plot")).map(f => {
  const r = f.getBoundingClientRect(); return {id: f.id, x: r.left, y: r.top, w: r.width, h: r.height}; }));
</script></body>"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small `evolve run` (local islands): its run directory and what it printed."""
    root = tmp_path_factory.mktemp("report")
    config = small_config(**{"generations": 5})
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = root / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["run", "--config", str(path), "--out", str(out), "--no-tracking"]) == 0
    return out, printed.getvalue()


def test_evolve_run_writes_the_report_and_prints_its_path(run_dir):
    out, printed = run_dir
    page = out / "report.html"
    assert f"report: {page.resolve()}" in printed
    text = page.read_text()
    for key in PLOTS:
        figure = re.search(rf'<figure class="plot" id="plot-{key}">(.*?)</figure>', text, re.S)
        assert figure and "<svg" in figure.group(1), f"plot {key} missing"
    result = json.loads((out / "result.json").read_text())
    champion = result["hall_of_fame"][0]["strategy_id"]
    assert champion in text
    # every gate of every hall-of-fame member, with its threshold
    assert text.count("<td class=\"pass\">pass</td>") + text.count("<td class=\"fail\">fail</td>") == \
        sum(len(m["gates"]) for m in result["hall_of_fame"])
    assert "Shadow trading: none recorded" in text


def test_evolve_report_rebuilds_the_same_page_from_the_run_directory(run_dir, capsys):
    out, _ = run_dir
    first = (out / "report.html").read_text()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str((out / "report.html").resolve())
    assert (out / "report.html").read_text() == first  # same market, same engine: the same page


def test_evolve_report_on_a_directory_without_a_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no result.json" in err and err.count("\n") == 1


def _no_external_references(text: str) -> None:
    assert not re.search(r"https?://", text)  # no URL at all, not even an XML namespace
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#|data:)""", text)
    assert "@import" not in text and "url(http" not in text


_BROWSER_SERVICE = re.compile(rb"^(GET|CONNECT|POST) (http://)?[\w.-]*(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)[:/]")


class _ConnectionRecorder:
    """A TCP listener standing in for a proxy: any request the browser makes lands here."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                self.requests.append(conn.recv(4096))
            except OSError:
                self.requests.append(b"")
            conn.close()

    def close(self):
        self.sock.close()


def _chromium(binary: str, proxy_port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
         f"--proxy-server=http://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>", *args],
        capture_output=True, text=True, timeout=180,
    )


def test_the_report_renders_in_chromium_with_every_plot_drawn_and_no_request(run_dir, tmp_path):
    from PIL import Image

    chromium = require_binary("chromium", "chromium")
    out, _ = run_dir
    # a shadow record for the champion: the report's shadow slot draws it
    result = json.loads((out / "result.json").read_text())
    champion = result["hall_of_fame"][0]["strategy_id"]
    shadow = out / SHADOW_EQUITY_FILE
    shadow.parent.mkdir(parents=True, exist_ok=True)
    start = result["market"]["holdout"][1]
    pd.DataFrame({"strategy_id": champion, "timestamp": 1_700_000_000_000 + 60_000 * np.arange(start, start + 300),
                  "equity": 1.0 + np.cumsum(np.random.default_rng(0).normal(0, 1e-3, 300))}).to_parquet(shadow)
    try:
        assert main(["report", str(out)]) == 0
    finally:
        shutil.rmtree(shadow.parent)
    text = (out / "report.html").read_text()
    _no_external_references(text)
    assert "shadow (paper trading)" in text

    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE, 1))
    proxy = _ConnectionRecorder()
    try:
        dom = _chromium(chromium, proxy.port, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = tmp_path / "report.png"
        done = _chromium(chromium, proxy.port, "--window-size=1280,7000", f"--screenshot={shot}", probe.as_uri())
        assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    finally:
        proxy.close()
    # the browser's own services (time, updates, accounts) call home whatever the page; the page nothing
    page_requests = [r for r in proxy.requests if not _BROWSER_SERVICE.search(r.split(b"\r\n", 1)[0])]
    assert page_requests == [], f"the page made requests: {page_requests[:3]}"

    rects = json.loads(re.search(r'data-rects="([^"]*)"', dom.stdout).group(1).replace("&quot;", '"'))
    assert [r["id"] for r in rects] == [f"plot-{key}" for key in PLOTS]
    for key in PLOTS:  # drawn in the DOM: an SVG with many shapes in each figure
        figure = re.search(rf'<figure class="plot" id="plot-{key}">(.*?)</figure>', dom.stdout, re.S).group(1)
        assert "<svg" in figure and figure.count("<path") + figure.count("<use") >= 10, key
    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    for rect in rects:  # and on screen: each plot's area holds many non-white pixels
        assert rect["w"] > 200 and rect["h"] > 150, rect
        y0, x0 = int(rect["y"]), int(rect["x"])
        area = image[y0 + 30: y0 + int(rect["h"]), x0: x0 + int(rect["w"])]
        assert area.size and (area < 200).mean() > 0.01, f"{rect['id']} looks blank"


@pytest.mark.slow
def test_the_report_is_logged_to_mlflow_with_the_run(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # a SQLite store keeps its artifacts under ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(small_config(**{"generations": 2, "islands": 1}).model_dump(mode="json")))
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    copy = client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path / "copy"))
    assert Path(copy).read_text() == (out / "report.html").read_text()

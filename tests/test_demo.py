"""`evolve demo` end to end (slow): a small search on a market with a strong planted edge, its
holdout replayed in shadow, the promotion gates moving the champion alias in a SQLite MLflow
store, then the live endpoint answering the printed curl request until Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from evolution_helpers import small_config_data
from mlflow_server import free_port

from backtest import positions
from evolution.cli import main
from evolution.demo_cli import shadow_step
from evolution.lineage.tracking import resolve_tracking

pytestmark = pytest.mark.slow
MODEL = "strategy-evolution"


def write_config(path: Path, **overrides) -> Path:
    """The tests' small config (2 islands x 12, 5 generations, 8,000 bars with a strong planted edge)."""
    path.write_text(yaml.safe_dump(small_config_data(**{"runtime.progress": False, **overrides})))
    return path


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A SQLite MLflow store of the test's own as $MLFLOW_TRACKING_URI; the bus in-process."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return uri


def test_demo_promotes_the_planted_edge_in_shadow(tmp_path, store, capsys):
    from serving.registry import LIVE, ModelRegistry

    out = tmp_path / "run"
    code = main(["demo", "--config", str(write_config(tmp_path / "c.yaml")), "--out", str(out), "--local",
                 "--no-serve"])
    text = capsys.readouterr().out
    assert code == 0, text
    result = json.loads((out / "result.json").read_text())
    assert result["promoted"], "nothing promoted on a market with a strong planted edge"
    registry = ModelRegistry(MODEL, store)
    champion = registry.champion()
    assert champion is not None and champion.strategy_id in result["promoted"] and champion.stage == LIVE
    assert "criteria passed" in champion.history[-1]["reason"]  # the gates' verdict, not a manual promotion
    assert f"demo: version {champion.version} (strategy {champion.strategy_id}) passed the promotion gates" in text
    assert "shadow-" + champion.strategy_id in text and (out / "shadow_state" / champion.strategy_id).is_dir()

    again = shadow_step(out, resolve_tracking(None))  # the same step once more: nothing changes
    assert (again.code, again.champion, again.promoted) == (0, champion.version, True)
    assert "is the champion already" in again.message


def test_a_run_that_promotes_nothing_says_what_to_try(tmp_path, store, capsys):
    from serving.registry import ModelRegistry

    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", **{"market.synthetic.planted_edge": None, "generations": 2})
    assert main(["demo", "--config", str(config), "--out", str(out), "--local", "--no-serve"]) == 0
    assert json.loads((out / "result.json").read_text())["promoted"] == []
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("demo: the run promoted")]
    assert len(lines) == 1 and f"evolve shadow {out} --all" in lines[0] and "without a champion" in lines[0]
    assert ModelRegistry(MODEL, store).champion() is None


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text()
        if text in content:
            return content
        assert process.poll() is None, content[-4000:]
        time.sleep(0.3)
    raise AssertionError(f"no {text!r} within {timeout} s: {log.read_text()[-4000:]}")


def _curl(line: str) -> requests.Response:
    """Send the request of the demo's curl line (URL, header, -d @FILE) as curl would."""
    words = shlex.split(line[line.index("curl "):])
    url = next(w for w in words if w.startswith("http://"))
    body = Path(words[words.index("-d") + 1].removeprefix("@")).read_bytes()
    return requests.post(url, data=body, headers={"content-type": "application/json"}, timeout=60)


def test_evolve_demo_serves_the_champion_until_ctrl_c(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    port = free_port()
    out = tmp_path / "run"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "RAY_AUTH_MODE": "disabled"}
    for name in ("REDIS_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    log = tmp_path / "demo.log"
    command = [sys.executable, "-m", "evolution", "demo", "--config", str(write_config(tmp_path / "c.yaml")),
               "--out", str(out), "--local", "--port", str(port)]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                   start_new_session=True)
    try:
        text = _wait_for(log, "Stop with Ctrl-C", process, 240)
        base = f"http://127.0.0.1:{port}"
        # the champion is the promoted version the shadow step's gates passed (several may pass; the
        # last judged one passing is the champion): the endpoint serves the one the registry names
        serving = re.search(rf"Serving '{MODEL}' from {re.escape(uri)} on {re.escape(base)} \(champion: version (\d+)",
                            text)
        assert serving, text[-3000:]
        (line,) = [x for x in text.splitlines() if x.startswith("demo: ask the champion")]
        result = json.loads((out / "result.json").read_text())
        health = requests.get(base + "/healthz", timeout=30).json()
        assert health["status"] == "ok" and health["champion"] == serving.group(1)
        listing = requests.get(base + "/v1/strategies", timeout=30).json()
        (live,) = [s for s in listing["strategies"] if "champion" in s["aliases"]]
        assert live["strategy_id"] in result["promoted"] and live["stage"] == "live"

        answer = _curl(line)
        assert answer.status_code == 200, answer.text
        genome = next(m["genome"] for m in result["hall_of_fame"] if m["strategy_id"] == live["strategy_id"])
        import numpy as np

        rows = np.asarray(json.loads((out / "predict_request.json").read_text())["candles"])
        assert answer.json()["strategy_id"] == live["strategy_id"]
        assert answer.json()["signal"] == int(positions(genome, rows)[-1])
        assert answer.json()["timestamp"] == int(rows[-1, 0])

        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=120) == 0, log.read_text()[-4000:]
        assert "demo: Serve stopped" in log.read_text()
        with pytest.raises(requests.ConnectionError):
            requests.get(base + "/healthz", timeout=5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

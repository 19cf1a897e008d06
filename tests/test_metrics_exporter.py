"""The driver's exporter: `evolve run --metrics-port` serves the search's metrics on 127.0.0.1
while the run lasts; a busy port is a one-line error before anything runs."""
from __future__ import annotations

import socket
import urllib.request

import yaml
from evolution_helpers import small_config

from backtest.telemetry import install
from evolution.cli import main
from evolution.telemetry import DRIVER_METRICS


def test_a_busy_metrics_port_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(small_config().model_dump(mode="json")))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--metrics-port", str(port),
                     "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{port}" in err and "--metrics-port" in err
    assert not (tmp_path / "run" / "result.json").exists()


def test_evolve_run_serves_its_metrics_on_localhost(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(small_config(**{"generations": 3}).model_dump(mode="json")))
    try:
        assert main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--metrics-port", "0",
                     "--no-tracking"]) == 0
        url = next(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("metrics: "))
        assert url.startswith("http://127.0.0.1:")
        request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        text = urllib.request.urlopen(request, timeout=5).read().decode()  # as Prometheus asks for it
    finally:
        install(None)  # the recorder of this process's run: later tests record nothing
    for spec in DRIVER_METRICS:
        assert f"# TYPE {spec.family} {spec.kind}" in text, spec.name
        assert (f"# UNIT {spec.family} {spec.unit}" in text) == bool(spec.unit), spec.name
    assert "evolution_generations_total 3.0" in text
    # a --local run's islands record in the driver: their metrics carry their own names there
    assert 'evolution_island_trials_evaluated_total{island="0"}' in text

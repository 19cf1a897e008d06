"""A real Prometheus scrapes a real `evolve run` driver (--metrics-port) and a real
`ray start --head` node (through Ray's service-discovery file) with the scrape config and
alert rules under configs/: every metric the driver and the island actors record is there
with its catalogued name, type and unit, and the values agree with the run's trial log."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from binance_stub import DEFAULT_START_MS, HOUR_MS, BinanceStub, make_series
from prometheus_helpers import Prometheus, free_port, require_binary

from backtest.telemetry import catalogue as M
from evolution.telemetry import DRIVER_METRICS, ISLAND_METRICS
from evolution.trials import read_trials

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
VENV_BIN = Path(sys.executable).parent

#: `evolve run` through its console-script entry point, kept alive after the run (stdin open)
#: so Prometheus can scrape the final values from the driver's endpoint
DRIVER = r"""
import sys
from evolution.cli import main
code = main(sys.argv[1:])
print(f"EXIT {code}", flush=True)
sys.stdin.read()
"""


# long enough for Ray's agent to export the island actors' metrics (reported every second) and
# Prometheus to scrape them before the actors end with the run (6 generations of 12 took under a second)
GENERATIONS = 60


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env["RAY_metrics_report_interval_ms"] = "1000"  # actors report to the agent every second
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def test_promtool_accepts_the_configs():
    promtool = require_binary("promtool", "prometheus")
    rules = subprocess.run([promtool, "check", "rules", str(CONFIGS / "alerts.yml")], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "7 rules found" in rules.stdout + rules.stderr
    config = subprocess.run([promtool, "check", "config", str(CONFIGS / "prometheus.yml")], capture_output=True,
                            text=True)
    assert config.returncode == 0, config.stdout + config.stderr  # also checks alerts.yml, which it names


class RayHead:
    """`ray start --head --block` with a temp dir of its own; stopped by its processes' pids."""

    def __init__(self, temp: Path):
        self.temp = temp
        self.port = free_port()
        ports = {"--dashboard-port": free_port(), "--ray-client-server-port": free_port(),
                 "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
                 "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port()}
        self.process = subprocess.Popen(
            ["ray", "start", "--head", "--block", f"--port={self.port}", "--num-cpus=2", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
             "--disable-usage-stats", *[f"{k}={v}" for k, v in ports.items()]],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.discovery = temp / "prom_metrics_service_discovery.json"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if json.loads(self.discovery.read_text())[0]["targets"]:
                    return
            except (OSError, ValueError, IndexError, KeyError):
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("ray start --head did not come up with its service-discovery file")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        mine = [p for p in psutil.process_iter(["pid", "cmdline"])
                if str(self.temp) in " ".join(p.info["cmdline"] or [])]
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for proc in mine:  # anything of this head's that outlived it (matched by its own temp dir)
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def _prometheus_config(driver_port: int, discovery: Path) -> dict:
    """configs/prometheus.yml pointed at this test's driver port and Ray temp dir, scraping every second."""
    config = yaml.safe_load((CONFIGS / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(CONFIGS / name) for name in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["evolve-driver"]["static_configs"] = [{"targets": [f"127.0.0.1:{driver_port}"]}]
    jobs["ray"]["file_sd_configs"] = [{"files": [str(discovery)], "refresh_interval": "1s"}]
    config["scrape_configs"] = [jobs["evolve-driver"], jobs["ray"]]  # nothing at the serving port in this test
    return config


def _run_config(tmp_path: Path, url: str) -> Path:
    data = {
        "seed": 5,
        "market": {"exchange": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h",
                                "since": DEFAULT_START_MS, "until": DEFAULT_START_MS + 3000 * HOUR_MS,
                                "base_url": url, "store_dir": str(tmp_path / "store")}},
        "islands": 2, "population": 48, "generations": GENERATIONS,
        "migration": {"interval": 2, "size": 2},
        # mostly copies of parents: islands meet genomes they scored before (cache hits to count)
        "operators": {"crossover_probability": 0.2, "mutation_probability": 0.2},
        "walk_forward": {"folds": 3, "holdout_fraction": 0.25, "train_fraction": 0.2, "bucket_bars": 20},
        "hall_of_fame": 4,
        "runtime": {"backend": "ray", "progress": False, "ray": {"island_num_cpus": 0.5}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_prometheus_scrapes_the_driver_and_ray(tmp_path):
    require_binary("prometheus", "prometheus")
    temp = Path("/tmp") / f"obsray{free_port()}"  # short: unix socket paths have a length limit
    head = RayHead(temp)
    stub = BinanceStub([make_series(n_bars=3000)]).start()
    stub.inject("5xx", times=1)  # one transient failure: a retry, a retryable_error request
    driver_port = free_port()
    prometheus = driver = None
    try:
        prometheus = Prometheus(_prometheus_config(driver_port, head.discovery), tmp_path / "prometheus")
        out = tmp_path / "run"
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, "run", "--config", str(_run_config(tmp_path, stub.url)), "--out", str(out),
             "--address", head.address, "--metrics-port", str(driver_port), "--no-tracking", "--no-progress"],
            cwd=REPO, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # metadata as Prometheus saw it while the run went on: island actors are gone at the end
        metadata: dict[str, list] = {}
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(driver.stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 600
        while not any(line.startswith("EXIT") for line in lines) and driver.poll() is None:
            assert time.monotonic() < deadline, "the run did not finish in 10 minutes"
            metadata.update(prometheus.api("metadata"))
            time.sleep(1.0)
        assert any(line.strip() == "EXIT 0" for line in lines), "".join(lines) + driver.stderr.read()[-4000:]
        time.sleep(3)  # a few more scrapes of the driver's final values
        metadata.update(prometheus.api("metadata"))

        # both targets up: a target (re)discovered from Ray's file is "unknown" until its first scrape
        deadline = time.monotonic() + 30
        while True:
            targets = prometheus.api("targets")["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            if health.get("evolve-driver") == "up" and health.get("ray") == "up" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert health.get("evolve-driver") == "up" and health.get("ray") == "up", targets

        # every metric the driver and the islands record: name, type and unit as catalogued
        for spec in DRIVER_METRICS + ISLAND_METRICS:
            entries = metadata.get(spec.exported_family) or metadata.get(spec.exported_name)
            assert entries, f"{spec.exported_name} not scraped"
            assert entries[0]["type"] == spec.kind, (spec.name, entries)
            assert entries[0]["help"] == spec.help, (spec.name, entries)
            if spec.exporter == M.PROCESS:  # OpenMetrics carries units; Ray's exporter does not
                assert entries[0]["unit"] == spec.unit, (spec.name, entries)
            assert spec.unit == "" or spec.name.removesuffix("_total").endswith("_" + spec.unit)

        # and the values agree with the run
        result = json.loads((out / "result.json").read_text())
        frame = read_trials(out)
        evaluated = int(frame["evaluated"].sum())
        assert prometheus.value("evolution_generations_total") == GENERATIONS
        assert prometheus.value("evolution_trials_evaluated_total") == evaluated
        assert prometheus.value("evolution_generation_duration_seconds_count") == GENERATIONS
        assert prometheus.value("evolution_trial_sharpe_count") == evaluated - frame.loc[frame["evaluated"], "error"].notna().sum()
        assert prometheus.value('sum(evolution_gate_outcomes_total{stage="holdout"})') == sum(
            len(member["gates"]) for member in result["hall_of_fame"])
        assert prometheus.value("evolution_strategies_promoted_total") == len(result["promoted"])
        assert prometheus.value('market_data_requests_total{exchange="binance",outcome="ok"}') > 0
        assert prometheus.value('market_data_requests_total{exchange="binance",outcome="retryable_error"}') == 1
        assert prometheus.value('market_data_retries_total{exchange="binance"}') == 1
        assert prometheus.value('market_data_circuit_state{exchange="binance"}') == 0
        cached = prometheus.value("evolution_trials_cached_total")
        islands = prometheus.value("sum(max_over_time(ray_evolution_island_trials_evaluated_total[10m]))")
        island_cached = prometheus.value("sum(max_over_time(ray_evolution_island_trials_cached_total[10m]))")
        # the islands' counters reach the agent every second; the last second before the actors
        # are killed may be missing, never more than what the islands evaluated
        early = int(frame.loc[frame["evaluated"] & (frame["generation"] < 5), "evaluated"].sum())
        assert early <= islands <= evaluated
        assert 0 < island_cached <= cached
        assert prometheus.value("sum(max_over_time(ray_evolution_island_evaluation_duration_seconds_count[10m]))") > 0
    finally:
        if driver is not None:
            if driver.poll() is None:
                driver.stdin.close()
                try:
                    driver.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    driver.kill()
        if prometheus is not None:
            prometheus.stop()
        stub.stop()
        head.stop()

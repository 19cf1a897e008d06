"""Faults while a real `evolve run` logs to a real `mlflow server`: the tracking server goes away
(from the start, mid-run), the sender process is killed, the driver is killed. The run goes
on (or resumes), and after `evolve sync` the store holds exactly what a run without the fault
leaves (timestamps and wall-time metrics aside)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest
from lineage_fixtures import EXPERIMENT, MODEL, evolve, lineage_config, start_evolve, wait_for
from mlflow_server import MlflowServer
from store_shape import store_content

from evolution.lineage.ops import RUN_RECORD_FILE, Spool
from evolution.trials import part_path
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fault_config(tmp_path_factory) -> Path:
    """A smaller search, long enough that a fault after generation 1 lands while it runs."""
    return lineage_config(tmp_path_factory.mktemp("faults") / "faults.yaml", generations=8, population=24,
                          hall_of_fame=4, **{"gates.max_drawdown": 0.3})


@pytest.fixture(scope="module")
def reference(fault_config, tmp_path_factory) -> dict:
    """The store after the same run without a fault."""
    base = tmp_path_factory.mktemp("reference")
    with MlflowServer.sqlite(base / "store") as server:
        done = evolve("run", "--config", str(fault_config), "--out", str(base / "run"), "--tracking-uri", server.url,
                      cwd=base)
        assert done.returncode == 0, done.stderr[-3000:]
        content = store_content(server.url, EXPERIMENT, MODEL)
        assert content["versions"], "the reference run promoted nothing: the faults would not reach registration"
        return content


def _sync_until_complete(run_dir: Path, server: MlflowServer, *, while_down: bool = False) -> None:
    """``while_down``: `evolve sync` fails in one line and keeps the spool while the server is down.
    Once it is up, it sends everything; again, it has nothing left to send."""
    pending = Spool(run_dir).pending()
    assert pending > 0
    if while_down:
        assert not server.running
        down = evolve("sync", str(run_dir), cwd=run_dir.parent)
        assert down.returncode == 1 and "still pending" in down.stderr
        assert len(down.stderr.strip().splitlines()) == 1 and "Traceback" not in down.stderr
        assert Spool(run_dir).pending() == pending
    server.start()
    up = evolve("sync", str(run_dir), cwd=run_dir.parent)
    assert up.returncode == 0, up.stderr
    assert f"sent {pending} operation(s)" in up.stdout
    assert Spool(run_dir).pending() == 0
    assert json.loads((run_dir / RUN_RECORD_FILE).read_text())["tracking_uri"] == server.url
    if while_down:
        again = evolve("sync", str(run_dir), cwd=run_dir.parent)
        assert again.returncode == 0 and "nothing to sync" in again.stdout


def _assert_same_store(server: MlflowServer, reference: dict) -> None:
    after = store_content(server.url, EXPERIMENT, MODEL)
    assert after["runs"].keys() == reference["runs"].keys()
    for key in reference["runs"]:
        assert after["runs"][key] == reference["runs"][key], key
    assert after["versions"] == reference["versions"]
    assert after["stage_events"] == reference["stage_events"]


def _spooled_run(done_stdout: str, run_dir: Path) -> None:
    assert f"evolve sync {run_dir}" in done_stdout
    assert (run_dir / "result.json").is_file() and (run_dir / "lineage" / "lineage.png").is_file()
    assert not (run_dir / RUN_RECORD_FILE).exists()


@pytest.mark.parametrize("when", ["from-the-start", "mid-run"])
def test_outage_then_sync_leaves_the_store_as_without_outage(fault_config, reference, tmp_path, when):
    server = MlflowServer.sqlite(tmp_path / "store")
    run_dir = tmp_path / "run"
    try:
        args = ("run", "--config", str(fault_config), "--out", str(run_dir), "--tracking-uri", server.url)
        if when == "from-the-start":
            done = evolve(*args, cwd=tmp_path)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        else:
            server.start()
            process = start_evolve(*args, cwd=tmp_path)
            wait_for(lambda: part_path(run_dir, 1).is_file(), what="generation 1")
            server.stop()
            stdout, stderr = process.communicate(timeout=600)
            code = process.returncode
        assert code == 0, stderr[-3000:]
        _spooled_run(stdout, run_dir)
        assert "Traceback" not in stderr
        _sync_until_complete(run_dir, server, while_down=when == "from-the-start")
        _assert_same_store(server, reference)
    finally:
        server.close()


def test_a_killed_sender_process_loses_nothing(fault_config, reference, tmp_path):
    """The sender dies mid-run (the server stays up): the driver cannot know which operations
    went through, so it spools all of them; `evolve sync` replays them."""
    run_dir = tmp_path / "run"
    with MlflowServer.sqlite(tmp_path / "store") as server:
        process = start_evolve("run", "--config", str(fault_config), "--out", str(run_dir), "--tracking-uri",
                               server.url, cwd=tmp_path)
        wait_for(lambda: part_path(run_dir, 1).is_file(), what="generation 1")
        sender = next(p for p in psutil.Process(process.pid).children()
                      if "evolution.lineage.sender" in " ".join(p.cmdline()))
        sender.kill()
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        assert "the lineage sender process exited with code -9" in stdout
        _spooled_run(stdout, run_dir)
        spool = Spool(run_dir)
        assert spool.pending() == len(spool.read_ops())  # every operation of the run
        _sync_until_complete(run_dir, server)
        _assert_same_store(server, reference)


def test_what_a_killed_driver_queued_reaches_mlflow_and_resume_completes_it(fault_config, reference, tmp_path):
    """SIGKILL to the driver mid-run: the sender drains what it was given on its own (the run,
    its params, the first generation's metrics, the trial-log parts so far); `evolve run --resume`
    then continues the same MLflow run to the store of a run that was never killed."""
    run_dir = tmp_path / "run"
    with MlflowServer.sqlite(tmp_path / "store") as server:
        args = ("--tracking-uri", server.url)
        process = start_evolve("run", "--config", str(fault_config), "--out", str(run_dir), *args, cwd=tmp_path)
        wait_for(lambda: part_path(run_dir, 2).is_file(), what="generation 2")
        sender = next(p for p in psutil.Process(process.pid).children()
                      if "evolution.lineage.sender" in " ".join(p.cmdline()))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=300)
        sender.wait(timeout=300)  # it drains its queue, then exits
        client = MlflowClient(server.url)
        (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
        assert run.info.status == "RUNNING"
        assert run.data.params == reference["runs"][run.data.tags["lineage.key"]]["params"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "best_fitness")][:1] == [0]
        parts = {a.path for a in client.list_artifacts(run.info.run_id, "trial_log")}
        assert {"trial_log/generation-00000.parquet", "trial_log/generation-00001.parquet"} <= parts

        resumed = evolve("run", "--resume", str(run_dir), *args, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"lineage: MLflow run {run.info.run_id} at {server.url}" in resumed.stdout
        _assert_same_store(server, reference)

"""The tracking server goes away mid-run: the run goes on, `evolve sync` sends the rest later,
and the store ends up exactly as after a run without the outage."""
from __future__ import annotations

import pytest
from mlflow_server import MlflowServer, dump_store

from evolution.cli import main
from evolution.lineage import LineageLogger
from evolution.lineage_fixture import record_fixture_run, replay_fixture_run
from evolution.lineage_ops import OpApplier, Spool
from serving.registry import ModelRegistry

EXPERIMENT = "outage-test"
MODEL = "strategy-evolution-outage"
GIT_TAGS = ("git_commit", "mlflow.source.git.commit")
AT = 1_790_000_000_000  # every timestamp pinned, so two stores can be compared field by field


def _promote_first(server):
    registry = ModelRegistry(MODEL, server.url)
    versions = [v.version for v in registry.versions()]
    registry.promote(versions[0], at=AT + 10)
    registry.promote(versions[1], at=AT + 20)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    source = tmp_path_factory.mktemp("outage-source")
    result, generations = record_fixture_run(source, seed=21, n_bars=4000, population=8, generations=4,
                                             hall_of_fame=3, promoted=2, trials_layout="parts")
    return source, result, generations


@pytest.fixture(scope="module")
def reference(recorded, tmp_path_factory):
    """The store after the same run without an outage."""
    source, result, generations = recorded
    base = tmp_path_factory.mktemp("reference")
    with MlflowServer.sqlite(base / "store") as server:
        logger = LineageLogger(server.url, experiment=EXPERIMENT, registered_model=MODEL)
        report = replay_fixture_run(logger, source, base / "run", generations, at_ms=AT)
        assert not report.spooled
        _promote_first(server)
        return dump_store(server.url, EXPERIMENT, MODEL)


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [1, -1, "finish"], ids=["mid-run", "from-the-start", "while-sending-hall-of-fame"])
def test_outage_then_sync_leaves_the_store_as_without_outage(recorded, reference, tmp_path, stop_after, capsys,
                                                            monkeypatch):
    source, result, generations = recorded
    server = MlflowServer.sqlite(tmp_path / "store")
    run_dir = tmp_path / "run"
    with server:
        if stop_after == -1:
            server.stop()
        if stop_after == "finish":
            # the hall-of-fame strategies go out side by side: the server dies under the first
            # logged model, while other strategies' operations are in flight
            original = OpApplier._op_log_model
            stopped = []

            def log_model_then_die(self, op):
                if not stopped:
                    stopped.append(op["strategy_id"])
                    server.stop()
                return original(self, op)

            monkeypatch.setattr(OpApplier, "_op_log_model", log_model_then_die)

        def outage(generation: int) -> None:
            if generation == stop_after:
                server.stop()

        # the "finish" outage is timed from inside the sender, so that one sends from threads of this
        # process; the other two send from the logger's child process, as evolve run does
        logger = LineageLogger(server.url, experiment=EXPERIMENT, registered_model=MODEL,
                               in_process=stop_after == "finish")
        report = replay_fixture_run(logger, source, run_dir, generations, after_generation=outage, at_ms=AT)
        # the run went on and kept everything on disk
        assert report.spooled and report.pending_ops > 0 and report.lineage_complete
        assert (run_dir / "lineage" / "lineage.png").is_file()
        assert not (run_dir / "mlflow_run.json").exists()
        # while the server is still down, sync fails cleanly and keeps the spool
        assert main(["sync", str(run_dir)]) == 1
        assert "still pending" in capsys.readouterr().err
        assert Spool(run_dir).pending() == report.pending_ops

        server.start()
        assert main(["sync", str(run_dir)]) == 0
        assert "sent" in capsys.readouterr().out
        assert Spool(run_dir).pending() == 0 and (run_dir / "mlflow_run.json").is_file()
        assert main(["sync", str(run_dir)]) == 0
        assert "nothing to sync" in capsys.readouterr().out

        _promote_first(server)
        after = dump_store(server.url, EXPERIMENT, MODEL)
    assert after["runs"].keys() == reference["runs"].keys()
    for key in reference["runs"]:
        ours, theirs = after["runs"][key], reference["runs"][key]
        for run in (ours, theirs):  # the commit may move between the two runs while the suite runs
            for tag in GIT_TAGS:
                run["tags"].pop(tag, None)
        assert ours == theirs, key
    assert after["versions"] == reference["versions"]
    assert after["aliases"] == reference["aliases"] and set(after["aliases"]) == {"champion", "previous-champion"}
    assert after["registered_tags"] == reference["registered_tags"]


@pytest.mark.slow
def test_a_killed_sender_process_loses_nothing(recorded, reference, tmp_path, capsys):
    """The logger's child process dies mid-run (killed; the server stays up): the driver cannot
    know which operations went through, so it spools all of them; `evolve sync` replays them and
    the store ends up exactly as after a run where nothing happened."""
    source, result, generations = recorded
    run_dir = tmp_path / "run"
    with MlflowServer.sqlite(tmp_path / "store") as server:
        logger = LineageLogger(server.url, experiment=EXPERIMENT, registered_model=MODEL)

        def kill_the_sender(generation: int) -> None:
            if generation == 1:
                logger._sender._process.kill()
                logger._sender._process.wait()

        report = replay_fixture_run(logger, source, run_dir, generations, after_generation=kill_the_sender,
                                    at_ms=AT)
        assert report.spooled and report.lineage_complete
        assert report.pending_ops == len(Spool(run_dir).read_ops()) > 0  # every operation of the run
        assert not (run_dir / "mlflow_run.json").exists()
        assert main(["sync", str(run_dir)]) == 0
        assert Spool(run_dir).pending() == 0 and (run_dir / "mlflow_run.json").is_file()
        _promote_first(server)
        after = dump_store(server.url, EXPERIMENT, MODEL)
    assert after["runs"].keys() == reference["runs"].keys()
    for key in reference["runs"]:
        ours, theirs = after["runs"][key], reference["runs"][key]
        for run in (ours, theirs):
            for tag in GIT_TAGS:
                run["tags"].pop(tag, None)
        assert ours == theirs, key
    assert after["versions"] == reference["versions"]
    assert after["registered_tags"] == reference["registered_tags"]


def test_sync_of_a_directory_without_spool_says_so(tmp_path, capsys):
    assert main(["sync", str(tmp_path)]) == 0
    assert "nothing to sync" in capsys.readouterr().out
    assert main(["sync", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err

"""Whole runs on a small market: result contract, trial log, exact resume, actor loss."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from evolution_helpers import small_config

from evolution.cli import main
from evolution.pools import LocalPool, RayPool
from evolution.runner import execute, plan, plan_resume


class Interrupt(Exception):
    pass


def run_local(config, out, on_generation=None):
    run = plan(config, out_dir=out)
    pool = LocalPool(config, run.spec.market, run.spec.split.test_ranges())
    return execute(run, pool, on_generation=on_generation)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted local run of the small config."""
    out = tmp_path_factory.mktemp("reference")
    run_local(small_config(), out)
    return out


def test_result_json_contract(reference):
    result = json.loads((reference / "result.json").read_text())
    for key in ("run_id", "seed", "n_trials", "n_effective_trials", "hall_of_fame", "promoted", "config", "config_id"):
        assert key in result
    assert 1 <= result["n_effective_trials"] <= result["n_trials"]
    assert result["seed"] == 3
    hof = result["hall_of_fame"]
    assert 1 <= len(hof) <= 5
    for member in hof:
        for key in ("strategy_id", "genome", "metrics", "dsr", "holdout_dsr", "pbo", "rank_score", "generation", "island",
                    "operator", "parents"):
            assert key in member
        for block in ("walk_forward", "holdout"):
            assert {"sharpe", "total_return", "max_drawdown", "n_trades"} <= set(member["metrics"][block])
    scores = [m["rank_score"] for m in hof]
    assert scores == sorted(scores, reverse=True)  # best first, by gates.rank_by
    assert set(result["promoted"]) <= {m["strategy_id"] for m in hof}
    text = (reference / "result.json").read_text()
    assert "time" not in text.lower().replace("timeframe", "")


def test_trial_log_holds_every_evaluation(reference):
    trials = pd.read_parquet(reference / "trials")
    result = json.loads((reference / "result.json").read_text())
    for column in ("strategy_id", "island", "generation", "parents", "operator", "genome", "error",
                   "fold_sharpe", "oos_returns", "wf_sharpe"):
        assert column in trials.columns
    evaluated = trials[trials["evaluated"]]
    assert result["n_trials"] == evaluated["strategy_id"].nunique()
    assert sorted(trials["generation"].unique()) == list(range(5))
    assert set(trials["island"]) == {0, 1}
    assert "init" in set(trials["operator"]) and "migration" in set(trials["operator"])
    # no island evaluated the same strategy twice
    assert not evaluated.duplicated(["island", "strategy_id"]).any()
    assert (reference / "timing.json").exists()


def test_resume_after_an_interruption_gives_the_same_result(reference, tmp_path):
    config = small_config()

    def stop(generation, pool):
        if generation == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_local(config, tmp_path, on_generation=stop)
    assert not (tmp_path / "result.json").exists()
    run = plan_resume(tmp_path)
    assert run.start_generation == 3
    execute(run, LocalPool(run.config, run.spec.market, run.spec.split.test_ranges()))
    assert (tmp_path / "result.json").read_bytes() == (reference / "result.json").read_bytes()
    assert pd.read_parquet(tmp_path / "trials").equals(pd.read_parquet(reference / "trials"))


class InterruptedPool(LocalPool):
    """Local islands that stop the run when the driver asks for generation 3, while the
    background writer still has generation 2 in flight."""

    def submit(self, method, args):
        if method.startswith("step") and args[0][0] == 3:
            raise Interrupt
        return super().submit(method, args)


def test_resume_after_a_stop_while_a_generation_was_being_written(reference, tmp_path):
    """The trial log and checkpoints are written on a background thread: a run stopped while a
    write was in flight leaves that generation complete on disk (the driver waits for it) and
    resumes from it to the very result of an uninterrupted run."""
    config = small_config()
    run = plan(config, out_dir=tmp_path)
    with pytest.raises(Interrupt):
        execute(run, InterruptedPool(config, run.spec.market, run.spec.split.test_ranges()))
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == [f"generation-{g:05d}.parquet" for g in range(3)]
    run = plan_resume(tmp_path)
    assert run.start_generation == 3
    execute(run, LocalPool(run.config, run.spec.market, run.spec.split.test_ranges()))
    assert (tmp_path / "result.json").read_bytes() == (reference / "result.json").read_bytes()
    assert pd.read_parquet(tmp_path / "trials").equals(pd.read_parquet(reference / "trials"))
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert [t["generation"] for t in timing["generations"]] == list(range(3, config.generations))  # this session's
    for entry in timing["generations"]:
        assert {"seconds", "waiting_seconds", "driver_cpu_seconds", "writing_seconds", "write_wait_seconds"} <= set(entry)


def test_cli_run_and_resume_local(reference, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump(small_config().model_dump(mode="json")))
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "promoted" in out and "run directory" in out
    assert (tmp_path / "run" / "result.json").read_bytes() == (reference / "result.json").read_bytes()
    # resuming a finished run just re-judges it: same bytes
    assert main(["run", "--resume", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "result.json").read_bytes() == (reference / "result.json").read_bytes()


def test_ray_islands_give_the_local_result_even_when_an_actor_is_killed(ray_session, reference, tmp_path):
    ray = ray_session
    config = small_config(**{"runtime.backend": "ray"})
    run = plan(config, out_dir=tmp_path)
    pool = RayPool(config, run.spec.market, run.spec.split.test_ranges())
    killed = []

    def kill_island(generation, pool):
        if generation == 1:
            actor = ray.get_actor("island-1")
            ray.kill(actor, no_restart=False)  # Ray restarts it (max_restarts); state comes from the checkpoint
            killed.append(generation)

    try:
        assert ray.get(ray.get_actor("island-0").ping.remote()) == 0  # named for the dashboard
        assert ray.get(ray.get_actor("island-1").ping.remote()) == 1
        execute(run, pool, on_generation=kill_island)
    finally:
        pool.close()
    assert killed == [1]
    assert (tmp_path / "result.json").read_bytes() == (reference / "result.json").read_bytes()


def test_islands_sharing_actors_give_the_local_result_even_when_an_actor_is_killed(ray_session, tmp_path):
    """runtime.ray.actors below islands: 3 islands on 2 actors (islands-0 holds islands 0 and 2,
    islands-1 holds island 1), each island its own object per call, migration between islands
    of one actor and of two; killing an actor loses its islands and the run replays them from
    the checkpoint. The result is the 3-island local run's, byte for byte."""
    ray = ray_session
    reference = tmp_path / "local"
    run_local(small_config(islands=3), reference)
    config = small_config(**{"islands": 3, "runtime.backend": "ray", "runtime.ray": {"island_num_cpus": 0.5, "actors": 2}})
    run = plan(config, out_dir=tmp_path / "ray")
    pool = RayPool(config, run.spec.market, run.spec.split.test_ranges())
    killed = []

    def kill_actor(generation, pool):
        if generation == 1:
            ray.kill(ray.get_actor("islands-0"), no_restart=False)  # islands 0 and 2 go with it
            killed.append(generation)

    try:
        assert pool.hosts == [[0, 2], [1]]
        assert ray.get(pool.submit("ping", [()] * 3)) == [0, 1, 2]
        assert len(set(pool.nodes())) == 1 and len(pool.nodes()) == 3
        execute(run, pool, on_generation=kill_actor)
    finally:
        pool.close()
    assert killed == [1]
    assert (tmp_path / "ray" / "result.json").read_bytes() == (reference / "result.json").read_bytes()


class AheadPool(LocalPool):
    """The local islands with a lookahead: a call runs when it is submitted, so the islands
    are as far ahead of the driver as a Ray pool's actors may be."""

    lookahead = 2


def test_islands_running_ahead_of_the_driver_give_the_same_result(reference, tmp_path):
    """The driver queues up to `lookahead` generations (migration included) and writes each
    generation's trial-log part and checkpoint on a background thread while it waits for the
    next one; `on_generation(g)` comes once g is on disk, and no later generation is; the
    islands' work does not depend on any of it."""
    config = small_config()
    run = plan(config, out_dir=tmp_path)
    pool = AheadPool(config, run.spec.market, run.spec.split.test_ranges())
    ahead, checkpointed, on_disk = [], [], []

    def look(g, p):
        ahead.append((g, [island.generation for island in p.islands]))
        saved = json.loads((tmp_path / "checkpoints" / f"generation-{g:05d}.json").read_text())
        checkpointed.append({s["generation"] for s in saved["states"]})
        on_disk.append((max(int(f.name[11:16]) for f in (tmp_path / "trials").glob("generation-*.parquet")),
                        max(int(f.name[11:16]) for f in (tmp_path / "checkpoints").glob("generation-*.json"))))

    execute(run, pool, on_generation=look)
    last = config.generations - 1
    # on_generation(g) follows the collection of g + 1, which queued up to g + 1 + lookahead
    assert ahead == [(g, [min(g + 3, last)] * config.islands) for g in range(config.generations)]
    assert checkpointed == [{g} for g in range(config.generations)]  # the driver's generation, not the islands'
    assert on_disk == [(g, g) for g in range(config.generations)]
    assert (tmp_path / "result.json").read_bytes() == (reference / "result.json").read_bytes()
    assert pd.read_parquet(tmp_path / "trials").equals(pd.read_parquet(reference / "trials"))


def test_checkpoints_keep_seen_caches_incrementally_and_rebuild_them_exactly(tmp_path):
    """Each checkpoint holds populations only; seen-GGGGG.json holds what a generation added,
    and the rebuilt caches equal the islands' own, in the same order."""
    from evolution import checkpoint

    config = small_config()
    states_at: dict[int, list] = {}

    def capture(generation, pool):
        # the driver collected generation + 1 before it calls on_generation(generation)
        states_at[generation + 1] = json.loads(json.dumps(pool.call("state", [(generation + 1,)] * config.islands)))
        if generation == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_local(config, tmp_path, on_generation=capture)
    folder = tmp_path / "checkpoints"
    newest = json.loads((folder / "generation-00003.json").read_text())
    assert newest["seen"] == "incremental" and all("seen" not in s for s in newest["states"])
    assert sorted(p.name for p in folder.glob("seen-*.json")) == [f"seen-{g:05d}.json" for g in range(4)]
    rebuilt = checkpoint.latest(folder)
    assert rebuilt["generation"] == 3 and rebuilt["states"] == states_at[3]
    assert [list(s["seen"]) for s in rebuilt["states"]] == [list(s["seen"]) for s in states_at[3]]

    # a resume replays generation 4 on: additions of later generations left by a crash go
    (folder / "seen-00004.json").write_text((folder / "seen-00003.json").read_text())
    run = plan_resume(tmp_path)
    assert run.start_generation == 4 and not (folder / "seen-00004.json").exists()
    assert run.states == states_at[3]

    # a missing file of additions is named, never silently skipped
    (folder / "seen-00001.json").unlink()
    with pytest.raises(ValueError, match="seen-00001.json: missing"):
        checkpoint.latest(folder)


def test_island_statistics_from_rows_in_memory_equal_those_read_from_the_trial_log(tmp_path):
    """The lineage logger takes per-generation island statistics from the rows the runner
    holds (no file read while searching): they equal the ones computed from the written part,
    migration rows included."""
    from evolution.lineage.data import island_stats, island_stats_from_rows

    config = small_config()
    seen = []

    def compare(generation, pool):
        ours = island_stats_from_rows(run.last_rows, 2.0)
        assert ours == island_stats(tmp_path, generation, 2.0)
        assert {s["island"] for s in ours} == set(range(config.islands))
        seen.append(generation)

    run = plan(config, out_dir=tmp_path)
    execute(run, LocalPool(config, run.spec.market, run.spec.split.test_ranges()), on_generation=compare)
    assert seen == list(range(config.generations))


def test_the_hall_of_fame_is_handed_over_before_it_is_judged(reference, tmp_path):
    """`on_hall_of_fame` (lineage starts sending the nested runs and models then) gets every
    member as the result will hold it, without what the judging adds, before result.json exists."""
    config = small_config()
    handed = []

    def on_hall_of_fame(members):
        assert not (tmp_path / "result.json").exists()
        handed.append(members)

    run = plan(config, out_dir=tmp_path)
    execute(run, LocalPool(config, run.spec.market, run.spec.split.test_ranges()), on_hall_of_fame=on_hall_of_fame)
    result = json.loads((reference / "result.json").read_text())
    judged = ("dsr", "holdout_dsr", "pbo", "gates", "promoted")
    expected = [{k: v for k, v in m.items() if k not in judged} | {"metrics": {"walk_forward": m["metrics"]["walk_forward"]}}
                for m in result["hall_of_fame"]]
    assert handed == [expected]
    assert (tmp_path / "result.json").read_bytes() == (reference / "result.json").read_bytes()

"""Lineage read back from a real run directory (no MLflow): completeness back to random genomes (generation 0, immigrants),
tolerant readers, the spool, the stage-event timeline, the equity curves."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from backtest import strategy_id
from backtest.tracking_names import SEQUENCE_SUFFIX, stage_event_key
from evolution.lineage.data import (
    Node,
    ancestry,
    check_lineage,
    first_appearances,
    generation_stats,
    island_stats,
    parse_parents,
    read_result,
    read_trials,
    trial_log_paths,
)
from evolution.lineage.ops import Spool, SyncState
from serving.registry import LIVE, RETIRED, StageEvent, live_version_at, parse_events


@pytest.fixture(scope="module")
def run_dir(sqlite_logged_run):
    """The shared seeded `evolve run`'s directory (tests/lineage_fixtures.py)."""
    return sqlite_logged_run.run_dir


def test_the_hall_of_fame_in_result_json_is_what_the_trial_log_recorded(run_dir):
    result = read_result(run_dir)
    trials = read_trials(run_dir, ["strategy_id", "genome", "wf_sharpe", "evaluated"])
    for entry in result["hall_of_fame"]:
        assert entry["strategy_id"] == strategy_id(entry["genome"])
        rows = trials[(trials["strategy_id"] == entry["strategy_id"]) & trials["evaluated"].fillna(True)]
        assert len(rows) >= 1
        np.testing.assert_allclose(rows["wf_sharpe"].iloc[0], entry["metrics"]["walk_forward"]["sharpe"])


def test_every_hall_of_fame_ancestor_resolves_to_a_random_genome(run_dir):
    lineage = check_lineage(run_dir)
    result = read_result(run_dir)
    assert lineage.complete, (lineage.missing, lineage.orphans)
    assert set(lineage.roots) == {e["strategy_id"] for e in result["hall_of_fame"]}
    # walk every path up by hand: each one ends at a parentless random genome, of generation 0
    # or a random immigrant of a later one (the demo's operators.immigrant_probability)
    for sid in lineage.roots:
        stack = [sid]
        while stack:
            node = lineage.nodes[stack.pop()]
            if not node.parents:
                assert (node.generation, node.operator) == (0, "init") or (node.generation > 0 and node.operator == "immigrant")
            for parent in node.parents:
                assert lineage.nodes[parent].generation <= node.generation
                stack.append(parent)
    # the search made children: at least one hall-of-fame strategy has ancestors
    assert any(lineage.nodes[s].parents for s in lineage.roots) or len(lineage.nodes) >= len(lineage.roots)


def test_a_missing_ancestor_is_reported(run_dir, tmp_path):
    lineage = check_lineage(run_dir)
    child = next((n for n in lineage.nodes.values() if n.parents), None)
    if child is None:
        pytest.fail("the search produced no child in the hall of fame's lineage")
    parent = child.parents[0]
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    for part in trial_log_paths(broken):
        trials = pd.read_parquet(part)
        trials[trials["strategy_id"] != parent].to_parquet(part, index=False)
    damaged = check_lineage(broken)
    assert not damaged.complete
    assert parent in {p for missing in damaged.missing.values() for p in missing}


def test_a_parentless_strategy_after_generation_zero_is_an_orphan_unless_a_random_immigrant():
    nodes = {
        "a": Node("a", 0, 0, "init", ()),
        "b": Node("b", 1, 0, "mutation", ("a",)),
        "c": Node("c", 2, 1, "mutate_gaussian", ()),
        "d": Node("d", 3, 1, "crossover", ("b", "c")),
    }
    lineage = ancestry(["d"], nodes)
    assert lineage.orphans == ["c"] and not lineage.complete
    assert set(lineage.edges()) == {("b", "d"), ("c", "d"), ("a", "b")}
    # operators.immigrant_probability: a random genome of a later generation is a root like generation 0's
    nodes["c"] = Node("c", 2, 1, "immigrant", ())
    lineage = ancestry(["d"], nodes)
    assert lineage.orphans == [] and lineage.complete


def test_migration_rows_do_not_hide_the_origin():
    # the engine logs a migrant on its new island with parents [itself] and evaluated=False,
    # possibly in the same generation and on a lower island number than its origin
    trials = pd.DataFrame({
        "strategy_id": ["a", "x", "x", "y"],
        "island": [1, 1, 0, 0],
        "generation": [0, 1, 1, 2],
        "parents": [[], ["a"], ["x"], ["x"]],
        "operator": ["init", "mutation", "migration", "crossover"],
        "evaluated": [True, True, False, True],
    })
    nodes = first_appearances(trials)
    assert nodes["x"].operator == "mutation" and nodes["x"].parents == ("a",)
    assert ancestry(["y"], nodes).complete


def test_the_trial_log_is_read_part_by_part_and_only_the_columns_asked_for(run_dir):
    result = read_result(run_dir)
    paths = trial_log_paths(run_dir)
    assert [p.name for p in paths] == [f"generation-{g:05d}.parquet" for g in range(result["config"]["generations"])]
    trials = read_trials(run_dir, ["strategy_id", "generation", "no_such_column"])
    assert list(trials.columns) == ["strategy_id", "generation"]
    stats = island_stats(run_dir, 0)
    assert [s["island"] for s in stats] == [0, 1] and all(s["evaluations"] > 0 for s in stats)


def test_generation_stats_take_the_first_objective_and_skip_migrants():
    trials = pd.DataFrame({
        "generation": [0, 0, 0, 1, 1],
        "island": [0, 0, 0, 0, 0],
        "fitness": [[1.0, -0.2], [3.0, -0.1], [np.nan, 0.0], [2.0, 0.0], [9.0, 0.0]],
        "evaluated": [True, True, True, True, False],
    })
    stats = generation_stats(trials, "fitness")
    assert stats["best_fitness"].tolist() == [3.0, 2.0]
    assert stats["median_fitness"].tolist() == [2.0, 2.0]
    assert stats["evaluations"].tolist() == [3, 1]


@pytest.mark.parametrize("value, expected", [
    (None, []), ([], []), (np.array(["a", "b"]), ["a", "b"]), ('["a"]', ["a"]), ("a,b", ["a", "b"]), ("", []),
])
def test_parse_parents(value, expected):
    assert parse_parents(value) == expected


def test_live_version_at_follows_promotions_and_rollbacks():
    events = [
        StageEvent("1", "candidate", 100), StageEvent("2", "candidate", 100),
        StageEvent("1", LIVE, 200),
        StageEvent("2", LIVE, 300), StageEvent("1", RETIRED, 300),
        StageEvent("2", RETIRED, 400), StageEvent("1", LIVE, 400),  # rollback
        StageEvent("1", RETIRED, 500),                               # nothing live afterwards
    ]
    assert [live_version_at(events, t) for t in (50, 150, 200, 299, 300, 350, 400, 450, 500, 600)] == \
        [None, None, "1", "1", "2", "2", "1", "1", None, None]


def test_spool_survives_a_line_cut_short(tmp_path):
    spool = Spool(tmp_path)
    spool.append({"op": "end_run", "run": "r", "time": 1})
    spool.save_state(SyncState(tracking_uri="http://x", experiment_name="e"))
    with open(spool.ops_path, "a", encoding="utf-8") as handle:
        handle.write('{"op": "log_ba')
    assert spool.read_ops() == [{"op": "end_run", "run": "r", "time": 1}]
    assert spool.pending() == 1
    assert json.loads(spool.state_path.read_text())["applied"] == 0


def test_a_run_registration_and_later_stage_changes_share_one_event_format():
    """Registration events (written by the run) and stage changes (written by serving) are
    registered-model tags of one format that sort by time (backtest/tracking_names.py)."""
    registered = {stage_event_key(1_000, "r00002"): json.dumps(
        {"version": "2", "stage": "candidate", "at": 1_000, "reason": "registered", "strategy_id": "s2"})}
    later = StageEvent("2", LIVE, 2_000, "promoted", "s2", stage_event_key(2_000, SEQUENCE_SUFFIX.format(sequence=0)))
    registered[later.key] = later.to_json()
    events = parse_events(registered)
    assert [(e.version, e.stage, e.at) for e in events] == [("2", "candidate", 1_000), ("2", LIVE, 2_000)]
    assert live_version_at(events, 1_500) is None and live_version_at(events, 2_000) == "2"


def test_equity_curves_of_the_top_strategies_are_logged_for_the_notebook(run_dir):
    equity = pd.read_parquet(run_dir / "lineage" / "equity.parquet")
    result = read_result(run_dir)
    top = [e["strategy_id"] for e in result["hall_of_fame"][:5]]
    assert list(dict.fromkeys(equity["strategy_id"])) == top
    assert set(equity["segment"]) == {"walk_forward", "holdout"}
    holdout_start, holdout_end = result["market"]["holdout"]
    held = equity[equity["segment"] == "holdout"]
    assert held["bar"].between(holdout_start, holdout_end - 1).all()
    for sid in top:  # equity compounds the holdout's total return
        expected = next(e for e in result["hall_of_fame"] if e["strategy_id"] == sid)["metrics"]["holdout"]
        assert held[held["strategy_id"] == sid]["equity"].iloc[-1] == pytest.approx(1 + expected["total_return"],
                                                                                  rel=1e-6)

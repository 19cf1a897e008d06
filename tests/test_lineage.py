"""Lineage from the trial log (no MLflow): completeness back to generation 0, tolerant readers."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from backtest import evaluate, strategy_id
from evolution.lineage_data import (
    Node,
    ancestry,
    check_lineage,
    first_appearances,
    generation_stats,
    parse_parents,
    read_result,
    read_trials,
    trial_log_paths,
)
from evolution.lineage_fixture import build_fixture_run, fixture_market
from evolution.lineage_ops import Spool, SyncState
from serving.registry import LIVE, RETIRED, StageEvent, live_version_at


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fixture-run")
    build_fixture_run(directory, seed=11, n_bars=4000, population=8, generations=4)
    return directory


def test_fixture_metrics_are_real_backtest_numbers(run_dir):
    result = read_result(run_dir)
    best = result["hall_of_fame"][0]
    from backtest.validation import walk_forward_split

    folds = walk_forward_split(4000, n_folds=3, holdout_fraction=0.2).test_ranges()
    again = evaluate([best["genome"]], fixture_market(result), folds)
    assert best["strategy_id"] == strategy_id(best["genome"])
    np.testing.assert_allclose(np.nanmean(again.metric("sharpe")[0]), best["metrics"]["walk_forward"]["sharpe"])
    assert best["metrics"]["walk_forward"]["n_trades"] == int(np.nansum(again.metric("n_trades")[0]))


def test_every_hall_of_fame_ancestor_resolves_to_generation_zero(run_dir):
    lineage = check_lineage(run_dir)
    result = read_result(run_dir)
    assert lineage.complete, (lineage.missing, lineage.orphans)
    assert set(lineage.roots) == {e["strategy_id"] for e in result["hall_of_fame"]}
    # walk every path up by hand: each one ends at a parentless generation-0 strategy
    for sid in lineage.roots:
        stack = [sid]
        while stack:
            node = lineage.nodes[stack.pop()]
            if not node.parents:
                assert node.generation == 0
            for parent in node.parents:
                assert lineage.nodes[parent].generation <= node.generation
                stack.append(parent)
    # the search made children: at least one hall-of-fame strategy has ancestors
    assert any(lineage.nodes[s].parents for s in lineage.roots) or len(lineage.nodes) >= len(lineage.roots)


def test_a_missing_ancestor_is_reported(run_dir, tmp_path):
    lineage = check_lineage(run_dir)
    child = next((n for n in lineage.nodes.values() if n.parents), None)
    if child is None:
        pytest.fail("the fixture search produced no child in the hall of fame's lineage")
    parent = child.parents[0]
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    trials = read_trials(broken)
    trials[trials["strategy_id"] != parent].to_parquet(broken / "trials.parquet", index=False)
    damaged = check_lineage(broken)
    assert not damaged.complete
    assert parent in {p for missing in damaged.missing.values() for p in missing}


def test_a_parentless_strategy_after_generation_zero_is_an_orphan():
    nodes = {
        "a": Node("a", 0, 0, "init", ()),
        "b": Node("b", 1, 0, "mutation", ("a",)),
        "c": Node("c", 2, 1, "immigrant", ()),
        "d": Node("d", 3, 1, "crossover", ("b", "c")),
    }
    lineage = ancestry(["d"], nodes)
    assert lineage.orphans == ["c"] and not lineage.complete
    assert set(lineage.edges()) == {("b", "d"), ("c", "d"), ("a", "b")}


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


def test_trial_log_as_one_file_or_as_parts(tmp_path):
    stats_seen = []
    build_fixture_run(tmp_path / "parts", seed=3, n_bars=3000, population=6, generations=3, trials_layout="parts",
                      on_generation=lambda g, s: stats_seen.append((g, s)))
    paths = trial_log_paths(tmp_path / "parts")
    assert len(paths) >= 2 and all(p.parent.name == "trials" for p in paths)
    trials = read_trials(tmp_path / "parts", ["strategy_id", "generation", "no_such_column"])
    assert list(trials.columns) == ["strategy_id", "generation"]
    assert trials["generation"].max() == 2
    assert check_lineage(tmp_path / "parts").complete
    assert [g for g, _ in stats_seen] == [0, 1, 2] and {s["island"] for s in stats_seen[0][1]} == {0, 1}


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

"""The hall of fame keeps behaviourally distinct strategies."""
from __future__ import annotations

import pandas as pd

from evolution.runner import distinct_hall_of_fame


def test_clones_with_identical_returns_are_skipped():
    ranked = pd.DataFrame({
        "strategy_id": ["a", "b", "c", "d", "e"],
        "oos_returns": [[0.01, -0.02], [0.01, -0.02], [0.03, 0.0], None, [0.01, -0.02]],
    })
    hof = distinct_hall_of_fame(ranked, 3)
    assert hof["strategy_id"].tolist() == ["a", "c", "d"]  # b and e trade exactly like a


def test_size_and_order_are_kept_when_all_differ():
    ranked = pd.DataFrame({"strategy_id": list("abcd"), "oos_returns": [[0.1], [0.2], [0.3], [0.4]]})
    assert distinct_hall_of_fame(ranked, 2)["strategy_id"].tolist() == ["a", "b"]

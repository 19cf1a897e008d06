"""The asmbtr family: the state table by hand, no look-ahead, one set of positions everywhere."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import evaluate, positions, signals, simulate
from backtest.data import synthetic_market
from backtest.families import get_family
from backtest.families.base import SIMULATE_DIRECTION_OF
from backtest.strategy import GenomeError, normalize_genome
from evolution.families.asmbtr import init_genome

ASMBTR = get_family("asmbtr")

# ---------------------------------------------------------------- the table by hand

# depth 2, decay 0.8, threshold 0.6, min_move 0.01: moves of 2% carry a direction, 0.5% none
RETURNS = [0.02, 0.02, -0.02, 0.005, 0.02, 0.02, -0.02, 0.02, 0.02, -0.02, -0.02, -0.02, 0.02, -0.02]
HAND = {"family": "asmbtr", "depth": 2, "decay": 0.8, "threshold": 0.6, "min_move": 0.01, "direction": "both",
        "neutral": "flat"}
# One row per bar: (t, direction, state updated, its up and down counts after decay and update,
#                   new state, prediction, target with neutral flat, with neutral hold, long-only flat).
# States are the last two directions, oldest bit first: DD=0, DU=1, UD=2, UU=3.
TABLE = [
    # t  dir   upd   up    down  state pred target flat hold long
    (1, "U", None, None, None, None, None, 0, 0, 0),    # first direction: no state yet
    (2, "U", None, None, None, 3, None, 0, 0, 0),       # state UU exists, never seen: no prediction
    (3, "D", 3, 0.0, 1.0, 2, None, 0, 0, 0),           # UU was followed by D; UD never seen
    (4, "-", None, None, None, 2, None, 0, 0, 0),      # 0.5% <= min_move: skipped, nothing changes
    (5, "U", 2, 1.0, 0.0, 1, None, 0, 0, 0),           # UD -> U; DU never seen
    (6, "U", 1, 1.0, 0.0, 3, "D", -1, -1, 0),          # UU: down 1 > 0.6 * 1
    (7, "D", 3, 0.0, 1.8, 2, "U", 1, 1, 1),            # UU decays 1 -> 0.8, +1 down; UD: up 1
    (8, "U", 2, 1.8, 0.0, 1, "U", 1, 1, 1),            # DU: up 1
    (9, "U", 1, 1.8, 0.0, 3, "D", -1, -1, 0),          # UU: down 1.8
    (10, "D", 3, 0.0, 2.44, 2, "U", 1, 1, 1),          # UU: down 0.8 * 1.8 + 1; UD: up 1.8
    (11, "D", 2, 1.44, 1.0, 0, None, 0, 1, 0),         # UD -> D: up 0.8 * 1.8, down 1; DD never seen
    (12, "D", 0, 0.0, 1.0, 0, "D", -1, -1, 0),         # DD -> D; DD: down 1 > 0.6
    (13, "U", 0, 1.0, 0.8, 1, "U", 1, 1, 1),           # DD -> U; DU: up 1.8
    (14, "D", 1, 1.44, 1.0, 2, None, 0, 1, 0),         # DU -> D; UD: up 1.44, down 1: 1.44 <= 0.6 * 2.44
]


def _closes(returns) -> np.ndarray:
    return 100.0 * np.concatenate([[1.0], np.cumprod(1.0 + np.asarray(returns))])


def reference_table(close, depth, decay, threshold, min_move):
    """A plain-Python state table: per bar (updated state, its up, its down, state, prediction)."""
    up, down = [0.0] * (1 << depth), [0.0] * (1 << depth)
    state, seen, rows = 0, 0, []
    for t in range(1, len(close)):
        r = close[t] / close[t - 1] - 1.0
        if not (r > min_move or r < -min_move):
            rows.append((None, None, None, state if seen >= depth else None, rows[-1][4] if rows else None))
            continue
        d = int(r > 0)
        updated = None
        if seen >= depth:
            updated = state
            up[state], down[state] = decay * up[state] + d, decay * down[state] + (1 - d)
        seen += 1
        state = ((state << 1) | d) & ((1 << depth) - 1)
        prediction = None
        if seen >= depth:
            bar = threshold * (up[state] + down[state])
            prediction = "U" if up[state] > bar else ("D" if down[state] > bar else None)
        rows.append((updated, None if updated is None else up[updated], None if updated is None else down[updated],
                     state if seen >= depth else None, prediction))
    return rows


def reference_targets(close, genome):
    rows = reference_table(close, genome["depth"], genome["decay"], genome["threshold"], genome["min_move"])
    target, out = 0, [0]
    for *_, prediction in rows:
        if prediction == "U":
            target = 1 if genome["direction"] != "short" else 0
        elif prediction == "D":
            target = -1 if genome["direction"] != "long" else 0
        elif genome["neutral"] == "flat":
            target = 0
        out.append(target)
    return np.array(out)


def _targets(genome, close) -> np.ndarray:
    return ASMBTR.targets(normalize_genome(genome), SimpleNamespace(close=np.asarray(close, dtype=np.float64)))


def test_the_state_table_by_hand():
    close = _closes(RETURNS)
    rows = reference_table(close, HAND["depth"], HAND["decay"], HAND["threshold"], HAND["min_move"])
    for (t, _move, updated, up, down, state, prediction, *_), got in zip(TABLE, rows):
        assert got[0] == updated and got[3:] == (state, prediction), t
        counts = (None, None) if up is None else (pytest.approx(up, abs=1e-12), pytest.approx(down, abs=1e-12))
        assert got[1:3] == counts, t
    flat = [0] + [row[7] for row in TABLE]
    hold = [0] + [row[8] for row in TABLE]
    long_flat = [0] + [row[9] for row in TABLE]
    np.testing.assert_array_equal(_targets(HAND, close), flat)
    np.testing.assert_array_equal(_targets({**HAND, "neutral": "hold"}, close), hold)
    np.testing.assert_array_equal(_targets({**HAND, "direction": "long"}, close), long_flat)
    # without stops every target is held: positions() follows the table bar for bar
    candles = pd.DataFrame({"timestamp": np.arange(len(close), dtype=np.int64) * 3_600_000, "open": close,
                            "high": close * 1.001, "low": close * 0.999, "close": close, "volume": 1.0})
    np.testing.assert_array_equal(positions(HAND, candles), flat)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_kernel_equals_the_reference_table(seed):
    rng = np.random.default_rng(seed)
    genome = init_genome(rng)
    genome["depth"] = int(rng.integers(1, 5))  # small tables fill up on 300 bars
    close = _closes(rng.choice([-1, 1], 300) * rng.uniform(0.0, 0.004, 300))
    np.testing.assert_array_equal(_targets(genome, close), reference_targets(close, genome))


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize("change, message", [
    ({"depth": 13}, r"genome.depth: 13 is out of bounds; pass a value in \[1, 12\]"),
    ({"depth": 2.5}, "genome.depth: expected an integer"),
    ({"decay": 1.0}, r"genome.decay: 1.0 is out of bounds; pass a value in \[0.8, 0.999\]"),
    ({"threshold": 0.4}, "genome.threshold"),
    ({"neutral": "hodl"}, "genome.neutral: expected one of .*Did you mean 'hold'"),
    ({"direction": "longg"}, "Did you mean 'long'"),
    ({"dept": 3}, "genome: unknown key 'dept'.*Did you mean 'depth'"),
    ({"entry": {}}, "unknown key 'entry'"),
])
def test_bad_asmbtr_genomes_name_the_path_and_the_fix(change, message):
    with pytest.raises(GenomeError, match=message):
        normalize_genome({**HAND, **change})


def test_defaults_and_identity():
    short = {"family": "asmbtr", "depth": 3, "decay": 0.9, "threshold": 0.6, "direction": "long"}
    full = normalize_genome(short)
    assert full["min_move"] == 0.0 and full["neutral"] == "flat" and full["stop_loss"] is None
    assert normalize_genome(full) == full
    with pytest.raises(GenomeError, match="missing key 'decay'"):
        normalize_genome({"family": "asmbtr", "depth": 3, "threshold": 0.6, "direction": "long"})


# ---------------------------------------------------------------- no look-ahead


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(2, 1200), shift=st.floats(0.5, 2.0))
def test_positions_have_no_look_ahead(seed, cut, shift):
    """Changing the bars after t (here: scaling every later candle) never changes positions up to t."""
    genome = init_genome(np.random.default_rng(seed))
    frame = synthetic_market(1200, seed=seed % 997).to_frame()
    full = positions(genome, frame)
    np.testing.assert_array_equal(positions(genome, frame.iloc[:cut]), full[:cut])
    changed = frame.copy()
    for column in ("open", "high", "low", "close"):
        changed.loc[cut:, column] *= shift
    np.testing.assert_array_equal(positions(genome, changed)[:cut], full[:cut])


# ---------------------------------------------------------------- one set of positions


@pytest.fixture(scope="module")
def market():
    return synthetic_market(3000, seed=5)


def _genomes():
    rng = np.random.default_rng(42)
    out = []
    for direction, neutral in (("long", "flat"), ("short", "hold"), ("both", "hold"), ("long", "hold"),
                               ("short", "flat"), ("both", "flat")):
        for stops in ((None, None), (0.01, 0.02)):
            g = init_genome(rng)
            g.update(direction=direction, neutral=neutral, stop_loss=stops[0], take_profit=stops[1],
                     depth=int(rng.integers(1, 6)), threshold=0.52)
            out.append(normalize_genome(g))
    return out


def _state_machine(targets, close, genome):
    """Independent positions from the targets: follow the target, stops (fractions of the entry
    close, checked against close) close a position, re-entry at the next bar."""
    sl, tp = genome["stop_loss"], genome["take_profit"]
    pos, entry, out = 0, None, []
    for t, c in enumerate(close):
        stopped = False
        if pos > 0:
            stopped = (sl is not None and c <= entry * (1 - sl)) or (tp is not None and c >= entry * (1 + tp))
        elif pos < 0:
            stopped = (sl is not None and c >= entry * (1 + sl)) or (tp is not None and c <= entry * (1 - tp))
        new = 0 if stopped else int(targets[t])
        if new != pos and new != 0:
            entry = c
        pos = new
        out.append(pos)
    return np.array(out)


@pytest.mark.parametrize("index", range(12))
def test_backtest_simulate_positions_agree(market, index):
    genome = _genomes()[index]
    close = market.close
    pos = positions(genome, market.to_frame())
    targets = reference_targets(close, genome)
    np.testing.assert_array_equal(pos, _state_machine(targets, close, genome))
    fees = 0.001
    result = evaluate([genome], market, [[0, len(close)]], fees=fees)
    assert not result.errors
    direction = SIMULATE_DIRECTION_OF[genome["direction"]]
    # simulate() on entry/exit signals derived from positions(): stops become exits at the same close;
    # a "both" genome is expressible while it never goes flat between long and short
    side = {"longonly": 1, "shortonly": -1}.get(direction)
    held = np.flatnonzero(pos)
    if side is not None or held.size == 0 or (pos[held[0]:] != 0).all():
        entries = pos == (side or 1)
        exits = pos == 0 if side else pos == -1
        derived = simulate(close, entries, exits, direction=direction, fees=fees)
        assert result.metric("total_return")[0, 0] == pytest.approx(derived.total_return[0], rel=1e-9, abs=1e-12)
        assert result.metric("n_trades")[0, 0] == derived.n_trades[0]
    if genome["direction"] == "both" and genome["neutral"] == "flat":
        with pytest.raises(GenomeError, match="neutral 'flat'"):
            signals(genome, market)
    else:  # the family's own signals, with the genome's stops passed to simulate()
        e, x = signals(genome, market)
        sim = simulate(close, e, x, direction=direction, fees=fees, sl_stop=genome["stop_loss"],
                       tp_stop=genome["take_profit"])
        assert result.metric("total_return")[0, 0] == pytest.approx(sim.total_return[0], rel=1e-9, abs=1e-12)
        assert result.metric("n_trades")[0, 0] == sim.n_trades[0]


def test_folds_and_chunks_do_not_change_asmbtr_results(market):
    from backtest import Evaluator

    genomes = _genomes()
    folds = [[200, 1500], [1500, 3000]]
    together = evaluate(genomes, market, folds, bucket_bars=50)
    alone = [evaluate([g], market, folds, bucket_bars=50) for g in genomes]
    for i, single in enumerate(alone):
        np.testing.assert_array_equal(together.metrics[i], single.metrics[0])
        np.testing.assert_array_equal(together.buckets[i], single.buckets[0])
    np.testing.assert_array_equal(Evaluator(max_chunk=2).evaluate(genomes, market, folds).metrics,
                                  evaluate(genomes, market, folds).metrics)


def test_mixed_families_in_one_population(market):
    from backtest.families.rules import sma_crossover_genome

    rules = sma_crossover_genome(10, 40, "both")
    asm = _genomes()[2]
    mixed = evaluate([asm, rules, asm], market, [[0, 3000]])
    np.testing.assert_array_equal(mixed.metrics[0], evaluate([asm], market, [[0, 3000]]).metrics[0])
    np.testing.assert_array_equal(mixed.metrics[1], evaluate([rules], market, [[0, 3000]]).metrics[0])
    assert mixed.strategy_ids[0] == mixed.strategy_ids[2] != mixed.strategy_ids[1]


def test_the_pyfunc_model_answers_the_backtest_positions(market, tmp_path):
    """serving/model.py logged and loaded through mlflow.pyfunc (SQLite store in tmp) = positions()."""
    import json

    import mlflow
    from serving import model as strategy_model

    genome = _genomes()[11]  # both, neutral flat, stops: the case simulate() cannot express
    path = tmp_path / "genome.json"
    path.write_text(json.dumps(genome))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("asmbtr", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.pyfunc.log_model(name="strategy", python_model=strategy_model.__file__,
                                           artifacts={strategy_model.GENOME_ARTIFACT: str(path)},
                                           signature=strategy_model.model_signature(), pip_requirements=[])
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        frame = market.to_frame()
        predicted = np.asarray(loaded.predict(frame)).ravel()
    finally:
        mlflow.set_tracking_uri(previous)
    expected = positions(genome, frame)
    assert (expected == 0).any() and (expected == 1).any() and (expected == -1).any()
    np.testing.assert_array_equal(predicted, expected)

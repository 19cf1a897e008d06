"""Signal parity over real HTTP: for every bar t of a held-out series, POST /v1/predict with
candles[:t+1] answers backtest.positions(genome, candles)[t], for the champion and for
shadows asked through Serve's multiplexing header."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from serve_fixtures import held_out_rows

from backtest import positions
from backtest.strategy import normalize_genome, warmup_bars

N_BARS = 300
WORKERS = 8  # requests in flight: the bars are independent, so they go out side by side


def _ask_every_bar(base: str, rows: np.ndarray, headers: dict) -> list[tuple[int, dict]]:
    local = threading.local()

    def ask(t: int) -> tuple[int, dict]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(base + "/v1/predict", json={"candles": rows[:t + 1].tolist()}, headers=headers,
                                      timeout=60)
        return response.status_code, response.json()

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(ask, range(len(rows))))


def test_every_bar_matches_the_backtest_for_the_champion_and_multiplexed_shadows(serve_app):
    store = serve_app.store
    rows = held_out_rows(N_BARS, seed=2024)
    cases = [("champion", 0, {}), ("shadow", 1, {"serve_multiplexed_model_id": store.versions[1]}),
             ("shadow with stops", 2, {"serve_multiplexed_model_id": store.versions[2]})]
    for label, index, headers in cases:
        genome = store.genomes[index]
        expected = positions(genome, rows)
        assert len(set(expected.tolist())) > 1, f"{label}: the held-out series should move the position"
        warmup = warmup_bars(normalize_genome(genome))
        answers = _ask_every_bar(serve_app.base, rows, headers)
        assert len(answers) == N_BARS
        mismatches = []
        for t, (status, body) in enumerate(answers):
            if t + 1 < warmup:
                assert status == 422 and "warm-up" in body["detail"], (label, t, body)
                assert expected[t] == 0  # the backtest holds nothing before its indicators exist
                continue
            assert status == 200, (label, t, body)
            assert body["model_version"] == store.versions[index] and body["timestamp"] == int(rows[t, 0])
            if body["signal"] != expected[t]:
                mismatches.append((t, body["signal"], int(expected[t])))
        assert not mismatches, f"{label}: {len(mismatches)} bars differ, first {mismatches[:5]}"
        print(f"{label} (version {store.versions[index]}): {N_BARS - warmup + 1} bars equal to backtest.positions, "
              f"{warmup - 1} warm-up bars refused with 422")

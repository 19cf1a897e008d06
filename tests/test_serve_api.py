"""The Serve HTTP API over real HTTP (serving/app.py): answers, bad input, tokens, OpenAPI.

Read-only on the shared app of tests/serve_fixtures.py (no stage changes here)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from serve_fixtures import SHADOW_METRICS, TOKEN, held_out_rows

from backtest import positions, strategy_id
from backtest.strategy import normalize_genome, warmup_bars

ROWS = held_out_rows(300)


def expected(genome: dict, rows: np.ndarray) -> int:
    return int(positions(genome, rows)[-1])


def detail(response) -> str:
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body["detail"]


def test_the_champion_answers_without_a_strategy_id(serve_app):
    store = serve_app.store
    for n in (120, 200, 300):
        response = serve_app.predict(ROWS[:n])
        assert response.status_code == 200, response.text
        body = response.json()
        signal = expected(store.genomes[0], ROWS[:n])
        assert body == {"strategy_id": strategy_id(store.genomes[0]), "model_version": store.versions[0],
                        "signal": signal, "action": {-1: "SELL", 0: "HOLD", 1: "BUY"}[signal],
                        "timestamp": int(ROWS[n - 1, 0])}


def test_shadows_answer_by_strategy_id_body_version_or_multiplexing_header(serve_app):
    store = serve_app.store
    for i in (1, 2):
        genome, version = store.genomes[i], store.versions[i]
        want = {"strategy_id": strategy_id(genome), "model_version": version, "signal": expected(genome, ROWS)}
        answers = [serve_app.predict(ROWS, strategy_id=strategy_id(genome)),
                   serve_app.predict(ROWS, model_version=version),
                   serve_app.predict(ROWS, model_version=int(version)),
                   serve_app.session.post(serve_app.url("/v1/predict"), json={"candles": ROWS.tolist()},
                                          headers={"serve_multiplexed_model_id": version}, timeout=60),
                   serve_app.predict(ROWS, strategy_id=strategy_id(genome), model_version=version)]
        for response in answers:
            assert response.status_code == 200, response.text
            assert {k: response.json()[k] for k in want} == want
    # a version of any stage can be asked, the champion's too
    response = serve_app.predict(ROWS, model_version=store.versions[0])
    assert response.json()["signal"] == expected(store.genomes[0], ROWS)


BAD = {
    "malformed JSON": (b'{"candles": [[1, 2, 3', 400, "not valid JSON"),
    "not an object": (b"[1, 2]", 422, "JSON object"),
    "unknown field": ({"candle": []}, 422, "did you mean 'candles'"),
    "no candles": ({"strategy_id": None}, 422, "candles: missing"),
    "empty candles": ({"candles": []}, 422, "empty"),
    "candles not a list": ({"candles": {"a": 1}}, 422, "expected a list"),
    "short row": ({"candles": [r[:5] if i == 7 else r for i, r in enumerate(ROWS[:200].tolist())]}, 422,
                  "row 7: 5 values, expected 6"),
    "long row": ({"candles": [r + [1.0] if i == 0 else r for i, r in enumerate(ROWS[:200].tolist())]}, 422,
                 "row 0: 7 values"),
    "string value": ({"candles": [["x", *r[1:]] if i == 3 else r for i, r in enumerate(ROWS[:200].tolist())]}, 422,
                     "row 3: timestamp is \"x\", expected a number"),
    "null value": ({"candles": [[*r[:4], None, r[5]] if i == 9 else r for i, r in enumerate(ROWS[:200].tolist())]},
                   422, "row 9: close is null"),
    "NaN": (json.dumps({"candles": [[*r[:4], float("nan"), r[5]] if i == 5 else r
                                    for i, r in enumerate(ROWS[:200].tolist())]}).encode(), 422,
            "row 5: close is nan (NaN or infinite)"),
    "infinity": (json.dumps({"candles": [[*r[:2], float("inf"), *r[3:]] if i == 6 else r
                                         for i, r in enumerate(ROWS[:200].tolist())]}).encode(), 422,
                 "row 6: high is inf"),
    "zero price": ({"candles": [[*r[:3], 0.0, *r[4:]] if i == 11 else r for i, r in enumerate(ROWS[:200].tolist())]},
                   422, "row 11"),
    "negative close": ({"candles": [[*r[:4], -5.0, r[5]] if i == 12 else r for i, r in enumerate(ROWS[:200].tolist())]},
                       422, "strictly positive"),
    "high below low": ({"candles": [[r[0], r[1], r[3] * 0.5, r[3], r[4], r[5]] if i == 13 else r
                                    for i, r in enumerate(ROWS[:200].tolist())]}, 422, "row 13"),
    "unsorted": ({"candles": ROWS[:200][[0, 1, 3, 2, *range(4, 200)]].tolist()}, 422, "not sorted"),
    "duplicate timestamp": ({"candles": ROWS[:200][[0, 1, 2, 2, *range(4, 200)]].tolist()}, 422, "duplicate timestamp"),
    "fractional timestamp": ({"candles": [[r[0] + 0.5, *r[1:]] if i == 4 else r for i, r in enumerate(ROWS[:200].tolist())]},
                             422, "row 4: timestamp"),
    "seconds": ({"candles": [[r[0] // 1000, *r[1:]] for r in ROWS[:200].tolist()]}, 422, "looks like seconds"),
    "huge integer": (b'{"candles": [[18446744073709551616, 1, 1, 1, 1, 1]]}', 422, "row 0"),
    "bad strategy id": ({"candles": ROWS[:200].tolist(), "strategy_id": "x' or '1'='1"}, 422, "not a strategy id"),
    "bad version": ({"candles": ROWS[:200].tolist(), "model_version": "v2"}, 422, "not a model version number"),
    "bool version": ({"candles": ROWS[:200].tolist(), "model_version": True}, 422, "expected a version number"),
    "unknown strategy": ({"candles": ROWS[:200].tolist(), "strategy_id": "0123456789abcdef"}, 404, "not registered"),
    "unknown version": ({"candles": ROWS[:200].tolist(), "model_version": "999"}, 404, "model version 999 is not registered"),
    "too few candles": ({"candles": ROWS[:5].tolist()}, 422, "needs at least"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_naming_the_problem(serve_app, case):
    body, status, message = BAD[case]
    kwargs = {"data": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    response = serve_app.session.post(serve_app.url("/v1/predict"), timeout=60, **kwargs)
    assert response.status_code == status, response.text
    assert message in detail(response)


def test_warm_up_is_the_strategy_s_own(serve_app):
    for genome, version in zip(serve_app.store.genomes, serve_app.store.versions):
        need = warmup_bars(normalize_genome(genome))
        short = serve_app.predict(ROWS[:need - 1], model_version=version)
        assert short.status_code == 422 and f"needs at least {need} candles" in detail(short)
        assert serve_app.predict(ROWS[:need], model_version=version).status_code == 200


def test_conflicting_selectors_are_refused(serve_app):
    store = serve_app.store
    response = serve_app.predict(ROWS, strategy_id=strategy_id(store.genomes[1]), model_version=store.versions[2])
    assert response.status_code == 422 and "send one of strategy_id and model_version" in detail(response)
    response = serve_app.session.post(serve_app.url("/v1/predict"), json={"candles": ROWS.tolist(), "model_version": "2"},
                                      headers={"serve_multiplexed_model_id": "3"}, timeout=60)
    assert response.status_code == 422 and "disagree" in detail(response)


def test_size_limits_are_413(serve_app):
    rows = np.tile(ROWS, (80, 1))  # 24,000 rows of full-precision floats: about 2.7 MB, over the 2 MiB limit
    rows[:, 0] = ROWS[0, 0] + 60_000 * np.arange(len(rows))
    response = serve_app.predict(rows)
    assert response.status_code == 413 and "the limit is 2097152" in detail(response)
    small = [[1_700_000_000_000 + 60_000 * i, 1, 1, 1, 1, 0] for i in range(20_001)]  # short rows: under 2 MiB
    response = serve_app.predict(small)
    assert response.status_code == 413 and "20001 rows, the limit is 20000" in detail(response)


def test_strategies_lists_shadow_and_live_with_latest_metrics(serve_app):
    store = serve_app.store
    response = serve_app.session.get(serve_app.url("/v1/strategies"), timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["champion"] == store.versions[0] and body["stale"] is False
    by_version = {s["model_version"]: s for s in body["strategies"]}
    assert set(by_version) == set(store.versions)
    assert by_version[store.versions[0]]["stage"] == "live" and "champion" in by_version[store.versions[0]]["aliases"]
    assert by_version[store.versions[1]]["stage"] == "shadow"
    assert by_version[store.versions[1]]["latest_metrics"] == SHADOW_METRICS
    assert by_version[store.versions[2]]["latest_metrics"] is None
    assert {s["strategy_id"] for s in body["strategies"]} == {strategy_id(g) for g in store.genomes}


def test_healthz_ok_with_the_champion(serve_app):
    body = serve_app.session.get(serve_app.url("/healthz"), timeout=30).json()
    assert body["status"] == "ok" and body["registry_reachable"] is True
    assert body["champion"] == serve_app.store.versions[0]


def test_openapi_and_docs(serve_app):
    schema = serve_app.session.get(serve_app.url("/openapi.json"), timeout=30).json()
    assert {"/v1/predict", "/v1/strategies", "/healthz", "/v1/rollback", "/v1/strategies/{version}/promote"} <= set(
        schema["paths"])
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "candles" in body["properties"] and body["required"] == ["candles"]
    docs = serve_app.session.get(serve_app.url("/docs"), timeout=30)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_stage_changes_need_the_bearer_token(serve_app):
    url = serve_app.url(f"/v1/strategies/{serve_app.store.versions[1]}/promote")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}):
        response = serve_app.session.post(url, headers=headers, timeout=30)
        assert response.status_code == 401, response.text
        assert "token" in detail(response).lower() or "Bearer" in detail(response)
        assert serve_app.session.post(serve_app.url("/v1/rollback"), headers=headers, timeout=30).status_code == 401
    # a good token with a bad version or body: nothing changes
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert serve_app.session.post(serve_app.url("/v1/strategies/abc/promote"), headers=auth, timeout=30).status_code == 422
    assert serve_app.session.post(serve_app.url("/v1/strategies/999/promote"), headers=auth, timeout=30).status_code == 404
    response = serve_app.session.post(url, headers=auth, data=b"{oops", timeout=30)
    assert response.status_code == 422 and detail(response)
    assert serve_app.store.registry().champion().version == serve_app.store.versions[0]

"""The MLflow server away: the endpoint answers with the versions it has loaded, /healthz says
degraded (200, status "degraded"), what needs the registry is a 503 with a message; the
server back: healthy again. Also: without EVOLVE_SERVE_TOKEN on the server, stage routes are
disabled (403). An app and a registry of this module's own."""
from __future__ import annotations

import time

import pytest
import requests
from serve_fixtures import TOKEN, held_out_rows, make_store, start_app

from backtest import positions, strategy_id

pytestmark = pytest.mark.slow

APP = "evolve-outage"
ROWS = held_out_rows(150, seed=11)


@pytest.fixture(scope="module")
def outage_app(serve_port, tmp_path_factory):
    from ray import serve

    store = make_store(tmp_path_factory.mktemp("outage-store"), "serve-outage")
    app = start_app(APP, "/outage", store, serve_port, alias_poll_s=0.2, autoscaling_config=None, num_replicas=1,
                    ray_actor_options={"num_cpus": 0.1})  # no token in this app's environment
    yield app
    serve.delete(APP)
    store.server.close()


def _wait_for_status(app, status: str, timeout: float = 60.0) -> tuple[float, dict]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        body = requests.get(app.url("/healthz"), timeout=30).json()
        if body["status"] == status:
            return time.monotonic() - started, body
        time.sleep(0.1)
    raise AssertionError(f"/healthz did not become {status!r} within {timeout} s: {body}")


def test_stage_routes_are_disabled_without_a_server_token(outage_app):
    for url in (outage_app.url(f"/v1/strategies/{outage_app.store.versions[1]}/promote"), outage_app.url("/v1/rollback")):
        response = requests.post(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert response.status_code == 403 and "EVOLVE_SERVE_TOKEN" in response.json()["detail"]


def test_mlflow_away_loaded_versions_answer_and_healthz_says_degraded(outage_app):
    store = outage_app.store
    champion, shadow, unloaded = store.genomes
    want = {i: int(positions(store.genomes[i], ROWS)[-1]) for i in (0, 1)}
    # load the champion and one shadow (by strategy id) before the outage; list the strategies once
    assert outage_app.predict(ROWS).json()["signal"] == want[0]
    assert outage_app.predict(ROWS, strategy_id=strategy_id(shadow)).json()["signal"] == want[1]
    assert requests.get(outage_app.url("/v1/strategies"), timeout=30).status_code == 200
    assert requests.get(outage_app.url("/healthz"), timeout=30).json()["status"] == "ok"

    store.server.stop()
    try:
        noticed, health = _wait_for_status(outage_app, "degraded")
        assert health["registry_reachable"] is False and health["registry_error"]
        assert health["champion"] == store.versions[0] and store.versions[1] in health["loaded_versions"]
        for _ in range(20):
            answer = outage_app.predict(ROWS)
            assert answer.status_code == 200 and answer.json()["signal"] == want[0]
            for fields in ({"strategy_id": strategy_id(shadow)}, {"model_version": store.versions[1]}):
                answer = outage_app.predict(ROWS, **fields)
                assert answer.status_code == 200 and answer.json()["signal"] == want[1], answer.text
        # what was never loaded needs the registry: 503 saying so, never a 500
        answer = outage_app.predict(ROWS, model_version=store.versions[2])
        assert answer.status_code == 503 and "registry" in answer.json()["detail"]
        answer = outage_app.predict(ROWS, strategy_id=strategy_id(unloaded))
        assert answer.status_code == 503 and "registry" in answer.json()["detail"]
        listing = requests.get(outage_app.url("/v1/strategies"), timeout=30)
        assert listing.status_code == 200 and listing.json()["stale"] is True
        print(f"\nMLflow stopped: /healthz degraded after {noticed * 1000:.0f} ms; the champion and a loaded shadow "
              "kept answering")
    finally:
        store.server.start()
    recovered, health = _wait_for_status(outage_app, "ok")
    print(f"MLflow back: /healthz ok after {recovered * 1000:.0f} ms")
    assert outage_app.predict(ROWS, model_version=store.versions[2]).status_code == 200

"""Stage changes and replica deaths under load, over real HTTP (an app and registry of this module's own).

* A promotion (over HTTP, with the token) and then a rollback (through ModelRegistry, as
  `evolve rollback` does) while clients keep asking the champion: no request fails, and
  every client sees the new version within a bounded time (measured and printed).
* A replica killed with ray.kill under load: the failed requests and the gap are measured;
  requests recover well within the health-check period and Serve starts a replacement.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest
import ray
import requests
from serve_fixtures import TOKEN, held_out_rows, make_store, start_app

from backtest import strategy_id
from serving.app import DEPLOYMENT_NAME

pytestmark = pytest.mark.slow

APP = "evolve-rollout"
POLL_S = 0.25
HEALTH_CHECK_PERIOD_S = 2.0
ROWS = held_out_rows(200, seed=5).tolist()


@pytest.fixture(scope="module")
def rollout_app(serve_port, tmp_path_factory):
    from ray import serve

    store = make_store(tmp_path_factory.mktemp("rollout-store"), "serve-rollout")
    app = start_app(APP, "/rollout", store, serve_port, alias_poll_s=POLL_S, autoscaling_config=None, num_replicas=2,
                    health_check_period_s=HEALTH_CHECK_PERIOD_S)
    yield app
    serve.delete(APP)
    store.server.close()


@dataclass
class Load:
    """Client threads asking the champion back to back; every answer is recorded with its time."""

    url: str
    threads: int = 4
    records: list = field(default_factory=list)  # (sent, received, status or exception name, version)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=120)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                response = session.post(self.url, json={"candles": ROWS}, timeout=30)
                version = response.json().get("model_version") if response.status_code == 200 else None
                self.records.append((sent, time.monotonic(), response.status_code, version))
            except requests.RequestException as error:
                self.records.append((sent, time.monotonic(), type(error).__name__, None))
                session = requests.Session()

    def wait_until(self, predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.records)):
                return
            time.sleep(0.05)
        raise AssertionError("load: condition not met in time")

    def stale_after(self, moved_at: float, version: str) -> float:
        """Seconds after the alias moved (``moved_at``) during which answers still came from another version."""
        stale = [r[1] for r in self.records if r[0] >= moved_at and r[3] is not None and r[3] != version]
        return max(stale, default=moved_at) - moved_at


class AliasWatch:
    """Notes when the registry's champion alias moves (read every 20 ms), to time the switch from there."""

    def __init__(self, store):
        from mlflow import MlflowClient

        self.client, self.name = MlflowClient(store.url), store.model_name
        self.moves: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AliasWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        last = None
        while not self._stop.wait(0.02):
            version = str(self.client.get_model_version_by_alias(self.name, "champion").version)
            if version != last:
                self.moves.append((time.monotonic(), version))
                last = version

    def moved_to(self, version: str, after: float) -> float:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = [t for t, v in self.moves if v == version and t >= after]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"the champion alias never moved to {version}")


def test_promotion_then_rollback_under_load_fail_no_request(rollout_app):
    store = rollout_app.store
    v1, v2 = store.versions[0], store.versions[1]
    registry = store.registry()
    with AliasWatch(store) as alias, Load(rollout_app.url("/v1/predict")) as load:
        load.wait_until(lambda records: len(records) >= 40)
        # promotion through the HTTP route: the answering replica switches at once, the others on their next poll
        started = time.monotonic()
        response = requests.post(rollout_app.url(f"/v1/strategies/{v2}/promote"), json={"reason": "test promotion"},
                                 headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json() == {"champion": v2, "previous_champion": v1, "stage": "live"}
        promote_call = time.monotonic() - started  # the registry writes (stage tags, events, aliases)
        moved = alias.moved_to(v2, started)
        load.wait_until(lambda records: sum(1 for r in records if r[0] > moved + 2 and r[3] == v2) >= 40)
        promote_delay = load.stale_after(moved, v2)
        # rollback through the registry (what `evolve rollback` and the rollback watch do): every replica polls
        started = time.monotonic()
        registry.rollback(reason="test rollback")
        rollback_call = time.monotonic() - started
        moved = alias.moved_to(v1, started)
        load.wait_until(lambda records: sum(1 for r in records if r[0] > moved + 2 and r[3] == v1) >= 40)
        rollback_delay = load.stale_after(moved, v1)
    failed = [r for r in load.records if r[2] != 200]
    print(f"\n{len(load.records)} requests during a promotion and a rollback, {len(failed)} failed; old answers "
          f"for {promote_delay * 1000:.0f} ms after the champion alias moved on promotion (HTTP route; the call took "
          f"{promote_call * 1000:.0f} ms of registry writes), {rollback_delay * 1000:.0f} ms after the rollback "
          f"(registry; {rollback_call * 1000:.0f} ms); alias poll every {POLL_S * 1000:.0f} ms")
    assert not failed, failed[:5]
    assert {r[3] for r in load.records} == {v1, v2}
    assert promote_delay < 30 and rollback_delay < 30  # generous: the poll interval is 0.25 s
    assert registry.champion().version == v1 and registry.version(v2).stage == "retired"
    body = requests.get(rollout_app.url("/v1/strategies"), timeout=30).json()
    assert body["champion"] == v1 and strategy_id(store.genomes[0]) in {s["strategy_id"] for s in body["strategies"]}


def _replica_names() -> list[str]:
    return sorted(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                  if actor["name"].startswith(f"SERVE_REPLICA::{APP}#{DEPLOYMENT_NAME}#"))


def test_a_killed_replica_under_load_costs_at_most_a_few_requests(rollout_app):
    from ray import serve

    names = _replica_names()
    assert len(names) == 2, names
    with Load(rollout_app.url("/v1/predict"), threads=4) as load:
        load.wait_until(lambda records: len(records) >= 40)
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        load.wait_until(lambda records: sum(1 for r in records if r[0] > killed_at + 3 and r[2] == 200) >= 40)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            replicas = _replica_names()
            running = serve.status().applications[APP].deployments[DEPLOYMENT_NAME].replica_states.get("RUNNING", 0)
            if names[0] not in replicas and len(replicas) == 2 and running == 2:
                break
            time.sleep(0.2)
        replaced_after = time.monotonic() - killed_at
        load.wait_until(lambda records: sum(1 for r in records if r[0] > killed_at + replaced_after) >= 40)
    after = [r for r in load.records if r[0] >= killed_at - 1]
    failed = [r for r in after if r[2] != 200]
    # when the failed requests were sent: a request in flight on the killed replica may only fail
    # when the client gives up on it (its timeout), but nothing sent after the health check may fail
    last_failure = max((r[0] - killed_at for r in failed), default=0.0)
    slowest_failure = max((r[1] - r[0] for r in failed), default=0.0)
    ok_times = sorted(r[1] for r in after if r[2] == 200)
    gap = max(b - a for a, b in zip(ok_times, ok_times[1:]))
    print(f"\nreplica killed under load: {len(failed)} of {len(after)} requests failed "
          f"({sorted({str(r[2]) for r in failed})}), the last of them sent {last_failure * 1000:.0f} ms after the kill "
          f"and answered {slowest_failure:.1f} s after it was sent at worst, "
          f"longest gap between answers {gap * 1000:.0f} ms, replacement running after {replaced_after:.1f} s "
          f"(health check every {HEALTH_CHECK_PERIOD_S:.0f} s)")
    assert last_failure <= HEALTH_CHECK_PERIOD_S + 1.0  # failures only right after the kill
    assert len(failed) <= 4 * load.threads  # in flight on the killed replica, not a stream of errors
    assert replaced_after < 120 and len(_replica_names()) == 2

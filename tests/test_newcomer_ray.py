"""`evolve run` and Ray as a new user meets them: a dead or wrong address fails in seconds with
one line; islands a local Ray can never place fail before it starts; a leftover
`ray_current_cluster` file or a live `ray start` cluster is joined only when asked (token
authentication as Ray 2.60 sets it up); a killed driver leaves no Ray process behind."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from newcomer_helpers import (
    REPO,
    TAG_ENV,
    RayHead,
    evolve,
    free_port,
    one_line_error,
    tagged,
    user_env,
    write_small_config,
)

RAY_RUN = ("run", "--no-tracking", "--no-progress")


def ray_config(tmp_path, **overrides):
    return write_small_config(tmp_path / "ray.yaml", **{"runtime.backend": "ray", **overrides})


def test_an_address_where_nothing_listens_fails_within_seconds(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    proc = evolve(*RAY_RUN, "--config", str(ray_config(tmp_path)), "--out", str(tmp_path / "run"),
                  "--address", address, env=user_env(), timeout=120)
    line = one_line_error(proc, 2)
    assert f"no Ray cluster answers at {address} (--address)" in line and "Connection refused" in line


def test_a_dashboard_url_in_ray_address_says_which_address_to_use(tmp_path):
    proc = evolve(*RAY_RUN, "--config", str(ray_config(tmp_path)), "--out", str(tmp_path / "run"),
                  env=user_env(RAY_ADDRESS="http://127.0.0.1:8265"), timeout=120)
    line = one_line_error(proc, 2)
    assert "RAY_ADDRESS http://127.0.0.1:8265 is a dashboard URL" in line and "HOST:PORT" in line


def test_islands_a_local_ray_cannot_place_fail_before_it_starts(tmp_path):
    config = ray_config(tmp_path, **{"islands": 3, "runtime.ray": {"island_num_cpus": 1, "num_cpus": 2}})
    proc = evolve(*RAY_RUN, "--config", str(config), "--out", str(tmp_path / "run"), env=user_env(), timeout=120)
    line = one_line_error(proc, 2)
    assert "3 island actors" in line and "need 3 CPUs" in line and "has 2" in line
    assert "island_num_cpus: 0.66" in line  # a setting that fits


def test_dev_shell_puts_the_project_environment_first():
    done = subprocess.run(["./dev", "shell"], input="command -v python ray evolve\nexit\n", cwd=REPO,
                          env={**user_env(), "SHELL": "/bin/bash"}, capture_output=True, text=True, timeout=120)
    paths = [line for line in done.stdout.splitlines() if line.startswith("/")]
    assert paths == [str(REPO / ".venv" / "bin" / name) for name in ("python", "ray", "evolve")], done.stdout


# ------------------------------------------------------------------ a killed driver


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path, signum):
    """Every process the driver started carries the test's tag in its environment (inherited),
    so other Rays on the machine are never counted."""
    tag = uuid.uuid4().hex
    out = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-m", "evolution", *RAY_RUN, "--config",
                               str(ray_config(tmp_path, generations=40)), "--out", str(out)],
                              cwd=REPO, env=user_env(**{TAG_ENV: tag}), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "trials" / "generation-00001.parquet").exists():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "the run did not reach generation 1"
            time.sleep(0.2)
        started = {p.pid: p.name() for p in tagged(tag)}
        assert {"raylet", "gcs_server"} <= set(started.values()), started
        driver.send_signal(signum)
        _, stderr = driver.communicate(timeout=120)
        if signum != signal.SIGKILL:
            assert driver.returncode == 128 + signum
            line = one_line_error(subprocess.CompletedProcess([], driver.returncode, "", stderr))
            assert "interrupted" in line and f"evolve run --resume {out}" in line
        deadline = time.monotonic() + 60
        while (left := tagged(tag)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, [(p.pid, p.name()) for p in left]
    finally:
        if driver.poll() is None:
            driver.kill()
        from newcomer_helpers import stop_tagged

        stop_tagged(tag)


# ------------------------------------------------------------------ a `ray start` cluster on the machine


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """A home folder as `./dev demo` leaves it: a Ray token in ~/.ray/auth_token."""
    home = tmp_path_factory.mktemp("home")
    made = subprocess.run(["ray", "get-auth-token", "--generate"], env=user_env(home), capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0 and (home / ".ray" / "auth_token").exists(), made.stderr
    return home


@pytest.fixture(scope="module")
def cluster(demo_home):
    with RayHead(user_env(demo_home)) as head:
        yield head


def island_actors(head: RayHead) -> list[dict]:
    """Island actors the cluster has seen (its dashboard's state API, with the token)."""
    token = (head_home(head) / ".ray" / "auth_token").read_text().strip()
    request = urllib.request.Request(f"{head.dashboard}/api/v0/actors?limit=1000&detail=1",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        actors = json.load(response)["data"]["result"]["result"]
    return [a for a in actors if (a.get("name") or "").startswith("island-")]


def head_home(head: RayHead) -> Path:
    return Path(head.env["HOME"])


@pytest.mark.slow
def test_evolve_run_starts_its_own_ray_next_to_a_live_cluster_and_its_file(cluster, tmp_path):
    assert (cluster.root / "ray" / "ray_current_cluster").exists()  # what `ray start` leaves for ray.init()
    env = {**cluster.env, TAG_ENV: uuid.uuid4().hex}  # same RAY_TMPDIR, HOME and token; not the cluster's tag
    before = island_actors(cluster)
    proc = evolve(*RAY_RUN, "--config", str(ray_config(tmp_path)), "--out", str(tmp_path / "run"), env=env,
                  timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and (tmp_path / "run" / "result.json").exists()
    assert island_actors(cluster) == before  # it did not join


@pytest.mark.slow
def test_evolve_run_starts_its_own_ray_despite_a_stale_ray_current_cluster_file(tmp_path):
    root = Path(f"/tmp/ncs{free_port()}")  # short: Ray's unix socket paths are limited to 107 bytes
    (root / "ray").mkdir(parents=True)
    try:
        (root / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")  # a cluster stopped long ago
        proc = evolve(*RAY_RUN, "--config", str(ray_config(tmp_path)), "--out", str(tmp_path / "run"),
                      env=user_env(RAY_TMPDIR=str(root)), timeout=600)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and (tmp_path / "run" / "result.json").exists()


@pytest.mark.slow
def test_evolve_run_joins_the_cluster_when_asked(cluster, tmp_path):
    config = ray_config(tmp_path)
    before = {a["actor_id"] for a in island_actors(cluster)}
    joined = evolve(*RAY_RUN, "--config", str(config), "--out", str(tmp_path / "joined"), "--address",
                    cluster.address, env={**cluster.env, "RAY_AUTH_MODE": "token"}, timeout=600)
    assert joined.returncode == 0, joined.stderr
    new = [a for a in island_actors(cluster) if a["actor_id"] not in before]
    assert sorted(a["name"] for a in new) == ["island-0", "island-1"]  # its islands ran on the cluster
    assert not [line for line in joined.stderr.splitlines() if line.strip()], joined.stderr  # quiet
    by_env = evolve(*RAY_RUN, "--config", str(config), "--out", str(tmp_path / "by-env"),
                    env={**cluster.env, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": cluster.address}, timeout=600)
    assert by_env.returncode == 0, by_env.stderr
    assert (tmp_path / "by-env" / "result.json").read_bytes() == (tmp_path / "joined" / "result.json").read_bytes()


@pytest.mark.slow
def test_joining_a_token_cluster_without_the_token_mode_says_what_to_set(cluster, tmp_path):
    proc = evolve(*RAY_RUN, "--config", str(ray_config(tmp_path)), "--out", str(tmp_path / "run"), "--address",
                  cluster.address, env=cluster.env, timeout=300)
    line = one_line_error(proc, 2)
    assert f"the Ray cluster at {cluster.address} (--address) uses token authentication" in line
    assert "export RAY_AUTH_MODE=token" in line


@pytest.mark.slow
def test_islands_the_cluster_cannot_place_now_say_what_the_run_waits_for(cluster, tmp_path):
    config = ray_config(tmp_path, **{"islands": 3, "runtime.ray": {"island_num_cpus": 1}})  # the cluster has 2
    driver = subprocess.Popen([sys.executable, "-m", "evolution", *RAY_RUN, "--config", str(config), "--out",
                               str(tmp_path / "run"), "--address", cluster.address], cwd=REPO,
                              env={**cluster.env, "RAY_AUTH_MODE": "token"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = driver.stderr.readline()  # the first thing it says, without waiting for the islands
        assert "waiting for 3 CPUs for 3 island actors: the cluster has 2" in line, line
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 128 + signal.SIGTERM
        assert "interrupted" in driver.stderr.read()
        alive = [a for a in island_actors(cluster) if a["state"] != "DEAD"]
        assert not alive, alive  # the pending island actors went with the driver
    finally:
        if driver.poll() is None:
            driver.kill()

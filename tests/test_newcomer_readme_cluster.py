"""The README's cluster section, pasted into a shell in order, on a machine where `./dev demo`
has run (a Ray token in ~/.ray/auth_token): activate .venv, token mode, `ray start --head`,
`ray job submit`, `ray job list`, the dashboard's HTTP API with the token, then the
dashboard's token dialog (POST /api/authenticate sets the cookie the page uses).

The commands run as written except for what a shared test machine needs (listed in
REWRITES, each must match): free ports instead of 6380/8265, a temp dir of its own for
`ray start`, a small config and a temp --out for the job, and no `ray stop` (it would stop
every Ray on the machine): the test stops the processes its cluster started, by tag."""
from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from newcomer_helpers import REPO, TAG_ENV, free_port, stop_tagged, user_env, write_small_config

pytestmark = pytest.mark.slow


def readme_cluster_commands() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("### On a cluster", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def rewrite(script: str, rewrites: list[tuple[str, str]]) -> str:
    for pattern, replacement in rewrites:
        script, n = re.subn(pattern, replacement, script, flags=re.M)
        assert n >= 1, f"the README's cluster commands no longer contain {pattern!r}: update this test"
    return script


@pytest.fixture
def demo_home(tmp_path):
    """HOME as `./dev demo` leaves it: its local Ray wrote ~/.ray/auth_token."""
    home = tmp_path / "home"
    home.mkdir()
    made = subprocess.run(["ray", "get-auth-token", "--generate"], env=user_env(home), capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return home


def test_the_readme_cluster_commands_work_in_order(tmp_path, demo_home):
    port, dashboard = free_port(), free_port()
    temp = Path(f"/tmp/ncr{port}")  # short: unix socket paths are limited
    out = tmp_path / "cluster-demo"
    store = tmp_path / "mlflow.db"  # the README's $PWD/mlflow.db: the folder the job was submitted from
    config = write_small_config(tmp_path / "small.yaml", **{"runtime.backend": "ray"})
    script = rewrite(readme_cluster_commands(), [
        (r"\b6380\b", str(port)),
        (r"\b8265\b", str(dashboard)),
        (r"^(ray start --head[^#\n]*?)\s*(#.*)?$",
         rf"\1 --temp-dir={temp} --ray-client-server-port={free_port()} "
         rf"--dashboard-agent-listen-port={free_port()} --num-cpus=2 --disable-usage-stats"),
        (r"configs/demo\.yaml", str(config)),
        (r'"\$PWD/runs/cluster-demo"', str(out)),
        (r"sqlite:///\$PWD/mlflow\.db", f"sqlite:///{store}"),
        (r"^ray stop\b.*$", ""),
    ])
    tag = uuid.uuid4().hex
    env = user_env(demo_home, venv=False, **{TAG_ENV: tag})  # a fresh shell: nothing of .venv on PATH
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-5000:]
        assert "AuthenticationError" not in output and "Traceback" not in output, output[-5000:]
        submission = re.search(r"Job '(raysubmit_\w+)' succeeded", output)
        assert submission, output[-5000:]
        assert json.loads((out / "result.json").read_text())["hall_of_fame"]
        assert "run directory" in output  # the job's own output came back to the terminal
        # the job's lineage is where the README says: the submitting folder's store, not Ray's copy
        lineage = json.loads((out / "mlflow_run.json").read_text())
        assert lineage["tracking_uri"] == f"sqlite:///{store}"
        from mlflow import MlflowClient

        assert MlflowClient(f"sqlite:///{store}").get_run(lineage["mlflow_run_id"]).info.status == "FINISHED"
        # ray job list and the curl line: the same job, succeeded
        assert output.count(submission.group(1)) >= 3
        listed = json.loads(re.search(r"^\[\{.*\}\]$", done.stdout, re.M).group(0))  # curl's JSON
        assert {(j["submission_id"], j["status"]) for j in listed} == {(submission.group(1), "SUCCEEDED")}

        # the dashboard page: without the token 401; its token dialog posts the token and gets a cookie
        base = f"http://127.0.0.1:{dashboard}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/jobs/", timeout=30)
        assert refused.value.code == 401
        token = subprocess.run(["ray", "get-auth-token"], env=user_env(demo_home), capture_output=True, text=True,
                               timeout=120).stdout.strip()
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        login = urllib.request.Request(f"{base}/api/authenticate", method="POST",
                                       headers={"Authorization": f"Bearer {token}"})
        assert browser.open(login, timeout=30).status == 200
        assert [c.name for c in jar] == ["ray-authentication-token"]
        assert browser.open(f"{base}/api/jobs/", timeout=30).status == 200  # the cookie alone now
    finally:
        stop_tagged(tag)
        subprocess.run(["rm", "-rf", str(temp)], check=False)

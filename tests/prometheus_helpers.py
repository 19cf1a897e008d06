"""A real Prometheus server for the metrics tests (Debian's `prometheus` package), plus the
Debian packages the observability tests need (prometheus, promtool, chromium), installed
with apt-get when missing; a test skips with a loud message only when that fails."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

_INSTALL_TRIED: dict[str, bool] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(binary: str, package: str) -> str:
    """The path of ``binary``; installs the Debian ``package`` when it is missing (we are root
    on the test machines), and skips LOUDLY only when it cannot be installed."""
    path = shutil.which(binary)
    if path is None and not _INSTALL_TRIED.get(package):
        _INSTALL_TRIED[package] = True
        if shutil.which("apt-get") and os.geteuid() == 0:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], env=env,
                           capture_output=True, timeout=1200)
        path = shutil.which(binary)
    if path is None:
        message = (f"\n{'!' * 78}\n!!! SKIPPED: `{binary}` is missing and Debian's `{package}` package could not be "
                   f"installed\n!!! (apt-get install -y {package} as root)\n{'!' * 78}")
        print(message, file=sys.stderr)
        pytest.skip(message)
    return path


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Prometheus:
    """``prometheus`` on a free port with its storage in ``workdir``; stopped by pid."""

    def __init__(self, config: dict, workdir: Path):
        import yaml

        self.binary = require_binary("prometheus", "prometheus")
        self.port = free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = open(self.workdir / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get_json(f"{self.url}/api/v1/status/buildinfo")["status"] == "success":
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus did not start: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = get_json(f"{self.url}/api/v1/{path}{query}")
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

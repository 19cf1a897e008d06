"""Helpers for the first-contact tests (tests/test_newcomer_*.py): run `evolve` as a user does,
in a child process, and hold its stderr to the one-clear-line rule."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from evolution_helpers import small_config_data

REPO = Path(__file__).resolve().parents[1]


def evolve(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
           wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python -m evolution ARGS` in a child process (``wrap``: a command line in front, e.g. unshare)."""
    command = [*(wrap or []), sys.executable, "-m", "evolution", *args]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(command, cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, code: int | None = None) -> str:
    """The single line a failed command printed on stderr; asserts no traceback and the exit code."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def write_small_config(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(small_config_data(**overrides)))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_mount_prefix() -> list[str] | None:
    """A command prefix that runs its command in a mount namespace of its own, where it may mount
    a tmpfs that no one else sees and that vanishes with it (root: `unshare --mount`; other users:
    a user namespace as well). None if the kernel allows neither."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null "
                                "|| mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


TAG_ENV = "NEWCOMER_TEST_TAG"  # every process a test starts inherits it, Ray's daemons included
VENV_BIN = Path(sys.executable).parent


def user_env(home: Path | None = None, *, venv: bool = True, **extra: str) -> dict:
    """The environment of a user's shell (with .venv active unless ``venv=False``): no Ray
    settings the test session made (RAY_AUTH_MODE, RAY_ADDRESS, ...), HOME where the test says."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR",
                        "VIRTUAL_ENV", "PYTHONPATH")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != VENV_BIN]
    if venv:
        path.insert(0, str(VENV_BIN))
        env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
        env["PYTHONPATH"] = str(REPO)
    env["PATH"] = os.pathsep.join(path)
    if home is not None:
        env["HOME"] = str(home)
    env.update(extra)
    return env


def stop_tagged(tag: str) -> int:
    """Stop every process carrying TAG_ENV=tag: the Ray a test started, and only that one."""
    from evolution.ray_watchdog import stop_tagged as stop

    return stop(tag, grace_s=5.0, variable=TAG_ENV)


def tagged(tag: str) -> list:
    from evolution.ray_watchdog import tagged as find

    return find(tag, TAG_ENV)


class RayHead:
    """A real `ray start --head` on free ports, in a temp root of its own (RAY_TMPDIR, short:
    unix socket paths are limited), its processes tagged; stopped by tag, never `ray stop`."""

    def __init__(self, env: dict, num_cpus: int = 2):
        import uuid

        self.port, self.dashboard_port = free_port(), free_port()
        self.tag = uuid.uuid4().hex
        self.root = Path(f"/tmp/nc{self.port}")
        self.env = {**env, TAG_ENV: self.tag, "RAY_TMPDIR": str(self.root)}
        self.num_cpus = num_cpus

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_args(self) -> list[str]:
        """The flags a shared machine needs besides the README's (ports that are free, no usage stats)."""
        return [f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                f"--num-cpus={self.num_cpus}", "--disable-usage-stats"]

    def __enter__(self) -> RayHead:
        self.root.mkdir(parents=True, exist_ok=True)
        start = subprocess.run(["ray", "start", "--head", f"--port={self.port}",
                                f"--dashboard-port={self.dashboard_port}", *self.start_args()],
                               env=self.env, capture_output=True, text=True, timeout=300)
        if start.returncode != 0:
            stop_tagged(self.tag)
            raise RuntimeError(f"ray start failed: {start.stderr[-3000:]}")
        return self

    def __exit__(self, *exc) -> None:
        stop_tagged(self.tag)
        shutil.rmtree(self.root, ignore_errors=True)

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

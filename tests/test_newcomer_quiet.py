"""Quiet runs: a plain `evolve run` on a warm machine prints its progress bar and its result,
nothing of Ray's (no INFO lines, no token notice, no core_worker "max_restarts > 0" error
line); on a machine that has not compiled the kernels of this code version yet, it says so
and about how long that takes instead of showing a bar stuck at 0%."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from newcomer_helpers import REPO, evolve, user_env, write_small_config

from evolution.runner import COMPILE_NOTICE


def test_a_plain_ray_run_prints_only_the_bar_and_the_result(tmp_path):
    config = write_small_config(tmp_path / "ray.yaml", **{"runtime.backend": "ray", "runtime.progress": True})
    proc = evolve("run", "--no-tracking", "--config", str(config), "--out", str(tmp_path / "run"),
                  env=user_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in re.split(r"[\r\n]+", proc.stderr) if line.strip()]
    assert lines and all(line.startswith("evolving:") for line in lines), proc.stderr
    assert "promoted:" in proc.stdout and "run directory:" in proc.stdout


def test_a_first_run_says_it_compiles_instead_of_a_bar_at_zero(tmp_path):
    config = write_small_config(tmp_path / "local.yaml", **{"runtime.progress": True})
    env = user_env(EVOLVE_JIT_CACHE_DIR=str(tmp_path / "empty-kernel-cache"))  # a machine that never compiled
    driver = subprocess.Popen([sys.executable, "-m", "evolution", "run", "--no-tracking", "--config", str(config),
                               "--out", str(tmp_path / "run")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        first = driver.stderr.readline()  # the compilation takes minutes: the notice comes first, at once
        assert first.strip() == COMPILE_NOTICE
        assert "about a minute" in first and "evolve warm" in first
        time.sleep(1)
        driver.send_signal(signal.SIGTERM)
        rest = driver.stderr.read()
        assert "evolving:" not in rest  # no bar while compiling
        assert driver.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if driver.poll() is None:
            driver.kill()

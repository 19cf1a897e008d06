"""A first `./dev demo` on a fresh clone with an empty kernel cache (slow): the set-up compiles
the kernels (`evolve warm`, saying so) and the demo, Ray workers included, compiles none.

The clone's `.venv` takes its dependencies from this test's environment (a `.pth` file, and the
stamp `./dev` writes after installing): `./dev`'s pip step is what a fresh machine adds (about a
minute with a warm pip cache), and it is not what this test is about. Nothing is linked into
the clone (no symlink, `.venv` has copies), and what the test writes besides `.venv` (config,
run, MLflow store, kernel cache, HOME) lives outside it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml
from evolution_helpers import small_config_data

from evolution.runner import COMPILE_NOTICE

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
KERNEL_FILES = ("*.nbi", "*.nbc")


def fresh_clone(tmp_path: Path) -> Path:
    """`git clone` of this repository with a `.venv` that `./dev` takes as installed."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    base_python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    venv = clone / ".venv"
    subprocess.run([str(base_python), "-m", "venv", "--without-pip", "--copies", str(venv)], check=True, timeout=120)
    if (venv / "lib64").is_symlink():  # venv's alias of lib/: nothing here needs it
        (venv / "lib64").unlink()
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    paths = dict.fromkeys([str(clone), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "test-environment.pth").write_text("\n".join(paths) + "\n")  # the clone itself, as `pip install -e`
    (venv / ".installed-test").touch()  # ./dev's stamp: installed, newer than pyproject.toml
    return clone


def user_environment(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "EVOLVE_", "NUMBA_", "MLFLOW_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != Path(sys.executable).parent)
    env.update(HOME=str(tmp_path / "home"), EVOLVE_JIT_CACHE_DIR=str(tmp_path / "kernels"),
               EVOLVE_CACHE_DIR=str(tmp_path / "cache"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "home").mkdir()
    return env


def test_the_first_demo_of_a_fresh_clone_compiles_during_set_up_only(tmp_path):
    clone = fresh_clone(tmp_path)
    config = tmp_path / "demo.yaml"  # the tests' small search, its islands as Ray actors
    config.write_text(yaml.safe_dump(small_config_data(**{"runtime.backend": "ray", "runtime.progress": False})))
    run_dir = tmp_path / "run"
    started = time.perf_counter()
    done = subprocess.run(["./dev", "demo", "--config", str(config), "--out", str(run_dir), "--no-serve",
                           "--shadow-top", "1"], cwd=clone, env=user_environment(tmp_path), capture_output=True,
                          text=True, timeout=1200)
    total = time.perf_counter() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    compiled = re.search(r"compiled kernels in (\d+) s", done.stdout)
    assert "compiling kernels (first set-up only" in done.stdout and compiled, output[-4000:]
    assert COMPILE_NOTICE not in output  # the demo found this version compiled
    marker = next((tmp_path / "kernels").glob("warm-*.json"))
    kernels = [p for pattern in KERNEL_FILES for p in (tmp_path / "kernels").rglob(pattern)]
    assert len(kernels) > 20
    written_later = [p.name for p in kernels if p.stat().st_mtime_ns > marker.stat().st_mtime_ns]
    assert written_later == [], f"the demo compiled again: {written_later}"
    assert "demo: --no-serve: done" in done.stdout
    assert [p for p in clone.rglob("*") if p.is_symlink()] == []
    assert json.loads((run_dir / "result.json").read_text())["hall_of_fame"]

    generations = json.loads((run_dir / "timing.json").read_text())["generations"]
    print(f"\nfirst ./dev demo of a fresh clone: {total:.0f} s in all; compiling in the set-up "
          f"{compiled.group(1)} s ({json.loads(marker.read_text())['processes']} processes), in the demo 0 s "
          f"(no kernel written after the set-up; generation 0 {generations[0]['seconds']:.1f} s, "
          f"generation 1 {generations[1]['seconds']:.1f} s)")

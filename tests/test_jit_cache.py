"""Compiled numba kernels are shared by every copy of the same code (backtest/jit_cache.py).

Each test runs a fresh interpreter on a copy of the project at its own path, as a Ray job's
unpacked working directory is, and reads numba's own hit and miss counters.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os
import numpy as np
import backtest
from backtest.indicators import ema_nb
from evolution.nsga import front_ranks_nb
assert backtest.__file__.startswith(os.getcwd()), backtest.__file__
ema_nb(np.linspace(1.0, 2.0, 50), 5)
front_ranks_nb(np.random.default_rng(0).normal(size=(8, 2)))
stats = {name: {"hits": sum(f.stats.cache_hits.values()), "misses": sum(f.stats.cache_misses.values())}
         for name, f in (("ema", ema_nb), ("nsga", front_ranks_nb))}
print("STATS " + json.dumps(stats))
"""


def copy_project(target: Path) -> Path:
    for package in ("backtest", "evolution"):
        shutil.copytree(REPO / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def probe(project: Path, **env_vars: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "EVOLVE_JIT_CACHE_DIR")}
    env.update(env_vars)
    env["PYTHONPATH"] = str(project)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("STATS ", 1)[1])


def in_tree_entries(project: Path) -> list[Path]:
    return sorted(project.rglob("__pycache__/*.nbi"))


def test_a_copy_at_another_path_loads_the_kernels_the_first_compiled(tmp_path):
    cache = tmp_path / "jit"
    first = probe(copy_project(tmp_path / "a"), EVOLVE_JIT_CACHE_DIR=str(cache))
    assert first == {"ema": {"hits": 0, "misses": 1}, "nsga": {"hits": 0, "misses": 1}}
    second_copy = copy_project(tmp_path / "b")
    second = probe(second_copy, EVOLVE_JIT_CACHE_DIR=str(cache))
    assert second == {"ema": {"hits": 1, "misses": 0}, "nsga": {"hits": 1, "misses": 0}}
    assert in_tree_entries(second_copy) == []  # nothing written next to the sources
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["backtest", "evolution"]


def test_a_change_to_any_kernel_module_of_the_package_compiles_again(tmp_path):
    cache = tmp_path / "jit"
    probe(copy_project(tmp_path / "a"), EVOLVE_JIT_CACHE_DIR=str(cache))
    changed = copy_project(tmp_path / "b")
    with open(changed / "backtest" / "kernels.py", "a") as handle:  # not the file that defines ema_nb
        handle.write("\n# changed\n")
    with open(changed / "backtest" / "strategy.py", "a") as handle:  # no numba in it: no effect
        handle.write("\n# changed\n")
    stats = probe(changed, EVOLVE_JIT_CACHE_DIR=str(cache))
    assert stats == {"ema": {"hits": 0, "misses": 1}, "nsga": {"hits": 1, "misses": 0}}
    assert len([p for p in cache.iterdir() if p.name.startswith("backtest-")]) == 2  # both versions kept

    unchanged_numba = copy_project(tmp_path / "c")
    with open(unchanged_numba / "backtest" / "strategy.py", "a") as handle:
        handle.write("\n# changed\n")
    assert probe(unchanged_numba, EVOLVE_JIT_CACHE_DIR=str(cache))["ema"] == {"hits": 1, "misses": 0}


def test_off_or_numbas_own_cache_dir_leave_numba_its_own_choice(tmp_path):
    project = copy_project(tmp_path / "a")
    probe(project, EVOLVE_JIT_CACHE_DIR="off")
    assert {p.name.split("-")[0] for p in in_tree_entries(project)} == {"indicators.ema_nb", "nsga.front_ranks_nb"}

    other = copy_project(tmp_path / "b")
    numba_dir = tmp_path / "numba-own"
    probe(other, EVOLVE_JIT_CACHE_DIR=str(tmp_path / "unused"), NUMBA_CACHE_DIR=str(numba_dir))
    assert in_tree_entries(other) == [] and not (tmp_path / "unused").exists()
    assert len(list(numba_dir.rglob("*.nbi"))) == 2


def test_the_cache_follows_evolve_cache_dir_unless_told_otherwise(tmp_path, monkeypatch):
    from backtest.jit_cache import jit_cache_dir

    monkeypatch.delenv("EVOLVE_JIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "evolve"))
    assert jit_cache_dir() == tmp_path / "evolve" / "numba"
    monkeypatch.setenv("EVOLVE_CACHE_DIR", "off")
    assert jit_cache_dir() is None
    monkeypatch.setenv("EVOLVE_JIT_CACHE_DIR", str(tmp_path / "kernels"))
    assert jit_cache_dir() == tmp_path / "kernels"
    monkeypatch.delenv("EVOLVE_CACHE_DIR")
    monkeypatch.delenv("EVOLVE_JIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jit_cache_dir() == tmp_path / "xdg" / "evolve" / "numba"

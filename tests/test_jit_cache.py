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

import pytest

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


# ---------------------------------------------------------------- evolve warm (evolution/warm.py)

MARKER_PROBE = "from backtest.jit_cache import warm_marker; print('MARKER', warm_marker().name)"


def marker_name(project: Path, cache: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "EVOLVE_JIT_CACHE_DIR")}
    env.update(PYTHONPATH=str(project), EVOLVE_JIT_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", MARKER_PROBE], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("MARKER ", 1)[1].strip()


def test_the_warm_marker_names_this_version_of_every_kernel_package(tmp_path):
    cache = tmp_path / "jit"
    first = marker_name(copy_project(tmp_path / "a"), cache)
    assert marker_name(copy_project(tmp_path / "b"), cache) == first  # another copy of the same code
    for package, module in (("backtest", "events.py"), ("evolution", "nsga.py")):
        changed = copy_project(tmp_path / f"changed-{package}")
        with open(changed / package / module, "a") as handle:
            handle.write("\n# changed\n")
        assert marker_name(changed, cache) != first, package
    warm_changed = copy_project(tmp_path / "changed-warm")  # `evolve warm` itself compiles nothing
    with open(warm_changed / "evolution" / "warm.py", "a") as handle:
        handle.write("\n# changed\n")
    assert marker_name(warm_changed, cache) == first


def test_warm_if_needed_says_nothing_once_this_version_is_warm(tmp_path, monkeypatch, capsys):
    from backtest.jit_cache import is_warm, warm_marker
    from evolution.cli import main

    monkeypatch.setenv("EVOLVE_JIT_CACHE_DIR", "off")
    assert is_warm() is None and main(["warm", "--if-needed"]) == 0
    monkeypatch.setenv("EVOLVE_JIT_CACHE_DIR", str(tmp_path / "jit"))
    assert is_warm() is False
    warm_marker().parent.mkdir(parents=True)
    warm_marker().write_text("{}")  # as `evolve warm` leaves it when every part has run
    assert main(["warm", "--if-needed"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["warm"]) == 0
    assert "compiled already" in capsys.readouterr().out
    assert main(["warm", "--jobs", "0"]) == 2


USE_PROBE = r"""
import json, sys
from numba.core.dispatcher import Dispatcher
from backtest import GenomeError, positions, signals
from backtest.data import synthetic_market
from evolution.cli import main

assert main(["run", "--config", sys.argv[1], "--local", "--no-tracking", "--out", sys.argv[2]]) == 0
bars = synthetic_market(2000, seed=1)
for member in json.load(open(sys.argv[2] + "/result.json"))["hall_of_fame"]:
    positions(member["genome"], bars.to_frame())  # what shadow traders and the Serve endpoint answer
    try:
        signals(member["genome"], bars)
    except GenomeError:
        pass
kernels = {f"{m.__name__}.{n}": f for m in list(sys.modules.values()) if m and m.__name__.split(".")[0] in
           ("backtest", "evolution", "serving") for n, f in vars(m).items() if isinstance(f, Dispatcher)}
print("STATS " + json.dumps({name: [sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())]
                             for name, f in kernels.items()}))
"""


def test_a_run_after_warm_compiles_nothing(tmp_path):
    """`evolve warm` finds its kernels by running the product's paths: a run of both families
    afterwards (its gates and report included) and its strategies' positions load every kernel."""
    import yaml
    from evolution_helpers import small_config_data

    from backtest.jit_cache import is_warm
    from evolution.cli import main

    if is_warm() is None:
        pytest.skip("the kernel cache is off in this environment (EVOLVE_JIT_CACHE_DIR=off or NUMBA_CACHE_DIR)")
    assert main(["warm"]) == 0  # the session's cache (usually warm already: ./dev test warms it)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(small_config_data(**{
        "families": {"rules": 0.5, "asmbtr": 0.5}, "generations": 2, "population": 8,
        "market.synthetic.n_bars": 3000, "walk_forward.folds": 2})))
    done = subprocess.run([sys.executable, "-c", USE_PROBE, str(config), str(tmp_path / "run")], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads(done.stdout.split("STATS ", 1)[1])
    compiled = {name: misses for name, (hits, misses) in stats.items() if misses}
    assert compiled == {}, f"compiled in the run although warm: {compiled}"
    assert {"backtest.fused.population_nb", "backtest.families.asmbtr.population_nb"} <= {
        name for name, (hits, _) in stats.items() if hits}

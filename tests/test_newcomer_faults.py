"""Faults a new user meets end with one clear line and a non-zero exit, never a traceback:
bad data files, an --out that cannot be written, a disk that fills during a run, an exchange
address where nothing listens, a Redis cache that does not answer."""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys

import pytest
from newcomer_helpers import REPO, evolve, free_port, one_line_error, private_mount_prefix, write_small_config

from backtest.data import save_csv, synthetic_market
from backtest.data.cache import CacheUnavailableError, InProcessCandleCache, make_cache

RUN = ("run", "--local", "--no-tracking", "--no-progress")


def test_a_csv_with_only_its_header(tmp_path):
    data = tmp_path / "candles.csv"
    data.write_text("timestamp,open,high,low,close,volume\n")
    line = one_line_error(evolve(*RUN, "--data", str(data), "--out", str(tmp_path / "run")), 2)
    assert str(data) in line and "header line but no candles" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("n_bars", [3, 50])
def test_too_little_data_for_the_folds_says_how_many_bars(tmp_path, n_bars):
    data = tmp_path / "candles.csv"
    save_csv(synthetic_market(n_bars, seed=1), data)
    line = one_line_error(evolve(*RUN, "--data", str(data), "--out", str(tmp_path / "run")), 2)
    assert f"too little data: the market has {n_bars} bars" in line
    needed = int(line.split("need at least ")[1].split(";")[0])
    # the number is right: that many bars of the same market run (the demo config), one fewer does not
    from evolution.config import load_config
    from evolution.market import _fold_problem

    config = load_config(None)
    assert _fold_problem(config, needed)[0] is None and _fold_problem(config, needed - 1)[0] is not None


def _tmpfs_run(tmp_path, options: str, prepare: str, out: str, extra: str = ""):
    """`evolve run` (small config) inside a mount namespace of its own, on a fresh tmpfs at
    tmp_path/mnt that no other process sees and that vanishes with the namespace."""
    prefix = private_mount_prefix()
    if prefix is None:
        pytest.skip("this kernel lets no process mount a private tmpfs (unshare)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    config = write_small_config(tmp_path / "small.yaml")
    command = shlex.join([sys.executable, "-m", "evolution", *RUN, "--config", str(config), "--out", out])
    script = f"mount -t tmpfs -o {options} tmpfs {mnt} && {prepare} {command}; code=$?; {extra} exit $code"
    return subprocess.run([*prefix, "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_out_on_a_read_only_file_system(tmp_path):
    proc = _tmpfs_run(tmp_path, "ro,size=64k", "", str(tmp_path / "mnt" / "run"))
    line = one_line_error(proc, 2)
    assert "read-only" in line and str(tmp_path / "mnt" / "run") in line and "--out" in line


def test_out_in_a_directory_the_user_cannot_write(tmp_path):
    locked = tmp_path / "mnt" / "locked"
    if os.geteuid() == 0:  # root writes through permission bits: make the directory immutable
        prepare = f"mkdir {locked} && chattr +i {locked} &&"
    else:
        prepare = f"mkdir {locked} && chmod 555 {locked} &&"
    proc = _tmpfs_run(tmp_path, "size=64k", prepare, str(locked / "run"))
    line = one_line_error(proc, 2)
    assert "permission denied" in line and str(locked / "run") in line and "--out" in line


def test_a_full_disk_stops_the_run_with_nothing_lost(tmp_path):
    """The disk fills in generation 2 of 5 (a 200 kB tmpfs); the message says nothing was lost
    and how to resume elsewhere; a copy of the run directory resumed on another disk ends with
    the very result.json of an uninterrupted run."""
    config = write_small_config(tmp_path / "small.yaml")
    reference = evolve(*RUN, "--config", str(config), "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    run_dir = tmp_path / "mnt" / "run"
    copy = tmp_path / "copy"
    proc = _tmpfs_run(tmp_path, "size=200k", "", str(run_dir), extra=f"cp -a {run_dir} {copy};")
    line = one_line_error(proc, 1)
    assert f"no space left on the device holding {run_dir}" in line
    assert "Nothing was lost" in line and f"evolve run --resume {run_dir}" in line and "copy" in line
    assert not (copy / "result.json").exists()
    resumed = evolve("run", "--resume", str(copy), "--local", "--no-tracking", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert (copy / "result.json").read_bytes() == (tmp_path / "reference" / "result.json").read_bytes()


@pytest.mark.slow
def test_data_fetch_where_nothing_listens_names_the_url_and_the_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    proc = evolve("data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
                  "--since", "2024-01-01", "--store", str(tmp_path / "store"), "--base-url", url,
                  "--timeout-ms", "2000", "--no-progress")
    line = one_line_error(proc, 1)
    assert url in line and "Connection refused" in line


def test_a_redis_cache_that_does_not_answer_falls_back_to_memory(caplog):
    url = f"redis://127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING, logger="backtest.data.cache"):
        cache = make_cache(url)
    assert isinstance(cache, InProcessCandleCache)
    assert [r.getMessage() for r in caplog.records if url in r.getMessage() and "in-process" in r.getMessage()]
    candles = synthetic_market(20, seed=1)
    assert cache.get_or_fetch("binance", "BTC/USDT", "1m", lambda: candles) == candles
    assert cache.get("binance", "BTC/USDT", "1m") == candles  # it caches
    with pytest.raises(CacheUnavailableError, match=f"Redis at {url} does not answer"):
        make_cache(url, fallback=False)

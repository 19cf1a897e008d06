"""`evolve data fetch` and `evolve data show` against the local Binance stub."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from binance_stub import DEFAULT_START_MS, HOUR_MS, BinanceStub, make_series

from backtest.data.loaders import load
from backtest.data.store import read_store_file
from evolution.cli import main

REPO = Path(__file__).resolve().parents[1]
N_BARS = 1500


@pytest.fixture
def stub():
    with BinanceStub([make_series(n_bars=N_BARS, omit=frozenset({700, 701}))]) as server:
        yield server


def fetch_args(stub, store, *extra):
    return ["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--since", "2024-01-01", "--store", str(store), "--base-url", stub.url, "--timeout-ms", "2000",
            "--no-progress", *extra]


def test_fetch_fills_the_store_and_writes_out(stub, tmp_path, capsys):
    out = tmp_path / "btc.parquet"
    assert main(fetch_args(stub, tmp_path / "store", "--until", "2024-01-21", "--out", str(out))) == 0
    expected = stub.series().timestamps[:480]
    stored = read_store_file(tmp_path / "store" / "binance" / "BTC-USDT" / "1h.parquet")
    assert np.array_equal(stored.timestamp, expected)
    written = load(out)  # what `evolve run --data` reads
    assert written == stored
    assert "480 new bar(s)" in capsys.readouterr().out


def test_second_fetch_adds_only_new_bars(stub, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(fetch_args(stub, store, "--until", "2024-01-11")) == 0
    stub.reset_log()
    assert main(fetch_args(stub, store, "--until", "2024-01-21")) == 0
    assert "240 new bar(s), 480 stored" in capsys.readouterr().out
    assert int(stub.kline_requests()[0].params["startTime"]) == DEFAULT_START_MS + 240 * HOUR_MS


def test_base_url_from_the_environment(stub, tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVE_EXCHANGE_BASE_URL", stub.url)
    args = fetch_args(stub, tmp_path, "--until", "2024-01-02")
    del args[args.index("--base-url"):args.index("--base-url") + 2]
    assert main(args) == 0
    assert len(stub.kline_requests()) == 1


def test_show_reports_range_count_and_gaps(stub, tmp_path, capsys):
    assert main(fetch_args(stub, tmp_path)) == 0
    capsys.readouterr()
    assert main(["data", "show", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
                 "--store", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bars"] == N_BARS - 2
    assert summary["first"] == "2024-01-01T00:00:00Z"
    assert summary["missing_bars"] == 2 and len(summary["gaps"]) == 1
    assert summary["gaps"][0]["after"] == "2024-01-30T03:00:00Z"  # bar 699

    path = tmp_path / "binance" / "BTC-USDT" / "1h.parquet"
    assert main(["data", "show", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"bars      {N_BARS - 2}" in text and "gaps      1 (2 missing bar(s))" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--symbol", "BTC/USDX"], "no market 'BTC/USDX'. Did you mean 'BTC/USDT'"),
        (["--exchange", "binanse"], "unknown exchange 'binanse'"),
        (["--since", "last tuesday"], "not a date"),
        (["--timeframe", "1hr"], "not a timeframe"),
        (["--until", "2023-01-01"], "must be after since"),
        (["--out", "x.xlsx"], ".parquet or .csv"),
    ],
)
def test_fetch_user_errors_exit_2_with_a_message(stub, tmp_path, capsys, argv, message):
    args = fetch_args(stub, tmp_path)
    for i in range(0, len(argv), 2):
        if argv[i] in args:
            args[args.index(argv[i]) + 1] = argv[i + 1]
        else:
            args += argv[i:i + 2]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert stub.kline_requests() == []


def test_exchange_down_exits_1_and_keeps_progress(tmp_path, capsys):
    with BinanceStub([make_series(n_bars=N_BARS)]) as stub:
        stub.fail_after(1)
        assert main(fetch_args(stub, tmp_path, "--max-attempts", "1")) == 1
    err = capsys.readouterr().err
    assert "failed 1 times" in err and "try again later" in err and "Traceback" not in err
    assert len(read_store_file(tmp_path / "binance" / "BTC-USDT" / "1h.parquet")) == 1000


def test_show_user_errors(tmp_path, capsys):
    assert main(["data", "show", str(tmp_path / "nope.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["data", "show", "--exchange", "binance"]) == 2
    assert "all of --exchange, --symbol and --timeframe" in capsys.readouterr().err
    assert main(["data", "show", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
                 "--store", str(tmp_path)]) == 2
    assert "run `evolve data fetch` first" in capsys.readouterr().err


def test_the_real_command_line_prints_no_traceback(stub, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "evolution", *fetch_args(stub, tmp_path, "--symbol", "DOGE/USDT")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert done.returncode == 2
    assert "evolve data: error: binance has no market 'DOGE/USDT'" in done.stderr
    assert "Traceback" not in done.stderr

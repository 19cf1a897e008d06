"""notebooks/lineage.ipynb runs top to bottom against a run logged to a SQLite MLflow store."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from evolution.lineage import LineageLogger
from evolution.lineage_fixture import record_fixture_run, replay_fixture_run

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "lineage.ipynb"


@pytest.mark.slow
def test_lineage_notebook_executes(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.chdir(tmp_path)  # the SQLite store keeps artifacts under ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    source = tmp_path / "source"
    result, generations = record_fixture_run(source, seed=4, n_bars=4000, population=8, generations=3,
                                             hall_of_fame=4, promoted=1)
    logger = LineageLogger(uri, experiment="notebook-test", registered_model="notebook-test")
    report = replay_fixture_run(logger, source, tmp_path / "run", generations, with_market=True)
    assert not report.spooled

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LINEAGE_EXPERIMENT", "notebook-test")
    monkeypatch.delenv("LINEAGE_RUN_ID", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert f"run {report.mlflow_run_id}" in text
    assert "lineage complete: true" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # lineage tree, fitness, Pareto front, equity curves

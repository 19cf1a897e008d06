"""notebooks/lineage.ipynb, executed as a user runs it, on the lineage of a real `evolve run`.

A project folder like the repository (pyproject.toml, notebooks/lineage.ipynb): `evolve run`
from its root logs to the embedded default (PROJECT/mlflow.db); the notebook then runs with
its kernel in notebooks/ (as `jupyter nbconvert --execute notebooks/lineage.ipynb` or
Jupyter opened at the root start it) and at the root, finds that store the way the CLI does,
draws its four pictures and leaves nothing behind.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat
import pytest
from lineage_fixtures import REPO, evolve_env, lineage_config

NOTEBOOK = REPO / "notebooks" / "lineage.ipynb"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "notebooks").mkdir()
    shutil.copy(NOTEBOOK, root / "notebooks" / NOTEBOOK.name)
    config = lineage_config(root / "configs" / "lineage.yaml", generations=3)
    done = subprocess.run([sys.executable, "-m", "evolution", "run", "--config", str(config), "--out", "runs/r"],
                          cwd=root, env=evolve_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "mlflow.db").is_file()
    return root, done.stdout


@pytest.mark.parametrize("kernel_dir", ["notebooks", "."])
def test_the_notebook_finds_the_projects_store_and_leaves_nothing_behind(project, kernel_dir, monkeypatch):
    from nbclient import NotebookClient

    root, stdout = project
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "LINEAGE_RUN_ID"):
        monkeypatch.delenv(name, raising=False)  # nothing configured: the default, as after `./dev demo`
    monkeypatch.chdir(root)
    before = sorted(p.relative_to(root) for p in root.rglob("*") if "runs" not in p.parts)
    notebook = nbformat.read(root / "notebooks" / NOTEBOOK.name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(root / kernel_dir)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert f"store sqlite:///{root / 'mlflow.db'}" in text
    run_id = stdout.split("lineage: MLflow run ")[1].split()[0]
    assert f"run {run_id}" in text and "lineage complete: true" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # lineage tree, fitness, Pareto front, equity curves
    after = sorted(p.relative_to(root) for p in root.rglob("*") if "runs" not in p.parts)
    assert after == before  # no notebooks/mlflow.db, no mlruns/ where the kernel ran


def test_the_notebook_says_so_when_there_is_no_store(tmp_path, monkeypatch):
    """Run where no store exists, it stops with a message instead of creating an empty one."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.raises(CellExecutionError, match="no MLflow store at sqlite:///"):
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path / "notebooks")}}).execute()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["notebooks", "pyproject.toml"]

"""Where `evolve run` sends its lineage: the config's `tracking:` section, its overrides, the
embedded SQLite default in the project folder, Ray jobs, tracking off, spooling off."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from lineage_fixtures import REPO, evolve_env, lineage_config
from mlflow_server import free_port

from evolution.cli import main
from evolution.config import TrackingConfig
from evolution.lineage.ops import RUN_RECORD_FILE, SPOOL_DIR
from evolution.lineage.tracking import RAY_JOB_ENV, TrackingError, project_folder, resolve_tracking


def _tiny(path: Path, **overrides) -> Path:
    return lineage_config(path, islands=2, population=12, generations=2, hall_of_fame=3,
                          **{"market.synthetic.n_bars": 6000, **overrides})


def test_the_uri_comes_from_the_flag_then_mlflow_then_the_config_then_the_default(tmp_path):
    config = TrackingConfig(uri="http://config:5000", experiment="from-config", registered_model="models")
    env = {"MLFLOW_TRACKING_URI": "http://env:5000", "MLFLOW_EXPERIMENT_NAME": "from-env"}
    assert resolve_tracking(config, uri="http://flag:5000", environ=env).uri == "http://flag:5000"
    assert resolve_tracking(config, environ=env).uri == "http://env:5000"
    assert resolve_tracking(config, environ={}).uri == "http://config:5000"
    assert resolve_tracking(None, environ={}, base=tmp_path).uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking(config, environ=env).experiment == "from-env"
    settings = resolve_tracking(config, environ={})
    assert (settings.experiment, settings.registered_model, settings.spool) == ("from-config", "models", True)
    assert not resolve_tracking(config, disabled=True, environ={}).enabled
    assert not resolve_tracking(TrackingConfig(enabled=False), environ={}).enabled


def test_a_relative_sqlite_path_is_relative_to_the_project_folder(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("")
    inside = tmp_path / "notebooks"
    inside.mkdir()
    monkeypatch.chdir(inside)
    assert project_folder() == tmp_path
    assert resolve_tracking(TrackingConfig(uri="sqlite:///lineage/m.db"), environ={}).uri == \
        f"sqlite:///{tmp_path / 'lineage' / 'm.db'}"
    absolute = f"sqlite:///{tmp_path}/elsewhere.db"
    assert resolve_tracking(TrackingConfig(uri=absolute), environ={}).uri == absolute
    assert project_folder(REPO / "notebooks") == REPO


def test_a_relative_sqlite_path_under_ray_job_submit_says_what_to_pass(tmp_path, monkeypatch, capsys):
    """`ray job submit` runs in Ray's temporary copy of the working directory: a relative SQLite
    store there would be lost with it, so the run stops before it starts and says what to pass."""
    job = json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"},
                      "metadata": {"job_submission_id": "raysubmit_42"}})
    with pytest.raises(TrackingError, match="runtime-env-json"):
        resolve_tracking(None, environ={RAY_JOB_ENV: job})
    assert resolve_tracking(None, uri="sqlite:////data/mlflow.db", environ={RAY_JOB_ENV: job}).uri == \
        "sqlite:////data/mlflow.db"
    monkeypatch.setenv(RAY_JOB_ENV, job)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    out = tmp_path / "run"
    assert main(["run", "--config", str(_tiny(tmp_path / "c.yaml")), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "raysubmit_42" in err and '"MLFLOW_TRACKING_URI"' in err
    assert not out.exists()


@pytest.mark.parametrize("tracking, message", [
    ({"uri": "mlruns"}, "tracking.uri: tracking URI 'mlruns': use an MLflow server"),
    ({"experimnt": "x"}, "did you mean 'experiment'"),
    ({"experiment": ""}, "tracking.experiment"),
])
def test_a_bad_tracking_section_is_a_config_error(tmp_path, capsys, tracking, message):
    path = tmp_path / "bad.yaml"
    config = yaml.safe_load(_tiny(tmp_path / "c.yaml").read_text())
    config["tracking"] = tracking
    path.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_no_tracking_writes_no_store(tmp_path, monkeypatch, capsys):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    assert main(["run", "--config", str(_tiny(tmp_path / "c.yaml")), "--out", str(tmp_path / "a"), "--no-tracking"]) == 0
    off = _tiny(tmp_path / "off.yaml", **{"tracking.enabled": False})
    assert main(["run", "--config", str(off), "--out", str(tmp_path / "b")]) == 0
    assert "lineage:" not in capsys.readouterr().out
    assert not store.exists() and not (tmp_path / "a" / RUN_RECORD_FILE).exists()


@pytest.mark.slow
def test_the_embedded_default_is_the_project_folders_sqlite_store_and_the_driver_never_imports_mlflow(tmp_path):
    """From a subfolder of a project, with nothing configured: the lineage goes to
    PROJECT/mlflow.db with its artifacts in PROJECT/mlruns, the run says so and records the
    absolute URI; the config's experiment and registered-model names apply; the driver
    process never imports MLflow (the sender process does the sending)."""
    import subprocess

    from mlflow import MlflowClient

    (tmp_path / "pyproject.toml").write_text("")
    work = tmp_path / "work"
    work.mkdir()
    config = _tiny(work / "c.yaml", **{"tracking.experiment": "tracked", "tracking.registered_model": "tracked-models"})
    script = ("import sys\nfrom evolution.cli import main\ncode = main(sys.argv[1:])\n"
              "print('driver imported mlflow:', 'mlflow' in sys.modules)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script, "run", "--config", str(config), "--out", "run"], cwd=work,
                          env=evolve_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert f"at {uri} (experiment tracked)" in done.stdout and "versions of tracked-models" in done.stdout
    assert "driver imported mlflow: False" in done.stdout
    assert done.stderr.strip() == "", done.stderr
    record = json.loads((work / "run" / RUN_RECORD_FILE).read_text())
    assert record["tracking_uri"] == uri and record["experiment_name"] == "tracked"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tracked")
    assert experiment.artifact_location == (tmp_path / "mlruns").as_uri()
    assert client.get_run(record["mlflow_run_id"]).info.status == "FINISHED"
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists()


@pytest.mark.slow
def test_with_spooling_off_an_unreachable_server_loses_the_lineage_and_says_so(tmp_path):
    import subprocess

    config = _tiny(tmp_path / "c.yaml", **{"tracking.spool": False})
    done = subprocess.run([sys.executable, "-m", "evolution", "run", "--config", str(config), "--out", "run",
                           "--tracking-uri", f"http://127.0.0.1:{free_port()}"], cwd=tmp_path, env=evolve_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "operations not sent (tracking.spool is off)" in done.stdout
    assert (tmp_path / "run" / "result.json").is_file()
    assert not (tmp_path / "run" / SPOOL_DIR).exists() and not (tmp_path / "run" / RUN_RECORD_FILE).exists()

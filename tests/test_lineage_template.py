"""The pyfunc model template (evolution/lineage/template.py): saved once per machine and
version, found again by the next process, copied per strategy with its genome and ids."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

import mlflow
from backtest import positions
from backtest.data import PlantedEdge, planted_edge_genome, synthetic_market
from evolution.lineage.template import ModelTemplate, template_cache_dir


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "model-templates"


def test_the_template_is_saved_once_and_found_again(cache):
    first = ModelTemplate()
    path = first.path()
    assert path.parent.parent == cache == template_cache_dir()
    stamp = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    again = ModelTemplate().path()  # a new process's template: the same files, not saved again
    assert again == path and {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()} == stamp
    assert [p.name for p in cache.iterdir()] == [path.parent.name]  # no half-built entries left


def test_each_strategy_gets_a_copy_with_its_genome_and_ids_that_predicts_its_positions(cache, tmp_path):
    template = ModelTemplate()
    genome = planted_edge_genome(PlantedEdge())
    template.write(tmp_path / "a", genome, "m-aaaa")
    template.write(tmp_path / "b", genome, "m-bbbb")
    meta = [yaml.safe_load((tmp_path / name / "MLmodel").read_text()) for name in ("a", "b")]
    assert [m["model_id"] for m in meta] == ["m-aaaa", "m-bbbb"]
    assert meta[0]["model_uuid"] != meta[1]["model_uuid"]
    assert {k: v for k, v in meta[0].items() if k not in ("model_id", "model_uuid")} == \
        {k: v for k, v in meta[1].items() if k not in ("model_id", "model_uuid")}
    model = mlflow.pyfunc.load_model(str(tmp_path / "a"))
    candles = synthetic_market(2000, seed=3, planted_edge=PlantedEdge()).to_frame()
    np.testing.assert_array_equal(np.asarray(model.predict(candles)), positions(genome, candles))


def test_without_a_cache_the_template_lives_only_as_long_as_its_sender(monkeypatch):
    monkeypatch.setenv("EVOLVE_CACHE_DIR", "off")
    template = ModelTemplate()
    path = template.path()
    assert template_cache_dir() is None and (path / "MLmodel").is_file()
    template.close()
    assert not path.exists()

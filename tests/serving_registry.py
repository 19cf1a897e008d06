"""Registered strategy versions for the serving tests, through MLflow's public API only: the
pyfunc model of serving/model.py with a genome artifact, the run's costs as params (as an
``evolve run`` logs them), then ``set_stage`` as the lineage logger's registration does."""
from __future__ import annotations

import importlib.util
import json
import tempfile
import warnings
from pathlib import Path

import mlflow
from backtest import strategy_id
from serving.model import GENOME_ARTIFACT, model_signature
from serving.registry import CANDIDATE, COSTS_FEES_PARAM, COSTS_SLIPPAGE_PARAM, STRATEGY_ID_TAG, ModelRegistry


def register_genome(registry: ModelRegistry, genome: dict, *, fees: float = 0.0, slippage: float = 0.0,
                    experiment: str = "serving-tests") -> str:
    """Log and register one genome; returns its version (stage candidate)."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        mlflow.set_experiment(experiment)
        code = importlib.util.find_spec("serving.model").origin
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run():
            mlflow.log_params({COSTS_FEES_PARAM: fees, COSTS_SLIPPAGE_PARAM: slippage})
            path = Path(tmp) / "genome.json"
            path.write_text(json.dumps(genome, sort_keys=True), encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = mlflow.pyfunc.log_model(name="model", python_model=code, artifacts={GENOME_ARTIFACT: str(path)},
                                               signature=model_signature(), pip_requirements=["strategy-evolution"])
        sid = strategy_id(genome)
        mv = registry.client.create_model_version(registry.name, info.model_uri, run_id=info.run_id,
                                                  tags={STRATEGY_ID_TAG: sid}, model_id=info.model_id) \
            if _has_model(registry) else None
        if mv is None:
            registry.client.create_registered_model(registry.name)
            mv = registry.client.create_model_version(registry.name, info.model_uri, run_id=info.run_id,
                                                      tags={STRATEGY_ID_TAG: sid}, model_id=info.model_id)
    finally:
        mlflow.set_tracking_uri(previous)
    registry.set_stage(mv.version, CANDIDATE, reason="registered")
    return str(mv.version)


def _has_model(registry: ModelRegistry) -> bool:
    try:
        registry.client.get_registered_model(registry.name)
        return True
    except Exception:
        return False

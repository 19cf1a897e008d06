"""The shape of what one `evolve run` leaves in an MLflow store: the sets of tag, param and
metric keys of the run and its nested runs, their artifacts, the logged models and the
registered versions, without values that differ between two runs (ids, times, users).

    python tests/store_shape.py TRACKING_URI [--experiment E] [--model M] > shape.json

``tests/data/lineage_store_before.json`` holds the shape of a seeded run captured before
lineage moved to ``evolution/lineage/`` on MLflow's own client (issue 14); the lineage
tests compare every run they make against it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

# per-run numbers in names (generation-00003.parquet, island_1/..., stage_event.<ms>.r00001)
_NUMBERS = re.compile(r"\d+")


def _pattern(name: str) -> str:
    return _NUMBERS.sub("N", name)


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return out


def _model_files(tracking_uri: str, artifact_location: str) -> tuple[list[str], list[str]]:
    """Files of a logged model and the top-level keys of its MLmodel."""
    import tempfile
    from pathlib import Path

    import yaml

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="store-shape-") as tmp:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_location, tracking_uri=tracking_uri,
                                                        dst_path=tmp))
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        keys = sorted(yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8")))
    return files, keys


def store_shape(tracking_uri: str, experiment: str = "strategy-evolution", model: str = "strategy-evolution") -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    if len(parents) != 1:
        raise ValueError(f"expected one evolution run in {experiment!r}, found {len(parents)}")
    parent = parents[0]

    def run_shape(run) -> dict:
        return {"tags": sorted(run.data.tags), "params": sorted(run.data.params),
                "metrics": sorted({_pattern(k) for k in run.data.metrics}),
                "artifacts": sorted({_pattern(a) for a in _artifacts(client, run.info.run_id)}),
                "status": run.info.status}

    nested_shapes = [run_shape(r) for r in nested]
    distinct = {json.dumps(s, sort_keys=True) for s in nested_shapes}
    models = client.search_logged_models([exp.experiment_id], max_results=1000)
    model_shapes = set()
    for logged in models:
        files, mlmodel_keys = _model_files(tracking_uri, logged.artifact_location)
        model_shapes.add(json.dumps({
            "name": logged.name, "tags": sorted(logged.tags), "params": sorted(logged.params or {}),
            "model_type": logged.model_type, "status": str(logged.status), "files": files,
            "mlmodel_keys": mlmodel_keys,
            "source_run_is_nested": logged.source_run_id in {r.info.run_id for r in nested}}, sort_keys=True))
    registered = client.get_registered_model(model)
    versions = client.search_model_versions(f"name = '{model}'")
    promoted = json.loads(parent.data.tags.get("promoted", "[]"))
    return {
        "run": run_shape(parent),
        "nested_runs": len(nested),
        "nested_run_shapes": [json.loads(s) for s in sorted(distinct)],
        "nested_run_tags_promoted": sorted({r.data.tags.get("promoted") for r in nested}),
        "logged_models": len(models),
        "logged_model_shapes": [json.loads(s) for s in sorted(model_shapes)],
        "registered_model_tags": sorted({_pattern(k) for k in registered.tags}),
        "registered_model_aliases": sorted(getattr(registered, "aliases", None) or []),
        "versions": len(versions),
        "versions_equal_promoted": sorted(v.tags.get("strategy_id") for v in versions) == sorted(promoted),
        "version_tags": sorted({k for v in versions for k in v.tags}),
        "version_sources_are_logged_models": all((v.source or "").startswith("models:/m-") for v in versions),
        "version_numbers": sorted(int(v.version) for v in versions),
    }


# tags whose values differ between two runs of the same search (who, where, when, which commit)
VOLATILE_TAGS = {"mlflow.user", "mlflow.source.name", "mlflow.source.type", "mlflow.log-model.history",
                 "mlflow.parentRunId", "git_commit", "mlflow.source.git.commit"}
# metrics that measure wall time
TIMING_METRICS = re.compile(r"(^|/)evaluations_per_second$")


def _without_times(text: str) -> object:
    """A stage event or history (JSON) without its timestamps."""
    data = json.loads(text)
    if isinstance(data, list):
        return [{k: v for k, v in item.items() if k != "at"} for item in data]
    return {k: v for k, v in data.items() if k != "at"}


def store_content(tracking_uri: str, experiment: str = "strategy-evolution", model: str = "strategy-evolution") -> dict:
    """What a run left in a store, as values that two runs of the same seeded search share:
    runs keyed by their ``lineage.key``, with params, tags (no user, source, commit), metric
    values per step (not wall-time ones, not timestamps), artifacts and status; versions by
    number with their run's key and tags (stage histories without times); the registered
    model's stage events (without times) and aliases."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    key_of = {run.info.run_id: run.data.tags.get("lineage.key") for run in runs}
    out_runs = {}
    for run in runs:
        metrics = {}
        for name in run.data.metrics:
            if TIMING_METRICS.search(name):
                continue
            history = client.get_metric_history(run.info.run_id, name)
            metrics[name] = sorted({(m.step, m.value) for m in history})
        out_runs[key_of[run.info.run_id]] = {
            "name": run.info.run_name, "status": run.info.status,
            "parent": key_of.get(run.data.tags.get("mlflow.parentRunId")),
            "params": dict(run.data.params),
            "tags": {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS},
            "metrics": metrics, "artifacts": sorted(_artifacts(client, run.info.run_id)),
        }
    versions = {}
    for mv in client.search_model_versions(f"name = '{model}'"):
        tags = dict(mv.tags)
        tags["stage_history"] = _without_times(tags.get("stage_history", "[]"))
        versions[str(mv.version)] = {"run": key_of.get(mv.run_id), "tags": tags, "status": mv.status,
                                     "aliases": sorted(mv.aliases or [])}
    registered = client.get_registered_model(model)
    events = sorted((json.dumps(_without_times(v), sort_keys=True) for k, v in registered.tags.items()
                     if k.startswith("stage_event.")))
    return {"runs": out_runs, "versions": versions, "stage_events": events,
            "aliases": dict(registered.aliases or {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tracking_uri")
    parser.add_argument("--experiment", default="strategy-evolution")
    parser.add_argument("--model", default="strategy-evolution")
    args = parser.parse_args()
    json.dump(store_shape(args.tracking_uri, args.experiment, args.model), sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pyfunc model of a strategy, saved once as a template and copied per strategy.

Every hall-of-fame strategy gets the same MLflow "models from code" pyfunc model
(``serving/model.py``: code, signature, input example, pip requirements); only its genome
artifact and the ids in ``MLmodel`` differ. ``mlflow.pyfunc.save_model`` (which loads the
model to check its input example, about a second) runs once per machine for each version of
the model code, MLflow and Python: the template is kept in
``~/.cache/evolve/model-templates/`` (``$EVOLVE_CACHE_DIR/model-templates``;
``EVOLVE_CACHE_DIR=off`` keeps none). Each strategy's copy gets its genome and, through
``mlflow.models.Model``, a fresh ``model_uuid`` and the id of its logged model.

Runs in the lineage sender process and in ``evolve sync``, never in the driver.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from backtest.tracking_names import GENOME_ARTIFACT

TEMPLATE_FORMAT = 2  # bump when the template's making changes, so that old cache entries are not used
CACHE_ENV = "EVOLVE_CACHE_DIR"
GENOME_FILE = Path("artifacts") / "genome.json"  # where save_model puts the genome artifact
# what serving needs to load a strategy's model (the MLflow pin matches pyproject.toml's)
MODEL_PIP_REQUIREMENTS = ("mlflow>=3.17,<4", "numpy>=1.26", "pandas>=2.1", "numba>=0.59", "strategy-evolution")


def default_model_code() -> Path:
    """``serving/model.py``: the pyfunc model's code, logged as a file (models from code)."""
    spec = importlib.util.find_spec("serving.model")
    if spec is None or spec.origin is None:
        raise RuntimeError("serving/model.py not found: install the project (pip install -e .)")
    return Path(spec.origin)


def template_cache_dir() -> Path | None:
    """``$EVOLVE_CACHE_DIR/model-templates`` (default ``$XDG_CACHE_HOME/evolve`` or
    ``~/.cache/evolve``); None with ``EVOLVE_CACHE_DIR=off``."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured.lower() in ("off", "none", "0"):
        return None
    if configured:
        base = Path(configured).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evolve"
    return base / "model-templates"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def template_key(model_code: str | Path, pip_requirements: list[str]) -> str:
    """Everything the template's files depend on: the model code (its path is in MLmodel), the
    pip requirements, and the versions of Python, MLflow and cloudpickle written into it."""
    code = Path(model_code).resolve()
    ingredients = [TEMPLATE_FORMAT, str(code), hashlib.sha256(code.read_bytes()).hexdigest(), list(pip_requirements),
                   sys.version, _version("mlflow"), _version("mlflow-skinny"), _version("cloudpickle")]
    return hashlib.sha256(json.dumps(ingredients).encode("utf-8")).hexdigest()[:24]


def _complete(model_dir: Path) -> bool:
    return (model_dir / "MLmodel").is_file() and (model_dir / GENOME_FILE).is_file()


class ModelTemplate:
    """One saved pyfunc model to copy for every strategy (thread-safe)."""

    def __init__(self, model_code: str | Path | None = None,
                 pip_requirements: tuple[str, ...] = MODEL_PIP_REQUIREMENTS):
        self.model_code = Path(model_code) if model_code is not None else default_model_code()
        self.pip_requirements = list(pip_requirements)
        self._path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._lock = threading.Lock()

    def path(self) -> Path:
        """The template's model folder: from the cache, or built (and cached) now."""
        with self._lock:
            if self._path is None:
                self._path = self._find_or_build()
            return self._path

    def write(self, destination: Path, genome: dict, model_id: str) -> None:
        """A strategy's model in ``destination`` (a new folder): the template with its genome
        and, in ``MLmodel``, a fresh ``model_uuid`` and its logged model's id."""
        from mlflow.models import Model

        shutil.copytree(self.path(), destination)
        (destination / GENOME_FILE).write_text(json.dumps(genome, sort_keys=True), encoding="utf-8")
        meta = Model.load(destination)
        meta.model_uuid = uuid.uuid4().hex
        meta.model_id = model_id
        meta.save(destination / "MLmodel")

    def close(self) -> None:
        """Remove a template built outside the cache."""
        with self._lock:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp, self._path = None, None

    # ---------------------------------------------------------------- internals

    def _find_or_build(self) -> Path:
        key = template_key(self.model_code, self.pip_requirements)
        root = template_cache_dir()
        final = root / key if root is not None else None
        if final is not None and _complete(final / "model"):
            return final / "model"
        building = None
        if final is not None:
            try:
                root.mkdir(parents=True, exist_ok=True)
                building = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
            except OSError:
                final = None  # an unwritable cache: build in a temporary folder instead
        if building is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="strategy-model-template-")
            building = Path(self._tmp.name)
        self._save(building)
        if final is None:
            return building / "model"
        try:
            if final.exists():  # a broken entry, or another process finished first
                if _complete(final / "model"):
                    shutil.rmtree(building, ignore_errors=True)
                    return final / "model"
                shutil.rmtree(final, ignore_errors=True)
            os.replace(building, final)
        except OSError:
            if _complete(final / "model"):
                shutil.rmtree(building, ignore_errors=True)
                return final / "model"
            return building / "model"
        return final / "model"

    def _save(self, directory: Path) -> None:
        import mlflow

        signature, example = self._signature_and_example()
        from backtest.families.rules import sma_crossover_genome  # any genome will do: each strategy's replaces it

        genome_path = directory / "genome.json"
        genome_path.write_text(json.dumps(sma_crossover_genome(10, 40), sort_keys=True), encoding="utf-8")
        model_dir = directory / "model"
        mlflow.pyfunc.save_model(path=str(model_dir), python_model=str(self.model_code),
                                 artifacts={GENOME_ARTIFACT: str(genome_path)}, signature=signature,
                                 input_example=example, pip_requirements=self.pip_requirements)
        if not _complete(model_dir):
            raise RuntimeError(f"pyfunc model layout changed: no {GENOME_FILE} or MLmodel in {model_dir}")

    def _signature_and_example(self):
        """The model code file's own ``model_signature()`` and ``input_example()``, loaded from the
        file as MLflow loads it (models from code)."""
        spec = importlib.util.spec_from_file_location("strategy_model_code", self.model_code)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.model_signature(), module.input_example()
